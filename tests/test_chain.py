"""One trace across real hops: Postfix -> Exim -> Haraka and Haraka -> Exim, recorded on loopback
(fixtures/chain/), read together in any order, and each hop alone."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from maillog2otel.testing import run_pipeline

CHAIN = Path(__file__).resolve().parent.parent / "fixtures" / "chain"
TRUTH = json.loads((CHAIN / "chain.truth.json").read_text())
LOGS = {"postfix": CHAIN / "postfix.log", "exim": CHAIN / "exim.mainlog", "haraka": CHAIN / "haraka.log"}


def _hops(message: dict) -> list[dict]:
    return [h for h in message["hops"] if h["mta"] in LOGS]


def _connection_of(result, mta: str, queue_id: str):
    for span in result.connections():
        if span.resource[1] == mta and any(e.name == "smtp.queue_ok"
                                           and e.attrs.get("smtp.queue_id") == queue_id
                                           for e in span.events):
            return span
    raise AssertionError(f"no {mta} connection queued {queue_id}")


@pytest.mark.parametrize("order", list(itertools.permutations(LOGS)))
def test_every_relayed_message_is_one_trace(order: tuple[str, ...]) -> None:
    result = run_pipeline([str(LOGS[m]) for m in order], timezone="UTC", hostname="hop")
    spans = {s.span_id: s for s in result.spans}
    for message in TRUTH["messages"]:
        hops = _hops(message)
        conns = [_connection_of(result, h["mta"], h["queue_id"]) for h in hops]
        assert len({c.trace_id for c in conns}) == 1, message["name"]
        for upstream, conn in itertools.pairwise(conns):  # each hop's connection is a child of a delivery
            parent = spans[conn.parent_span_id]
            assert parent.name == "smtp.delivery" and parent.parent_span_id == upstream.span_id
        for d in result.deliveries():  # every delivery of those messages is in the same trace
            if any(d.attrs.get("smtp.queue_id") == h["queue_id"] for h in hops):
                assert d.trace_id == conns[0].trace_id, (message["name"], d.attrs["smtp.queue_id"])


def test_the_same_ids_in_any_order() -> None:
    runs = [run_pipeline([str(LOGS[m]) for m in order], timezone="UTC", hostname="hop")
            for order in (("postfix", "exim", "haraka"), ("haraka", "exim", "postfix"))]
    assert sorted((s.trace_id, s.span_id, s.parent_span_id) for s in runs[0].spans) == \
        sorted((s.trace_id, s.span_id, s.parent_span_id) for s in runs[1].spans)


def test_each_hop_alone_carries_the_join_attributes() -> None:
    alone = {mta: run_pipeline([str(path)], timezone="UTC", hostname="hop") for mta, path in LOGS.items()}
    for message in TRUTH["messages"]:
        hops = _hops(message)
        for upstream, downstream in itertools.pairwise(hops):
            names = {d.attrs.get("smtp.next_hop.queue_id") for d in alone[upstream["mta"]].deliveries()
                     if d.attrs.get("smtp.queue_id") == upstream["queue_id"]}
            assert downstream["queue_id"] in names, (message["name"], upstream["mta"])
            conn = _connection_of(alone[downstream["mta"]], downstream["mta"], downstream["queue_id"])
            assert conn.parent_span_id is None  # no upstream in its own log
