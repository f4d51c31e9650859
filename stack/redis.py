"""A local Redis (Debian's redis-server) as an online store: ``featurectl stack up --with redis``.

Bound to 127.0.0.1 with a generated password (``requirepass``), append-only persistence in the data
directory, so a restart keeps the features.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from core import procs
from core.errors import FeatureCtlError
from core.settings import Settings
from stack import system

logger = logging.getLogger(__name__)


class RedisServer:
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.data_dir / "redis"
        # Redis rewrites its process title to "redis-server 127.0.0.1:<port>": that is the marker.
        self.daemon = procs.Daemon(
            self.name,
            self.home / "redis.pid",
            settings.data_dir / "logs" / "redis.log",
            f"127.0.0.1:{settings.redis_port}",
        )

    def ensure_installed(self) -> None:
        system.ensure_command("redis-server", "redis-server")

    def pid(self) -> int | None:
        return self.daemon.pid()

    def _config(self) -> Path:
        conf = self.home / "redis.conf"
        password = self.settings.require_secret("redis_password")
        conf.write_text(
            "# written by featurectl stack up; edits are overwritten\n"
            f"port {self.settings.redis_port}\nbind 127.0.0.1\nprotected-mode yes\n"
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
        procs.ensure_port_free(self.settings.redis_port, self.name, "FEATURECTL_REDIS_PORT")
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
        logger.info("redis: ready on 127.0.0.1:%d", self.settings.redis_port)

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.settings.redis_port), timeout=2) as sock:
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

    def wipe(self) -> None:
        import shutil

        shutil.rmtree(self.home, ignore_errors=True)

    def connection_string(self) -> str:
        """Feast's ``connection_string`` for this server (password from the secrets)."""
        return (
            f"127.0.0.1:{self.settings.redis_port},password={self.settings.require_secret('redis_password')}"
        )
