"""Bad input gets a clear error naming the problem and the fix, and a non-zero exit."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from connectors.client import ConnectClient
from connectors.definition import load_definition
from core.ports import free_port
from tests.integration.conftest import StackHandle
from tests.integration.helpers import cli, unique


def test_wrong_postgres_password_in_deploy(stack: StackHandle, tmp_path: Path) -> None:
    name = unique("badpw")
    base = load_definition()
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"name": name, "config": {**base.config, "slot.name": name}}))
    # The password sent as it is (not the default config-provider reference, which Connect resolves from its
    # own environment), so a wrong one reaches Debezium's validation.
    env = {"FEATURECTL_DEBEZIUM_PASSWORD": "wrong", "FEATURECTL_CONNECT_DEBEZIUM_PASSWORD": "inline"}
    result = cli("connector", "deploy", "--file", str(path), env=env)
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr
    assert "FEATURECTL_DEBEZIUM" in result.stderr  # names the fix
    assert not ConnectClient(stack.settings.connect_rest_url).exists(name)  # nothing half-created


def test_connect_unreachable(stack: StackHandle) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("connector", "status", env={"FEATURECTL_CONNECT_URL": url})
    assert result.returncode != 0
    assert f"Kafka Connect is not reachable at {url}" in result.stderr
    assert "FEATURECTL_CONNECT_URL" in result.stderr


def test_port_already_in_use(stack: StackHandle, tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = cli(
            "stack",
            "up",
            env={
                "FEATURECTL_DATA_DIR": str(tmp_path / "data"),
                "FEATURECTL_PG_PORT": str(port),
                "FEATURECTL_KAFKA_PORT": str(free_port()),
                "FEATURECTL_CONNECT_PORT": str(free_port()),
            },
        )
    assert result.returncode != 0
    assert f"port {port} is already in use by pid {os.getpid()}" in result.stderr
    assert "FEATURECTL_PG_PORT" in result.stderr


def test_unknown_setting(stack: StackHandle) -> None:
    result = cli("stack", "status", env={"FEATURECTL_CONNECT_PROT": "1"})
    assert result.returncode != 0
    assert "unknown setting FEATURECTL_CONNECT_PROT" in result.stderr
    assert "FEATURECTL_CONNECT_PORT" in result.stderr


def test_unknown_cli_option_exits_non_zero(stack: StackHandle) -> None:
    result = cli("stack", "up", "--wipe")
    assert result.returncode == 2 and "No such option" in result.stderr
