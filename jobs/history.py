"""Reading a view's history directory: which files readers see, and picking rows per group in Arrow."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc


def history_files(directory: Path) -> list[str]:
    """Names of the history files in ``directory`` (what readers see: no dot- or underscore-prefixed ones)."""
    return [p.name for p in directory.glob("*.parquet") if not p.name.startswith((".", "_"))]


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
