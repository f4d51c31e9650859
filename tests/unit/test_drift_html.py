"""The drift report's pictures, rendered by a real (headless) browser: both distributions are drawn."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from monitoring.drift.html import _CUR, _REF, write_html
from monitoring.drift.report import ViewDrift, score_feature
from monitoring.drift.samples import Sample
from validation.drift_spec import DriftSpec, Reference

SPEC = DriftSpec("orders", Reference("window", span=timedelta(days=30)), timedelta(days=1))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def test_the_report_renders_reference_and_current_side_by_side(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ref = pa.table({"amount": rng.normal(100, 10, 2000), "status": rng.choice(["paid", "new"], 2000)})
    cur = pa.table({"amount": rng.normal(160, 10, 2000), "status": rng.choice(["paid", "new"], 2000)})
    report = ViewDrift("orders", "the 30d before the window", "t0", "t1", ref.num_rows, cur.num_rows)
    report.kinds = {"amount": "numeric", "status": "categorical"}
    for name, kind in report.kinds.items():
        report.scores += score_feature(name, kind, ref.column(name), cur.column(name), SPEC)
    assert report.drifting == ["amount"]
    page = tmp_path / "drift.html"
    write_html([(report, Sample(ref, None, None, "r"), Sample(cur, None, None, "c"))], page)

    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    assert browser, "chromium-headless-shell is missing: ./dev.sh test installs it (Debian package)"
    shot = tmp_path / "drift.png"
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=800,1400",
    ]
    subprocess.run(
        [*args, f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120
    )
    dom = subprocess.run(
        [*args, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    # The drifting feature comes first, flagged; both series are drawn as bars.
    assert dom.index('data-feature="amount"') < dom.index('data-feature="status"')
    assert "amount - DRIFT" in dom

    pixels = Image.open(shot).convert("RGB")
    colours = {c for _, c in pixels.getcolors(maxcolors=1 << 20) or []}
    counts = dict((c, n) for n, c in pixels.getcolors(maxcolors=1 << 20) or [])
    assert _rgb(_REF) in colours and _rgb(_CUR) in colours
    assert counts[_rgb(_REF)] > 500 and counts[_rgb(_CUR)] > 500  # bars, not only the legend's text
