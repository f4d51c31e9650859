"""Feast offline store plugins (``offline_store.type`` in feature_store.yaml)."""
