"""streams/cut.py against a brute-force model: a batch splits a transaction when it holds some, not all, of its
messages (its changes and its END)."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.cut import Tally
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
