"""Debezium connector definitions (JSON, one file per connector) and the Kafka Connect REST client."""
