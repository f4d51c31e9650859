"""One module per command group: each parses, calls the package that does the work, and prints."""

from featurectl.commands import (
    connector,
    datasets,
    features,
    jobs,
    operations,
    quality,
    serving,
    source,
    stack,
)

GROUPS = (stack, source, connector, features, serving, jobs, datasets, quality, operations)
