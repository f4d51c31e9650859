"""Great Expectations suites (one per feature view, as data files) and the batch validator."""
