"""One trace across mail hops: a delivery whose reply names the next hop's queue ID adopts that
hop's inbound connection into its trace.

The link is in the logs: the sending MTA logs the receiver's "queued" reply (Postfix ``queued as
4F9D195432``, Exim ``id=1xUwlk-0003Gh-1Z``, Haraka ``(UUID.1)``) as ``smtp.next_hop.queue_id`` on the
delivery span, and the receiving MTA logged the same ID on its ``smtp.connection`` span's
``smtp.queue_ok`` event. Either may come first when several logs are merged, so spans wait
``window_ns`` of log time before they leave; a connection linked within the window becomes a child
of the delivery span and its whole trace (the message's later deliveries too, even days later) is
renamed to the delivery's trace. A link found after the connection left becomes a span link on the
delivery instead. Trace IDs stay a function of the logs. With logs of a single hop nothing matches
and nothing changes.
"""

from __future__ import annotations

import heapq
import json
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from maillog2otel.records import SERVER, MessageDone, SpanData, SpanEvent

NS = 1_000_000_000


@dataclass(slots=True)
class StitchStats:
    linked: int = 0  # connections adopted into the previous hop's trace
    linked_late: int = 0  # found too late: a span link instead
    unmatched_next_hop: int = 0  # deliveries naming an ID no connection in the input had
    evicted: int = 0
    counts: dict[str, int] = field(default_factory=dict)


class _Hold:
    """Held items in arrival order, like a deque of ``(due, item)``, for a live tail: there
    connection spans are due at once while deliveries wait ``window_ns``, so due items sit behind
    waiting ones, and ``release`` runs after every correlator output. A heap of (due, arrival)
    finds the due ones without scanning everything held (a scan per release made a tail at
    5,000 lines/s spend most of its time here)."""

    __slots__ = ("heap", "items", "seq")

    def __init__(self) -> None:
        self.items: OrderedDict[int, tuple[int, SpanData | MessageDone]] = OrderedDict()
        self.heap: list[tuple[int, int]] = []
        self.seq = 0

    def append(self, entry: tuple[int, SpanData | MessageDone]) -> None:
        self.seq += 1
        self.items[self.seq] = entry
        heapq.heappush(self.heap, (entry[0], self.seq))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, SpanData | MessageDone]]:
        return iter(self.items.values())

    def __getitem__(self, index: int) -> tuple[int, SpanData | MessageDone]:
        if index != 0 or not self.items:
            raise IndexError(index)
        return next(iter(self.items.values()))

    def clear(self) -> None:
        self.items.clear()
        self.heap.clear()

    def pop_due(self, now_ns: int) -> list[SpanData | MessageDone]:
        """Every item due at ``now_ns``, in arrival order."""
        heap, items = self.heap, self.items
        seqs = []
        while heap and heap[0][0] <= now_ns:
            seqs.append(heapq.heappop(heap)[1])
        seqs.sort()
        return [items.pop(s)[1] for s in seqs]


