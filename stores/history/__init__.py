"""The offline history: every committed state of every entity, one Delta (or Parquet) table per view.

``sink.py`` the processor's writer (Delta by default, Parquet directories when asked); ``delta.py``
the Delta log; ``schema.py`` the history's Arrow schema; ``reader.py`` reading it back (jobs, verify,
DuckDB); ``duckdb_store.py`` the Feast offline store plugin that serves point-in-time joins from it.
"""
