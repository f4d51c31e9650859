"""The ASGI app ``featurectl serve`` runs: Feast's feature server app, with plain lookups answered first.

``POST /get-online-features`` with a JSON body goes to serving/lookup.py; what it declines (and every other
path, the lifespan, the health check) goes to Feast's own app unchanged, with the body replayed. The lookup
runs on the event loop, not in a thread pool: a read is a fraction of a millisecond on the local stores, and
a hop to a thread costs about as much (several workers, ``--workers``, use the cores). While Feast's
authorization is on (``auth:`` in feature_store.yaml), a lookup is answered here only when Feast's own token
parser and permissions grant it (serving/fast_auth.py); Feast's app refuses the rest with its 401 or 403.
Lookups of a feature service with a ``logging_config`` are logged (serving/served_log.py) when the server was
given a spool directory; the log is written out at the lifespan's shutdown (a clean stop).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from feast import FeatureStore

from serving.fast_auth import Authorizer
from serving.lookup import Lookups, Plan, ReadsMovedError, encode
from serving.served_log import SPOOL_ENV, ServedLog

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/get-online-features"
MAX_BODY = 16 * 1024 * 1024  # larger bodies go to Feast's app as they come


def _json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


async def _send_json(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """One whole JSON response."""
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive, more: bool = False) -> Receive:
    """A ``receive`` that yields ``body`` (already read; ``more``: only its start) once, then defers to the
    client's."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replayed


class FastLookupApp:
    """Wraps Feast's app (``feast.feature_server.get_app``) for one FeatureStore."""

    def __init__(self, feast_app: ASGIApp, store: FeatureStore) -> None:
        self.feast_app = feast_app
        self.store = store
        self.lookups = Lookups(store)
        self._enabled: bool | None = None
        self._auth: Authorizer | None = None
        from feast.infra.feature_servers.base_config import MetricsConfig

        metrics = getattr(getattr(store.config, "feature_server", None), "metrics", None)
        self._bins = getattr(metrics, "feature_count_bins", None) or MetricsConfig().feature_count_bins
        self._log: tuple[int, ServedLog | None] | None = None

    @property
    def served_log(self) -> ServedLog | None:
        """This process's log of served lookups (made in the worker: the app is built before gunicorn forks,
        and a thread does not survive a fork); None without a spool directory."""
        if self._log is None or self._log[0] != os.getpid():
            spool = os.environ.get(SPOOL_ENV)
            from pathlib import Path

            log = None
            try:
                log = ServedLog(Path(spool)) if spool else None
            except OSError as exc:  # an unwritable spool: lookups are answered, not logged
                logger.error("served log: cannot use the spool %s (%s); lookups are not logged", spool, exc)
            self._log = (os.getpid(), log)
        return self._log[1]

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Feast's lifespan, with the served log written out before the shutdown completes."""

        async def sending(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                held = self._log
                if held is not None and held[0] == os.getpid() and held[1] is not None:
                    held[1].close()
            await send(message)

        await self.feast_app(scope, receive, sending)

    def enabled(self) -> bool:
        """On, with Feast's authorization checked first when it is configured (then ``self._auth`` is set)."""
        if self._enabled is None:
            from feast.permissions.security_manager import get_security_manager, is_auth_necessary

            try:
                if is_auth_necessary(get_security_manager()):
                    self._auth = Authorizer(self.store)
                self._enabled = True
            except Exception:  # unknown: let Feast decide every request
                logger.exception("Feast's authorization could not be read: every request goes to Feast's app")
                self._enabled = False
            logger.info(
                "plain lookups %s",
                "left to Feast"
                if not self._enabled
                else "answered directly, when Feast's token check and permissions grant them"
                if self._auth
                else "answered directly",
            )
        return self._enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and _json(scope["headers"])
            and self.enabled()
        ):
            permits = None
            if self._auth is not None:
                user = await self._auth.user(scope["headers"]) if not scope.get("query_string") else None
                if user is None:  # Feast's app refuses it (401), or decides with its ``project`` scope
                    await self.feast_app(scope, receive, send)
                    return
                auth = self._auth

                def permits(plan: Plan) -> bool:
                    return auth.permits(user, plan)

            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > MAX_BODY:
                    break
            body = b"".join(chunks)
            if not more:
                try:
                    answered = self._answer(body, permits)
                except (
                    ReadsMovedError
                ) as exc:  # no consistent read in time: no answer rather than a wrong one
                    logger.warning("%s", exc)
                    await _send_json(send, 503, encode({"detail": str(exc)}), [(b"retry-after", b"1")])
                    return
                if answered is not None:
                    await _send_json(send, 200, answered)
                    return
            receive = _replay(body, receive, more)
        await self.feast_app(scope, receive, send)

    def _answer(self, body: bytes, permits: Callable[[Plan], bool] | None) -> bytes | None:
        # Feast's request metrics, as its handler records them; a declined request is counted by Feast's app.
        import time

        from feast import metrics
        from feast.feature_server import bin_feature_count

        start = time.monotonic()
        answered = self.lookups.answer(body, permits)
        if answered is None:
            return None
        payload, plan, rows, features, at_ns = answered
        if plan.logged is not None:
            log = self.served_log
            if log is not None:
                log.record(plan.logged, plan.log_rate, body, payload, at_ns)
        if metrics._config.request:
            metrics.request_latency.labels(
                endpoint=PATH,
                feature_count=bin_feature_count(features, self._bins),
                feature_view_count=str(len(plan.reads)),
            ).observe(time.monotonic() - start)
            metrics.request_count.labels(endpoint=PATH, status="success").inc()
        metrics.track_online_features_entities(rows)
        return payload
