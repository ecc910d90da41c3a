"""The bus's wire format (src/tether/relay/cluster/records.py), fuzzed, and how a node's end of the
bus finds batches lost on the way (numbered per receiver; bus.py) — without Redis."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.relay.cluster.bus import Bus
from tether.relay.cluster.records import BusError, Kind, Record, batch_head, decode_batch

node_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64)
records = st.builds(Record, st.sampled_from(Kind), st.integers(0, 2**64 - 1), st.binary(max_size=300))
counters = st.integers(0, 2**64 - 1)


@given(node_ids, counters, counters, st.lists(records, max_size=20))
def test_a_batch_decodes_to_what_was_encoded(sender: str, epoch: int, sequence: int, body: list[Record]) -> None:
    batch = decode_batch(batch_head(sender, epoch, sequence) + b"".join(r.encode() for r in body))
    assert (batch.sender, batch.epoch, batch.sequence, batch.records) == (sender, epoch, sequence, body)


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_bus_error(data: bytes) -> None:
    try:
        decode_batch(data)
    except BusError:
        pass


@given(node_ids, st.lists(records, min_size=1, max_size=5), st.data())
def test_a_cut_batch_is_refused(sender: str, body: list[Record], data: st.DataObject) -> None:
    head = batch_head(sender, 7, 1)
    whole = head + b"".join(r.encode() for r in body)
    cut = data.draw(st.integers(1, len(whole) - 1))
    boundaries = {len(head) + sum(len(r.encode()) for r in body[:n]) for n in range(len(body))}
    if cut in boundaries:
        return  # between records: a valid batch of fewer records
    with pytest.raises(BusError):
        decode_batch(whole[:cut])


def test_a_bad_node_id_or_version_is_refused() -> None:
    with pytest.raises(BusError, match="printable ASCII"):
        batch_head("node one", 1, 1)
    head = batch_head("node-1", 1, 1)
    with pytest.raises(BusError, match="run one tether version on every node"):
        decode_batch(bytes([1]) + head[1:])


class Heard:
    """A Bus's callbacks, recorded."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, list[Record]]] = []
        self.gaps: list[str] = []

    def bus(self) -> Bus:
        def nothing(*_: Any) -> None:
            pass

        return Bus(None, "node-b", lambda s, r: self.delivered.append((s, r)), nothing, nothing, nothing,  # type: ignore[arg-type]
                   self.gaps.append)


def message(sender: str, epoch: int, sequence: int, *body: Record) -> dict[str, object]:
    return {"type": "smessage", "data": batch_head(sender, epoch, sequence) + b"".join(r.encode() for r in body)}


def test_a_skipped_number_is_a_gap_the_records_still_arrive_and_a_new_epoch_is_none() -> None:
    heard = Heard()
    bus = heard.bus()
    hello = Record(Kind.HOST_CHANGED, 0, b"host-1")
    bus._on_message(message("node-a", 5, 41, hello))  # the first seen from node-a: any number
    bus._on_message(message("node-a", 5, 42))
    assert heard.gaps == []
    bus._on_message(message("node-a", 5, 44, hello))  # 43 was lost
    assert heard.gaps == ["node-a"] and bus.gaps == 1
    assert heard.delivered[-1] == ("node-a", [hello])
    bus._on_message(message("node-c", 1, 9))  # each sender counts on its own
    bus._on_message(message("node-a", 5, 45))
    bus._on_message(message("node-a", 8, 1))  # node-a started again: a new count
    bus._on_message(message("node-a", 8, 2))
    assert heard.gaps == ["node-a"]
    bus._on_message(message("node-a", 8, 2))  # the same batch twice is a gap too
    assert heard.gaps == ["node-a", "node-a"]
