"""The Milvus store's local server, milvus-lite's gRPC server (from PyPI): ``featurectl stack up --with
milvus``, or by itself when feature_store.yaml's online store is ``stores.milvus.feast.MilvusOnlineStore``
at this server's port (``declares_local``).

Bound to 127.0.0.1 (milvus-lite has no authentication: a server for one host; production runs a Milvus
standalone or cluster, docker-compose.yml shows one), its data in the data directory, so a restart keeps
the features. One process per data directory (milvus-lite locks it).
"""

from __future__ import annotations

import logging
import shutil
import socket
import sys
from collections.abc import Mapping
from typing import Any

from core import procs
from core.errors import FeatureCtlError
from core.settings import Settings, store_settings
from stores.milvus.settings import MilvusStoreSettings

logger = logging.getLogger(__name__)


class MilvusServer:
    """A LocalServer (stores/local.py). Its namespaces are Milvus databases."""

    name = "milvus"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = store_settings(settings, MilvusStoreSettings).milvus_port
        self.home = settings.data_dir / "milvus"
        self.daemon = procs.Daemon(
            self.name,
            self.home / "milvus.pid",
            settings.data_dir / "logs" / "milvus.log",
            str(self.home / "data"),  # in its command line: the marker
        )

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return self.uri

    def ensure_installed(self) -> None:
        try:
            import milvus_lite  # noqa: F401
            import pymilvus  # noqa: F401
        except ImportError as exc:
            raise FeatureCtlError(
                f"the Milvus online store needs {exc.name}",
                "featurectl stack install --with milvus (or pip install -e '.[milvus]')",
            ) from None

    def pid(self) -> int | None:
        return self.daemon.pid()

    def start(self) -> None:
        self.ensure_installed()
        if self.pid() is not None:
            logger.info("milvus: already running (pid %s)", self.pid())
            return
        procs.ensure_port_free(self.port, self.name, "FEATURECTL_MILVUS_PORT")
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        argv = [
            sys.executable, "-m", "milvus_lite", "server",
            "--data-dir", str(self.home / "data"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        pid = procs.spawn(self.daemon, argv)
        procs.wait_for(
            self.ready,
            self.settings.startup_timeout_s,
            "milvus to answer",
            check=lambda: procs.died_check(self.daemon, pid),
        )
        logger.info("milvus: ready on %s", self.uri)

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                pass
        except OSError:
            return False
        try:
            from pymilvus import MilvusClient

            client = MilvusClient(uri=self.uri, timeout=5)
            try:
                client.list_collections()
            finally:
                client.close()
            return True
        except Exception:
            return False

    def client(self, db_name: str | None = None, wait_s: float = 60.0) -> Any:
        """A client of this server, once it answers (polled up to ``wait_s``: milvus-lite, a Python process,
        can stall for seconds on a busy 2-core host, and one 5-second connect is not a verdict)."""
        from pymilvus import MilvusClient

        procs.wait_for(self.ready, wait_s, "milvus to answer")
        return MilvusClient(uri=self.uri, timeout=30, **({"db_name": db_name} if db_name else {}))

    def stop(self) -> bool:
        return procs.stop(self.daemon)

    def bootstrap(self) -> None:
        """Nothing to create: milvus-lite has no users, and each repository names its database."""

    def wipe(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def online_store(self, namespace: str) -> str:
        client = self.client()
        try:
            if namespace not in client.list_databases():
                client.create_database(namespace)
        finally:
            client.close()
        return (
            "online_store:\n  type: stores.milvus.feast.MilvusOnlineStore\n"
            f"  host: http://127.0.0.1\n  port: {self.port}\n"
            f"  db_name: {namespace}\n  vector_enabled: true\n"
        )

    def empty(self, namespace: str) -> None:
        client = self.client(namespace)
        try:
            for name in client.list_collections():
                key = next(
                    f["name"] for f in client.describe_collection(name)["fields"] if f.get("is_primary")
                )
                client.delete(name, filter=f'{key} != ""')
        finally:
            client.close()

    def drop(self, namespace: str) -> None:
        client = self.client(namespace)
        try:
            for collection in client.list_collections():
                client.drop_collection(collection)
        finally:
            client.close()
        client = self.client()
        try:
            client.drop_database(namespace)
        finally:
            client.close()


def declares_local(settings: Settings, online: Mapping[str, Any]) -> bool:
    """Whether feature_store.yaml's ``online_store:`` (``online``) is this machine's milvus-lite: its address (a
    uri, or Feast's host and port, 19530 by default) at the local port; anything else is the user's own Milvus."""
    port = store_settings(settings, MilvusStoreSettings).milvus_port
    address = str(online.get("uri") or f"{online.get('host', '')}:{online.get('port', 19530)}")
    return address.replace("localhost", "127.0.0.1").endswith(f"127.0.0.1:{port}")
