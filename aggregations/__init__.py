"""Aggregation features from CDC, exact under updates and deletes: the declaration (spec.py), the one
statement of what a value is (semantics.py) and the retractable state that computes it (state.py)."""
