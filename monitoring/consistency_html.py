"""``featurectl consistency --html``: what was served against what training reads, as a page.

Self-contained (inline SVG, no script, no network), like the drift report: per feature service, the counts per
feature (matched, freshness lag, real skew) as stacked bars; over the window, lookups per interval with those
that carried real skew; per numeric feature that did not always match, served against recomputed values (on the
diagonal: equal), lag and skew in their own colours.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from monitoring.consistency import ConsistencyReport

_W, _H = 560, 180
COLOURS = {"matched": "#4a9a5b", "lag": "#e0b339", "skew": "#c8413b"}
BUCKETS = 40


def _outcome_bars(report: ConsistencyReport) -> str:
    rows = len(report.features)
    height = 22 * rows + 30
    parts = [f'<svg width="{_W + 200}" height="{height}" role="img" aria-label="outcomes per feature">']
    for i, f in enumerate(report.features):
        y = 10 + i * 22
        parts.append(f'<text x="0" y="{y + 13}" font-size="11">{escape(f.feature[:34])}</text>')
        x = 200.0
        total = max(f.compared, 1)
        for outcome, count in (("matched", f.matched), ("lag", f.lag), ("skew", f.skew)):
            w = count / total * _W
            if w > 0:
                parts.append(
                    f'<rect class="{outcome}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="16" '
                    f'fill="{COLOURS[outcome]}"><title>{outcome}: {count}</title></rect>'
                )
            x += w
    parts.append(_legend(10 + rows * 22 + 14))
    parts.append("</svg>")
    return "".join(parts)


def _legend(y: float) -> str:
    return "".join(
        f'<text x="{200 + 90 * i}" y="{y}" font-size="11" fill="{c}">{o}</text>'
        for i, (o, c) in enumerate(COLOURS.items())
    )


def _timeline(report: ConsistencyReport) -> str:
    if not report.times:
        return "<p>no lookups in the window</p>"
    lo, hi = min(report.times), max(report.times)
    span = max(hi - lo, 1e-6)
    lookups = [0] * BUCKETS
    skewed = [0] * BUCKETS
    for row, t in enumerate(report.times):
        b = min(int((t - lo) / span * BUCKETS), BUCKETS - 1)
        lookups[b] += 1
        if any(o[row] == "skew" for o in report.outcomes.values()):
            skewed[b] += 1
    top = max(max(lookups), 1)
    slot = _W / BUCKETS
    parts = [f'<svg width="{_W + 40}" height="{_H + 40}" role="img" aria-label="lookups over the window">']
    for b in range(BUCKETS):
        for series, colour, cls in (
            (lookups, COLOURS["matched"], "rows"),
            (skewed, COLOURS["skew"], "skewed"),
        ):
            h = series[b] / top * _H
            if h > 0:
                parts.append(
                    f'<rect class="{cls}" x="{30 + b * slot:.1f}" y="{_H - h + 10:.1f}" width="{slot - 1:.1f}" '
                    f'height="{h:.1f}" fill="{colour}"><title>{series[b]} row(s)</title></rect>'
                )
    parts.append(
        f'<text x="30" y="{_H + 30}" font-size="11">{span:.1f} s of lookups: entity rows per interval, '
        f"those with real skew in red</text></svg>"
    )
    return "".join(parts)


def _scatter(points: list[tuple[float, float, str]], name: str) -> str:
    lo = min(min(a, b) for a, b, _ in points)
    hi = max(max(a, b) for a, b, _ in points)
    span = hi - lo or 1.0
    size = _H + 40

    def at(v: float) -> float:
        return 20 + (v - lo) / span * (size - 40)

    parts = [
        f'<svg width="{size}" height="{size}" role="img" aria-label="served against recomputed: {escape(name)}">',
        f'<line x1="{at(lo):.1f}" y1="{size - at(lo):.1f}" x2="{at(hi):.1f}" y2="{size - at(hi):.1f}" '
        'stroke="#999" stroke-dasharray="4"/>',
    ]
    for served, offline, outcome in points[:2000]:
        parts.append(
            f'<circle class="{outcome}" cx="{at(offline):.1f}" cy="{size - at(served):.1f}" r="3" '
            f'fill="{COLOURS[outcome]}"><title>served {served:g}, history {offline:g}</title></circle>'
        )
    parts.append(
        f'<text x="20" y="14" font-size="11">{escape(name)}: served (up) vs history (right)</text></svg>'
    )
    return "".join(parts)


def write_html(reports: list[ConsistencyReport], path: Path) -> None:
    """One page for ``reports`` (one per feature service); skewed services first."""
    body = []
    for report in sorted(reports, key=lambda r: -r.skew):
        verdict = f"{report.skew} value(s) of real skew" if report.skew else "no real skew"
        body.append(
            f"<h2>{escape(report.service)}: {verdict}</h2><p>{report.requests} lookup(s), {report.rows} entity "
            f"row(s) served {escape(report.start)} .. {escape(report.end)}; freshness lag {report.lag_s:.2f} s</p>"
        )
        body.append(_outcome_bars(report))
        body.append(_timeline(report))
        if report.pairs:
            body.append(
                "<p>Values that did not match: served (up) against the history as of the request (right)</p>"
            )
        for name, points in report.pairs.items():
            body.append(_scatter(points, name))
        for f in report.features:
            for example in f.examples:
                body.append(
                    f"<pre style='white-space:pre-wrap'>{escape(f.feature)}: {escape(str(example))}</pre>"
                )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>featurectl consistency</title></head>"
        "<body style='font-family:sans-serif'><h1>Training equals serving</h1>"
        + "".join(body)
        + "</body></html>"
    )
    path.write_text(page)
