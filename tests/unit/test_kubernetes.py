"""deploy/kubernetes/ cannot be applied here (no cluster): each overlay is rendered by kustomize's own API (the
library `kubectl apply -k` embeds) and every object it renders is decoded strictly by Kubernetes' own Go types
(tests/unit/k8s_loader/, built with Go: unknown or duplicate fields, wrong types and unknown kinds fail), then
checked against featurectl itself: its settings, its commands and ports, its secrets, the local broker's
partitions, the image's user.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from connectors.definition import DEFAULT_CONNECTOR
from core.errors import ConfigError
from core.settings import PROJECT_ROOT, Settings, load_settings
from stack.go import K8S_LOADER_GO_MOD, find_go
from stack.jars import JvmJars
from stack.kafka import KafkaBroker
from tests.unit.cli_args import parse_featurectl

K8S = PROJECT_ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
DEFAULTS = Settings.model_construct()
SECRET_FIELDS = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
WORKLOADS = ("Deployment", "Job", "CronJob")
IMAGE_UID = int(re.search(r"^USER (\d+):", (PROJECT_ROOT / "Dockerfile").read_text(), re.M)[1])  # type: ignore[index]


@pytest.fixture(scope="session")
def k8s_load(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = find_go(load_settings(), K8S_LOADER_GO_MOD)
    assert go, (
        "`./dev.sh test` installs a Go that builds tests/unit/k8s_loader (or `.venv/bin/python -m stack.go`)"
    )
    binary = tmp_path_factory.mktemp("k8s") / "k8s-load"
    subprocess.run(
        [str(go), "build", "-o", str(binary), "."],
        cwd=K8S_LOADER_GO_MOD.parent,
        check=True,
        timeout=900,
        env={**__import__("os").environ, "GOTOOLCHAIN": "local"},
    )
    return binary


def checkout(tmp_path: Path) -> Path:
    """deploy/kubernetes/ copied, each overlay's secrets.env made from its example as a user would."""
    root = tmp_path / "kubernetes"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("secrets.env"))
    for example in root.glob("overlays/*/secrets.env.example"):
        lines = [
            f"{line}placeholder-{i}" if line.endswith("=") else line
            for i, line in enumerate(example.read_text().splitlines())
        ]
        example.with_name("secrets.env").write_text("\n".join(lines) + "\n")
    return root


