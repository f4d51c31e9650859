"""Materialisation: the offline history's latest state per entity, into the online store.

For bootstrapping a new online store (after ``feast apply`` created its tables) or repairing one.
It writes through the processor's online sink, so the store's rules hold: a change older (by
version) than what the online store holds never overwrites it, and an entity whose latest history
row is a delete is deleted. Feast's own ``materialize`` is not used: it would write a delete as a
row of nulls, ignore versions, and put vectors where the vector index does not see them.

``incremental`` reads only the history files the last run did not read. Its watermark is the set of
file paths read (for a Delta history, the files its log lists) (kept per view in ``<data_dir>/jobs/``), not a time: history files are immutable once
renamed into place, but a file can land after another stamped later (a slow flush, a second writer), and
a time watermark would skip it for good. Names no longer present (compacted away) are dropped from the
set, so it stays as small as the directory. Vectors recorded under another model than the one declared now are not
materialised; the views concerned are re-embedded afterwards (stores/reembed.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore, FeatureView
from tqdm import tqdm

from aggregations.spec import is_aggregation_view
from embeddings.spec import spec_for
from stores.history.reader import History, first_of_groups
from stores.registry import open_online_sink
from stores.sink import DELETE, UPSERT, SinkRow

logger = logging.getLogger(__name__)


@dataclass
class MaterializeReport:
    view: str
    history_rows: int = 0
    entities: int = 0
    applied: int = 0
    vectors_dropped: int = 0
    files: int = 0  # history files read
    watermark: str | None = None  # the latest ingested_at read (informational)


def latest_of_each_entity(table: pa.Table, keys: list[str]) -> pa.Table:
    """Each entity's last history row: by commit time, then version (stores/ordering.py; within one
    source a later version never has an earlier commit time). Columnar: one sort of the history."""
    for name in ("cdc_version", "cdc_version_minor"):  # files older than the column: version 0
        table = table.append_column(f"_{name}", pc.fill_null(table.column(name), 0))
    ordered = table.sort_by(
        [(k, "ascending") for k in [*keys, "event_timestamp", "_cdc_version", "_cdc_version_minor"]]
    )
    return first_of_groups(ordered, keys, last=True)


class Materializer:
    def __init__(self, store: FeatureStore, jobs_dir: Path, chunk: int = 2000) -> None:
        self.store = store
        self.jobs_dir = jobs_dir
        self.chunk = chunk

    def _state(self, view: str) -> Path:
        return self.jobs_dir / f"materialize-{view}.json"

    def run(self, view: FeatureView, incremental: bool = False) -> MaterializeReport:
        report = MaterializeReport(view.name)
        history = History(self.store, view)
        # Paths under the history's root (a Delta table's files sit in event_date=... directories).
        root = history.path.resolve()
        present = [os.path.relpath(Path(f).resolve(), root) for f in history.files()]
        if not present:
            return report
        state = self._state(view.name)
        done = (
            set(json.loads(state.read_text()).get("files", [])) if incremental and state.exists() else set()
        )
        files = [name for name in present if name not in done]
        dataset = history.dataset([str(history.path / name) for name in files])
        keys = [c.name for c in view.entity_columns]
        # Columnar: sort by entity then change order, keep each entity's last row. Only those become
        # Python objects, so the cost is one sort of the history, not a dict operation per history row.
        table = dataset.to_table()
        report.history_rows = table.num_rows
        latest = latest_of_each_entity(table, keys).to_pylist()
        stamps = pc.max(table.column("ingested_at")).as_py() if table.num_rows else None
        watermark: datetime | None = stamps
        report.entities = len(latest)
        spec = spec_for(view)
        rows: list[SinkRow] = []
        for record in latest:
            features = {f.name: record[f.name] for f in view.features}
            model = record.get("cdc_embedding_model")
            if spec is not None and model != spec.fingerprint and features.get(spec.field) is not None:
                features[spec.field] = None  # another model's vector: re-embedded after this run
                report.vectors_dropped += 1
            rows.append(
                SinkRow(
                    view.name,
                    DELETE if record["cdc_deleted"] else UPSERT,
                    {k: record[k] for k in keys},
                    {} if record["cdc_deleted"] else features,
                    record["event_timestamp"],
                    record["cdc_version"] or 0,
                    record["cdc_op"] or "m",
                    f"materialize {history.path.name}",
                    spec.fingerprint if spec else None,
                    record["cdc_version_minor"] or 0,
                )
            )
        online = open_online_sink(self.store)
        try:
            for i in tqdm(
                range(0, len(rows), self.chunk),
                desc=f"materialize {view.name}",
                file=sys.stderr,
                mininterval=2,
            ):
                online.add(rows[i : i + self.chunk])
                report.applied += len(online.flush())
        finally:
            online.close()
        report.files = len(files)
        if watermark is not None:
            report.watermark = watermark.isoformat()
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"files": sorted(done.intersection(present) | set(files)), "watermark": report.watermark}
            )
        )
        tmp.replace(state)  # a crash leaves the previous state: the next run re-reads, never skips
        return report


def materialize_views(
    store: FeatureStore, state_dir: Path, views: Sequence[str], incremental: bool, echo: Callable[[str], None]
) -> None:
    """Materialize ``views`` (default: all), then re-embed each embedding view that got entities (the
    history may hold another model's vectors, which are dropped on the way)."""
    from core.metrics import materialization_metrics
    from stores.reembed import reembed

    materializer = Materializer(store, state_dir)
    for view in [store.get_feature_view(v) for v in views] or store.list_feature_views():
        if is_aggregation_view(view):
            # Its history holds source rows, not the view's values: the online store computes those at
            # read time from the contributions the processor (or a snapshot of its table) writes.
            echo(
                f"materialize {view.name}: skipped (an aggregation view: `featurectl snapshot <table>` refills it)"
            )
            continue
        with materialization_metrics(view.name):
            report = materializer.run(view, incremental)
        echo(
            f"materialize {view.name}: {report.files} history files, {report.history_rows} rows, "
            f"{report.entities} entities, "
            f"{report.applied} applied online (older than the online state: skipped)"
        )
        if spec_for(view) is not None and report.entities:
            result = reembed(store, view.name)
            echo(f"  {view.name}: {result.embedded} texts re-embedded, {result.vectors} vectors")
