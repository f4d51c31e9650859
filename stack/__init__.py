"""Local stack launcher: real Postgres, Kafka (KRaft) and Kafka Connect with Debezium as local processes."""
