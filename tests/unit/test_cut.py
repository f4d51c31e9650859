"""streams/cut.py against a brute-force model: a batch splits a transaction when it holds some, not all, of its
messages (its changes and its END)."""

import json
import random

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.cut import Tally, carry
from tests.unit.fakes import Msg, change, customer

TXN_TOPIC = "shop.transaction"


def stream(sizes: list[int]) -> list[tuple[int, Msg]]:
    """Transactions of ``sizes[i]`` changes each (over two partitions), each followed by its END, as
    (transaction, message)."""
    out: list[tuple[int, Msg]] = []
    offset = 0
    for t, size in enumerate(sizes):
        for order in range(1, size + 1):
            msg = change(offset, "u", t, customer(t), partition=order % 2)
            value = json.loads(msg.v or b"{}")
            value["transaction"] = {"id": f"{t}:{1000 + offset}", "total_order": order}
            msg.v = json.dumps(value).encode()
            out.append((t, msg))
            offset += 1
        end = {"status": "END", "id": f"{t}:{1000 + offset}", "event_count": size}
        out.append((t, Msg(TXN_TOPIC, 0, t, None, json.dumps(end).encode())))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=6), st.data())
def test_a_batch_splits_a_transaction_exactly_when_it_holds_part_of_its_messages(
    sizes: list[int], data: st.DataObject
) -> None:
    messages = stream(sizes)
    taken = data.draw(st.lists(st.booleans(), min_size=len(messages), max_size=len(messages)))
    batch = [m for (_, m), keep in zip(messages, taken, strict=True) if keep]
    tally = Tally(TXN_TOPIC)
    half = data.draw(st.integers(0, len(batch)))
    tally.add(batch[:half])  # in two steps, as a top-up adds to a batch
    tally.add(batch[half:])
    per_txn: dict[int, set[bool]] = {}
    for (t, _), keep in zip(messages, taken, strict=True):
        per_txn.setdefault(t, set()).add(keep)
    assert tally.split == any(kept == {True, False} for kept in per_txn.values())
    # Every change it holds is decoded once, for the pipeline.
    assert len(tally.decoded) == sum(1 for m in batch if m.topic() != TXN_TOPIC)


def test_what_is_no_change_event_is_left_to_the_pipeline_to_dead_letter() -> None:
    tally = Tally(TXN_TOPIC)
    tally.add([Msg("shop.public.customers", 0, 7, b"{", b"not json"), Msg(TXN_TOPIC, 0, 1, None, b"[]")])
    assert not tally.split and tally.decoded == {}


def positioned(offset: int, partition: int, txn: int, order: int) -> Msg:
    """A change of transaction ``txn`` (commit position 1000 * (txn + 1): Debezium's ``sequence[0]``)."""
    msg = change(offset, "u", txn, customer(txn), partition=partition)
    value = json.loads(msg.v or b"{}")
    value["source"]["sequence"] = json.dumps([str(1000 * (txn + 1)), str(1000 * (txn + 1) + order)])
    value["transaction"] = {"id": f"{txn}:{1000 * (txn + 1) + order}", "total_order": order}
    msg.v = json.dumps(value).encode()
    return msg


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=5), min_size=1, max_size=8),
    st.lists(st.integers(0, 40), min_size=4, max_size=4),
    st.randoms(use_true_random=False),
)
def test_a_full_batch_carries_a_suffix_of_each_partition_and_keeps_no_transaction_in_part(
    transactions: list[list[int]], read: list[int], rng: random.Random
) -> None:
    """Transactions (each its changes' partitions, of 4) in commit order; the batch read a prefix of each
    partition (``read``: how many), interleaved at random. Brute force: what is processed now holds no
    transaction in part (all of its changes in the partitions the batch read, or none), what is carried is a
    suffix of each partition, and at least half the batch is processed."""
    lanes: dict[int, list[tuple[int, Msg]]] = {p: [] for p in range(4)}
    for t, parts in enumerate(transactions):
        for order, p in enumerate(parts, 1):
            lanes[p].append((t, positioned(len(lanes[p]), p, t, order)))
    taken = {p: lanes[p][: read[p]] for p in lanes}
    batch: list[Msg] = []
    queues = {p: [m for _, m in taken[p]] for p in taken if taken[p]}
    while queues:
        p = rng.choice(sorted(queues))
        batch.append(queues[p].pop(0))
        if not queues[p]:
            del queues[p]
    assume(batch)
    tally = Tally(TXN_TOPIC)
    tally.add(batch)  # type: ignore[arg-type]
    now, later = carry(batch, tally.decoded)  # type: ignore[arg-type]
    assert sorted(map(id, now + later)) == sorted(map(id, batch))
    for p in range(4):  # a suffix of each partition, in offset order
        offsets = [m.offset() for m in batch if m.partition() == p]
        kept = [m.offset() for m in now if m.partition() == p]
        assert kept == offsets[: len(kept)]
    assert now and 2 * len(now) >= len(batch)  # progress, and room in the next batch
    # The contract's cut: below W, the lowest of the partitions' last commit positions read.
    position = {(p, m.offset()): t for p in taken for t, m in taken[p]}
    w = min(max(position[(m.partition(), m.offset())] for m in batch if m.partition() == p) for p in
            {m.partition() for m in batch})  # fmt: skip
    below = [m for m in batch if position[(m.partition(), m.offset())] < w]
    assert {id(m) for m in now} == {
        id(m) for m in (below if below and 2 * len(below) >= len(batch) else batch)
    }
    if later:
        present = {m.partition() for m in batch}
        processed = {(m.partition(), m.offset()) for m in now}
        for t in {t for p in taken for t, m in taken[p] if (p, m.offset()) in processed}:
            whole = [(p, m.offset()) for p in present for u, m in lanes[p] if u == t]
            assert all(w in processed for w in whole), (t, whole)
