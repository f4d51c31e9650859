"""Feature views from the Feast registry's cache, for the sinks: built once per registry refresh."""

from __future__ import annotations

from feast import FeatureStore, FeatureView


class RegistryViews:
    """Feature views from the store's cached registry, each built once per registry refresh.

    Feast rebuilds a FeatureView from the cached registry proto on every ``get_feature_view`` call
    (~4 ms, on every batch of every sink). A registry refresh (the processor's, with its routes)
    replaces that proto object, so its identity says when a view built from it is stale.
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._built: dict[str, tuple[object, FeatureView]] = {}

    def get(self, name: str) -> FeatureView:
        proto = getattr(self.store.registry, "cached_registry_proto", None)
        held = self._built.get(name)
        if proto is not None and held is not None and held[0] is proto:
            return held[1]
        view = self.store.get_feature_view(name, allow_registry_cache=True)
        if proto is not None:
            self._built[name] = (proto, view)
        return view
