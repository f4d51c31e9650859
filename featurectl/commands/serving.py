"""`featurectl serve` and `featurectl ui`: Feast's feature server and web UI."""

from __future__ import annotations

from pathlib import Path

import click

from core.errors import FeatureCtlError
from featurectl.options import (
    METRICS_PORT,
    run_server,
    settings_of,
)


@click.command("serve")
@click.option("--host", default=None, help="Listen address (default FEATURECTL_SERVE_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default FEATURECTL_SERVE_PORT, 6566).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes (default FEATURECTL_SERVE_WORKERS, 1); one per core serves the most lookups.",
)
@METRICS_PORT
@click.pass_context
def serve_cmd(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the Feast feature server over the feature repository, in the foreground.

    It serves the online store the processor writes, while it writes. Plain lookups (features and entity
    keys) are answered directly, with Feast's answer; everything else by Feast's own app (docs/serving.md).
    Ctrl-C/SIGTERM stops it.
    """
    from serving.feature_server import FeatureServer

    settings = settings_of(ctx)
    server = FeatureServer(
        settings.feature_repo,
        host or settings.serve_host,
        port or settings.serve_port,
        metrics_port=ctx.meta.get("metrics_port"),  # Feast's own server metrics, on the same address
        rt_priority=settings.serving_rt_priority,
        workers=workers or settings.serve_workers,
        tls=_tls(settings.serve_tls_key, settings.serve_tls_cert),
    )
    run_server(
        server,
        f"feature server ready at {server.url} (repo {settings.feature_repo})\n"
        f"  curl -s -X POST {server.url}/get-online-features -H 'Content-Type: application/json' "
        """-d '{"features": ["customer_profile:segment"], "entities": {"customer_id": [1]}}'""",
    )


def _tls(key: Path | None, cert: Path | None) -> tuple[Path, Path] | None:
    if (key is None) != (cert is None):
        raise FeatureCtlError(
            "TLS needs both the private key and the certificate: only "
            f"{'FEATURECTL_SERVE_TLS_KEY' if key else 'FEATURECTL_SERVE_TLS_CERT'} is set",
            "set both FEATURECTL_SERVE_TLS_KEY and FEATURECTL_SERVE_TLS_CERT, or neither (plain HTTP)",
        )
    return (key, cert) if key is not None and cert is not None else None


@click.command("ui")
@click.option("--host", default=None, help="Listen address (default FEATURECTL_UI_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default FEATURECTL_UI_PORT, 8888).")
@click.pass_context
def ui_cmd(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run Feast's web UI over the feature repository, in the foreground (run `feast apply` first).

    It lists the feature views, entities and sources of the registry, with their tags. Ctrl-C/SIGTERM stops it.
    """
    from serving.feature_server import FeastUi

    settings = settings_of(ctx)
    server = FeastUi(settings.feature_repo, host or settings.ui_host, port or settings.ui_port)
    run_server(server, f"Feast UI ready: open {server.url} in a browser (repo {settings.feature_repo})")


COMMANDS = [serve_cmd, ui_cmd]
