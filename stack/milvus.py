"""A local Milvus (milvus-lite's gRPC server, from PyPI) as an online store: ``featurectl stack up --with
milvus``, or by itself when feature_store.yaml's online store is ``stores.milvus.feast.MilvusOnlineStore``.

Bound to 127.0.0.1 (milvus-lite has no authentication: a server for one host; production runs a Milvus
standalone or cluster, docker-compose.yml shows one), its data in the data directory, so a restart keeps
the features. One process per data directory (milvus-lite locks it).
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from core import procs
from core.errors import FeatureCtlError
from core.settings import Settings

logger = logging.getLogger(__name__)


class MilvusServer:
    name = "milvus"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.data_dir / "milvus"
        self.daemon = procs.Daemon(
            self.name,
            self.home / "milvus.pid",
            settings.data_dir / "logs" / "milvus.log",
            str(self.home / "data"),  # in its command line: the marker
        )

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.settings.milvus_port}"

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
        procs.ensure_port_free(self.settings.milvus_port, self.name, "FEATURECTL_MILVUS_PORT")
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        argv = [
            sys.executable, "-m", "milvus_lite", "server",
            "--data-dir", str(self.home / "data"),
            "--host", "127.0.0.1",
            "--port", str(self.settings.milvus_port),
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
            with socket.create_connection(("127.0.0.1", self.settings.milvus_port), timeout=2):
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

    def wipe(self) -> None:
        import shutil

        shutil.rmtree(self.home, ignore_errors=True)
