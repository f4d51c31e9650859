"""Each store tells its driver's errors apart (stores/<name>/errors.py): the store away, restarting, failing
over or overloaded is transient (the processor waits and retries the batch), a value it refuses is the
record's fault (dead letter). Real errors from the real drivers where a closed port can raise them."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import redis
from pymilvus import exceptions as milvus_errors

from core.ports import free_port
from streams.faults import is_transient


def test_postgres_unreachable_or_restarting_is_transient_and_a_bad_value_is_not() -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=free_port(), user="u", dbname="d", connect_timeout=2)
    assert is_transient(refused.value)
    lost = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
    assert is_transient(lost)  # no SQLSTATE: the client saw the connection go
    for error in (
        psycopg.errors.AdminShutdown,  # 57P01: the server is being restarted
        psycopg.errors.CannotConnectNow,  # 57P03: starting up
        psycopg.errors.TooManyConnections,  # 53300
        psycopg.errors.DiskFull,  # 53100
        psycopg.errors.ReadOnlySqlTransaction,  # 25006: a failover left us on a standby
        psycopg.errors.DeadlockDetected,
        psycopg.errors.SerializationFailure,
    ):
        assert is_transient(error("x")), error
    for error in (psycopg.errors.NumericValueOutOfRange, psycopg.errors.NotNullViolation):
        assert not is_transient(error("x")), error


def test_redis_unreachable_loading_or_read_only_is_transient_and_a_script_error_is_not() -> None:
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=2)
    with pytest.raises(redis.exceptions.ConnectionError) as refused:
        client.ping()
    assert not isinstance(refused.value, ConnectionError)  # not the builtin: the generic rule missed it
    assert is_transient(refused.value)
    for error in (
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        redis.exceptions.ReadOnlyError,
        redis.exceptions.AuthenticationError,
    ):
        assert is_transient(error("x")), error
    assert not is_transient(redis.exceptions.ResponseError("ERR Error running script"))


def test_milvus_unavailable_is_transient_and_a_refused_value_is_not() -> None:
    assert is_transient(milvus_errors.MilvusUnavailableException(message="server unavailable"))
    assert is_transient(milvus_errors.MilvusException(code=2, message="Fail connecting to server"))
    assert not is_transient(milvus_errors.DataNotMatchException(message="field driver_id not in collection"))


def test_sqlite_locked_is_transient_and_a_constraint_is_not() -> None:
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert not is_transient(sqlite3.IntegrityError("UNIQUE constraint failed"))


def test_a_records_own_fault_stays_terminal() -> None:
    assert not is_transient(ValueError("year 12000 is out of range"))
    assert not is_transient(TypeError("not a number"))
