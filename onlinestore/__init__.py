"""The Feast online store with a vector index (SQLite + sqlite-vec), shared by the processor and readers."""
