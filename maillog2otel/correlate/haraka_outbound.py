"""Haraka's outbound queue -> ``smtp.delivery`` spans in the trace of the connection that brought
the mail.

A relayed transaction ``U.n`` is split into queue items ``U.n.m``, one per destination domain in
the order of its recipients (outbound/index.js ``get_deliveries``); retries keep the item's name
for days. Every attempt of an item ends in verdicts: ``delivered … rcpts=ok/temp/bounce``,
``recipient <a> deferred|rejected: reply``, ``Temp failing … : reason`` and ``bouncing mail:
reason``. Each recipient gets one span per attempt; ``haraka.messages`` counts one delivered,
deferred or bounced per verdict line, per item, as the delivered/deferred/bounce hooks of the
OpenTelemetry plugin do.

Which recipients an item carries: the transaction's accepted recipients of the item's domain, the
domain coming from the item's own lines (``get_mx`` params, ``delivered domain=``) or from the
``Transaction delivery for domain`` lines logged while only this transaction was being queued
(uuid ``-`` lines, so used only when no other queueing overlapped). PROTOCOL logs name them on
the wire (``C: RCPT TO:``). Messages Haraka makes itself (bounces: ``Created transaction: X``)
are linked to the item that bounced only when that line carries the item's UUID; Haraka 3.3.4
logs it with ``-``, and then the bounce is a trace of its own.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

from maillog2otel.correlate.base import CorrelateSettings, Stats, Table
from maillog2otel.correlate.postfix import next_hop_queue_id
from maillog2otel.records import Count, Delivery, Event, MessageDone, Output
from maillog2otel.telemetry.ids import ids_for, span_id_for

MTA = "haraka"
_LISTED = re.compile(r"(?:Too many failures \()?Some recipients (?:temp )?failed: ((?:<[^<>]*>(?:, )?)+)")
_ADDR = re.compile(r"<([^<>]*)>")
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_DONE_KEPT_NS = 600 * 1_000_000_000
_IP = re.compile(r"[\d.]+|[0-9a-fA-F:]*:[0-9a-fA-F:.]*")


@dataclass(slots=True)
class Message:
    """A transaction handed to outbound: ``U.n`` from a connection, or ``X`` made by Haraka."""

    key: str
    host: str
    trace_id: bytes
    parent_span_id: bytes | None
    last_ns: int
    origin: str = "smtpd"  # smtpd | bounce | local (Haraka's own mail) | unknown (before the log)
    mail_from: str | None = None
    rcpts: list[str] | None = None  # accepted recipients, RCPT order
    parent_item: str | None = None
    domains: list[str] = field(default_factory=list)  # "Transaction delivery for domain", in order
    window: str = "closed"  # open | closed | ambiguous: may those lines be read as this message's?
    expected: int | None = None  # how many items it was split into, when known
    size: int | None = None
    counted: bool = False  # haraka.messages{queued}: at "queue code=OK", or at its first item
    finished: list[str] = field(default_factory=list)  # items with every recipient final
    done: bool = False
    items: int = 0  # queue items seen

    def settled(self) -> bool:
        """Done, or (how many items it has unknown) every item seen so far finished: Haraka queues
        all items of a message before it sends any, so none is still to come."""
        return self.done or (self.expected is None and 0 < self.items <= len(self.finished))


@dataclass(slots=True)
class Item:
    """A queue item ``U.n.m`` and the attempt in progress."""

    key: str
    msg: str
    host: str
    last_ns: int
    domain: str | None = None
    final: dict[str, str] = field(default_factory=dict)  # recipient -> delivered | bounced
    attempt: int = 1
    start_ns: int | None = None  # first line of the attempt in progress
    verdicts: dict[str, str] = field(default_factory=dict)  # this attempt: recipient -> result
    failed: dict[str, list[Any]] = field(default_factory=dict)  # recipient -> [verdict, reply]
    wire: list[str] = field(default_factory=list)  # PROTOCOL: RCPT TO of this attempt
    attrs: dict[str, Any] = field(default_factory=dict)  # relay, TLS, connection error
    done: bool = False  # every recipient final; kept a while for a bounce logged after it


class Outbound:
    def __init__(self, settings: CorrelateSettings, stats: Stats) -> None:
        self.s, self.stats = settings, stats
        self.messages: Table[tuple[str, str], Message] = Table(settings.max_messages, stats, "message")
        self.items: Table[tuple[str, str], Item] = Table(settings.max_messages, stats, "queue_item")
        self.windows: dict[str, list[str]] = {}  # host -> messages being queued now
        self.swept_ns = 0
        self._msg: Message | None = None  # the message of the item ``_item`` returned last

    # --- the inbound side hands messages over --------------------------------------------------

    def message(self, host: str, key: str, ts: int, trace_id: bytes, parent: bytes | None, *,
                mail_from: str | None = None, rcpts: list[str] | None = None,
                size: int | None = None) -> Message:
        msg = self.messages.get((host, key))
        if msg is None:
            msg = Message(key, host, trace_id, parent, ts)
            self.messages.put((host, key), msg)
        msg.mail_from, msg.rcpts, msg.last_ns, msg.size = mail_from, rcpts, ts, size
        if rcpts:
            msg.expected = len(dict.fromkeys(_domain(r) for r in rcpts))
        return msg

    def count_queued(self, host: str, key: str, ts: int, out: list[Output]) -> None:
        """Once per message: at ``queue code=OK``, or at its first item when the client left
        before Haraka could say OK (the message is queued all the same)."""
        msg = self.messages.get((host, key))
        if msg is not None and not msg.counted:
            msg.counted = True
            out.append(Count(MTA, host, ts, "queued", msg.size))

    def open_window(self, host: str, key: str) -> None:
        open_now = self.windows.setdefault(host, [])
        if key not in open_now:
            open_now.append(key)
        msg = self.messages.get((host, key))
        if msg is not None and msg.window == "closed" and not msg.domains:
            msg.window = "open"
        if len(open_now) > 1:
            self._ambiguous(host, open_now)

    def close_window(self, host: str, key: str) -> None:
        open_now = self.windows.get(host, [])
        if key in open_now:
            open_now.remove(key)
        msg = self.messages.get((host, key))
        if msg is not None and msg.window == "open":
            msg.window = "closed"
            if msg.expected is None and msg.domains:  # Haraka's own mail: one item per domain logged
                msg.expected = len(msg.domains)

    def _ambiguous(self, host: str, keys: list[str]) -> None:
        for k in keys:
            m = self.messages.get((host, k))
            if m is not None:
                m.window = "ambiguous"

    # --- outbound lines ----------------------------------------------------------------------------

    def feed(self, ev: Event, out: list[Output]) -> None:
        rule, f = ev.rule, ev.fields
        if rule == "outbound_enqueue":
            return self._enqueue(ev)
        if rule == "created_transaction":
            return self._created(ev)
        item = self._item(ev)
        if item is None:
            return
        ts = ev.record.ts_ns
        msg = self._msg  # _item looked it up
        if msg is not None and not msg.counted and msg.origin == "smtpd":
            self.count_queued(ev.record.host, item.msg, ts, out)
        if rule == "delivered":
            self._delivered(item, ev, out)
        elif rule == "temp_fail":
            self._verdict(item, ev, "deferred", f["reason"], out)
        elif rule == "bounce":
            self._verdict(item, ev, "bounced", f["reason"], out)
        elif rule == "outbound_rcpt":
            reply = f"{f['reply_code']}{f['reply_text']}"
            item.failed[f["rcpt_to"]] = ["deferred" if f["verdict"] == "deferred" else "bounced", reply]
        elif rule in ("socket_fail", "mx_lookup_fail"):
            item.attrs["haraka.outbound.error"] = f["reason"]
        elif rule == "tls_secured":
            kv = f.get("kv", {})
            item.attrs["smtp.tls"] = True
            for k, name in (("version", "tls.protocol.version"), ("cipher", "tls.cipher")):
                if k in kv:
                    item.attrs[name] = kv[k]
        elif rule == "hook_result" and f.get("kv", {}).get("hook") == "get_mx":
            item.domain = item.domain or f["kv"].get("params") or None
        elif rule == "protocol_client":
            m = re.match(r"(?i)RCPT TO:<([^<>]*)>", f["line"])
            if m:
                item.wire.append(m[1])
            m = re.match(r"(?i)MAIL FROM:<([^<>]*)>", f["line"])
            msg = self.messages.get((ev.record.host, item.msg))
            if m and msg is not None and msg.mail_from is None:
                msg.mail_from = m[1]
        elif rule == "double_bounce":
            self.stats.bump("double_bounce")
        item.last_ns = ts

    def _item(self, ev: Event) -> Item | None:
        uuid, host, ts = ev.fields.get("uuid", "-"), ev.record.host, ev.record.ts_ns
        if uuid == "-" or "." not in uuid:
            return None
        item = self.items.get((host, uuid))
        if item is None:
            key = uuid.rsplit(".", 1)[0]
            item = Item(uuid, key, host, ts)
            self.items.put((host, uuid), item)
            msg = self.messages.get((host, key))
            if msg is None:  # its connection is not in this log: a trace named after it anyway
                trace_id, _ = ids_for(f"{host}|{MTA}|{key.split('.')[0]}")
                msg = self.message(host, key, ts, trace_id, None)
                msg.origin = "unknown" if key.count(".") else "local"
                self.stats.bump("queue_item_without_message")
            msg.items += 1
            self.close_window(host, key)  # items are sent only after all of them are queued
        if item.start_ns is None and not _trailing(ev):
            item.start_ns = ts
        msg = self._msg = self.messages.get((host, item.msg))
        if msg is not None:
            msg.last_ns = ts
            ev.ctx = (msg.trace_id, msg.parent_span_id)  # --logs: under the connection until a verdict
        return item

    def _enqueue(self, ev: Event) -> None:
        open_now = self.windows.get(ev.record.host, [])
        if len(open_now) != 1:
            self._ambiguous(ev.record.host, open_now)
            return
        msg = self.messages.get((ev.record.host, open_now[0]))
        if msg is not None and msg.window == "open":
            msg.domains.append(ev.fields["domain"].lower())

    def _created(self, ev: Event) -> None:
        host, ts, new = ev.record.host, ev.record.ts_ns, ev.fields["new_uuid"]
        parent_key = ev.fields.get("uuid", "-")
        parent = self.items.get((host, parent_key)) if parent_key.count(".") >= 1 else None
        pmsg = self.messages.get((host, parent.msg)) if parent is not None else None
        if pmsg is not None:
            msg = self.message(host, new, ts, pmsg.trace_id, pmsg.parent_span_id)
            msg.parent_item, msg.origin = parent_key, "bounce"  # only bounce_respond names an origin
        else:
            trace_id, _ = ids_for(f"{host}|{MTA}|{new}|local")
            msg = self.message(host, new, ts, trace_id, None)
            msg.origin = "local"
        self.open_window(host, new)

    # --- verdicts ------------------------------------------------------------------------------

    def _recipients(self, item: Item, host: str) -> list[str] | None:
        """This attempt's recipients: on the wire, or the item's domain's accepted recipients."""
        if item.wire:
            return list(dict.fromkeys(item.wire))
        msg = self.messages.get((host, item.msg))
        if msg is None or not msg.rcpts:
            return None
        domain = item.domain
        if domain is None and msg.window == "closed" and msg.expected == len(msg.domains):
            m = int(item.key.rsplit(".", 1)[1])
            if m <= len(msg.domains) and set(msg.domains) == {_domain(r) for r in msg.rcpts}:
                domain = item.domain = msg.domains[m - 1]
        if domain is None:
            return None
        return [r for r in msg.rcpts if _domain(r) == domain.lower() and r not in item.final]

    def _delivered(self, item: Item, ev: Event, out: list[Output]) -> None:
        kv, ts, host = ev.fields["kv"], ev.record.ts_ns, ev.record.host
        item.domain = item.domain or kv.get("domain") or None
        relay = self._relay(kv) if self.s.span_events else {}
        ok = _counts(kv.get("rcpts", ""))[0]
        rcpts = self._recipients(item, host)
        if rcpts is not None:
            ok_rcpts = [r for r in rcpts if r not in item.failed and r not in item.verdicts]
        else:
            ok_rcpts = [None] * max(ok, 1)  # type: ignore[list-item]
        for rcpt in ok_rcpts:
            out.append(self._span(item, ev, rcpt, "delivered", response=kv.get("response", ""), extra=relay))
            item.verdicts[rcpt or "*"] = "delivered"
            if rcpt is not None:
                item.final[rcpt] = "delivered"
        out.append(Count(MTA, host, ts, "delivered"))
        temp, bounce = _counts(kv.get("rcpts", ""))[1:]
        self._maybe_next_attempt(item, host, rcpts, closes=temp == 0 and bounce == 0, out=out, ts=ts)

    def _verdict(self, item: Item, ev: Event, result: str, reason: str, out: list[Output]) -> None:
        host, ts = ev.record.host, ev.record.ts_ns
        listed = _LISTED.match(reason)
        rcpts = self._recipients(item, host)
        if listed:
            targets: list[str | None] = list(_ADDR.findall(listed[1]))
        elif rcpts is not None:
            targets = [r for r in rcpts if r not in item.verdicts]
        else:
            targets = [None]
        for rcpt in targets:
            failed = item.failed.get(rcpt) if rcpt else None
            response = failed[1] if failed else reason
            out.append(self._span(item, ev, rcpt, result, response=response,
                                  extra={"haraka.outbound.reason": reason}))
            item.verdicts[rcpt or "*"] = result
            if rcpt is not None and result == "bounced":
                item.final[rcpt] = result
        out.append(Count(MTA, host, ts, result))
        self._maybe_next_attempt(item, host, rcpts, closes=True, out=out, ts=ts)

    def _maybe_next_attempt(self, item: Item, host: str, rcpts: list[str] | None, *, closes: bool,
                            out: list[Output], ts: int) -> None:
        """An attempt is over once every recipient has its verdict (or, recipients unknown, at a
        verdict for the whole item); the next line of the item starts the next attempt."""
        if rcpts is not None:
            closes = all(r in item.verdicts for r in rcpts)
        if not closes:
            return
        if rcpts is None:
            finished = all(v != "deferred" for v in item.verdicts.values())
        else:
            finished = all(r in item.final for r in rcpts)
        item.attempt += 1
        item.start_ns, item.verdicts, item.failed, item.wire, item.attrs = None, {}, {}, [], {}
        msg = self.messages.get((host, item.msg))
        item.done = item.done or finished
        if msg is None or not finished or item.key in msg.finished:
            return
        msg.finished.append(item.key)
        if not msg.done and msg.expected is not None and len(msg.finished) >= msg.expected:
            msg.done = True
            out.append(MessageDone(MTA, host, msg.trace_id, ts))

    def _relay(self, kv: dict[str, str]) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        host, ip, port = kv.get("host", ""), kv.get("ip", ""), kv.get("port", "")
        if ip:
            attrs["server.address"] = ip
        if port.isdecimal():
            attrs["server.port"] = int(port)
        if host and not _IP.fullmatch(host):
            attrs["net.peer.name"] = host
        attrs["smtp.relay"] = f"{host}[{ip}]:{port}" if port else f"{host}[{ip}]"
        for k, name in (("mode", "haraka.outbound.mode"), ("file", "haraka.queue_file"),
                        ("fails", "haraka.outbound.fails")):
            if k in kv:
                attrs[name] = kv[k]
        if kv.get("tls") == "Y":
            attrs["smtp.tls"] = True
        if kv.get("auth") == "Y":
            attrs["smtp.auth"] = True
        with contextlib.suppress(ValueError):
            attrs["smtp.delay_s"] = float(kv.get("delay", ""))
        return attrs

    def _span(self, item: Item, ev: Event, rcpt: str | None, result: str, *, response: str,
              extra: dict[str, Any]) -> Delivery:
        host, ts = ev.record.host, ev.record.ts_ns
        msg = self.messages.get((host, item.msg))
        assert msg is not None  # _item made it
        if not self.s.span_events:  # metrics only: no span, so none of its attributes (metrics read the
            # host, result and time); the IDs stay, for --logs' records
            span_id = span_id_for(f"{msg.trace_id.hex()}|{item.key}|{rcpt}|{ts}|{result}|{item.attempt}")
            ev.ctx = (msg.trace_id, span_id)
            return Delivery(MTA, host, msg.trace_id, span_id, msg.parent_span_id, ts, ts, result, {},
                            response if result == "bounced" else None, counted=False)
        origin = "bounce" if msg.origin == "local" and msg.mail_from == "" else msg.origin  # null sender
        attrs: dict[str, Any] = {"mta.name": MTA, "smtp.queue_id": msg.key, "haraka.queue_item": item.key,
                                 "smtp.result": result, "smtp.response": response,
                                 "smtp.message.origin": origin, "haraka.outbound.attempt": item.attempt,
                                 **item.attrs, **extra}
        if rcpt is not None:
            attrs["smtp.rcpt_to"] = rcpt
        if msg.mail_from is not None:
            attrs["smtp.mail_from"] = msg.mail_from
        if item.domain:
            attrs["haraka.outbound.domain"] = item.domain
        if msg.parent_item:
            attrs["smtp.parent_queue_id"] = msg.parent_item
        if (m := _ENHANCED.search(response)) is not None:
            attrs["smtp.dsn"] = m[1]
        if result == "delivered" and (nxt := next_hop_queue_id(response)):
            attrs["smtp.next_hop.queue_id"] = nxt
        start = item.start_ns if item.start_ns is not None else ts
        span_id = span_id_for(f"{msg.trace_id.hex()}|{item.key}|{rcpt}|{ts}|{result}|{item.attempt}")
        ev.ctx = (msg.trace_id, span_id)
        return Delivery(MTA, host, msg.trace_id, span_id, msg.parent_span_id, min(start, ts), ts, result,
                        attrs, response if result == "bounced" else None, counted=False)

    # --- housekeeping --------------------------------------------------------------------------

    def open_counts(self) -> dict[str, int]:
        return {"messages": sum(1 for m in self.messages.values() if not m.settled()),
                "queue_items": sum(1 for i in self.items.values() if not i.done)}

    def expire(self, now_ns: int) -> None:
        """Finished items and messages go after ``_DONE_KEPT_NS`` (a bounce made from an item is
        logged after the item's last line); unfinished ones after the retention (Haraka retries
        for about three days by default). A message whose number of items is unknown (its
        ``Transaction delivery for domain`` lines overlapped another's: most of Haraka's own
        bounces on a busy server) never becomes ``done``; once every item it had is finished it
        goes like a done one, or it would stay for the whole retention."""
        keep = self.s.message_retention_ns
        while (i := self.items.oldest()) is not None and now_ns - i.last_ns > keep:
            self.items.pop((i.host, i.key))
        while (m := self.messages.oldest()) is not None and now_ns - m.last_ns > keep:
            self._drop(m)
            self.stats.bump("message_expired_from_state")
        if now_ns - self.swept_ns < _DONE_KEPT_NS:
            return
        self.swept_ns = now_ns
        for i in self.items.values():
            if i.done and now_ns - i.last_ns > _DONE_KEPT_NS:
                self.items.pop((i.host, i.key))
        for m in self.messages.values():
            if m.settled() and now_ns - m.last_ns > _DONE_KEPT_NS:
                self._drop(m)

    def _drop(self, m: Message) -> None:
        self.messages.pop((m.host, m.key))
        open_now = self.windows.get(m.host)
        if open_now and m.key in open_now:  # its items never came: it must not blur later windows
            open_now.remove(m.key)


def _trailing(ev: Event) -> bool:
    """Lines an attempt logs after its verdict (the QUIT, the delivered/deferred/bounce hooks):
    they must not start the next attempt, which begins hours later."""
    f = ev.fields
    hook = f.get("hook") or f.get("kv", {}).get("hook")
    if ev.rule in ("running_hooks", "running_plugin", "hook_result"):
        return hook in ("delivered", "deferred", "bounce")
    if ev.rule == "protocol_client":
        return f["line"].upper() == "QUIT"
    return ev.rule in ("other", "protocol_server", "double_bounce") and f.get("reply_code") != 220


def _domain(addr: str) -> str:
    return addr.rpartition("@")[2].lower()


def _counts(text: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdecimal() else 0 for p in text.split("/")]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]
