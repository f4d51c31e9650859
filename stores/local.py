"""A store's local server: what the stack runs for it (``featurectl stack up --with NAME``), and how tests
and benches point a Feast repository at it.

A store folder declares one with ``LocalService`` in its ``KIND`` (stores/registry.py); its server class
(``stores/<name>/server.py``) is what ``LocalServer`` describes. The stack, the CLI's ``--with`` choices,
the secrets file, the test fixtures and the benches all loop over the declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.settings import Settings


class LocalServer(Protocol):
    """A store's server on this machine, constructed from the settings (touching nothing until ``start``)."""

    name: str
    settings: Settings

    @property
    def address(self) -> str:
        """Where it listens, for people (``stack status``)."""
        ...

    def ensure_installed(self) -> None:
        """Its binaries and packages present (installs what it can: Debian packages, wheels)."""

    def start(self) -> None:
        """Running and answering (idempotent: a running server is left alone); FeatureCtlError otherwise."""

    def bootstrap(self) -> None:
        """Its roles, databases and extensions (after ``start``; safe on every ``up``)."""

    def ready(self) -> bool:
        """Whether it answers now."""
        ...

    def pid(self) -> int | None:
        """Its process, if it runs."""
        ...

    def stop(self) -> bool:
        """Stopped gracefully, then harder; whether it was running."""
        ...

    def wipe(self) -> None:
        """Its data deleted (stopped first)."""

    def online_store(self, namespace: str) -> str:
        """feature_store.yaml's ``online_store:`` block for a namespace of this server of its own (a schema, a
        database number, a database), made if missing; passwords as ``${FEATURECTL_...}`` references."""
        ...

    def empty(self, namespace: str) -> None:
        """Every feature row in ``namespace`` deleted; tables, collections and indexes stay as applied."""

    def drop(self, namespace: str) -> None:
        """``namespace`` gone, with its tables or collections."""


@dataclass(frozen=True)
class LocalService:
    """How this machine runs a store's server: declared by the store, read by the stack, tests and benches."""

    name: str  # `featurectl stack up --with NAME`; its folder in the data directory
    server: str  # "module:Class" of its LocalServer, constructed with the Settings
    port: str  # the settings field of its port (tests and benches move it)
    secrets: tuple[str, ...] = field(default_factory=tuple)  # generated into the secrets file by `stack up`
    # Started by `stack up` without being asked when feature_store.yaml's online store is this server's (the
    # store's `type:` and this port): "module:function" taking (settings, the online_store mapping).
    declared_by: str | None = None
