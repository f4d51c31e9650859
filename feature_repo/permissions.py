"""Who may read which features: Feast's own `Permission`s, enforced by `featurectl serve` and `featurectl ui` when
feature_store.yaml has an ``auth:`` section (docs/serving.md, authentication); without one nothing is checked.

The roles are the OIDC provider's: client roles of the client named by ``auth.client_id`` (``feature-server``;
locally the realm of stack/keycloak_realm.json). A request is granted when any permission that matches it grants
it (Feast decides affirmatively), so the views derived from personal data (tagged ``pii=true``) are left out of the
general read permission by name: Feast 0.67's ``required_tags`` filter matches every feature view whatever its
tags (it reads an attribute views do not have), so it cannot single them out.
"""

import importlib
import re
from pathlib import Path

from feast import FeatureService, FeatureView, OnDemandFeatureView
from feast.feast_object import ALL_FEATURE_VIEW_TYPES, ALL_RESOURCE_TYPES
from feast.permissions.action import AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import RoleBasedPolicy

READ = [AuthzedAction.READ_ONLINE, AuthzedAction.READ_OFFLINE]
READERS = RoleBasedPolicy(roles=["feature-reader", "pii-reader"])
HERE = Path(__file__).resolve().parent


def tagged_personal() -> list[str]:
    """The views and feature services tagged pii=true in this repository's modules (imported as `feast apply`
    imports them, the repository on the path: a module already imported is not run again), and the feature
    services that read such a view (Feast checks a request naming a service against the service alone)."""
    names = set()
    services: list[FeatureService] = []
    for path in sorted(HERE.rglob("*.py")):
        parts = path.relative_to(HERE).with_suffix("").parts
        if path.resolve() == Path(__file__).resolve() or any(
            p.startswith((".", "_")) or p in ("data", "feast_monitoring") for p in parts
        ):
            continue
        module = importlib.import_module(".".join(parts))
        names.update(
            obj.name
            for obj in vars(module).values()
            if isinstance(obj, (FeatureView, OnDemandFeatureView, FeatureService))
            and obj.tags.get("pii") == "true"
        )
        services += [obj for obj in vars(module).values() if isinstance(obj, FeatureService)]
    names.update(s.name for s in services if any(p.name in names for p in s.feature_view_projections))
    return sorted(names)


PERSONAL = tagged_personal()
_personal = "|".join(map(re.escape, PERSONAL))

# Every object of the registry listed and described (the UI, the SDK's registry reads), for either reader role.
# Nothing grants writes or changes through the servers: the processor writes the stores itself, and `feast apply`
# runs where the registry is.
describe = Permission(
    name="describe", types=ALL_RESOURCE_TYPES, actions=[AuthzedAction.DESCRIBE], policy=READERS
)

# Features not derived from personal data, online and offline, for either reader role.
read = Permission(
    name="read-features",
    types=ALL_RESOURCE_TYPES,
    name_patterns=[f"(?!(?:{_personal})$).*" if PERSONAL else ".*"],
    actions=READ,
    policy=READERS,
)

# Features derived from personal data: only for pii-reader.
read_personal = Permission(
    name="read-personal-data",
    types=[*ALL_FEATURE_VIEW_TYPES, FeatureService],
    name_patterns=PERSONAL or ["(?!)"],  # none tagged: matches nothing
    actions=READ,
    policy=RoleBasedPolicy(roles=["pii-reader"]),
)
