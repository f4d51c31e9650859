"""The embedding step and declarations: work only when needed, and clear errors for bad declarations."""

from datetime import UTC, datetime

import pytest
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Int64, String

from core.errors import ConfigError
from embeddings.models import load_embedder
from embeddings.spec import EmbeddingSpec, spec_for
from stores.sink import DELETE, UPSERT, SinkRow
from streams.embed import EmbeddingStep
from tests.unit.fakes import HashEmbedder, MemorySink

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = EmbeddingSpec("docs", "embedding", ("title", "body"), "hash", "test", 8, "cosine")


def view(tags: dict[str, str], vector_length: int = 8, text_dtype: object = String) -> FeatureView:
    source = PushSource(name="docs_push", batch_source=FileSource(path="docs", timestamp_field="ts"))
    return FeatureView(
        name="docs",
        entities=[Entity(name="doc", join_keys=["doc_id"], value_type=ValueType.INT64)],
        schema=[
            Field(name="doc_id", dtype=Int64),
            Field(name="title", dtype=text_dtype),  # type: ignore[arg-type]
            Field(name="body", dtype=String),
            Field(name="embedding", dtype=Array(Float32), vector_index=True, vector_length=vector_length),
        ],
        source=source,
        tags=tags,
    )


def doc(doc_id: int, version: int, title: str | None, body: str | None = "", op: str = UPSERT) -> SinkRow:
    features = {} if op == DELETE else {"title": title, "body": body, "price": 1.0}
    return SinkRow("docs", op, {"doc_id": doc_id}, features, T0, version, "u", f"t[0] offset={version}")


def step() -> tuple[EmbeddingStep, MemorySink, HashEmbedder]:
    model = HashEmbedder()
    sink = MemorySink()
    return EmbeddingStep(sink, load=lambda _spec: model), sink, model


def test_identical_texts_in_a_batch_are_embedded_once() -> None:
    embed, _, model = step()
    rows = embed.apply(SPEC, [doc(1, 1, "boots"), doc(2, 2, "boots"), doc(3, 3, "mug")])
    assert model.calls == [["boots", "mug"]]
    assert rows[0].features["embedding"] == rows[1].features["embedding"] != rows[2].features["embedding"]
    assert all(r.model == SPEC.fingerprint for r in rows)


def test_an_update_that_keeps_the_text_reuses_the_stored_vector() -> None:
    embed, sink, model = step()
    sink.add(embed.apply(SPEC, [doc(1, 1, "boots", "for trails")]))
    sink.flush()
    first = sink.state[("docs", '{"doc_id": 1}')].features["embedding"]
    again = embed.apply(SPEC, [doc(1, 2, "boots", "for trails")])  # only the price changed upstream
    assert len(model.calls) == 1
    assert again[0].features["embedding"] == first
    changed = embed.apply(SPEC, [doc(1, 3, "boots", "for city streets")])
    assert model.calls[-1] == ["boots\nfor city streets"]
    assert changed[0].features["embedding"] != first


def test_rows_without_text_get_no_vector_and_deletes_pass_through() -> None:
    embed, _, model = step()
    rows = embed.apply(SPEC, [doc(1, 1, None, None), doc(2, 2, "", "  "), doc(3, 3, None, op=DELETE)])
    assert model.calls == []
    assert rows[0].features["embedding"] is None and rows[1].features["embedding"] is None
    assert rows[2].features == {} and rows[2].model is None


def test_a_view_declares_its_embedding_with_tags() -> None:
    tags = {"embedding.text": "title, body", "embedding.model": "m-8", "embedding.backend": "b"}
    spec = spec_for(view(tags))
    assert spec == EmbeddingSpec("docs", "embedding", ("title", "body"), "m-8", "b", 8, "cosine")
    other = spec_for(view({**tags, "embedding.model": "m2-8"}))
    assert other is not None and other.fingerprint != spec.fingerprint
    assert (
        spec_for(view({**tags, "embedding.backend": "b"}, vector_length=16)).fingerprint != spec.fingerprint
    )  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("tags", "length", "message"),
    [
        ({"embedding.model": "m"}, 8, "has no tag embedding.text"),
        ({"embedding.text": "title"}, 8, "has no tag embedding.model"),
        ({"embedding.text": "subtitle", "embedding.model": "m"}, 8, "names ['subtitle']"),
        ({"embedding.text": "title", "embedding.model": "m"}, 0, "has no vector_length"),
    ],
)
def test_a_bad_declaration_names_the_problem_and_the_fix(
    tags: dict[str, str], length: int, message: str
) -> None:
    with pytest.raises(ConfigError, match="fix:") as err:
        spec_for(view(tags, vector_length=length))
    assert message in str(err.value)


def test_a_backend_is_any_importable_factory() -> None:
    spec = EmbeddingSpec(
        "docs", "embedding", ("title",), "plugin-4", "tests.unit.fakes:hash_embedder", 4, "l2"
    )
    model = load_embedder(spec)
    assert isinstance(model, HashEmbedder) and model.embed(["a"]).shape == (1, 4)
    wrong_dim = EmbeddingSpec(
        "docs", "embedding", ("title",), "plugin-4", "tests.unit.fakes:hash_embedder", 5, "l2"
    )
    with pytest.raises(ConfigError, match="set vector_length=4"):
        load_embedder(wrong_dim)
    with pytest.raises(ConfigError, match="unknown embedding backend"):
        load_embedder(EmbeddingSpec("docs", "embedding", ("title",), "m", "no-such-backend", 4, "l2"))


def test_a_model_that_is_not_installed_says_how_to_get_it() -> None:
    spec = EmbeddingSpec(
        "docs", "embedding", ("title",), "/nonexistent/model", "sentence-transformers", 384, "cosine"
    )
    with pytest.raises(ConfigError, match="neither a model directory nor an installed package"):
        load_embedder(spec)