def render(binary: Path, root: Path, overlay: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), str(root / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="session")
def rendered(k8s_load: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    root = checkout(tmp_path_factory.mktemp("deploy"))
    out = {}
    for overlay in OVERLAYS:
        done = render(k8s_load, root, overlay)
        assert done.returncode == 0, f"overlays/{overlay}: {done.stderr}"
        out[overlay] = json.loads(done.stdout)
    return out


def of_kind(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result: dict[str, Any] = spec["template"]["spec"]
    return result


def featurectl_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(workload)["containers"]
    assert container["name"] == "featurectl"
    return dict(container)


def settings_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [
        o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("featurectl-settings")
    ]
    data: dict[str, str] = config["data"]
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_decodes_strictly(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    kinds = {o["kind"] for o in rendered[overlay]}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "CronJob",
        "Job",
        "Secret",
        "NetworkPolicy",
    } <= kinds


def test_the_loader_refuses_a_field_kubernetes_does_not_have(k8s_load: Path, tmp_path: Path) -> None:
    """The decoding is strict: what `kubectl apply --validate=strict` refuses fails here too."""
    root = checkout(tmp_path)
    processor = root / "base" / "processor.yaml"
    processor.write_text(
        processor.read_text().replace("terminationGracePeriodSeconds:", "terminationGracePeriod:")
    )
    done = render(k8s_load, root, OVERLAYS[0])
    assert done.returncode == 1
    assert 'unknown field "spec.template.spec.terminationGracePeriod"' in done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_featurectl_settings_and_point_where_the_pods_mount(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[overlay]
    env = settings_map(objects)
    for key in list(__import__("os").environ):
        if key.startswith("FEATURECTL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FEATURECTL_SECRETS_DIR")  # the pods', absent on this host
    try:
        settings = load_settings()
    except ConfigError as exc:
        pytest.fail(f"overlays/{overlay} settings: {exc}")
    for workload in of_kind(objects, *WORKLOADS):
        mounts = {m["name"]: m["mountPath"] for m in featurectl_container(workload)["volumeMounts"]}
        assert mounts["secrets"] == env["FEATURECTL_SECRETS_DIR"], workload["metadata"]["name"]
        assert settings.data_dir.is_relative_to(mounts["data"]), "job locks and records on the shared volume"
        assert mounts["repo"] == "/app/feature_repo/feature_store.yaml"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_mounts_only_the_passwords_it_needs(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    (secret,) = of_kind(objects, "Secret")
    keys = set(secret["data"])
    assert all(k.startswith("FEATURECTL_") and k[11:].lower() in SECRET_FIELDS for k in keys), keys
    example = (K8S / "overlays" / overlay / "secrets.env.example").read_text()
    assert keys == set(re.findall(r"^(FEATURECTL_\w+)=", example, re.M))
    given: dict[str, set[str]] = {}
    for workload in of_kind(objects, *WORKLOADS):
        (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == "secrets"]
        assert volume["secret"]["secretName"] == secret["metadata"]["name"]
        for item in volume["secret"]["items"]:
            assert item["key"] == item["path"] and item["key"] in keys
            given.setdefault(item["key"], set()).add(workload["metadata"]["name"])
    assert given["FEATURECTL_PII_HASH_KEY"] == {"processor"}
    assert given["FEATURECTL_DEBEZIUM_PASSWORD"] == {"processor"}  # the source watch: the slot's WAL
    assert given["FEATURECTL_PG_APP_PASSWORD"] == {"verify"}
    assert "FEATURECTL_PG_ADMIN_PASSWORD" not in keys, "no pod is the source's superuser"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_a_featurectl_command_on_the_ports_it_declares(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    images = set()
    for workload in of_kind(rendered[overlay], *WORKLOADS):
        container = featurectl_container(workload)
        images.add(container["image"])
        args = container["args"]
        parse_featurectl(args)
        listening = {args[i + 1] for i, a in enumerate(args) if a in ("--port", "--metrics-port")}
        ports = {p["name"]: str(p["containerPort"]) for p in container.get("ports", [])}
        assert set(ports.values()) == listening, workload["metadata"]["name"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, (workload["metadata"]["name"], probe)
        annotations = workload["spec"].get("template", {}).get("metadata", {}).get("annotations", {})
        if "prometheus.io/port" in annotations:
            assert annotations["prometheus.io/port"] == args[args.index("--metrics-port") + 1]
    assert len(images) == 1, images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_processor_scales_to_the_partitions_and_stops_in_its_grace_period(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    processor = named(rendered[overlay], "Deployment", "processor")
    # The topics' partitions: what the connector creates them with (and the local broker's default).
    partitions = int(json.loads(DEFAULT_CONNECTOR.read_text())["config"]["topic.creation.default.partitions"])
    assert partitions == int(
        str(KafkaBroker(DEFAULTS, JvmJars(Path("/nonexistent"))).properties()["num.partitions"])
    )
    assert 1 <= processor["spec"]["replicas"] <= partitions, "copies past the partitions idle"
    assert processor["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = pod_spec(processor)
    # One batch (at most max_poll_interval_ms, 300 s, but seconds in practice) and a commit: the grace period
    # must cover a batch as the processor's own report measures it (docs/deploy.md); 60 s at least.
    assert spec["terminationGracePeriodSeconds"] >= 60
    container = featurectl_container(processor)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Liveness must not fail before the processor's own bound on a stuck loop (core/health.py).
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_feature_server_is_a_service_scaled_on_cpu_and_reachable_by_clients(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    server = named(objects, "Deployment", "feature-server")
    service = named(objects, "Service", "feature-server")
    assert service["spec"]["selector"].items() <= server["spec"]["template"]["metadata"]["labels"].items()
    hpa = named(objects, "HorizontalPodAutoscaler", "feature-server")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "feature-server",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert featurectl_container(server)["resources"]["requests"]["cpu"], "CPU utilisation needs a request"
    allowed = {
        p["port"]
        for policy in of_kind(objects, "NetworkPolicy")
        for rule in policy["spec"].get("ingress", [])
        for p in rule.get("ports", [])
    }
    assert {6566, 8888, 9464, 9465} <= allowed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_images_user_without_privileges(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    for workload in of_kind(rendered[overlay], *WORKLOADS):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == IMAGE_UID
        assert spec["serviceAccountName"] == "featurectl"
        context = featurectl_container(workload)["securityContext"]
        assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
        assert context["capabilities"]["drop"] == ["ALL"]
    (account,) = of_kind(rendered[overlay], "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_jobs_run_once_at_a_time_and_the_repository_is_the_deployed_one(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    names = set()
    for job in of_kind(objects, "CronJob"):
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        names.add(featurectl_container(job)["args"][0])
    assert names == {"materialize", "compact", "verify", "drift"}
    (repo,) = [
        o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("featurectl-repo")
    ]
    assert repo["data"]["feature_store.yaml"] == (PROJECT_ROOT / "deploy" / "feature_store.yaml").read_text()


def test_secret_fields_are_secrets() -> None:
    """The test's own premise: the settings it calls secret are SecretStr fields."""
    assert {"online_pg_password", "debezium_password", "pii_hash_key", "pg_app_password"} <= SECRET_FIELDS
