"""`featurectl ui`: Feast's web UI serves the repository's feature views with their CDC tags.

Needs only the Feast repository (registry and SQLite files), not the stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
from feast import FeatureStore

from core.settings import PROJECT_ROOT
from stores.repository import copy_repo, feast_apply
from tests.integration.helpers import wait_until
from tests.integration.test_serving import free_port


def test_feast_ui_lists_every_feature_view_with_its_cdc_tags(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    copy_repo(PROJECT_ROOT / "feature_repo", repo)
    feast_apply(repo)
    declared = {v.name: v.tags for v in FeatureStore(repo_path=str(repo)).list_feature_views()}
    assert declared, "the project's repository declares feature views"

    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from featurectl.cli import main; main()", "ui", "--port", str(port)],
            env={**os.environ, "FEATURECTL_FEATURE_REPO": str(repo)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            return "Feast UI ready" in log.read_text()

        wait_until(ready, 120, "featurectl ui to say it is ready")
        page = requests.get(url, timeout=5)
        assert page.status_code == 200 and 'id="root"' in page.text  # the React app
        projects = requests.get(f"{url}/projects-list.json", timeout=5).json()["projects"]
        assert [p["id"] for p in projects] == ["shop"]
        # What the UI's pages render: the registry through the REST API the server mounts.
        body = requests.get(f"{url}/api/v1/feature_views", params={"project": "shop"}, timeout=5).json()
        served = {v["spec"]["name"]: v["spec"].get("tags", {}) for v in body["featureViews"]}
        assert served == declared
        for name, tags in served.items():
            fed = (tags.get("cdc.table") and tags.get("cdc.key")) or (  # a row view, or an aggregation view
                tags.get("aggregation.table") and tags.get("aggregation.key")
            )
            assert fed, f"{name} lacks its cdc.* (or aggregation.*) tags: {tags}"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
