"""``featurectl drift --html``: per feature, the reference and current distributions side by side.

A self-contained page (inline SVG, no script, no network): drifting features first, each with its
scores; numbers as histograms over shared bins, categories as their shares (the 12 most frequent),
vectors as the distribution of each vector's cosine to the reference centroid.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from monitoring.drift import samples
from monitoring.drift.report import ViewDrift, numbers, vectors
from monitoring.drift.samples import Sample

BINS = 20
TOP = 12
_W, _H = 560, 180
_REF, _CUR = "#4a78b5", "#e07b39"


def _bars(labels: list[str], ref: np.ndarray, cur: np.ndarray, title: str) -> str:
    """Two series of shares as grouped bars, with a legend; ``labels`` under every few bars."""
    n = len(labels)
    if n == 0:
        return "<p>no values</p>"
    top = max(float(ref.max(initial=0)), float(cur.max(initial=0)), 1e-9)
    slot = (_W - 40) / n
    bar = min(max(slot / 2 - 1, 1), 40)  # a few categories: bars, not slabs
    parts = [f'<svg width="{_W}" height="{_H + 40}" role="img" aria-label="{escape(title)}">']
    for i in range(n):
        x = 30 + i * slot
        for k, (series, colour) in enumerate(((ref, _REF), (cur, _CUR))):
            h = float(series[i]) / top * _H
            parts.append(
                f'<rect class="{"reference" if k == 0 else "current"}" x="{x + k * bar:.1f}" '
                f'y="{_H - h + 10:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(labels[i])}: {float(series[i]):.1%}</title></rect>"
            )
        if n <= TOP or i % max(n // 6, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{_H + 25}" font-size="10">{escape(labels[i][:14])}</text>')
    parts.append(
        f'<text x="30" y="{_H + 38}" font-size="11" fill="{_REF}">reference</text>'
        f'<text x="100" y="{_H + 38}" font-size="11" fill="{_CUR}">current</text></svg>'
    )
    return "".join(parts)


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(float)


def _picture(kind: str, ref: np.ndarray | list[object], cur: np.ndarray | list[object], name: str) -> str:
    if kind == "numeric":
        a, b = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
        both = np.concatenate([a, b])
        if both.size == 0:
            return "<p>no values</p>"
        edges = np.linspace(both.min(), both.max() if both.max() > both.min() else both.min() + 1, BINS + 1)
        labels = [f"{e:.4g}" for e in edges[:-1]]
        return _bars(labels, _shares(np.histogram(a, edges)[0]), _shares(np.histogram(b, edges)[0]), name)
    if kind == "categorical":
        from monitoring.drift.scores import category_counts

        order, rc, cc = category_counts(list(ref), list(cur))
        return _bars([str(v) for v in order[:TOP]], _shares(rc)[:TOP], _shares(cc)[:TOP], name)
    a_vec, b_vec = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    if a_vec.size == 0 or b_vec.size == 0:
        return "<p>no vectors</p>"
    centre = a_vec.mean(axis=0)
    centre /= np.linalg.norm(centre) or 1.0

    def cosines(v: np.ndarray) -> np.ndarray:
        return np.asarray(v @ centre / np.maximum(np.linalg.norm(v, axis=1), 1e-12))

    caption = "<p>each vector's cosine to the reference's centroid</p>"
    return caption + _picture(
        "numeric", cosines(a_vec), cosines(b_vec), f"{name}: cosine to the reference centroid"
    )


def _values(kind: str, sample: Sample, name: str) -> np.ndarray | list[object]:
    column = samples.non_null(sample.rows.column(name))
    if kind == "numeric":
        return numbers(column)
    if kind == "vector":
        return vectors(column)
    return list(column.to_pylist())


def write_html(checked: list[tuple[ViewDrift, Sample, Sample]], path: Path) -> None:
    """Write the report of every checked view to ``path``."""
    body = ["<h1>Feature drift</h1>"]
    for report, ref, cur in checked:
        verdict = f"drift in {', '.join(report.drifting)}" if report.drifting else "no drift"
        body.append(
            f'<section class="view" id="{escape(report.view)}"><h2>{escape(report.view)}: {escape(verdict)}</h2>'
            f"<p>{report.current_rows} changes in [{escape(report.window_start)}, {escape(report.window_end)}) "
            f"against {escape(report.reference)} ({report.reference_rows} changes)</p>"
        )
        features = list(dict.fromkeys(s.feature for s in report.scores))
        features.sort(key=lambda f: f not in report.drifting)
        for feature in features:
            kind = report.kinds.get(feature)
            rows = [s for s in report.scores if s.feature == feature]
            drifting = feature in report.drifting
            table = "".join(
                f"<tr><td>{escape(s.metric)}</td><td>{'-' if s.score is None else f'{s.score:.4f}'}</td>"
                f"<td>{'-' if s.threshold is None else f'{s.threshold:g}'}</td><td>{escape(s.verdict)}</td>"
                f"<td>{escape(s.detail)}</td></tr>"
                for s in rows
            )
            picture = (
                _picture(kind, _values(kind, ref, feature), _values(kind, cur, feature), feature)
                if kind is not None
                else ""
            )
            body.append(
                f'<div class="feature{" drifting" if drifting else ""}" data-feature="{escape(feature)}">'
                f"<h3>{escape(feature)}{' - DRIFT' if drifting else ''}</h3>{picture}"
                f"<table><tr><th>metric</th><th>score</th><th>threshold</th><th>verdict</th><th></th></tr>{table}</table></div>"
            )
        body.append("</section>")
    style = (
        "body{font-family:sans-serif;margin:2em}.feature{border-left:4px solid #ccc;padding-left:1em;margin:1em 0}"
        ".drifting{border-color:#c33}td,th{padding:2px 8px;text-align:left}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>Feature drift</title><style>{style}</style></head>'
        f"<body>{''.join(body)}</body></html>"
    )
