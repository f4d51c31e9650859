"""Feast's authorization on the direct lookup path: the same token check and the same permission decision as
Feast's app makes, each made once and remembered for as long as it holds.

- The bearer token is taken from the request by Feast's own extractor and checked by Feast's own token parser
  (OIDC: the signature against the provider's published keys, the expiry, and the audience and issuer when
  feature_store.yaml sets them; Kubernetes: a TokenReview). The user it names is kept until the token's ``exp``;
  after that the parser decides again (it allows 10 s of clock skew past ``exp``, which is then its call). Like
  Feast's own parser, which reuses the provider's keys for ``jwks_cache_lifespan_seconds``, this never asks the
  provider whether a token was revoked.
- Whether a user may read a plan's views is Feast's ``enforce_policy`` over the registry's permissions, with
  ``READ_ONLINE`` as Feast's app asks, decided once per user (name, roles, groups, namespaces) and plan. Plans are
  dropped when the registry is refreshed, so a `feast apply` that changes permissions applies here within the
  registry's ``cache_ttl_seconds`` (5 s in the demo), as a changed view does; Feast's app re-reads the
  permissions from the registry on every request (much of its cost under auth).

Whatever is not granted here (no token, a token the parser refuses, a view not permitted, a ``project`` query
parameter, which scopes Feast's permissions) goes to Feast's app, which refuses it with its own 401 or 403.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import jwt
from feast import FeatureStore

if TYPE_CHECKING:
    from feast.permissions.user import User

    from serving.lookup import Plan

logger = logging.getLogger(__name__)

MAX_TOKENS = 10_000  # tokens come from clients: the cache of checked ones stays bounded


class Authorizer:
    """Checks tokens and permissions for one FeatureStore's server process (Feast's auth manager is set up)."""

    def __init__(self, store: FeatureStore) -> None:
        from feast.permissions.auth.auth_manager import get_auth_manager

        self.store = store
        self._manager = get_auth_manager()
        self._users: dict[str, tuple[User, float]] = {}

    async def user(self, headers: list[tuple[bytes, bytes]]) -> User | None:
        """The user the request's bearer token names, or None when Feast's app must decide (and refuse)."""
        header = next((value for name, value in headers if name == b"authorization"), None)
        if header is None:
            return None
        try:
            token = self._manager.token_extractor._extract_bearer_token(header.decode("latin-1"))
        except Exception:
            return None
        known = self._users.get(token)
        if known is not None and time.time() < known[1]:
            return known[0]
        try:
            user = await self._manager.token_parser.user_details_from_access_token(access_token=token)
            expires = float(jwt.decode(token, options={"verify_signature": False})["exp"])
        except Exception:  # refused, or no expiry to keep it by: Feast's app decides and says why
            return None
        if len(self._users) >= MAX_TOKENS:
            now = time.time()
            self._users = {t: u for t, u in self._users.items() if u[1] > now}
            if len(self._users) >= MAX_TOKENS:
                self._users.clear()
        self._users[token] = (user, expires)
        return user

    def permits(self, user: User, plan: Plan) -> bool:
        """True if Feast's permissions let ``user`` read every view of ``plan`` online; for a plan naming a feature
        service, the service (what Feast's app checks then, not its views)."""
        key: tuple[Any, ...] = (
            user.username,
            tuple(user.roles),
            tuple(user.groups),
            tuple(getattr(user, "namespaces", None) or ()),
        )
        decided = plan.decisions.get(key)
        if decided is None:
            from feast.errors import FeastPermissionError
            from feast.permissions.action import AuthzedAction
            from feast.permissions.enforcer import enforce_policy

            permissions = self.store.registry.list_permissions(project=self.store.project, allow_cache=True)
            try:
                resources: list[Any] = (
                    [plan.service] if plan.service is not None else [read.view for read in plan.reads]
                )
                enforce_policy(permissions, user, resources, [AuthzedAction.READ_ONLINE])
                decided = True
            except FeastPermissionError:
                decided = False
            if len(plan.decisions) >= MAX_TOKENS:  # users come from tokens: kept bounded too
                plan.decisions.clear()
            plan.decisions[key] = decided
        return decided
