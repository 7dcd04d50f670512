"""Exim messages, followed by message ID until ``Completed``.

Deliveries are written by delivery processes, not by the session's, so a delivery line joins its
message only by ID. Each ``=>``/``->``/``>>``, ``**`` and real ``==`` line is one ``smtp.delivery``
span in the message's trace: its session's, its parent's for a bounce, or its own for local mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from maillog2otel.correlate.base import NS, CorrelateSettings, Stats, Table
from maillog2otel.correlate.exim_span import MTA, Session, Txn, tls_attrs
from maillog2otel.correlate.postfix import next_hop_queue_id
from maillog2otel.records import Delivery, Event, MessageDone, Output
from maillog2otel.telemetry.ids import ids_for, span_id_for

_RETRY_NOT_DUE = re.compile(r"retry time not (?:yet )?reached", re.IGNORECASE)
_TAG_ATTRS = (("R", "exim.router"), ("T", "exim.transport"), ("S", "exim.delivery.size_bytes"),
              ("QT", "exim.queue_time_s"), ("DT", "exim.deliver_time_s"))
_NO_ID = b""  # a message's trace ID and a delivery's span ID when nothing reads them (span_ids)
REPLY = re.compile(r"(?:^|: )(?P<code>[2-5]\d\d)[ -](?:(?P<enh>[245]\.\d{1,3}\.\d{1,3})\b)?")


@dataclass(slots=True)
class Message:
    msgid: str
    host: str
    trace_id: bytes
    parent_span_id: bytes | None
    first_ns: int
    last_ns: int
    origin: str = "smtpd"  # smtpd | local | bounce | unknown (arrived before the log began)
    mail_from: str | None = None
    size: int | None = None
    parent_msgid: str | None = None
    attempts: int = 0
    host_note: str | None = None  # the transport's note on the host, for the next == / **
    session: Session | None = None
    txn: Txn | None = None



class MessageBook:
    """The messages in the queue, by (host, message ID), and the delivery lines that concern them."""

    def __init__(self, settings: CorrelateSettings, stats: Stats) -> None:
        self.s, self.stats = settings, stats
        self.table: Table[tuple[str, str], Message] = Table(settings.max_messages, stats, "message")
        self.handlers = {"delivery": self.delivery, "failure": self.failure, "deferral": self.deferral,
                         "host_error": self.host_error, "completed": self.completed}

    def expire(self, now: int) -> None:
        while (m := self.table.oldest()) is not None and now - m.last_ns > self.s.message_retention_ns:
            self.table.pop((m.host, m.msgid))
            self.stats.bump("message_expired_from_state")

    def new(self, ev: Event, msgid: str, s: Session | None) -> Message:
        host, ts = ev.record.host, ev.record.ts_ns
        if s is not None:
            trace_id, parent = s.trace_id, s.span_id
        else:
            trace_id = ids_for(f"exim|{host}|message|{msgid}|{ts}")[0] if self.s.span_ids else _NO_ID
            parent = None
        msg = Message(msgid, host, trace_id, parent, ts, ts, session=s)
        if self.table.pop((host, msgid)) is not None:
            self.stats.bump("message_id_reused")
        self.table.put((host, msgid), msg)
        return msg

    def get(self, ev: Event) -> Message | None:
        msgid = ev.fields.get("msgid")
        if msgid is None:
            self.stats.bump("message_line_without_id")
            return None
        msg = self.table.get((ev.record.host, msgid))
        if msg is None:  # its arrival is before the log began
            self.stats.bump("message_seen_mid_flight")
            msg = self.new(ev, msgid, None)
            msg.origin = "unknown"
        msg.last_ns = max(msg.last_ns, ev.record.ts_ns)
        ev.ctx = (msg.trace_id, msg.parent_span_id)  # the line's span, for --logs
        return msg

    def delivery(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        if f["flag"] == "*>":  # suppressed by -N: nothing was delivered
            self.stats.bump("delivery_suppressed")
            return
        msg = self.get(ev)
        if msg is None:
            return
        tags = f["tags"]
        rcpt = f.get("original") or f["address"]
        if msg.txn is not None and rcpt not in msg.txn.accepted:
            msg.txn.accepted.append(rcpt)
        if not self.s.span_events:
            out.append(self._bare(msg, ev, rcpt, "delivered"))
            return
        attrs = self._attrs(f, tags, rcpt)
        attrs["exim.flag"] = f["flag"]
        response = str(tags.get("C", ""))
        attrs["smtp.response"] = response
        if nxt := next_hop_queue_id(response):
            attrs["smtp.next_hop.queue_id"] = nxt
        out.append(self._span(msg, ev, rcpt, "delivered", attrs))

    def failure(self, ev: Event, out: list[Output]) -> None:
        msg = self.get(ev)
        if msg is None:
            return
        f = ev.fields
        rcpt = f.get("original") or f["address"]
        if not self.s.span_events:
            out.append(self._bare(msg, ev, rcpt, "bounced", f.get("message") or "bounced"))
            return
        attrs = self._attrs(f, {**f["tags"], **({"DT": f["DT"]} if "DT" in f else {})}, rcpt)
        attrs["smtp.response"] = f.get("message", "")
        out.append(self._span(msg, ev, rcpt, "bounced", attrs, error=attrs["smtp.response"] or "bounced"))

    def deferral(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        text = f.get("message") or f.get("strerror") or ""
        if _RETRY_NOT_DUE.search(text):  # a queue run skipped it: not a delivery attempt
            self.stats.bump("retry_not_due")
            return
        msg = self.get(ev)
        if msg is None:
            return
        rcpt = f.get("original") or f["address"]
        if not self.s.span_events:
            out.append(self._bare(msg, ev, rcpt, "deferred"))
            return
        attrs = self._attrs(f, {**f["tags"], **f["tags2"]}, rcpt)
        attrs["smtp.response"] = text
        attrs["exim.errno"] = f["errno"]
        out.append(self._span(msg, ev, rcpt, "deferred", attrs))

    def host_error(self, ev: Event, out: list[Output]) -> None:
        msg = self.get(ev)
        if msg is not None:
            msg.host_note = f"{ev.fields['relay_name']} [{ev.fields['relay_address']}]: {ev.fields['error']}"

    def completed(self, ev: Event, out: list[Output]) -> None:
        msgid = ev.fields.get("msgid")
        msg = self.table.pop((ev.record.host, msgid)) if msgid else None
        if msg is not None:
            ev.ctx = (msg.trace_id, msg.parent_span_id)
            if self.s.span_events:  # only the stitcher reads it, and only spans go there
                out.append(MessageDone(MTA, ev.record.host, msg.trace_id, ev.record.ts_ns))

    def _attrs(self, f: dict[str, Any], tags: dict[str, Any], rcpt: str) -> dict[str, Any]:
        a: dict[str, Any] = {}
        if f["address"] != rcpt:
            a["exim.address"] = f["address"]
        for tag, name in _TAG_ATTRS:
            if (value := tags.get(tag)) is not None:
                a[name] = value
        h = tags.get("H")
        if h:
            a["smtp.relay"] = h["raw"]
            a["server.address"] = h["address"]
            if "port" in h:
                a["server.port"] = h["port"]
            if "name" in h:
                a["net.peer.name"] = h["name"]
            if h.get("reused"):
                a["exim.connection_reused"] = True
        if "X" in tags or "CV" in tags or "DN" in tags or "SNI" in tags:  # what tls_attrs reads
            a.update(tls_attrs(tags))
        if "A" in tags:
            a["smtp.auth.method"] = str(tags["A"]).split(":")[0]
        return a

    def _span(self, msg: Message, ev: Event, rcpt: str, result: str, attrs: dict[str, Any], *,
              error: str | None = None) -> Delivery:
        ts = ev.record.ts_ns
        msg.attempts += 1
        text = str(attrs.get("smtp.response", ""))
        if (m := REPLY.search(text)) is not None:
            attrs["smtp.response.code"] = int(m["code"])
            if m["enh"]:
                attrs["smtp.dsn"] = m["enh"]
        if msg.host_note and result != "delivered":
            attrs["exim.host_error"] = msg.host_note
        msg.host_note = None
        attrs["smtp.queue_id"] = msg.msgid
        attrs["smtp.rcpt_to"] = rcpt
        attrs["smtp.result"] = result
        attrs["mta.name"] = MTA
        attrs["smtp.message.origin"] = msg.origin
        if msg.mail_from is not None:
            attrs["smtp.mail_from"] = msg.mail_from
        if msg.parent_msgid:
            attrs["smtp.parent_queue_id"] = msg.parent_msgid
        dt = attrs.get("exim.deliver_time_s")
        start = ts - int(dt * NS) if isinstance(dt, float) else ts
        span_id = span_id_for(f"{msg.trace_id.hex()}|{msg.msgid}|{rcpt}|{ts}|{result}|{msg.attempts}")
        ev.ctx = (msg.trace_id, span_id)
        s = msg.session
        pending = s is not None and not s.emitted and msg.parent_span_id == s.span_id
        return Delivery(MTA, msg.host, msg.trace_id, span_id, msg.parent_span_id, min(start, ts), ts, result,
                        attrs, error, parent_pending=pending)

    def _bare(self, msg: Message, ev: Event, rcpt: str, result: str, error: str | None = None) -> Delivery:
        """``_span`` when no span is exported (metrics only): the same IDs (for --logs' records; none
        when nothing reads them) and result, none of the attributes; metrics read the host, result
        and time."""
        ts = ev.record.ts_ns
        msg.attempts += 1
        msg.host_note = None
        span_id = span_id_for(f"{msg.trace_id.hex()}|{msg.msgid}|{rcpt}|{ts}|{result}|{msg.attempts}") \
            if self.s.span_ids else _NO_ID
        ev.ctx = (msg.trace_id, span_id)
        s = msg.session
        pending = s is not None and not s.emitted and msg.parent_span_id == s.span_id
        return Delivery(MTA, msg.host, msg.trace_id, span_id, msg.parent_span_id, ts, ts, result, {}, error,
                        parent_pending=pending)

    # --- state across restarts ----------------------------------------------------------------

    def save(self, live: list[Session]) -> list[dict[str, Any]]:
        """Messages as data; their session as its position in ``live`` (the saved sessions)."""
        where = {id(s): i for i, s in enumerate(live)}
        rows = []
        for m in self.table.values():
            d = {k: getattr(m, k) for k in Message.__slots__ if k not in ("session", "txn")}  # type: ignore[attr-defined]
            d["trace_id"] = m.trace_id.hex()
            d["parent_span_id"] = m.parent_span_id.hex() if m.parent_span_id else None
            kept = m.session is not None and id(m.session) in where and m.txn in m.session.txns
            d["session"] = where[id(m.session)] if kept else None
            d["txn"] = m.session.txns.index(m.txn) if kept else None  # type: ignore[union-attr, arg-type]
            rows.append(d)
        return rows

    def load(self, rows: list[dict[str, Any]], live: list[Session]) -> None:
        for raw in rows:
            d = dict(raw)
            at, tindex = d.pop("session"), d.pop("txn")
            d["trace_id"] = bytes.fromhex(d["trace_id"])
            d["parent_span_id"] = bytes.fromhex(d["parent_span_id"]) if d["parent_span_id"] else None
            m = Message(**d)
            if at is not None:
                m.session = live[at]
                m.txn = m.session.txns[tindex] if tindex is not None else None
            self.table.put((m.host, m.msgid), m)
