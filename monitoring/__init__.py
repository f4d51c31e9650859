"""Day-2 operations: Prometheus metrics, the source watch (replication slot, connector) and health."""
