"""The batch jobs: bounded runs over the stores, on demand or on a schedule, each under a lock: backfill from
Postgres, materialize, compact, snapshot (re-streaming through Debezium), verify (with repair) and replay
(dead letters back through the processor's pipeline: a bounded batch of records, like a backfill)."""
