"""A PostgreSQL cluster of the project's own: its directory, port and OS user, started with ``pg_ctl``.

Not the system cluster. Where its directory is and which OS user runs the server is decided in
``services.pg_location`` (as root: the ``postgres`` OS user, in a directory it can reach, linked from the
data directory). Subclasses say what it is for: the CDC source (stack/postgres.py), the Postgres online
store (stores/postgres/server.py).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psycopg

from core import procs
from core.errors import FeatureCtlError
from core.settings import Settings
from services import system
from services.pg_location import OWNER_FILE, ClusterPlan, first_untraversable, plan_cluster

logger = logging.getLogger(__name__)


class PostgresCluster:
    """A local Postgres cluster. Constructing it touches nothing; ``start`` does the work.

    A subclass names it (``name``: its directory under the data directory), its port (``port`` and the
    setting that moves it, ``port_setting``), its superuser's secret (``admin_secret``) and its
    postgresql.conf lines (``_server_settings``)."""

    name = "postgres"
    port_setting = "FEATURECTL_PG_PORT"
    admin_secret = "pg_admin_password"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._plan: ClusterPlan | None = None

    @property
    def bin(self) -> Path:
        return Path(f"/usr/lib/postgresql/{self.settings.postgres_version}/bin")

    @property
    def port(self) -> int:
        return self.settings.pg_port

    # --- where it lives ------------------------------------------------------------------------
    @property
    def plan(self) -> ClusterPlan:
        """Where the cluster is (decided once per object, so a new cluster keeps one id)."""
        if self._plan is None:
            self._plan = plan_cluster(
                self.settings.data_dir, self.settings.pg_clusters_dir, os.geteuid(), entry_name=self.name
            )
        return self._plan

    @property
    def home(self) -> Path:
        return self.plan.home

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    # --- process -------------------------------------------------------------------------------
    def pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        return procs.Daemon(self.name, pid_file, self.log_file, str(self.data)).pid()

    def ensure_installed(self) -> None:
        if not (self.bin / "postgres").exists():
            system.apt_install(f"postgresql-{self.settings.postgres_version}")

    def _as_owner(self, argv: Sequence[str]) -> list[str]:
        user = self.plan.os_user
        return ["runuser", "-u", user, "--", *argv] if user else list(argv)

    def _run(self, argv: Sequence[str], what: str) -> None:
        # cwd: the server's own directory, since the postgres OS user may not enter the caller's.
        result = subprocess.run(self._as_owner(argv), capture_output=True, text=True, cwd=self.home)
        if result.returncode != 0:
            raise FeatureCtlError(
                f"{what} failed:\n{(result.stdout + result.stderr)[-2000:]}\nlog: {procs.log_tail(self.log_file)}",
                f"see {self.log_file}",
            )

    def _chown(self, path: Path) -> None:
        user = self.plan.os_user
        if user:
            pw = pwd.getpwnam(user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _can_enter(self, directory: Path) -> bool:
        """Whether the server's OS user may traverse ``directory`` (ACLs included: the kernel decides)."""
        if self.plan.os_user is None:
            return os.access(directory, os.X_OK)
        return (
            subprocess.run(self._as_owner(["test", "-x", str(directory)]), capture_output=True).returncode
            == 0
        )

    def prepare_home(self) -> None:
        """Check that the cluster's directory can work, then create it; errors come before any change.

        Raises FeatureCtlError naming the path, the reason and the fix when the server's OS user is
        missing, cannot reach the directory, or the directory belongs to another data directory.
        """
        plan = self.plan
        if plan.os_user:
            try:
                pwd.getpwnam(plan.os_user)
            except KeyError:
                raise FeatureCtlError(
                    f"Postgres refuses to run as root, and there is no {plan.os_user!r} OS user to run it as",
                    f"install the Debian package postgresql-{self.settings.postgres_version} (it creates the "
                    f"user), or create it: useradd --system --home-dir /var/lib/postgresql {plan.os_user}",
                ) from None
        blocked = first_untraversable(plan.home.parent if plan.relocated else plan.home, self._can_enter)
        if blocked is not None:
            who = f"the {plan.os_user!r} OS user" if plan.os_user else "you"
            fix = (
                f"set FEATURECTL_PG_CLUSTERS_DIR to a directory under a path {who} can traverse "
                "(the default /var/lib/featurectl/postgres is)"
                if plan.relocated
                else f"run as root, or set FEATURECTL_DATA_DIR to a directory {who} can use"
                if plan.os_user is None
                else f"move the cluster out: `featurectl stack down --wipe` (deletes its data), then "
                f"`featurectl stack up` creates a new one under {self.settings.pg_clusters_dir}"
            )
            raise FeatureCtlError(
                f"the Postgres cluster directory {plan.home} is unreachable: {who} cannot enter {blocked}",
                fix,
            )
        if plan.relocated:
            self._check_owner()
        try:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            # Parents made here are 0755 whatever the umask: the server's OS user must traverse them.
            for missing in reversed([p for p in plan.home.parents if not p.exists()]):
                missing.mkdir()
                missing.chmod(0o755)
            plan.home.mkdir(exist_ok=True)
        except PermissionError as exc:
            raise FeatureCtlError(
                f"cannot create the Postgres cluster directory {plan.home}: {exc.strerror} ({exc.filename})",
                "set FEATURECTL_DATA_DIR (or, as root, FEATURECTL_PG_CLUSTERS_DIR) to a directory you can write",
            ) from None
        self._chown(plan.home)
        plan.home.chmod(0o700)
        blocked = first_untraversable(plan.home, self._can_enter)
        if blocked is not None:  # e.g. an existing FEATURECTL_PG_CLUSTERS_DIR made 0700 by someone
            raise FeatureCtlError(
                f"the {plan.os_user or 'current'} OS user cannot enter {blocked}, on the way to the "
                f"Postgres cluster directory {plan.home}",
                f"make {blocked} traversable (chmod o+x) or set FEATURECTL_PG_CLUSTERS_DIR elsewhere",
            )
        if plan.link is not None:
            (plan.home / OWNER_FILE).write_text(f"{self.settings.data_dir.absolute()}\n")
            if not plan.link.is_symlink():
                # A directory left by a start that failed before it had a cluster (plan_cluster keeps
                # one that has): nothing to keep but an old log.
                shutil.rmtree(plan.link, ignore_errors=True)
                plan.link.symlink_to(plan.home, target_is_directory=True)
                logger.info("%s: cluster directory %s (linked from %s)", self.name, plan.home, plan.link)

    def _check_owner(self) -> None:
        """Refuse a cluster that another data directory links to (a copied data directory)."""
        owner_file = self.home / OWNER_FILE
        if not owner_file.exists():
            return
        owner = Path(owner_file.read_text().strip())
        mine = self.settings.data_dir.absolute()
        other_link = owner / self.name
        if owner != mine and other_link.is_symlink() and other_link.resolve() == self.home:
            raise FeatureCtlError(
                f"the Postgres cluster {self.home} belongs to the data directory {owner}, "
                f"and {mine / self.name} links to it too (a copy of that data directory?)",
                f"remove the link {mine / self.name} to give {mine} a cluster of its own, "
                f"or use FEATURECTL_DATA_DIR={owner}",
            )

    def init_cluster(self, admin_password: str) -> None:
        """initdb once: scram passwords on TCP, peer auth on the private Unix socket."""
        if (self.data / "PG_VERSION").exists():
            return
        pwfile = self.home / ".initdb-pw"
        pwfile.write_text(admin_password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            logger.info("%s: initdb %s", self.name, self.data)
            self._run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.settings.pg_admin_user,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\ninclude_if_exists = 'featurectl.conf'\n")

    def write_config(self) -> None:
        """Rewritten on every start, so a changed port setting takes effect."""
        run_dir = self.home / "run"
        run_dir.mkdir(exist_ok=True)
        self._chown(run_dir)
        conf = self.data / "featurectl.conf"
        conf.write_text(
            "# written by featurectl stack up; edits are overwritten\n"
            f"port = {self.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{run_dir}'\n" + self._server_settings()
        )
        self._chown(conf)

    def _server_settings(self) -> str:
        """postgresql.conf lines of this cluster's role."""
        return "log_min_messages = warning\nlog_connections = off\n"

    def start(self) -> None:
        self.ensure_installed()
        if self.pid() is not None:
            logger.info("%s: already running (pid %s)", self.name, self.pid())
            return
        procs.ensure_port_free(self.port, self.name, self.port_setting)
        admin_password = self.settings.require_secret(self.admin_secret)
        self.prepare_home()
        self.init_cluster(admin_password)
        self.write_config()
        timeout = str(int(self.settings.startup_timeout_s))
        # -w makes pg_ctl poll the server until it accepts connections (a probe, not a sleep).
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                timeout,
                "start",
            ],
            "pg_ctl start",
        )
        logger.info("%s: accepting connections on 127.0.0.1:%d", self.name, self.port)

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], "pg_ctl stop")
        return True

    def wipe(self) -> None:
        """Delete the cluster (stop it first). A cluster another data directory owns is only unlinked."""
        plan = self.plan
        if plan.link is not None and plan.link.is_symlink():
            owner_file = plan.home / OWNER_FILE
            owner = owner_file.read_text().strip() if owner_file.exists() else ""
            if owner == str(self.settings.data_dir.absolute()):
                shutil.rmtree(plan.home, ignore_errors=True)
            else:
                logger.warning(
                    "%s: %s belongs to %s; removing only the link", self.name, plan.home, owner or "?"
                )
            plan.link.unlink()
        else:
            shutil.rmtree(plan.home, ignore_errors=True)
        self._plan = None

    # --- connecting ------------------------------------------------------------------------------
    def admin_conninfo(self, dbname: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.settings.pg_host,
            port=self.port,
            dbname=dbname,
            user=self.settings.pg_admin_user,
            password=self.settings.require_secret(self.admin_secret),
            connect_timeout=5,
        )

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.admin_conninfo()) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False
