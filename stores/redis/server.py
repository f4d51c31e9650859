"""The Redis store's local server, Debian's redis-server: ``featurectl stack up --with redis``.

Bound to 127.0.0.1 with a generated password (``requirepass``), append-only persistence in the data
directory, so a restart keeps the features.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
from pathlib import Path

from core import procs
from core.errors import FeatureCtlError
from core.settings import Settings, store_settings
from services import system
from stores.redis.settings import RedisStoreSettings

logger = logging.getLogger(__name__)


class RedisServer:
    """A LocalServer (stores/local.py). Its namespaces are Redis's numbered databases."""

    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = store_settings(settings, RedisStoreSettings).redis_port
        self.home = settings.data_dir / "redis"
        # Redis rewrites its process title to "redis-server 127.0.0.1:<port>": that is the marker.
        self.daemon = procs.Daemon(
            self.name,
            self.home / "redis.pid",
            settings.data_dir / "logs" / "redis.log",
            f"127.0.0.1:{self.port}",
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ensure_installed(self) -> None:
        system.ensure_command("redis-server", "redis-server")

    def pid(self) -> int | None:
        return self.daemon.pid()

    def _config(self) -> Path:
        conf = self.home / "redis.conf"
        password = self.settings.require_secret("redis_password")
        conf.write_text(
            "# written by featurectl stack up; edits are overwritten\n"
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\n"
            f"dir {self.home}\n"
            "appendonly yes\nappendfsync everysec\nsave ''\n"
            f'requirepass "{password}"\n'
            "daemonize no\n"
        )
        conf.chmod(0o600)  # holds the password
        return conf

    def start(self) -> None:
        self.ensure_installed()
        if self.pid() is not None:
            logger.info("redis: already running (pid %s)", self.pid())
            return
        procs.ensure_port_free(self.port, self.name, "FEATURECTL_REDIS_PORT")
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        (self.settings.data_dir / "logs").mkdir(exist_ok=True)
        conf = self._config()
        # Every lookup of a Redis online store waits on this one thread: real-time, so a lookup never
        # waits behind ingest for a core (core/procs.py, settings.serving_rt_priority).
        pid = procs.spawn(
            self.daemon, ["redis-server", str(conf)], rt_priority=self.settings.serving_rt_priority
        )
        procs.wait_for(
            self.ready,
            self.settings.startup_timeout_s,
            "redis to answer PING",
            check=lambda: procs.died_check(self.daemon, pid),
        )
        logger.info("redis: ready on 127.0.0.1:%d", self.port)

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                password = self.settings.require_secret("redis_password")
                sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
                reply = b""
                while b"PONG" not in reply and len(reply) < 200:
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    reply += chunk
                return b"PONG" in reply
        except (OSError, FeatureCtlError):
            return False

    def stop(self) -> bool:
        return procs.stop(self.daemon)

    def bootstrap(self) -> None:
        """Nothing to create: the password is the server's own (requirepass)."""

    def wipe(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def online_store(self, namespace: str) -> str:
        return (
            "online_store:\n  type: stores.redis.feast.RedisOnlineStore\n"
            f"  connection_string: 127.0.0.1:{self.port},db={database(namespace)},"
            "password=${FEATURECTL_REDIS_PASSWORD}\n"
        )

    def empty(self, namespace: str) -> None:
        import redis

        password = self.settings.require_secret("redis_password")
        with redis.Redis(port=self.port, db=database(namespace), password=password) as client:
            client.flushdb()

    def drop(self, namespace: str) -> None:
        self.empty(namespace)  # a numbered database always exists

    def connection_string(self) -> str:
        """Feast's ``connection_string`` for this server (password from the secrets)."""
        return f"127.0.0.1:{self.port},password={self.settings.require_secret('redis_password')}"


def database(namespace: str) -> int:
    """The database of ``namespace``: its number, or one of 2-15 picked by its name (0 and 1: numbered uses)."""
    if namespace.isdigit():
        return int(namespace)
    return int(hashlib.sha256(namespace.encode()).hexdigest(), 16) % 14 + 2
