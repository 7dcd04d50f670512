"""The console exporter: what a person reads when no collector is configured.

One block per connection, with the messages it brought and what became of each recipient, printed
once the connection's messages have left the queue (or at the end of the input); then a summary of
the metrics.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TextIO

from maillog2otel.export.base import SinkStats
from maillog2otel.records import SERVER, MessageDone, SpanData
from maillog2otel.telemetry.metrics import GAUGE, HISTOGRAM, MetricData

_HOLD = 2000  # blocks waiting for their deliveries; beyond this the oldest is printed as it is


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@dataclass(slots=True)
class _Trace:
    connection: SpanData | None = None
    deliveries: list[SpanData] = field(default_factory=list)
    messages_done: int = 0


class ConsoleSpans:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.held: OrderedDict[bytes, _Trace] = OrderedDict()
        self.stats = SinkStats()

    def spans(self, spans: list[SpanData]) -> None:
        self.stats.spans += len(spans)
        for s in spans:
            t = self.held.get(s.trace_id)
            if t is None:
                t = self.held[s.trace_id] = _Trace()
            if s.kind == SERVER and s.name == "smtp.connection":
                t.connection = s
            else:
                t.deliveries.append(s)
            self._maybe_print(s.trace_id, t)
        while len(self.held) > _HOLD:
            _tid, t = self.held.popitem(last=False)
            self._print(t)

    def hint(self, done: MessageDone) -> None:
        t = self.held.get(done.trace_id)
        if t is not None:
            t.messages_done += 1
            self._maybe_print(done.trace_id, t)

    def _maybe_print(self, tid: bytes, t: _Trace) -> None:
        c = t.connection
        if c is None:
            # mail with no connection (pickup, bounces): its deliveries are root spans
            if t.messages_done and t.deliveries and all(d.parent_span_id is None for d in t.deliveries):
                self._print(self.held.pop(tid))
            return
        if t.messages_done >= sum(1 for e in c.events if e.name == "smtp.queue_ok"):
            self._print(self.held.pop(tid))

    def metrics(self, data: list[MetricData]) -> None:  # pragma: no cover - a spans-only sink
        pass

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        for t in sorted(self.held.values(), key=_start):
            self._print(t)
        self.held.clear()
        self.out.flush()

    def _print(self, t: _Trace) -> None:
        w = self.out.write
        c = t.connection
        if c is not None:
            a = c.attrs
            dur = (c.end_ns - c.start_ns) / 1e9
            status = f"ERROR {c.status_error}" if c.status_error else "OK"
            w(f"{_when(c.start_ns)}  {c.resource[0]}  {c.resource[1]}  connection  {dur:.3f}s  {status}\n")
            client = a.get("client.address", "?")
            if "client.port" in a:
                client += f":{a['client.port']}"
            line = f"  client   {a.get('net.peer.name', '')} [{client}]".replace("  [", " [")
            if "smtp.helo_host" in a:
                line += f"  helo {a['smtp.helo_host']}"
            if a.get("smtp.tls"):
                line += f"  tls {a.get('tls.protocol.version', 'yes')}"
            if "smtp.auth.method" in a:
                line += f"  auth {a['smtp.auth.method']}"
            if "postfix.postscreen.verdict" in a:
                line += f"  postscreen {a['postfix.postscreen.verdict']}"
            w(line + "\n")
            cmds = " ".join(f"{k.split('.', 2)[2]}={v}" for k, v in a.items()
                            if k.startswith("smtp.command.") and not k.endswith(".ok"))
            if cmds:
                w(f"  commands {cmds}\n")
            for e in c.events:
                if e.name == "smtp.queue_ok":
                    qid = e.attrs.get("smtp.queue_id", "")
                    w(f"  message  {qid}{_message_detail(c, qid)}\n")
                    for d in [d for d in t.deliveries if d.attrs.get("smtp.queue_id") == qid]:
                        w(_delivery_line(d))
                elif e.name == "smtp.auth":  # one line per attempt: a guesser's tries stay visible
                    ea = e.attrs
                    parts = ["accepted" if ea.get("smtp.auth.accepted") else "failed",
                             ea.get("smtp.auth.method", ""), ea.get("smtp.response.code", ""),
                             ea.get("smtp.auth.user", ""), ea.get("smtp.auth.reason", "")]
                    w("  auth     " + " ".join(str(x) for x in parts if x != "") + "\n")
                elif e.name == "smtp.reject":
                    ea = e.attrs
                    w(f"  reject   {ea.get('smtp.reject.stage', '')} {ea.get('smtp.response.code', '')} "
                      f"{ea.get('smtp.response.enhanced_code', '')} {ea.get('smtp.reject.reason', '')}\n"
                      .replace("  ", " ").replace("reject ", "reject   ", 1))
            others = [d for d in t.deliveries if not any(
                e.name == "smtp.queue_ok" and e.attrs.get("smtp.queue_id") == d.attrs.get("smtp.queue_id")
                for e in c.events)]
        else:
            others = t.deliveries
            if others:
                first = others[0]
                w(f"{_when(first.start_ns)}  {first.resource[0]}  {first.resource[1]}  message without a "
                  f"connection ({first.attrs.get('smtp.message.origin', 'local')})\n")
                w(f"  message  {first.attrs.get('smtp.queue_id', '')}  "
                  f"from <{first.attrs.get('smtp.mail_from', '')}>\n")
        for d in others:
            w(_delivery_line(d))
        tid = (c or (t.deliveries[0] if t.deliveries else None))
        if tid is not None:
            w(f"  trace    {tid.trace_id.hex()}\n")
        w("\n")


def _start(t: _Trace) -> int:
    if t.connection is not None:
        return t.connection.start_ns
    return t.deliveries[0].start_ns if t.deliveries else 0


def _message_detail(c: SpanData, qid: str) -> str:
    parts = []
    for e in c.events:
        if e.attrs.get("smtp.queue_id") == qid and e.name == "smtp.data":
            if "smtp.message.size_bytes" in e.attrs:
                parts.append(f"{e.attrs['smtp.message.size_bytes']} bytes")
            if "smtp.message_id" in e.attrs:
                parts.append(f"id {e.attrs['smtp.message_id']}")
    for e in c.events:
        if e.name == "smtp.mail" and "smtp.mail_from" in e.attrs:
            parts.insert(0, f"from <{e.attrs['smtp.mail_from']}>")
            break
    return ("  " + "  ".join(parts)) if parts else ""


def _delivery_line(d: SpanData) -> str:
    a = d.attrs
    rcpt = a.get("smtp.rcpt_to", "?")
    relay = a.get("smtp.relay", a.get("net.peer.name", ""))
    return f"    -> {rcpt:<28} {a.get('smtp.result', '?'):<9} {relay}  ({a.get('smtp.response', '')})\n"


class ConsoleMetrics:
    """Keeps the last snapshot; prints it at the end (backfill) or at each interval (live)."""

    def __init__(self, out: TextIO, *, live: bool = False) -> None:
        self.out, self.live = out, live
        self.last: dict[tuple[tuple[str, str], str], MetricData] = {}
        self.stats = SinkStats()

    def spans(self, spans: list[SpanData]) -> None:  # pragma: no cover - a metrics-only sink
        pass

    def hint(self, done: MessageDone) -> None:
        pass

    def metrics(self, data: list[MetricData]) -> None:
        self.stats.points += sum(len(m.points) for m in data)
        for md in data:
            self.last[(md.resource, md.name)] = md
        if self.live and data:
            self._print()

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self.last and not self.live:
            self._print()
        self.out.flush()

    def _print(self) -> None:
        w = self.out.write
        by_resource: dict[tuple[str, str], list[MetricData]] = {}
        for (res, _), md in sorted(self.last.items()):
            by_resource.setdefault(res, []).append(md)
        for (host, mta), items in by_resource.items():
            when = max((p.time_ns for md in items for p in md.points), default=0)
            w(f"metrics  {host}  {mta}  at {_when(when)}\n")
            for md in items:
                w(f"  {md.name:<28} {_render(md)}\n")
        w("\n")


def _render(md: MetricData) -> str:
    if md.kind == HISTOGRAM:
        parts = []
        for p in md.points:
            avg = p.total / p.count if p.count else 0
            parts.append(f"count={p.count} avg={avg:.1f}{md.unit} "
                         f"min={_num(p.minimum)} max={_num(p.maximum)}")
        return "; ".join(parts)
    if md.kind == GAUGE:
        return " ".join(str(int(p.value)) for p in md.points)
    return " ".join(f"{_label(p.attrs)}{int(p.value)}" for p in sorted(md.points, key=lambda p: str(p.attrs)))


def _label(attrs: dict[str, Any]) -> str:
    return "".join(f"{v}=" for v in attrs.values())


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"
