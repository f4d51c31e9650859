"""A bench deletes the Kafka topics it made and no other (bench/common.py bench_topics): it runs on a
developer's broker, beside the project's own topics and other benches' (tests/integration/test_benches.py
checks that the chain leaves none behind)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.common import bench_topics, dead_letters
from connectors.definition import load_definition

NAME = "bench_abc123"


def made_by(name: str) -> list[str]:
    return [
        f"{name}.public.{name}",
        f"{name}.cdc.debezium_heartbeat",
        f"{name}.transaction",
        f"__debezium-heartbeat.{name}",
        f"__debezium-notifications.{name}",
        dead_letters(name),
    ]


@given(
    others=st.lists(
        st.one_of(
            st.sampled_from(["bench_abc1234", "bench_abc12", "bench", "featurectl", "accounts_abc123"]).map(
                made_by
            ),
            st.just(
                ["__consumer_offsets", "_featurectl_connect_offsets", "dlq.featurectl", "dlq.bench_abc1234"]
            ),
            st.lists(
                st.from_regex(r"[a-z_.]{1,20}", fullmatch=True).filter(lambda t: NAME not in t), max_size=3
            ),
        ),
        max_size=5,
    )
)
def test_a_bench_deletes_the_topics_it_made_and_no_other(
    others: list[list[str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    definition = load_definition().derive(NAME, [f"public.{NAME}"], tmp_path_factory.mktemp("c") / "c.json")
    other = {t for group in others for t in group}
    assert bench_topics([*made_by(NAME), *other], definition) == sorted(made_by(NAME))


def test_the_projects_dead_letter_topic_is_never_a_benches(tmp_path: Path) -> None:
    definition = load_definition().derive(NAME, [f"public.{NAME}"], tmp_path / "c.json")
    assert bench_topics(["dlq.featurectl", "featurectl.dlq", "dead-letters"], definition) == []
