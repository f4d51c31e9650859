"""The project's image (Dockerfile), built here with podman, runs the product against the local stack.

The image is built once per session (`featurectl stack image`: a Debian base made from Debian's packages, since
no image registry is reachable; both cached by podman across runs), then the stream processor and the feature
server run from it as containers on the host's network (docs/deploy.md shows the same `podman run`), as the
image's unprivileged user, their passwords handed over as secret files: a row changed in Postgres is served by
the containerised server through the containerised processor, and SIGTERM to the processor's container
commits what it wrote, so nothing is left to replay twice.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

from core.settings import ENV_PREFIX, read_secrets_file
from stack.image import IMAGE, RUN_FLAGS, Podman, build
from streams.offsets import watermarks
from tests.integration.conftest import TEST_ENV, StackHandle
from tests.integration.helpers import unique, wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor import insert_customer
from tests.integration.test_serving import free_port

IMAGE_UID = 10001
"""The image's user (Dockerfile: USER 10001)."""
NEXT = "localhost/featurectl:next"
"""The "new" image of the upgrade: the same build under another tag (what changes is which container runs)."""
FEATURES = ["customer_profile:segment", "customer_profile:credit_limit"]


@pytest.fixture(scope="session")
def image(stack: StackHandle) -> tuple[Podman, str]:
    """The image, built from this checkout (layers cached by podman: a rebuild redoes only what changed)."""
    build(stack.settings, IMAGE)
    return Podman.ensure(stack.settings), IMAGE


