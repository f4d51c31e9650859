"""A small client for Kafka Connect's REST API (``requests``), for deploying and supervising connectors.

Every failure is raised as a FeatureCtlError naming the URL and what to do; "Connect not reachable"
is transient (it may be starting), a rejected config is terminal.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

import requests

from core.errors import ConfigError, FeatureCtlError, TransientError

logger = logging.getLogger(__name__)


class ConnectorFailed(FeatureCtlError):
    """The connector or one of its tasks is FAILED; the message carries Connect's trace."""


class ConnectClient:
    """Talks to one Kafka Connect cluster. Constructing it does not touch the network."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def _request(
        self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> requests.Response:
        url = self.base_url + path
        try:
            resp = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.ConnectionError:
            raise TransientError(
                f"Kafka Connect is not reachable at {self.base_url}",
                "start the local stack with `featurectl stack up`, or point FEATURECTL_CONNECT_URL at your Connect cluster",
            ) from None
        except requests.Timeout:
            raise TransientError(
                f"Kafka Connect at {self.base_url} did not answer {method} {path} "
                f"within {self.timeout_s:.0f}s",
                "check the worker's log; retry",
            ) from None
        if resp.status_code not in ok:
            raise FeatureCtlError(
                f"{method} {url} returned {resp.status_code}: {_message(resp)}",
                "see the Kafka Connect worker log for details",
            )
        return resp

    # --- reads ---------------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        return dict(self._request("GET", "/").json())

    def connectors(self) -> list[str]:
        return list(self._request("GET", "/connectors").json())

    def exists(self, name: str) -> bool:
        return self._request("GET", f"/connectors/{quote(name)}", ok=(200, 404)).status_code == 200

    def status(self, name: str) -> dict[str, Any]:
        resp = self._request("GET", f"/connectors/{quote(name)}/status", ok=(200, 404))
        if resp.status_code == 404:
            raise FeatureCtlError(
                f"connector {name!r} does not exist on {self.base_url}",
                "deploy it with `featurectl connector deploy`",
            )
        return dict(resp.json())

    # --- writes --------------------------------------------------------------------------------
    def validate(self, name: str, config: dict[str, str]) -> list[str]:
        """Connect's own validation (Debezium also checks it can log in): a list of errors."""
        cls = config["connector.class"].rsplit(".", 1)[-1]
        body = {**config, "name": name}
        data = self._request("PUT", f"/connector-plugins/{cls}/config/validate", json=body).json()
        errors = []
        for item in data.get("configs", []):
            value = item.get("value", {})
            errors += [f"{value.get('name')}: {e}" for e in value.get("errors", [])]
        return errors

    def put_config(self, name: str, config: dict[str, str]) -> bool:
        """Create or update (idempotent PUT). Returns True if created, False if updated."""
        resp = self._request("PUT", f"/connectors/{quote(name)}/config", ok=(200, 201, 400), json=config)
        if resp.status_code == 400:
            raise ConfigError(
                f"Kafka Connect rejected the config of {name!r}: {_message(resp)}",
                "fix the connector definition or the connection settings",
            )
        return resp.status_code == 201

    def restart(self, name: str, only_failed: bool = True) -> None:
        params = {"includeTasks": "true", "onlyFailed": str(only_failed).lower()}
        self._request("POST", f"/connectors/{quote(name)}/restart", ok=(200, 202, 204), params=params)

    def pause(self, name: str) -> None:
        self._request("PUT", f"/connectors/{quote(name)}/pause", ok=(202,))

    def resume(self, name: str) -> None:
        self._request("PUT", f"/connectors/{quote(name)}/resume", ok=(202,))

    def delete(self, name: str) -> bool:
        """Returns False if there was nothing to delete."""
        resp = self._request("DELETE", f"/connectors/{quote(name)}", ok=(204, 404))
        return resp.status_code == 204

    # --- waiting -------------------------------------------------------------------------------
    def wait_state(self, name: str, want: str = "RUNNING", timeout_s: float = 120.0) -> dict[str, Any]:
        """Poll until the connector and every task are in ``want``; raise with the trace on FAILED."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while True:
            try:
                last = self.status(name)
            except FeatureCtlError:
                last = {}  # just created: status may 404 for a moment
            if last:
                failed_trace = _failed_trace(last)
                if failed_trace:
                    raise ConnectorFailed(
                        f"connector {name!r} FAILED:\n{failed_trace}",
                        "fix the cause, then `featurectl connector restart`",
                    )
                tasks = last.get("tasks", [])
                if last["connector"]["state"] == want and tasks and all(t["state"] == want for t in tasks):
                    return last
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"connector {name!r} not {want} after {timeout_s:.0f}s; last status: {last}",
                    "check `featurectl connector status` and the Connect log",
                )
            time.sleep(0.5)


def _failed_trace(status: dict[str, Any]) -> str | None:
    parts = []
    if status.get("connector", {}).get("state") == "FAILED":
        parts.append(status["connector"].get("trace", "(no trace)"))
    parts += [
        f"task {t['id']}: {t.get('trace', '(no trace)')}"
        for t in status.get("tasks", [])
        if t["state"] == "FAILED"
    ]
    if not parts:
        return None
    # The first lines of a Java trace hold the cause; the rest is frames.
    return "\n".join("\n".join(p.splitlines()[:8]) for p in parts)


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("message", resp.text))
    except ValueError:
        return resp.text[:500]
