"""Serving over HTTP: `featurectl serve` (the Feast feature server) reads what the processor writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import psutil
import psycopg
import pytest
import requests

from core import procs
from core.ports import free_port
from core.settings import PROJECT_ROOT
from tests.integration.conftest import SCALAR_STORES, StackHandle
from tests.integration.helpers import wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor import insert_customer

FEATURES = ["customer_profile:segment", "customer_profile:credit_limit"]


def start_server(platform: Platform, metrics_port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    metrics = ["--metrics-port", str(metrics_port)] if metrics_port else []
    log = open(platform.root / "serve.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from featurectl.cli import main; main()",
            "serve",
            "--port",
            str(port),
            *metrics,
        ],
        env={**os.environ, **platform.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (platform.root / "serve.log").read_text()
        try:
            return requests.get(f"{url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, 120, "the feature server")
    return proc, url


def online(url: str, ids: list[int]) -> dict[str, Any]:
    r = requests.post(
        f"{url}/get-online-features", json={"features": FEATURES, "entities": {"customer_id": ids}}, timeout=5
    )
    r.raise_for_status()
    body = r.json()
    return {
        name: list(zip(res["values"], res["statuses"], strict=True))
        for name, res in zip(body["metadata"]["feature_names"], body["results"], strict=True)
    }


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM (featurectl serve then stops its `feast serve` and ships its served log), SIGKILL if it does not
    exit in 90 s (its own stop allows the log shipper 60 s)."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(90)
        except subprocess.TimeoutExpired:
            server.kill()


@SCALAR_STORES
def test_http_lookups_see_changes_while_the_processor_writes(
    stack: StackHandle, platform: Platform, request: pytest.FixtureRequest
) -> None:
    platform.start_processor()
    metrics_port = free_port()
    server, url = start_server(platform, metrics_port)
    request.addfinalizer(lambda: stop_server(server))  # a failing assertion leaves no server running
    with psycopg.connect(stack.app, autocommit=True) as conn:
        cid = insert_customer(conn, "silver", 120.0)
        wait_until(
            lambda: online(url, [cid])["segment"] == [("silver", "PRESENT")], 60, "the insert over HTTP"
        )
        conn.execute("UPDATE customers SET segment = 'gold', credit_limit = 800 WHERE id = %s", (cid,))
        wait_until(lambda: online(url, [cid])["segment"] == [("gold", "PRESENT")], 60, "the update over HTTP")
    assert online(url, [cid])["credit_limit"] == [(800.0, "PRESENT")]

    # Feast's own server metrics, on the port asked for (Feast alone would use 8000 on every interface).
    served = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert 'feast_feature_server_request_total{endpoint="/get-online-features",status="success"}' in served

    # An unknown entity is an answer, not an error.
    missing = online(url, [cid, 10**12])
    assert missing["segment"] == [("gold", "PRESENT"), (None, "NOT_FOUND")]

    # Malformed requests: 4xx with the reason.
    bad_json = requests.post(
        f"{url}/get-online-features",
        data="{not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert bad_json.status_code == 422 and "JSON decode error" in bad_json.text
    unknown_view = requests.post(
        f"{url}/get-online-features",
        json={"features": ["no_such_view:x"], "entities": {"customer_id": [cid]}},
        timeout=5,
    )
    assert unknown_view.status_code == 404 and "no_such_view does not exist" in unknown_view.text

    # The example model service fetches a request's features from the server and scores them.
    example = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "examples" / "model_service.py"),
            "--server",
            url,
            "--customer",
            str(cid),
            "--product",
            str(10**12),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert example.returncode == 0, example.stderr
    answer = json.loads(example.stdout)
    assert answer["features"]["segment"] == "gold" and answer["features"]["price"] is None
    assert 0.0 <= answer["score"] <= 1.0

    # Past Feast's default --max-requests (1000 + jitter) the same worker still answers: it is never
    # recycled, so no lookup waits for a new worker to import Feast (seconds on a busy host).
    def workers() -> set[int]:
        """The server processes (not the served-log shipper beside them, which runs at normal priority)."""
        return {
            p.pid
            for p in psutil.Process(server.pid).children(recursive=True)
            if p.status() != "zombie" and "serving.log_shipper" not in " ".join(p.cmdline())
        }

    before = workers()
    # Lookups never wait behind ingest for a core: the feature server and its worker run real-time
    # (settings.serving_rt_priority; CI runs as root), as does the local Redis a lookup waits on.
    assert before and all(procs.is_realtime(pid) for pid in before)
    if platform.online_store == "redis":
        redis_pid = request.getfixturevalue("local_redis").server.pid()
        assert redis_pid and procs.is_realtime(redis_pid)
    session = requests.Session()
    for i in range(1100):
        r = session.post(
            f"{url}/get-online-features",
            json={"features": FEATURES, "entities": {"customer_id": [cid + i % 3]}},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    assert workers() == before

    server.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0
