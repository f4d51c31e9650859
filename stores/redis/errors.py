"""redis-py's errors, told apart: Redis unreachable, loading its data after a restart, a read-only replica
after a failover, out of memory or a cluster moving slots is transient; a script's refusal is terminal.

redis-py's ConnectionError and TimeoutError are not Python's builtins of those names (they derive from
RedisError), so streams/faults.py's generic rules never saw them: a Redis restart dead-lettered records.
A wrong password (AuthenticationError, a ConnectionError) is transient too: it is the store's, never a
record's, and the processor waits, logging it, until the password is fixed."""

from __future__ import annotations


def transient(exc: BaseException) -> bool | None:
    """True when Redis is away, restarting, failing over or full; False for other Redis errors; None when
    redis-py did not raise ``exc``."""
    try:
        from redis import exceptions as errors
    except ImportError:
        return None
    if not isinstance(exc, errors.RedisError):
        return None
    return isinstance(
        exc,
        (
            errors.ConnectionError,  # refused, reset, lost; also AuthenticationError, MaxConnectionsError
            errors.TimeoutError,
            errors.BusyLoadingError,  # restarted, still loading its AOF/RDB
            errors.ReadOnlyError,  # a failover left us on a replica
            errors.TryAgainError,
            errors.ClusterDownError,
            errors.MasterDownError,
            errors.OutOfMemoryError,  # maxmemory: frees as keys expire or memory is raised
        ),
    )
