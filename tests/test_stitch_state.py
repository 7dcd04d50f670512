"""The stitcher's saved state (what a live tail checkpoints about four times a second) reuses the
JSON text of spans it saved before: that text must follow every change of a held span."""

from __future__ import annotations

import json

from maillog2otel.records import CLIENT, SERVER, SpanData, SpanEvent
from maillog2otel.telemetry.stitch import Stitcher, load_state, save_state

NS = 1_000_000_000


def _span(name: str, kind: int, trace: int, span: int, parent: int | None, end_s: int, attrs: dict,
          events: list[SpanEvent] | None = None, host: str = "mx2") -> SpanData:
    return SpanData(name, kind, bytes([trace]) * 16, bytes([span]) * 8,
                    bytes([parent]) * 8 if parent else None, (end_s - 1) * NS, end_s * NS, attrs,
                    events or [], None, (host, "postfix"))


def _fresh(st: Stitcher) -> dict:
    """The state as it would be written with nothing reused."""
    saved, st.saved_json = st.saved_json, {}
    try:
        return save_state(st)
    finally:
        st.saved_json = saved


def test_reused_text_follows_adoption_and_round_trips() -> None:
    st = Stitcher(window_ns=2 * NS, server_window_ns=0)  # the live tail's stitcher
    conn = _span("smtp.connection", SERVER, 1, 2, None, 11, {"client.port": 50000},
                 [SpanEvent("smtp.queue_ok", 10 * NS, {"smtp.queue_id": "9F8E7D6C5B"})])
    delivery = _span("smtp.delivery", CLIENT, 1, 3, 2, 12, {"smtp.result": "delivered"})
    st.add(conn, 11 * NS)
    st.add(delivery, 12 * NS)
    first = save_state(st)
    assert first == _fresh(st)
    assert [kind for _, kind, _ in json.loads(first["holdj"])] == ["span", "span"]
    assert save_state(st) == first  # nothing changed: the same text, reused
    # the previous hop's delivery names this connection's queue ID: both held spans move to its trace
    upstream = _span("smtp.delivery", CLIENT, 9, 10, None, 12, {"smtp.next_hop.queue_id": "9F8E7D6C5B"},
                     host="mx1")
    st.add(upstream, 12 * NS)
    assert conn.trace_id == delivery.trace_id == upstream.trace_id and conn.parent_span_id == upstream.span_id
    second = save_state(st)
    assert second == _fresh(st) and second != first
    held = [raw for _, kind, raw in json.loads(second["holdj"]) if kind == "span"]
    assert {h["t"] for h in held} == {upstream.trace_id.hex()}
    # a restart loads it: the same spans, the same state written again
    again = Stitcher(window_ns=2 * NS, server_window_ns=0)
    load_state(again, json.loads(json.dumps(second)))
    assert save_state(again) == second
    assert [item.span_id for _, item in again.hold] == [item.span_id for _, item in st.hold]


def test_states_of_older_versions_load() -> None:
    """Held spans as dicts (first), then as JSON text each ("spanj"), link tables as lists."""
    st = Stitcher(window_ns=2 * NS, server_window_ns=0)
    conn = _span("smtp.connection", SERVER, 1, 2, None, 11, {"client.port": 50000},
                 [SpanEvent("smtp.queue_ok", 10 * NS, {"smtp.queue_id": "9F8E7D6C5B"})])
    st.add(conn, 11 * NS)
    st.release(11 * NS)  # the connection leaves: its queue ID goes to the late-link table
    st.add(_span("smtp.delivery", CLIENT, 1, 3, None, 12, {"smtp.result": "delivered"}), 12 * NS)
    waiting = _span("smtp.delivery", CLIENT, 4, 5, 6, 12, {"smtp.result": "deferred"})
    waiting.parent_pending = True  # its connection span has not come yet
    st.add(waiting, 12 * NS)
    state = save_state(st)
    assert state["sent"] == f"9F8E7D6C5B {10 * NS} {conn.trace_id.hex()} {conn.span_id.hex()}"
    sent = [["9F8E7D6C5B", 10 * NS, conn.trace_id.hex(), conn.span_id.hex()]]
    hold = json.loads(state["holdj"])
    children = json.loads(state["childrenj"])
    assert len(hold) == 1 and len(children) == 1
    base = {k: v for k, v in state.items() if k not in ("holdj", "childrenj")}
    for old in ({**base, "sent": sent, "children": children, "hold": hold},
                {**base, "sent": sent, "children": children,
                 "hold": [[due, "spanj", json.dumps(raw)] for due, _, raw in hold]}):
        again = Stitcher(window_ns=2 * NS, server_window_ns=0)
        load_state(again, old)
        assert save_state(again) == state
