"""Job-run records, the WAL watch's thresholds and warnings, and Kafka client security settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connectors.status import SlotStatus
from core import metrics
from core.errors import ConfigError
from core.settings import Settings
from monitoring.job_runs import last_runs, recorded
from monitoring.watch import SourceWatch, wal_limit, wal_problem

GIB = 1024**3


def test_job_runs_are_recorded_with_their_outcome_and_counted(tmp_path: Path) -> None:
    before = (
        metrics.REGISTRY.get_sample_value(
            "featurectl_job_runs_total", {"job": "compact", "outcome": "failure"}
        )
        or 0
    )
    recorded(tmp_path, "compact", lambda: None)

    def broken() -> None:
        raise RuntimeError("disk full\nmore detail")

    with pytest.raises(RuntimeError):
        recorded(tmp_path, "compact", broken)
    runs = last_runs(tmp_path)["compact"]
    assert runs["last"].outcome == "failure" and runs["last"].error == "disk full"
    assert runs["last_success"].outcome == "success"
    after = metrics.REGISTRY.get_sample_value(
        "featurectl_job_runs_total", {"job": "compact", "outcome": "failure"}
    )
    assert after == before + 1


def slot(retained: int, keep: int | None = None, active: bool = True, status: str = "reserved") -> SlotStatus:
    return SlotStatus("s", active, retained, 0, status, None, keep)


def test_wal_limit_is_the_threshold_or_80_percent_of_max_slot_wal_keep_size() -> None:
    assert wal_limit(slot(0), GIB) == GIB
    assert wal_limit(slot(0, keep=GIB), 10 * GIB) == int(0.8 * GIB)
    assert wal_problem(slot(GIB // 2), GIB) is None
    problem = wal_problem(slot(2 * GIB, active=False), GIB)
    assert problem and "NO consumer connected" in problem and "disk fills" in problem
    lost = wal_problem(slot(0, status="lost"), GIB)
    assert lost and "invalidated" in lost


def test_the_watch_warns_while_the_slot_is_over_its_limit_and_says_when_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = SourceWatch(None, "s", "http://127.0.0.1:1", "c", GIB)
    with caplog.at_level(logging.INFO, logger="monitoring.watch"):
        watch._warn(wal_problem(slot(2 * GIB), GIB))
        watch._warn(None)
    assert "WAL watch: replication slot s retains 2,048 MiB" in caplog.text
    assert "back under its limit" in caplog.text


def test_kafka_client_settings_for_sasl_and_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = Settings(  # type: ignore[call-arg]
        kafka_bootstrap="broker:9096",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_ca_location=ca,
        data_dir=tmp_path,
    )
    conf = s.kafka_client(**{"group.id": "g"})
    assert {k: v for k, v in conf.items() if k != "error_cb"} == {
        "bootstrap.servers": "broker:9096",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "pw",
        "ssl.ca.location": str(ca),
        "group.id": "g",
    }
    with pytest.raises(ConfigError, match="needs a SASL mechanism and user"):
        Settings(kafka_security_protocol="SASL_SSL", data_dir=tmp_path).kafka_client()  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="SASL would not be used"):
        Settings(kafka_sasl_mechanism="PLAIN", data_dir=tmp_path).kafka_client()  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="is not a file"):
        Settings(  # type: ignore[call-arg]
            kafka_security_protocol="SSL", kafka_ssl_ca_location=tmp_path / "missing.pem", data_dir=tmp_path
        ).kafka_client()
