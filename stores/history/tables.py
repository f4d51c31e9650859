"""The history's tables made before anything is written to them (``feast apply`` through stores/repository.py)."""

from __future__ import annotations

import logging

from feast import FeatureStore

logger = logging.getLogger(__name__)


def create_history_tables(store: FeatureStore) -> list[str]:
    """Create the empty Delta table of each view whose history is one and does not exist yet, so a
    point-in-time join over a view nothing was written to yet reads no rows instead of failing."""
    from stores.history.delta import create
    from stores.history.reader import History

    created = []
    for view in store.list_feature_views():
        history = History(store, view)
        if history.delta and not history.exists():
            history.files()  # refuses a Parquet directory at that path, saying how to convert it
            create(history.path, history.schema)
            created.append(view.name)
            logger.info("created the history table of %s at %s", view.name, history.path)
    return created