class Stitcher:
    """``window_ns``: how long deliveries (and hints) wait; ``server_window_ns``: how long connection
    spans wait. A live tail lets connection spans go at once (they are adopted on arrival when the
    delivery came first, the usual order) and keeps its 2 s latency."""

    def __init__(self, window_ns: int = 3 * NS, match_ns: int = 600 * NS, retention_ns: int = 7 * 86400 * NS,
                 max_entries: int = 200_000, server_window_ns: int | None = None) -> None:
        self.window_ns, self.match_ns, self.retention_ns = window_ns, match_ns, retention_ns
        self.server_window_ns = window_ns if server_window_ns is None else server_window_ns
        self.max_entries = max_entries
        self.hold: deque[tuple[int, SpanData | MessageDone]] | _Hold = \
            _Hold() if self.server_window_ns < window_ns else deque()
        # next hop's queue ID -> (log time, trace ID, delivery span ID) of the delivery naming it
        self.next_hop: OrderedDict[str, tuple[int, bytes, bytes]] = OrderedDict()
        # queue ID -> connection span still held here, waiting for its delivery
        self.waiting: dict[str, SpanData] = {}
        # queue ID -> (log time, trace, span) of connection spans already sent (late links)
        self.sent: OrderedDict[str, tuple[int, bytes, bytes]] = OrderedDict()
        self.remap: OrderedDict[bytes, tuple[int, bytes]] = OrderedDict()  # old trace -> new trace
        # deliveries whose connection span has not come yet, by that span's ID
        self.children: OrderedDict[bytes, list[tuple[int, SpanData]]] = OrderedDict()
        self.max_child_wait_ns = 3600 * NS
        self.stats = StitchStats()
        # id(span) -> (span, trace ID, parent span ID, JSON text) of held spans: see save_state
        self.saved_json: dict[int, tuple[SpanData, bytes, bytes | None, str]] = {}
        # per link table, its keys, entries and saved rows at the last save: see save_state
        self.saved_rows: dict[str, tuple[list[str], list[tuple[int, bytes, bytes]], list[str]]] = {}

    def _trace(self, trace_id: bytes) -> bytes:
        seen = 0
        while (hop := self.remap.get(trace_id)) is not None and seen < 16:  # chains of hops
            trace_id = hop[1]
            seen += 1
        return trace_id

    def add(self, item: SpanData | MessageDone, now_ns: int) -> None:
        if isinstance(item, MessageDone):
            item.trace_id = self._trace(item.trace_id)
            self.hold.append((now_ns + self.window_ns, item))
            return
        span = item
        if self.remap:
            span.trace_id = self._trace(span.trace_id)
        nxt = span.attrs.get("smtp.next_hop.queue_id") if span.kind != SERVER else None
        if nxt is not None:
            self._delivery(span, nxt)
        if span.kind == SERVER:
            for qid in _queue_ids(span):
                hop = self.next_hop.pop(qid, None)
                if hop is not None and abs(hop[0] - span.start_ns) <= self.match_ns:
                    self._adopt(span, self._trace(hop[1]), hop[2])
                else:
                    self.waiting[qid] = span
        if span.kind == SERVER:
            # due a window after its own end, not after it was emitted: a connection whose partner
            # shows up later than that gets a span link, however the lines were batched
            self.hold.append((span.end_ns + self.server_window_ns, span))
            for logged_ns, child in self.children.pop(span.span_id, ()):
                child.trace_id = span.trace_id  # adopted meanwhile: the children follow
                # their window runs from their own line, not from when the connection came: a
                # connection released at the end of the input must not keep its deliveries back
                self.hold.append((max(child.end_ns, logged_ns) + self.window_ns, child))
            return
        if span.parent_pending and span.parent_span_id is not None:
            self.children.setdefault(span.parent_span_id, []).append((now_ns, span))
            return
        self.hold.append((max(span.end_ns, now_ns) + self.window_ns, span))

    def _delivery(self, span: SpanData, nxt: str) -> None:
        conn = self.waiting.pop(nxt, None)
        if conn is not None and abs(conn.start_ns - span.end_ns) <= self.match_ns:
            self._adopt(conn, span.trace_id, span.span_id)
            return
        sent = self.sent.get(nxt)
        if sent is not None and abs(sent[0] - span.end_ns) <= self.match_ns:
            span.links.append((sent[1], sent[2], {"smtp.link": "next_hop"}))
            self.stats.linked_late += 1
            return
        self.next_hop[nxt] = (span.end_ns, span.trace_id, span.span_id)
        self._bound(self.next_hop)

    def _adopt(self, conn: SpanData, trace_id: bytes, parent_span_id: bytes) -> None:
        old = conn.trace_id
        conn.parent_span_id = parent_span_id
        self.stats.linked += 1
        if old == trace_id:
            return
        self.remap[old] = (conn.end_ns, trace_id)
        self._bound(self.remap)
        for _, held in self.hold:
            if held.trace_id == old:
                held.trace_id = trace_id
        conn.trace_id = trace_id

    def _bound(self, table: OrderedDict) -> None:
        while len(table) > self.max_entries:
            table.popitem(last=False)
            self.stats.evicted += 1

    def release(self, now_ns: int) -> list[SpanData | MessageDone]:
        """Items whose window has passed at log time ``now_ns``, in the order they came."""
        out: list[SpanData | MessageDone] = []
        hold = self.hold
        if isinstance(hold, _Hold):  # connection spans due behind others
            out.extend(self._leave(item) for item in hold.pop_due(now_ns))
        else:
            while hold and hold[0][0] <= now_ns:
                out.append(self._leave(hold.popleft()[1]))
        if self.remap and now_ns:
            while self.remap and next(iter(self.remap.values()))[0] < now_ns - self.retention_ns:
                self.remap.popitem(last=False)
        while self.children:  # a connection that never came (evicted, cut log): let them go
            parent, waiting = next(iter(self.children.items()))
            if waiting[0][0] > now_ns - self.max_child_wait_ns:
                break
            del self.children[parent]
            out.extend(self._trace_now(child) for _, child in waiting)
        return out

    def _trace_now(self, span: SpanData) -> SpanData:
        span.trace_id = self._trace(span.trace_id)
        return span

    def drain(self) -> list[SpanData | MessageDone]:
        out = [self._leave(item) for _, item in self.hold]
        self.hold.clear()
        for waiting in self.children.values():
            out.extend(self._trace_now(child) for _, child in waiting)
        self.children.clear()
        self.stats.unmatched_next_hop += len(self.next_hop)
        return out

    def _leave(self, item: SpanData | MessageDone) -> SpanData | MessageDone:
        if isinstance(item, SpanData) and item.kind == SERVER:
            for qid in _queue_ids(item):
                if self.waiting.get(qid) is item:
                    del self.waiting[qid]
                self.sent[qid] = (item.start_ns, item.trace_id, item.span_id)
                self._bound(self.sent)
            while self.sent and next(iter(self.sent.values()))[0] < item.start_ns - self.match_ns:
                self.sent.popitem(last=False)
        return item


