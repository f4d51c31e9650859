"""featurectl: Postgres CDC through Debezium and Kafka into a Feast feature store."""
