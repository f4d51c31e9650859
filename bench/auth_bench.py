"""What authentication costs a lookup: `featurectl serve` with feature_store.yaml's ``auth: type: oidc`` (tokens
from the project's Keycloak, checked against its keys; feature_repo/permissions.py) beside the same server without
``auth:``, and Feast's own app with the same ``auth:`` (the anchor), in one run. wrk posts lookups of 3 personal
features (customer_profile, which needs the role pii-reader) of 1 and of 100 random customers among ``--rows``,
with the model service's token, as fast as each server answers.

    .venv/bin/python bench/auth_bench.py [--rows 5000] [--seconds 10] [--connections 8] [--workers 2]

Needs only Keycloak (the local stack's, started if needed and stopped after if it was not running) and wrk; the
store is an SQLite copy of the feature repository in a temporary directory. Compare figures within one run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml
from feast import FeatureStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serving_bench import load
from core.ports import free_port
from core.settings import PROJECT_ROOT, load_settings
from services.system import ensure_command
from serving.feature_server import FeatureServer
from stack.keycloak import SERVER_CLIENT, Keycloak
from stores.repository import copy_repo, feast_apply


def repo_with(root: Path, name: str, keycloak: Keycloak | None) -> Path:
    """A copy of the feature repository, with ``auth:`` for ``keycloak`` when given, applied."""
    repo = copy_repo(PROJECT_ROOT / "feature_repo", root / name)
    path = repo / "feature_store.yaml"
    config = yaml.safe_load(path.read_text())
    if keycloak is not None:
        config["auth"] = {
            "type": "oidc",
            "client_id": SERVER_CLIENT,
            "auth_discovery_url": keycloak.discovery_url,
            "audience": SERVER_CLIENT,
            "issuer": keycloak.issuer,
        }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    feast_apply(repo)
    return repo


def fill(repo: Path, rows: int) -> None:
    now = pd.Timestamp(datetime.now(UTC))
    ids = list(range(1, rows + 1))
    FeatureStore(repo_path=str(repo)).write_to_online_store(
        "customer_profile",
        pd.DataFrame(
            {
                "customer_id": ids,
                "country": ["NL"] * rows,
                "segment": ["gold", "silver"] * (rows // 2) + ["gold"] * (rows % 2),
                "credit_limit": [float(i) for i in ids],
                "birth_date": [pd.Timestamp("1990-01-01", tz="UTC")] * rows,
                "email": ["h"] * rows,
                "event_timestamp": [now] * rows,
                "ingested_at": [now] * rows,
            }
        ),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ensure_command("wrk", "wrk")
    keycloak = Keycloak(load_settings())
    started = keycloak.pid() is None
    keycloak.start()
    keycloak.bootstrap()
    results: list[tuple[str, int, dict[str, float]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
            root = Path(tmp)
            secured, open_ = repo_with(root, "auth", keycloak), repo_with(root, "open", None)
            fill(secured, args.rows)
            fill(open_, args.rows)
            ids = list(range(1, args.rows + 1))
            cases = [
                (
                    f"featurectl serve --workers {args.workers}, auth: oidc",
                    secured,
                    "direct",
                    args.workers,
                    True,
                ),
                (f"featurectl serve --workers {args.workers}, no auth", open_, "direct", args.workers, False),
                ("feast serve (Feast's app), auth: oidc (the anchor)", secured, "feast", 1, True),
            ]
            for label, repo, lookups, workers, with_token in cases:
                server = FeatureServer(
                    repo,
                    "127.0.0.1",
                    free_port(),
                    log=root / f"{label[:12]}.log",
                    workers=workers,
                    lookups=lookups,
                )
                server.start()
                try:
                    for size in (1, 100):
                        # A fresh token per run: Keycloak's last 5 minutes.
                        headers = (
                            {"Authorization": f"Bearer {keycloak.token('model-service')}"}
                            if with_token
                            else {}
                        )
                        load(server.url, ids, size, 2, args.connections, root, headers=headers)  # warm-up
                        figures = load(
                            server.url, ids, size, args.seconds, args.connections, root, headers=headers
                        )
                        results.append((label, size, figures))
                        print(
                            f"{label}: {size} entit{'y' if size == 1 else 'ies'}: {figures['rps']:,.0f}/s "
                            f"p50 {figures['p50']:.2f} p99 {figures['p99']:.2f} ms, errors {figures['errors']:.0f}",
                            flush=True,
                        )
                finally:
                    server.stop()
    finally:
        if started:
            keycloak.stop()
    print()
    print(f"command: .venv/bin/python bench/auth_bench.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"wrk -t2 -c{args.connections} -d{args.seconds:g}s, 3 features of customer_profile (pii), SQLite store"
    )
    print("| server | entities/request | lookups/s | p50 | p90 | p99 | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, size, f in results:
        print(
            f"| {label} | {size} | {f['rps']:,.0f} | {f['p50']:.2f} ms | {f['p90']:.2f} ms | {f['p99']:.2f} ms "
            f"| {f['errors']:.0f} |"
        )
    if any(f["errors"] for _, _, f in results):
        sys.exit("errors: some lookups were refused or failed (see the table)")


if __name__ == "__main__":
    main()