# --- state across restarts (tail): held spans and the link tables, JSON-able --------------------

def _span_state(s: SpanData) -> dict:
    return {"n": s.name, "k": s.kind, "t": s.trace_id.hex(), "s": s.span_id.hex(),
            "p": s.parent_span_id.hex() if s.parent_span_id else None, "b": s.start_ns, "e": s.end_ns,
            "a": s.attrs, "ev": [[e.name, e.ts_ns, e.attrs] for e in s.events], "err": s.status_error,
            "r": list(s.resource), "l": [[t.hex(), sp.hex(), a] for t, sp, a in s.links],
            "pp": s.parent_pending}


def _span_from(d: dict) -> SpanData:
    return SpanData(d["n"], d["k"], bytes.fromhex(d["t"]), bytes.fromhex(d["s"]),
                    bytes.fromhex(d["p"]) if d["p"] else None, d["b"], d["e"], d["a"],
                    [SpanEvent(*e) for e in d["ev"]], d["err"], tuple(d["r"]),  # type: ignore[arg-type]
                    [(bytes.fromhex(t), bytes.fromhex(sp), a) for t, sp, a in d["l"]], d.get("pp", False))


def save_state(st: Stitcher) -> dict:
    """A live tail saves this about four times a second, and a held item is in several saves: each
    is written as JSON text once and reused while its trace and parent stay the same (the only
    fields of a held span that change: adoption into another hop's trace). The held items, the
    deliveries waiting for their connection and the link tables (up to 20,000 entries each in a
    tail) are each saved as one string (``"holdj"``, ``"childrenj"``: JSON text; ``"next_hop"``,
    ``"sent"``: ``key time trace span`` lines) joined from those pieces: the state file's encoder
    escapes one long string ≈10× faster than it encodes the same data as thousands of lists."""
    cache, kept = st.saved_json, {}
    hold = ",".join([_held_json(due, item, cache, kept) for due, item in st.hold])
    children = ",".join(
        [f'["{p.hex()}",[' + ",".join([f"[{ts},{_span_json(c, cache, kept)}]" for ts, c in waiting]) + "]]"
         for p, waiting in st.children.items()])
    st.saved_json = kept
    return {"holdj": f"[{hold}]", "next_hop": _rows(st, "next_hop", st.next_hop),
            "sent": _rows(st, "sent", st.sent),
            "remap": [[o.hex(), ts, n.hex()] for o, (ts, n) in st.remap.items()],
            "childrenj": f"[{children}]"}


