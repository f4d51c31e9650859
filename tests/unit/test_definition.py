import json
from pathlib import Path

import pytest

from connectors.definition import load_definition
from core.errors import ConfigError
from core.settings import Settings


def test_shipped_definition_is_complete() -> None:
    d = load_definition()
    c = d.config
    assert c["plugin.name"] == "pgoutput"
    assert c["key.converter.schemas.enable"] == c["value.converter.schemas.enable"] == "false"
    assert c["decimal.handling.mode"] == "string"
    assert c["time.precision.mode"] == "isostring"
    assert int(c["heartbeat.interval.ms"]) > 0
    assert c["signal.data.collection"] in d.tables
    assert {"public.customers", "public.products", "public.orders"} <= set(d.tables)
    assert d.topic_for("public.orders") == "shop.public.orders"


def test_render_fills_connection_from_settings_without_committing_password() -> None:
    d = load_definition()
    s = Settings(debezium_password="pw", connect_pg_host="postgres", connect_pg_port=5432)  # type: ignore[arg-type]
    cfg = d.render(s)
    assert cfg["database.hostname"] == "postgres" and cfg["database.port"] == "5432"
    # A reference Connect's EnvVarConfigProvider resolves, never the password (its REST API returns configs).
    assert cfg["database.password"] == "${env:FEATURECTL_DEBEZIUM_PASSWORD}"
    assert "pw" not in json.dumps(cfg)
    assert cfg["database.user"] == s.debezium_user
    assert "database.password" not in d.path.read_text()
    inline = d.render(s.model_copy(update={"connect_debezium_password": "inline"}))
    assert inline["database.password"] == "pw"
    custom = "${file:/etc/connect/secrets.properties:debezium_password}"
    assert d.render(s.model_copy(update={"connect_debezium_password": custom}))["database.password"] == custom
    with pytest.raises(ConfigError, match="neither a config-provider reference"):
        d.render(s.model_copy(update={"connect_debezium_password": "hunter2"}))


def test_password_in_definition_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"name": "x", "config": {"topic.prefix": "x", "database.password": "secret"}}))
    with pytest.raises(ConfigError, match="filled in at deploy time"):
        load_definition(p)


def test_non_string_values_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"name": "x", "config": {"topic.prefix": "x", "tasks.max": 1}}))
    with pytest.raises(ConfigError, match="must be strings"):
        load_definition(p)


def test_broken_json_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_definition(p)
