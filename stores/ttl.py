"""A view's ``ttl`` on online reads: a value older than it is served as null with Feast's ``OUTSIDE_MAX_AGE``.

Feast documents that an online read does not return values older than the view's ttl, but its read path never
checks (feast-dev/feast#6821): only its pre-computed feature-service vectors do. Every online store of ours
applies it here, after Feast has built the response (``ReadTtl``, mixed into each plugin), on the SDK's
``get_online_features`` and on the feature server alike.

The rule is the one Feast's point-in-time join applies to a training set, so online and offline agree: a value
whose event time is more than ``ttl`` before the read (online: now; offline: the row's entity timestamp) is
expired; exactly ``ttl`` old is not. ``ttl`` 0 (or none) never expires. Ages are compared in integer
nanoseconds, so the boundary is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from feast import FeatureView
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

clock: Callable[[], int] = time.time_ns
"""Now, in nanoseconds since the epoch (tests set it to read at an exact instant)."""

_SERVED = (FieldStatus.PRESENT, FieldStatus.NULL_VALUE)


def ttl_ns(view: FeatureView) -> int:
    """The view's ttl in nanoseconds; 0 when it has none (values never expire)."""
    ttl = view.ttl
    if not ttl:
        return 0
    return (ttl.days * 86_400 + ttl.seconds) * 1_000_000_000 + ttl.microseconds * 1_000


def expire(
    response: GetOnlineFeaturesResponse, grouped_refs: list[tuple[Any, list[str]]], start: int, now_ns: int
) -> int:
    """Null the values of ``response`` past their view's ttl, from result ``start`` on, where Feast appended one
    result per requested feature, view by view in ``grouped_refs``'s order. Returns how many it expired."""
    appended = len(response.results) - start
    if sum(len(features) for _, features in grouped_refs) != appended:
        # The one assumption on Feast's internals: if it ever breaks, serving stale values as fresh would be
        # silent; failing the read is not.
        raise RuntimeError(
            f"cannot apply views' ttl: Feast appended {appended} results for "
            f"{sum(len(f) for _, f in grouped_refs)} requested features (a Feast change?)"
        )
    expired = 0
    index = start
    for view, features in grouped_refs:
        limit = ttl_ns(view)
        if not limit:
            index += len(features)
            continue
        for vector in response.results[index : index + len(features)]:
            for row, stamp in enumerate(vector.event_timestamps):
                if vector.statuses[row] not in _SERVED or not (stamp.seconds or stamp.nanos):
                    continue
                if now_ns - (stamp.seconds * 1_000_000_000 + stamp.nanos) > limit:
                    vector.values[row].CopyFrom(ValueProto())
                    vector.statuses[row] = FieldStatus.OUTSIDE_MAX_AGE
                    expired += 1
        index += len(features)
    return expired


class ReadTtl:
    """Mixed into an online store plugin (before Feast's class): its reads apply each view's ttl."""

    def _read_features_per_fv(
        self,
        config: Any,
        grouped_refs: list[tuple[Any, list[str]]],
        join_key_values: Any,
        entity_name_to_join_key_map: Any,
        online_features_response: GetOnlineFeaturesResponse,
        full_feature_names: bool,
        include_feature_view_version_metadata: bool,
    ) -> None:
        start = len(online_features_response.results)
        super()._read_features_per_fv(  # type: ignore[misc]
            config,
            grouped_refs,
            join_key_values,
            entity_name_to_join_key_map,
            online_features_response,
            full_feature_names,
            include_feature_view_version_metadata,
        )
        expire(online_features_response, grouped_refs, start, clock())

    async def _read_features_per_fv_async(
        self,
        config: Any,
        grouped_refs: list[tuple[Any, list[str]]],
        join_key_values: Any,
        entity_name_to_join_key_map: Any,
        online_features_response: GetOnlineFeaturesResponse,
        full_feature_names: bool,
        include_feature_view_version_metadata: bool,
    ) -> None:
        start = len(online_features_response.results)
        await super()._read_features_per_fv_async(  # type: ignore[misc]
            config,
            grouped_refs,
            join_key_values,
            entity_name_to_join_key_map,
            online_features_response,
            full_feature_names,
            include_feature_view_version_metadata,
        )
        expire(online_features_response, grouped_refs, start, clock())
