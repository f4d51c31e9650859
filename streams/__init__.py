"""The stream processor: consume Debezium change events from Kafka and materialise features."""
