"""Reading a view's history: where it lives, which files readers see, picking rows per group in Arrow.

A view's history is either a directory of Parquet files (``FileSource`` with the default format: every
``*.parquet`` not starting with ``.`` or ``_`` is live) or a Delta table (``file_format=DeltaFormat()``:
the live files are the ones the table's log lists at its latest version, whatever else the directory
holds). ``History`` hides the difference from the jobs: both give the live file paths and a
``pyarrow.dataset`` over them read with the view's history schema, so files written before a column
existed read it as nulls.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import FeatureStore, FeatureView, FileSource
from feast.data_format import DeltaFormat

from core.errors import ConfigError
from stores.history.schema import history_schema


def history_files(directory: Path) -> list[str]:
    """Names of the history files in a Parquet history directory (no dot- or underscore-prefixed ones)."""
    return [p.name for p in directory.glob("*.parquet") if not p.name.startswith((".", "_"))]


def history_path(store: FeatureStore, view: FeatureView) -> Path:
    """Where ``view``'s history lives: its FileSource path, relative to the feature repository."""
    source = view.batch_source
    if not isinstance(source, FileSource):
        raise ConfigError(
            f"feature view {view.name}: batch source {type(source).__name__} is not a FileSource",
            "point the view's push source at a FileSource (see feature_repo/)",
        )
    path = Path(source.path)
    return path if path.is_absolute() else Path(store.config.repo_path or ".") / path


def is_delta(view: FeatureView) -> bool:
    """Whether ``view``'s history is a Delta table (its FileSource says ``file_format=DeltaFormat()``)."""
    return isinstance(getattr(view.batch_source, "file_format", None), DeltaFormat)


class History:
    """One view's history, read as its live Parquet files (see the module docstring)."""

    def __init__(self, store: FeatureStore, view: FeatureView) -> None:

        self.view = view
        self.path = history_path(store, view)
        self.delta = is_delta(view)
        self.schema = history_schema(view)

    def exists(self) -> bool:
        if self.delta:
            return (self.path / "_delta_log").is_dir()
        return self.path.is_dir()

    def files(self, where: list[tuple[str, str, Any]] | None = None) -> list[str]:
        """Absolute paths of the live files, sorted (empty when nothing was written yet).

        ``where`` (``(column, op, value)`` conjunction): a Delta table lists only the files whose column
        statistics in its log may hold matching rows; a Parquet directory lists all its files.
        """
        if not self.exists():
            if self.delta and self.path.is_dir() and any(self.path.glob("*.parquet")):
                raise ConfigError(
                    f"{self.path} holds Parquet files but no Delta log, and view {self.view.name} "
                    "declares a Delta history",
                    "convert it once with deltalake.convert_to_deltalake(path), or remove file_format="
                    "DeltaFormat() from the view's FileSource",
                )
            return []
        if self.delta:
            from deltalake import DeltaTable
            from deltalake.exceptions import DeltaError

            table = DeltaTable(str(self.path))
            if where:
                try:
                    return sorted(table.file_uris(file_pruning_predicate=where))
                except (DeltaError, TypeError, ValueError):  # a key type the predicate cannot express
                    pass
            return sorted(table.file_uris())
        return sorted(str(self.path / name) for name in history_files(self.path))

    def last_change(self) -> datetime | None:
        """The latest event time the history holds (None if empty): from the Delta log's file statistics
        (no data read), or the Parquet files' row-group statistics."""
        if self.delta:
            if not self.exists():
                return None
            from deltalake import DeltaTable

            actions = pa.table(DeltaTable(str(self.path)).get_add_actions(flatten=True))
            column = "max.event_timestamp"
            if actions.num_rows == 0 or column not in actions.column_names:
                return None
            latest = pc.max(actions.column(column)).as_py()
        else:
            latest = (
                pc.max(self.dataset().to_table(columns=["event_timestamp"]).column(0)).as_py()
                if self.files()
                else None
            )
        if latest is None:
            return None
        when: datetime = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
        return when

    def dataset(self, files: list[str] | None = None) -> ds.Dataset:
        """The history (or only ``files`` of it) as one dataset with the view's history schema."""
        paths = self.files() if files is None else files
        return ds.dataset(paths, format="parquet", schema=self.schema)


def first_of_groups(table: pa.Table, by: list[str], last: bool = False) -> pa.Table:
    """The first (or last) row of each run of equal ``by`` values in a table sorted by them."""
    if table.num_rows == 0:
        return table
    same = None
    for name in by:
        col = table.column(name)
        prev, cur = col.slice(0, table.num_rows - 1), col.slice(1)
        # Nulls count as equal to nulls (a null key or version is still one group).
        eq = pc.or_kleene(pc.equal(prev, cur), pc.and_(pc.is_null(prev), pc.is_null(cur)))
        eq = pc.fill_null(eq, False)
        same = eq if same is None else pc.and_(same, eq)
    assert same is not None
    boundary = pc.invert(same)
    # Row i starts a group if it differs from row i-1; it ends one if it differs from row i+1.
    if last:
        keep = pa.concat_arrays([boundary.combine_chunks(), pa.array([True])])
    else:
        keep = pa.concat_arrays([pa.array([True]), boundary.combine_chunks()])
    return table.filter(keep)
