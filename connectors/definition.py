"""Connector definitions: declarative JSON files in this folder, completed at deploy time.

A definition holds everything about *what* is captured and *how* it is encoded. *Where* the
database is (host, port, database, user) and the password come from settings at deploy time,
so the same file serves the local stack, docker-compose and an existing Postgres, and no
password is ever written to a committed file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.settings import Settings

CONNECTORS_DIR = Path(__file__).resolve().parent
DEFAULT_CONNECTOR = CONNECTORS_DIR / "shop-postgres.json"
# Filled in from settings at deploy time; a definition that sets them is rejected.
CONNECTION_KEYS = (
    "database.hostname",
    "database.port",
    "database.user",
    "database.password",
    "database.dbname",
)


@dataclass(frozen=True, slots=True)
class ConnectorDefinition:
    """One Debezium connector: its name and its declarative config (no connection details)."""

    name: str
    config: dict[str, str]
    path: Path

    @property
    def topic_prefix(self) -> str:
        return self.config["topic.prefix"]

    @property
    def slot_name(self) -> str:
        return self.config.get("slot.name", "debezium")

    @property
    def publication_name(self) -> str:
        return self.config.get("publication.name", "dbz_publication")

    @property
    def tables(self) -> list[str]:
        """Captured tables as ``schema.table``, from ``table.include.list``."""
        return [t.strip() for t in self.config.get("table.include.list", "").split(",") if t.strip()]

    @property
    def heartbeat_table(self) -> str | None:
        """The captured table ``heartbeat.action.query`` writes to, if any: its changes let the slot advance
        while the other tables are idle."""
        match = re.search(r"INSERT\s+INTO\s+([\w.]+)", self.config.get("heartbeat.action.query", ""), re.I)
        return match.group(1) if match and match.group(1) in self.tables else None

    @property
    def transaction_topic(self) -> str | None:
        """Where the connector writes its transactions' BEGIN/END markers, if it provides them."""
        if self.config.get("provide.transaction.metadata", "false").lower() != "true":
            return None
        return f"{self.topic_prefix}.{self.config.get('topic.transaction', 'transaction')}"

    def topic_for(self, table: str) -> str:
        """The Kafka topic Debezium writes ``schema.table`` changes to."""
        return f"{self.topic_prefix}.{table}"

    def derive(self, name: str, tables: list[str], path: Path, signals: bool = False) -> ConnectorDefinition:
        """A copy capturing ``tables`` under its own name, slot, publication and topic prefix, saved to ``path``.

        For isolated captures (tests, benchmarks, a second team on one database). ``signals``: capture
        the signal table too, so incremental snapshots can be requested (every connector capturing
        the signal table acts on a signal naming one of its tables).
        """
        keep_signals = signals and "signal.data.collection" in self.config
        config = {k: v for k, v in self.config.items() if keep_signals or not k.startswith("signal.")}
        if keep_signals:
            tables = [*tables, self.config["signal.data.collection"]]
        heartbeat = self.heartbeat_table
        if heartbeat and heartbeat not in tables:
            # Without its heartbeat table in the publication, a connector whose tables are idle receives
            # nothing, confirms no newer position, and its slot retains the WAL of everything else.
            tables = [*tables, heartbeat]
        config.update(
            {
                "slot.name": name,
                "publication.name": name,
                "topic.prefix": name,
                "table.include.list": ",".join(tables),
                "notification.sink.topic.name": f"__debezium-notifications.{name}",
            }
        )
        if (
            "topic.creation.transactions.include" in config
        ):  # its transaction topic: one partition, commit order
            config["topic.creation.transactions.include"] = re.escape(f"{name}.") + re.escape(
                config.get("topic.transaction", "transaction")
            )
        path.write_text(json.dumps({"name": name, "config": config}, indent=2))
        return ConnectorDefinition(name=name, config=config, path=path)

    def render(self, settings: Settings) -> dict[str, str]:
        """The full config to PUT to Kafka Connect: the file plus connection settings and the password's
        config-provider reference (settings.connect_debezium_password; the password itself if ``inline``)."""
        reference = settings.connect_debezium_password
        if reference == "inline":
            password = settings.require_secret("debezium_password")
        elif re.fullmatch(r"\$\{[\w.-]+:[^}]*\}", reference):
            password = reference
        else:
            raise ConfigError(
                f"FEATURECTL_CONNECT_DEBEZIUM_PASSWORD={reference!r} is neither a config-provider reference "
                "(${provider:[path:]key}) nor `inline`",
                "leave the default ${env:FEATURECTL_DEBEZIUM_PASSWORD}, or name your workers' provider",
            )
        return {
            **self.config,
            "database.hostname": settings.connect_pg_host or settings.pg_host,
            "database.port": str(settings.connect_pg_port or settings.pg_port),
            "database.dbname": settings.pg_database,
            "database.user": settings.debezium_user,
            "database.password": password,
        }


def load_definition(path: Path | str = DEFAULT_CONNECTOR) -> ConnectorDefinition:
    """Read and check a connector JSON file (``{"name": ..., "config": {...}}``)."""
    path = Path(path)
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"connector file {path} not found", f"pass one of {sorted(CONNECTORS_DIR.glob('*.json'))}"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"connector file {path} is not valid JSON: {exc}", "fix the JSON syntax") from None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("name"), str)
        or not isinstance(raw.get("config"), dict)
    ):
        raise ConfigError(
            f"connector file {path} must be an object with 'name' and 'config'", "see connectors/README.md"
        )
    config = raw["config"]
    bad = [k for k, v in config.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(
            f"{path}: config values must be strings (Connect's REST API), not {bad}", "quote them"
        )
    leaked = [k for k in CONNECTION_KEYS if k in config]
    if leaked:
        raise ConfigError(
            f"{path} sets {leaked}: connection details and passwords are filled in at deploy time",
            "remove them from the file and set FEATURECTL_PG_HOST / FEATURECTL_DEBEZIUM_PASSWORD etc. instead",
        )
    if "topic.prefix" not in config:
        raise ConfigError(f"{path} lacks topic.prefix", "add the Kafka topic prefix for this database")
    return ConnectorDefinition(name=raw["name"], config=dict(config), path=path)