@dataclass
class Container:
    podman: Podman
    name: str

    def logs(self) -> str:
        done = self.podman.run("logs", self.name, check=False)
        return (done.stdout or "") + (done.stderr or "")

    def running(self) -> bool:
        out = self.podman.run("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout
        return out.strip() == "true"

    def stop(self, grace_s: int = 60) -> int:
        """SIGTERM (SIGKILL after ``grace_s``, as Kubernetes does at the end of the grace period); its exit code."""
        self.podman.run("stop", "-t", str(grace_s), self.name)
        return int(self.podman.run("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())


@pytest.fixture
def containers(image: tuple[Podman, str], platform: Platform) -> Iterator[Any]:
    """Start containers of the image for ``platform``: its env, the stack's passwords as secret files."""
    podman, tag = image
    started: list[Container] = []
    secrets = platform.root / "secrets"
    secrets.mkdir()
    # The stack's generated passwords, and the session stores' (exported by their fixtures), one file each.
    passwords = read_secrets_file(Path(TEST_ENV["FEATURECTL_DATA_DIR"]) / "secrets.env")
    for name in list(passwords):
        passwords[name] = os.environ.get(f"{ENV_PREFIX}{name.upper()}", passwords[name])
    for name, value in passwords.items():
        (secrets / f"{ENV_PREFIX}{name.upper()}").write_text(value)
    # The platform's repository, suites and connector definition, where its env names them, owned by the image's
    # user (its registry, online tables and history are written from inside).
    subprocess.run(["chown", "-R", f"{IMAGE_UID}:{IMAGE_UID}", str(platform.root)], check=True)
    env = {k: v for k, v in TEST_ENV.items() if k != "FEATURECTL_DATA_DIR"} | platform.env

    def start(role: str, *args: str, image: str = tag) -> Container:
        name = unique(f"featurectl-{role}")
        # As Kubernetes runs it (RUN_FLAGS: a read-only root, a scratch home), on the host's network.
        command = ["run", "-d", "--name", name, "--network", "host", *RUN_FLAGS]
        command += ["-v", f"{platform.root}:{platform.root}", "-v", f"{secrets}:/run/secrets/featurectl:ro"]
        for key, value in env.items():
            command += ["-e", f"{key}={value}"]
        podman.run(*command, image, *args)
        container = Container(podman, name)
        started.append(container)
        return container

    yield start
    for container in started:
        (platform.root / f"{container.name}.log").write_text(container.logs())
        podman.run("rm", "-f", "-t", "5", container.name, check=False)


def served(url: str, ids: list[int]) -> dict[str, list[Any]]:
    r = requests.post(
        f"{url}/get-online-features", json={"features": FEATURES, "entities": {"customer_id": ids}}, timeout=5
    )
    r.raise_for_status()
    body = r.json()
    return {
        name: res["values"]
        for name, res in zip(body["metadata"]["feature_names"], body["results"], strict=True)
    }


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def produced(platform: Platform, topic: str) -> int:
    """How many messages ``topic`` holds now (the sum of its partitions' end offsets)."""
    consumer = Consumer(
        {"bootstrap.servers": platform.settings.bootstrap_servers, "group.id": unique("probe")}
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(watermarks(consumer, TopicPartition(topic, p))[1] for p in parts)
    finally:
        consumer.close()


def start_processor(containers: Any, platform: Platform, image: str) -> tuple[Container, str]:
    """A processor container of ``image`` and the URL of its health endpoints, once it reports ready."""
    port = free_port()
    container: Container = containers(
        "processor",
        "process",
        "--file",
        str(platform.definition.path),
        "--metrics-port",
        str(port),
        image=image,
    )
    health = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert container.running(), container.logs()
        return answers(f"{health}/readyz")

    wait_until(ready, 240, "the containerised processor's /readyz", context=container.logs)
    return container, health


@pytest.mark.timeout(1500)  # the first build of a session: the Debian base and the dependencies' layer
@pytest.mark.parametrize("platform", ["postgres"], indirect=True)
def test_containerised_processor_and_server_serve_changes_through_an_upgrade_and_stop_cleanly(
    stack: StackHandle,
    platform: Platform,
    image: tuple[Podman, str],
    containers: Any,
    made: list[tuple[str, int]],
    record_property: Any,
) -> None:
    podman, tag = image
    size = podman.image_size(tag)
    record_property("summary", f"the image {tag}: {size / 1e9:.2f} GB of the 1.5 GB budget")
    assert size < 1.5e9, f"the image is {size / 1e9:.2f} GB, over the 1.5 GB budget (issue 46)"
    old, health = start_processor(containers, platform, tag)
    assert answers(f"{health}/healthz")
    serve_port = free_port()
    server = containers("server", "serve", "--port", str(serve_port))
    url = f"http://127.0.0.1:{serve_port}"
    wait_until(lambda: answers(f"{url}/health"), 240, "the containerised feature server", context=server.logs)

    # A row changed in Postgres, served by the containerised server through the containerised processor.
    with psycopg.connect(stack.app, autocommit=True) as conn:
        cid = insert_customer(conn, segment="gold", credit=321.0)
        made.append(("customers", cid))
        conn.execute("UPDATE customers SET credit_limit = 654.0 WHERE id = %s", (cid,))
    wait_until(
        lambda: served(url, [cid])["credit_limit"] == [654.0], 120, "the change served", context=old.logs
    )
    assert served(url, [cid])["segment"] == ["gold"]

    # A rolling upgrade, as Kubernetes does it (maxSurge 1, maxUnavailable 0: docs/deploy.md): a processor of
    # the new image joins the group while the old one runs, then the old one gets SIGTERM; changes keep coming.
    podman.run("tag", tag, NEXT)
    written: list[int] = []
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(stack.app, autocommit=True) as conn:
            while not stop.is_set():
                written.append(insert_customer(conn, credit=float(len(written))))
                stop.wait(0.02)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        new, _ = start_processor(containers, platform, NEXT)
        assert old.stop() == 0, old.logs()
        wait_until(lambda: len(written) > 200, 60, "changes written across the handover")
    finally:
        stop.set()
        writer.join(30)
    made.extend(("customers", i) for i in written)
    expected = [float(i) for i in range(len(written))]
    wait_until(
        lambda: served(url, written)["credit_limit"] == expected,
        120,
        f"all {len(written)} changes made across the upgrade served",
        context=new.logs,
    )

    # A burst, then SIGTERM as soon as Kafka holds it: the processor finishes, commits, exits 0.
    topic = platform.topic("public.customers")
    before = produced(platform, topic)
    with psycopg.connect(stack.app, autocommit=True) as conn:
        burst = [insert_customer(conn, credit=float(i)) for i in range(300)]
    made.extend(("customers", i) for i in burst)
    wait_until(lambda: produced(platform, topic) >= before + len(burst), 120, "the burst in Kafka")
    assert new.stop() == 0, new.logs()
    assert "processor stopped after" in new.logs()
    # Nothing to replay twice: the group committed every message, and what it committed is written.
    assert platform.caught_up([topic], at_least=before + len(burst)), "SIGTERM left messages uncommitted"
    assert served(url, burst)["credit_limit"] == [float(i) for i in range(len(burst))]
    assert server.stop() == 0, server.logs()
    assert not platform.dead_letters()