def _held_json(due: int, item: SpanData | MessageDone, cache: dict, kept: dict) -> str:
    entry = cache.get(id(item))
    if entry is None or entry[0] is not item or entry[1] != item.trace_id or entry[2] != due \
            or (isinstance(item, SpanData) and entry[3] != item.parent_span_id):
        if isinstance(item, MessageDone):
            text = json.dumps([due, "done", [item.mta, item.host, item.trace_id.hex(), item.ts_ns]],
                              separators=(",", ":"), ensure_ascii=False)
            entry = (item, item.trace_id, due, None, text)
        else:
            text = f'[{due},"span",{_span_json(item, cache, {})}]'
            entry = (item, item.trace_id, due, item.parent_span_id, text)
    kept[id(item)] = entry
    return entry[4]


def _span_json(item: SpanData, cache: dict, kept: dict) -> str:
    key = ("s", id(item))
    entry = cache.get(key)
    if entry is None or entry[0] is not item or entry[1] != item.trace_id or entry[2] != item.parent_span_id:
        text = json.dumps(_span_state(item), separators=(",", ":"), ensure_ascii=False)
        entry = (item, item.trace_id, item.parent_span_id, text)
    kept[key] = entry
    return entry[3]


def _rows(st: Stitcher, name: str, table: OrderedDict[str, tuple[int, bytes, bytes]]) -> str:
    """A link table's entries as lines, each formatted once. Between two saves a table usually
    lost entries at its front and gained some at its end (entries are replaced, never changed):
    that is checked by list comparisons, and only the new entries are formatted."""
    keys, entries = list(table), list(table.values())
    old_keys, old_entries, old_rows = st.saved_rows.get(name, ([], [], []))
    rows: list[str] | None = None
    if old_keys and keys:
        try:
            gone = old_keys.index(keys[0])
        except ValueError:
            gone = len(old_keys)
        same = len(old_keys) - gone
        if same <= len(keys) and keys[:same] == old_keys[gone:] and entries[:same] == old_entries[gone:]:
            rows = old_rows[gone:]
            rows.extend(f"{q} {e[0]} {e[1].hex()} {e[2].hex()}"
                        for q, e in zip(keys[same:], entries[same:], strict=True))
    if rows is None:
        rows = [f"{q} {e[0]} {e[1].hex()} {e[2].hex()}" for q, e in zip(keys, entries, strict=True)]
    st.saved_rows[name] = (keys, entries, rows)
    return "\n".join(rows)


def _links(rows: str | list) -> Iterator[tuple[str, tuple[int, bytes, bytes]]]:
    """Lines ``key time trace span`` (a list of ``[key, time, trace, span]`` before)."""
    for row in rows.split("\n") if isinstance(rows, str) else rows:
        if row:
            q, ts, t, s = row.rsplit(" ", 3) if isinstance(row, str) else row
            yield q, (int(ts), bytes.fromhex(t), bytes.fromhex(s))


def _load_span(raw: str | dict) -> SpanData:
    return _span_from(json.loads(raw) if isinstance(raw, str) else raw)


def load_state(st: Stitcher, state: dict) -> None:
    hold = json.loads(state["holdj"]) if "holdj" in state else state.get("hold", [])
    for due, kind, raw in hold:
        if kind == "done":
            st.hold.append((due, MessageDone(raw[0], raw[1], bytes.fromhex(raw[2]), raw[3])))
            continue
        span = _load_span(raw)  # "spanj" (JSON text) or "span" (the object)
        st.hold.append((due, span))
        if span.kind == SERVER and span.parent_span_id is None:
            for qid in _queue_ids(span):
                st.waiting[qid] = span
    st.next_hop.update(_links(state.get("next_hop", [])))
    st.sent.update(_links(state.get("sent", [])))
    for o, ts, n in state.get("remap", []):
        st.remap[bytes.fromhex(o)] = (ts, bytes.fromhex(n))
    children = json.loads(state["childrenj"]) if "childrenj" in state else state.get("children", [])
    for p, waiting in children:
        st.children[bytes.fromhex(p)] = [(ts, _load_span(raw)) for ts, raw in waiting]


def _queue_ids(span: SpanData) -> list[str]:
    return [e.attrs["smtp.queue_id"] for e in span.events
            if e.name == "smtp.queue_ok" and "smtp.queue_id" in e.attrs]
