"""pymilvus's errors, told apart: Milvus unreachable or restarting (gRPC UNAVAILABLE, a deadline exceeded,
pymilvus's unavailable/connect errors) is transient; a value a collection refuses is terminal."""

from __future__ import annotations

# pymilvus's MilvusException codes of a server not (yet) able to answer: 1 unexpected error (a dropped
# connection surfaces so), 2 connection not exist, 3 cannot connect, 4 server unavailable / not ready.
_UNAVAILABLE_CODES = {2, 3, 4}


def transient(exc: BaseException) -> bool | None:
    """True when Milvus is away or restarting; False for other pymilvus errors; None when neither pymilvus
    nor gRPC raised ``exc``."""
    try:
        import grpc
        from pymilvus import exceptions as errors
    except ImportError:
        return None
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        return code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        )
    if not isinstance(exc, errors.MilvusException):
        return None
    if isinstance(
        exc, errors.MilvusUnavailableException | errors.ConnectError | errors.ConnectionNotExistException
    ):
        return True
    text = str(exc).lower()
    return exc.code in _UNAVAILABLE_CODES or any(
        s in text
        for s in ("unavailable", "connection refused", "deadline exceeded", "not ready", "closed channel")
    )
