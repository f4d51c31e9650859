"""Feature drift: per-feature scores of a view's current window against a declared reference.

scores.py    the statistics (numpy/scipy), each a pure function of two samples
(validation/drift_spec.py: what a view declares in its tags, checked by `featurectl feast-apply`)
samples.py   the two samples of a view, read from its offline history
report.py    a view's scores and verdicts, as a table, JSON, metrics and the last run's file
html.py      the reference and current distributions side by side, per feature (``--html``)
"""
