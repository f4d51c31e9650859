"""The image (Dockerfile) and the deployment's feature repository settings (deploy/feature_store.yaml) agree with
featurectl itself: settings it knows, ports its commands listen on, the repository Feast loads. The image is
built and run for real in tests/integration/test_image.py; Compose and Kubernetes in test_compose.py and
test_kubernetes.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from feast.repo_config import load_repo_config

from core.settings import PROJECT_ROOT, SECRETS_DIR_VAR, Settings
from stores.registry import kinds

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
DEPLOYED = PROJECT_ROOT / "deploy" / "feature_store.yaml"
DEMO = PROJECT_ROOT / "feature_repo" / "feature_store.yaml"


def dockerfile_env() -> dict[str, str]:
    """The ENV instructions' variables (continued lines joined)."""
    text = DOCKERFILE.replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            found.update(re.findall(r"(\w+)=(\S+)", line))
    return found


def test_the_images_settings_are_featurectl_settings() -> None:
    env = dockerfile_env()
    for key in env:
        if key.startswith("FEATURECTL_") and key != SECRETS_DIR_VAR:
            assert key[11:].lower() in Settings.model_fields, key
    assert env[SECRETS_DIR_VAR] == "/run/secrets/featurectl"
    # A container's network is its own: its servers listen on every interface (published on loopback).
    assert env["FEATURECTL_SERVE_HOST"] == env["FEATURECTL_METRICS_HOST"] == "0.0.0.0"


def test_the_image_exposes_the_ports_its_commands_listen_on() -> None:
    (exposed,) = re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.M)
    ports = {int(p) for p in exposed.split()}
    defaults = Settings.model_construct()
    assert {defaults.serve_port, defaults.ui_port} <= ports
    assert 9464 in ports  # the metrics (and /healthz, /readyz) port the deployments give --metrics-port


def test_the_image_runs_unprivileged_under_an_init() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE, re.M)
    assert user and int(user[1]) >= 1000
    assert re.search(rf"useradd .*--uid {user[1]} ", DOCKERFILE.replace("\\\n", " "))
    assert '["tini", "--", "featurectl"]' in DOCKERFILE  # SIGTERM reaches featurectl; children are reaped
    assert "requirements-model.txt" in DOCKERFILE and (PROJECT_ROOT / "requirements-model.txt").exists()


def test_the_build_context_leaves_out_state_and_secrets() -> None:
    ignored = set((PROJECT_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".stack", "feature_repo/data", "featurectl.env", "*.secrets.env"} <= ignored


def test_the_deployed_repository_differs_from_the_demo_in_its_online_store_only() -> None:
    deployed = yaml.safe_load(DEPLOYED.read_text())
    demo = yaml.safe_load(DEMO.read_text())
    assert {k: v for k, v in deployed.items() if k != "online_store"} == {
        k: v for k, v in demo.items() if k != "online_store"
    }
    online = deployed["online_store"]
    (kind,) = [k for k in kinds() if online["type"] in k.types]
    assert kind.many_hosts, "processors and servers on many hosts share the online store"
    defaults = Settings.model_construct()
    assert (online["database"], online["user"]) == (defaults.online_pg_database, defaults.online_pg_user)
    assert online["password"] == "${FEATURECTL_ONLINE_PG_PASSWORD}", "never a password in the file"


def test_feast_loads_the_deployed_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURECTL_ONLINE_PG_PASSWORD", "from-a-secret-file")
    config = load_repo_config(tmp_path, DEPLOYED)
    assert config.online_store.host == "online-postgres"
    assert config.online_store.password == "from-a-secret-file"


def test_kubernetes_mounts_the_same_repository_settings() -> None:
    assert (
        PROJECT_ROOT / "deploy" / "kubernetes" / "base" / "feature_store.yaml"
    ).read_text() == DEPLOYED.read_text()


def test_the_deploy_page_shows_the_commands_the_tests_run() -> None:
    from stack.image import RUN_FLAGS
    from tests.unit.test_compose import COMMANDS

    page = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    product = next(c for c in COMMANDS if c.profile == "product")
    assert f"{product.export_line}\n{product.command}\n" in page
    assert "featurectl stack image" in page and "docker build -t featurectl ." in page
    assert " ".join(RUN_FLAGS) in page  # tests/integration/test_image.py runs its containers with them
    for overlay in (PROJECT_ROOT / "deploy" / "kubernetes" / "overlays").iterdir():
        assert f"kubectl apply -k deploy/kubernetes/overlays/{overlay.name}" in page, overlay.name
