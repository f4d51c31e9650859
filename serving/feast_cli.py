"""Feast's own CLI, with its Prometheus metrics server where we ask for it.

Feast 0.67's ``feast serve --metrics`` always serves on port 8000 of every interface
(``feast.metrics.start_metrics_server(port=8000)``, ``_make_metrics_httpd`` binding "" or "::"). Run as
``python -m serving.feast_cli serve ... --metrics`` with FEAST_METRICS_ADDRESS=host:port, it serves
them on that address only.

``serve`` runs Feast's app wrapped by serving/fast_app.py (plain lookups answered directly; set
FEAST_SERVE_LOOKUPS=feast to leave every request to Feast's app, as the serving bench does to measure the
difference). Everything else is Feast's CLI as it is.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

ADDRESS_ENV = "FEAST_METRICS_ADDRESS"  # not FEATURECTL_*: featurectl rejects unknown settings of its prefix
LOOKUPS_ENV = "FEAST_SERVE_LOOKUPS"  # "direct" (default) or "feast"
REUSE_PORT_ENV = "FEAST_SERVE_REUSE_PORT"  # "1": bind with SO_REUSEPORT (several servers on one port)


def main() -> None:
    from feast import metrics
    from feast.cli.cli import cli

    address = os.environ.get(ADDRESS_ENV)
    if address:
        host, _, port = address.rpartition(":")

        def bind(port: int, app: Callable[..., Iterable[bytes]]) -> WSGIServer:
            handler: Any = metrics._QuietWSGIRequestHandler
            return make_server(host, port, app, handler_class=handler)

        # Looked up on the module at call time (feast/feature_server.py, feast/metrics.py), and inherited
        # by the metrics process Feast forks.
        metrics.start_metrics_server = functools.partial(metrics.start_metrics_server, port=int(port))
        metrics._make_metrics_httpd = bind
    if os.environ.get(LOOKUPS_ENV, "direct") != "feast":
        wrap_feast_app()
    if os.environ.get(REUSE_PORT_ENV) == "1":
        reuse_port()
    cli()


def reuse_port() -> None:
    """Make gunicorn bind Feast's server with SO_REUSEPORT (serving/feature_server.py runs several on a port)."""
    from feast import feature_server

    application = feature_server.FeastServeApplication
    load_config = application.load_config

    def with_reuse_port(self: Any) -> None:
        load_config(self)  # type: ignore[no-untyped-call]
        self.cfg.set("reuse_port", True)

    application.load_config = with_reuse_port  # type: ignore[method-assign]


def wrap_feast_app() -> None:
    """Make Feast's ``get_app`` return its app wrapped by serving/fast_app.py. Feast's server looks ``get_app`` up
    on its module when it builds the app (before gunicorn forks its workers), so each worker inherits it."""
    from feast import feature_server

    original = feature_server.get_app

    def get_app(store: Any, registry_ttl_sec: int = 5) -> Any:
        import gc

        from serving.fast_app import FastLookupApp

        app = FastLookupApp(original(store, registry_ttl_sec), store)
        # Feast and its dependencies leave ~1M long-lived objects; a full collection walks them all, a pause
        # of tens of ms in the middle of a lookup. Frozen, collections walk only what requests allocate.
        gc.collect()
        gc.freeze()
        return app

    feature_server.get_app = get_app


if __name__ == "__main__":
    main()
