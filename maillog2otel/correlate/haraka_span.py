"""The ``smtp.connection`` span of a Haraka connection, built when it closes from what its lines
showed: events, attributes, refusals and the hook counts the log's level proves (docs/haraka.md).

A ``recipient … code=OK`` line may be a refusal (no plugin answered, the client does not relay:
Haraka logs CONT as OK and replies 550); ``accepted`` and ``_resolve`` weigh what settles it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from maillog2otel.correlate.haraka_auth import Attempt, auth_events, settle_info
from maillog2otel.records import Connection, Count, MessageDone, Output, SpanEvent

MTA = "haraka"
NS = 1_000_000_000
# the reply a return code stands for, where the line names only the code
REPLY = {"OK": 250, "CONT": 250, "DENY": 550, "DENYDISCONNECT": 550, "DENYSOFT": 450,
         "DENYSOFTDISCONNECT": 450, "DISCONNECT": 421}
_NO_RDNS = {"", "NXDOMAIN", "DNSERROR", "Unknown"}
_YN = {"Y": True, "N": False}
_LR = re.compile(r"([45]\d\d) (.*)")
_ANGLED = re.compile(r"<([^<>]*)>")
_FLAGS = (("relay", "haraka.relay"), ("early", "haraka.early_talker"), ("esmtp", "haraka.esmtp"),
          ("pipe", "haraka.pipelining"))
_NUMBERS = (("errors", "haraka.errors"), ("txns", "haraka.txns"), ("bytes", "haraka.bytes"))
_COUNTERS = tuple((k, tuple(f"haraka.{k}.{part}" for part in ("accepted", "tempfailed", "rejected")))
                  for k in ("rcpts", "msgs"))
_ts_ns = attrgetter("ts_ns")


@dataclass(slots=True)
class Rcpt:
    addr: str
    ts_ns: int
    code: str  # as logged; OK may hide a refusal
    msg: str = ""
    hook_ok: bool = False  # a hook=rcpt … retval=OK line named it, or rcpt_ok hooks ran for it
    reply: int | None = None  # PROTOCOL: the reply the client got
    reply_text: str = ""
    from_lr: bool = False  # that reply is the disconnect line's last refusal (lr=)


@dataclass(slots=True)
class Txn:
    n: int
    first_ns: int
    mail_from: str | None = None
    mail_code: str = "CONT"
    mail_reply: int | None = None
    rcpts: list[Rcpt] = field(default_factory=list)
    hook_ok: list[str] = field(default_factory=list)
    rcpt_ok_pending: bool = False
    data_ns: int | None = None
    data_refused: list[Any] | None = None  # PROTOCOL: [code, text, ts] when DATA itself was refused
    message: dict[str, str] | None = None
    message_ns: int = 0
    bare_lf: bool = False
    queue: list[list[Any]] = field(default_factory=list)  # [ts, code, msg] per queue line / hook result
    queued_ns: int | None = None
    queue_msg: str = ""
    outbound: bool = False  # handed to Haraka's outbound (relaying)
    resets: list[int] = field(default_factory=list)  # DEBUG: running reset_transaction hooks
    reset_ns: int | None = None  # INFO: where Haraka's code must have reset it


@dataclass(slots=True)
class Conn:
    uuid: str
    host: str
    trace_id: bytes
    span_id: bytes
    start_ns: int
    last_ns: int
    attrs: dict[str, Any]
    inferred_ts: bool = False
    events: list[SpanEvent] = field(default_factory=list)
    txns: list[Txn] = field(default_factory=list)
    hooks: dict[str, int] = field(default_factory=dict)  # DEBUG: running X hooks
    hook_lines: dict[str, int] = field(default_factory=dict)  # hook=X results (non-CONT at INFO)
    debug: bool = False
    protocol: bool = False
    helos: list[list[Any]] = field(default_factory=list)  # [verb, host, ts, reply]
    commands: dict[str, list[int]] = field(default_factory=dict)  # PROTOCOL verb -> [sent, ok]
    last_cmd: str | None = None
    disconnect: dict[str, str] | None = None
    end_ns: int = 0
    error: str | None = None
    proxy: dict[str, str] | None = None
    tls_ns: int | None = None
    stream: str = ""  # host|stream: what level that log is written at
    debug_helos: list[list[Any]] = field(default_factory=list)  # DEBUG: running helo/ehlo hooks
    auth: list[Attempt] = field(default_factory=list)  # AUTH attempts (haraka_auth)
    auth_failing: bool = False  # INFO: a "delaying for N seconds" line since the last AUTH step
    auth_answer: bool = False  # PROTOCOL: a 334 was sent, the client's next line is AUTH data
    auth_secret: str = ""  # PROTOCOL: that line, until the next one (DEBUG hook lines repeat it)


def build(c: Conn, verbose: bool, with_events: bool = True) -> list[Output]:
    """The span and the counts that only the whole connection settles. Without ``with_events``
    (no span is exported) only what metrics read is made: the hook counts, the times, and the
    same counts in the same order (series are created in the order their first point comes)."""
    d = c.disconnect or {}
    relaying = _YN.get(d.get("relay", ""))
    # "not relaying, so refused" holds only where an accepting plugin's hook=rcpt line would show
    refusing = relaying if relaying or verbose else None
    lr = d.get("lr")
    if lr:
        _last_refusal(c, lr)
    out: list[Output] = []
    txns = c.txns
    verdicts = [_resolve(t, True if t.outbound else refusing) for t in txns]  # _hooks needs them too
    if with_events:
        events = list(c.events)
        events.extend(_helo_events(c, d))
        transactions = 0
        for t, v in zip(txns, verdicts, strict=True):
            transactions += _txn_events(c, t, v, events, out)
    else:
        for t, v in zip(txns, verdicts, strict=True):
            _txn_counts(c, t, v, out)
    for t in txns:
        if t.queued_ns is not None and not t.outbound:  # a queue plugin took it: nothing follows
            out.append(MessageDone(MTA, c.host, c.trace_id, t.queued_ns))
    end = c.end_ns if c.end_ns > c.start_ns else c.start_ns
    if c.inferred_ts and (took := _duration_s(d.get("time"))) is not None:  # no times in the log:
        end = c.start_ns + int(took * NS)  # the connection's own clock
    hooks = _hooks(c, d, relaying, verdicts)
    if c.auth and not c.protocol:
        settle_info(c.auth, relaying, d.get("lr", ""))
    if not with_events:
        conn = Connection(MTA, c.host, c.trace_id, c.span_id, c.start_ns, end, c.attrs, [], c.error, hooks)
        conn.auth = auth_events(c.auth, None, None)
        return [conn, *out]
    attrs = _attrs(c, d)
    auth = auth_events(c.auth, events, attrs)
    attrs["smtp.transactions"] = sum(1 for t in txns if t.mail_from is not None
                                     and (t.mail_reply or REPLY.get(t.mail_code, 250)) < 400)
    attrs["smtp.messages_queued"] = transactions
    events.sort(key=_ts_ns)
    conn = Connection(MTA, c.host, c.trace_id, c.span_id, c.start_ns, end, attrs, events, c.error, hooks)
    conn.auth = auth
    return [conn, *out]


def _txn_counts(c: Conn, t: Txn, verdicts: list[tuple[Rcpt, bool | None, int | None, str]],
                out: list[Output]) -> None:
    """The ``rejected`` counts ``_txn_events`` makes, in its order, without its events."""
    host = c.host
    if t.mail_from is not None:
        code = t.mail_reply or REPLY.get(t.mail_code, 250)
        if code >= 400:
            out.append(Count(MTA, host, t.first_ns, "rejected",
                             reason=f"{code} sender <{t.mail_from}> denied"))
    for r, accepted, code, _ in verdicts:
        if accepted is False and code is not None:
            reason = r.reply_text or r.msg or (
                f"I cannot deliver mail for <{r.addr}>" if code == 550 else "")
            out.append(Count(MTA, host, r.ts_ns, "rejected", reason=f"{code} {reason}"))
    m = t.message
    if m is not None and (code := REPLY.get(m.get("code", "CONT"), 250)) >= 400:
        out.append(Count(MTA, host, t.message_ns, "rejected",
                         reason=f"{code} {m.get('msg', '') or 'Message denied'}"))
    if t.queued_ns is not None:
        return
    q = t.queue
    if t.outbound and c.error is not None and q and q[-1][1] == "CONT":
        return
    if m is not None and REPLY.get(m.get("code", "CONT"), 250) < 400 and q:
        ts, code, msg = q[-1]
        reply = REPLY.get(code, 451) if code != "CONT" else 451
        out.append(Count(MTA, host, ts, "rejected", reason=f"{reply} {msg}"))

def _helo_events(c: Conn, d: dict[str, str]) -> list[SpanEvent]:
    if c.helos or c.debug_helos:
        out = []
        for verb, host, ts, reply in c.helos or c.debug_helos:
            attrs: dict[str, Any] = {"smtp.helo_host": host}
            if reply is not None:
                attrs["smtp.response.code"] = reply
            out.append(SpanEvent(f"smtp.{verb}", ts, attrs))
        return out
    if not d.get("helo"):
        return []
    # INFO: the summary proves one HELO/EHLO (the last) happened before the first transaction
    known = [t.first_ns for t in c.txns[:1]] + ([c.tls_ns] if c.tls_ns else []) + [c.end_ns]
    return [SpanEvent("smtp.ehlo" if d.get("esmtp") == "Y" else "smtp.helo", min(known),
                      {"smtp.helo_host": d["helo"], "smtp.event.inferred": True})]

def _txn_events(c: Conn, t: Txn, verdicts: list[tuple[Rcpt, bool | None, int | None, str]],
                events: list[SpanEvent], out: list[Output]) -> int:
    """Events of one transaction (``verdicts``: ``_resolve``'s); returns 1 if it was queued."""
    host = c.host
    if t.mail_from is not None:
        code = t.mail_reply or REPLY.get(t.mail_code, 250)
        events.append(SpanEvent("smtp.mail", t.first_ns, {
            "smtp.mail_from": t.mail_from, "smtp.response.code": code, "haraka.code": t.mail_code}))
        if code >= 400:
            refuse(events, out, host, t.first_ns, stage="MAIL", code=code,
                    reason=f"sender <{t.mail_from}> denied")
    for r, accepted, code, evidence in verdicts:
        ev: dict[str, Any] = {"smtp.rcpt_to": r.addr, "haraka.code": r.code,
                              "haraka.rcpt.evidence": evidence}
        if accepted is not None:
            ev["smtp.rcpt.accepted"] = accepted
        if code is not None:
            ev["smtp.response.code"] = code
        events.append(SpanEvent("smtp.rcpt", r.ts_ns, ev))
        if accepted is False and code is not None:
            reason = r.reply_text or r.msg or (
                f"I cannot deliver mail for <{r.addr}>" if code == 550 else "")
            refuse(events, out, host, r.ts_ns, stage="RCPT", code=code, reason=reason)
    if t.data_refused is not None:
        code, text, ts = t.data_refused
        events.append(_reject(ts, "DATA", code, text))
    if t.message is not None:
        m = t.message
        data: dict[str, Any] = {"smtp.queue_id": f"{c.uuid}.{t.n}", "haraka.code": m.get("code", "")}
        if m.get("mid"):
            data["smtp.message_id"] = m["mid"]
        size = message_size(t)
        if size is not None:
            data["smtp.message.size_bytes"] = size
            data["haraka.data_bytes"] = int(m["size"])
        events.append(SpanEvent("smtp.data", t.message_ns, data))
        code = REPLY.get(m.get("code", "CONT"), 250)
        if code >= 400:
            refuse(events, out, host, t.message_ns, stage="DATA", code=code,
                    reason=m.get("msg", "") or "Message denied")
    queued = _queue_events(c, t, events, out)
    for ts in t.resets:
        events.append(SpanEvent("smtp.reset_transaction", ts, {}))
    if not t.resets and not c.debug and (t.reset_ns is not None or c.disconnect is not None):
        ts = t.reset_ns if t.reset_ns is not None else c.end_ns
        events.append(SpanEvent("smtp.reset_transaction", ts, {"smtp.event.inferred": True}))
    return queued

def _queue_events(c: Conn, t: Txn, events: list[SpanEvent], out: list[Output]) -> int:
    qid = f"{c.uuid}.{t.n}"
    if t.queue:
        ts, code, msg = t.queue[0]
        queue: dict[str, Any] = {"smtp.queue_id": qid, "haraka.code": code}
        if msg:
            queue["smtp.queue_msg"] = msg
        events.append(SpanEvent("smtp.queue", ts, queue))
    elif t.queued_ns is not None:
        events.append(SpanEvent("smtp.queue", t.queued_ns, {"smtp.queue_id": qid,
                                                            "smtp.event.inferred": True}))
    if t.queued_ns is not None:
        events.append(SpanEvent("smtp.queue_ok", t.queued_ns, {"smtp.queue_id": qid,
                                                               "smtp.queue_msg": t.queue_msg}))
        size = message_size(t)
        if size is not None:
            c.attrs["smtp.message.size_bytes"] = size
        return 1
    if t.outbound and c.error is not None and t.queue and t.queue[-1][1] == "CONT":
        # outbound took it, but the client left before the OK: queued (its items will show),
        # never acknowledged (the client will send it again)
        events.append(SpanEvent("haraka.queue.unacknowledged", t.queue[-1][0], {"smtp.queue_id": qid}))
        return 0
    if t.message is not None and REPLY.get(t.message.get("code", "CONT"), 250) < 400 and t.queue:
        ts, code, msg = t.queue[-1]
        reply = REPLY.get(code, 451) if code != "CONT" else 451  # CONT left alone: "Queuing declined"
        refuse(events, out, c.host, ts, stage="QUEUE", code=reply, reason=msg)
    return 0

def _hooks(c: Conn, d: dict[str, str], relaying: bool | None,
           verdicts: list[list[tuple[Rcpt, bool | None, int | None, str]]]) -> dict[str, int]:
    """``haraka.hook.total``: every ``running X hooks`` line at DEBUG; at INFO, the hooks the
    lines prove ran (docs/haraka.md has the table)."""
    if c.debug and c.hooks:
        return dict(c.hooks)
    n: dict[str, int] = {"connect_init": 1}
    if c.hook_lines.get("lookup_rdns") or d.get("rdns", "") != "":
        n["lookup_rdns"] = 1
    if d.get("helo"):
        n["connect"] = 1
        n["ehlo" if d.get("esmtp") == "Y" else "helo"] = 1
    elif c.txns:
        n["connect"] = 1
    disconnected = c.disconnect is not None
    get = n.get
    for t, resolved in zip(c.txns, verdicts, strict=True):
        # written out in the order of the keys' first appearance: it is the order of the series
        if t.mail_from is not None:
            n["mail"] = get("mail", 0) + 1
        if t.rcpts:
            n["rcpt"] = get("rcpt", 0) + len(t.rcpts)
            ok = 0
            for r, accepted, _, _ in resolved:
                if accepted or r.hook_ok:
                    ok += 1
            if ok:
                n["rcpt_ok"] = get("rcpt_ok", 0) + ok
        if t.message is not None:
            n["data"] = get("data", 0) + 1
            n["data_post"] = get("data_post", 0) + 1
        if t.queued_ns is not None:
            n["queue_ok"] = get("queue_ok", 0) + 1
            q = "queue_outbound" if t.outbound or relaying else "queue"
            n[q] = get(q, 0) + 1
        elif t.queue:
            q = "queue_outbound" if t.outbound or relaying else "queue"
            n[q] = get(q, 0) + 1
        if disconnected:
            n["reset_transaction"] = get("reset_transaction", 0) + 1
    if c.disconnect is not None:
        n["disconnect"] = 1
    for hook, lines in c.hook_lines.items():  # one non-CONT result per hook run
        n[hook] = max(n.get(hook, 0), lines)
    return n


def _attrs(c: Conn, d: dict[str, str]) -> dict[str, Any]:
    """Span attributes: the connect line's, corrected and completed by the disconnect summary."""
    attrs = c.attrs
    connect_ip = attrs.get("client.address")
    if c.proxy is not None:  # the connect line named the proxy; the client is in the PROXY header
        attrs["haraka.proxy.address"] = attrs.pop("client.address", None)
        attrs.pop("client.port", None)
        src, _, sport = c.proxy.get("src_ip", "").rpartition(":")
        dst, _, dport = c.proxy.get("dst_ip", "").rpartition(":")
        address(attrs, "client", d.get("ip") or src, sport)
        address(attrs, "server", dst, dport)
    elif d.get("ip") and d["ip"] != connect_ip:  # a proxy we saw no PROXY line of (NOTICE level)
        attrs["haraka.proxy.address"] = connect_ip
        attrs.pop("client.port", None)
        address(attrs, "client", d["ip"], None)
    if d.get("rdns", "") not in _NO_RDNS:
        attrs["net.peer.name"] = d["rdns"]
    helo = d.get("helo") or (c.helos[-1][1] if c.helos else "")
    if helo:
        attrs["smtp.helo_host"] = helo
    if d.get("tls") == "Y":
        attrs["smtp.tls"] = True
    for k, name in _FLAGS:
        if k in d:
            attrs[name] = d[k] == "Y"
    for k, name in _NUMBERS:
        if d.get(k, "").isdecimal():
            attrs[name] = int(d[k])
    if d.get("time"):
        attrs["haraka.duration_s"] = d["time"]
    for k, names in _COUNTERS:
        for name, value in zip(names, d.get(k, "").split("/"), strict=False):
            if value.isdecimal():
                attrs[name] = int(value)
    if d.get("lr"):
        attrs["haraka.last_reject"] = d["lr"]
    for verb, (sent, ok) in c.commands.items():
        attrs[f"smtp.command.{verb}"] = sent
        attrs[f"smtp.command.{verb}.ok"] = ok
    return attrs


def _last_refusal(c: Conn, lr: str) -> None:
    """``disconnect lr=`` is the connection's last reply of 400 or more: when it names one address,
    the last recipient of that address logged ``code=OK`` got it."""
    m = _LR.match(lr)
    named = _ANGLED.findall(lr)
    if m is None or len(set(named)) != 1:
        return
    for t in reversed(c.txns):
        for r in reversed(t.rcpts):
            if r.addr == named[0]:
                if r.reply is None and r.code in ("OK", "CONT") and not r.hook_ok:
                    r.reply, r.reply_text, r.from_lr = int(m[1]), m[2], True
                return


def accepted(r: Rcpt, relaying: bool | None) -> tuple[bool | None, str]:
    """Was this recipient accepted, and what says so. Haraka logs a RCPT nobody answered as
    ``code=OK`` and refuses it unless the client relays."""
    if r.reply is not None:
        return r.reply < 400, "lr" if r.from_lr else "reply"
    if r.code not in ("OK", "CONT"):
        return False, "code"
    if r.hook_ok:
        return True, "hook"
    if relaying is None:
        return None, "unknown"
    return relaying, "relaying"


def _resolve(t: Txn, relaying: bool | None) -> list[tuple[Rcpt, bool | None, int | None, str]]:
    """Every recipient with its verdict and reply code; the ``rcpts=a/t/r`` counters of the message
    line settle the recipients whose verdict rests on the relaying flag alone, when they can."""
    verdicts = [(r, *accepted(r, relaying)) for r in t.rcpts]
    counted = (t.message or {}).get("rcpts", "").split("/")[0]
    if counted.isdecimal():
        weak = [i for i, (_, _, how) in enumerate(verdicts) if how in ("relaying", "unknown")]
        strong = sum(1 for _, ok, how in verdicts if ok and how not in ("relaying", "unknown"))
        need = int(counted) - strong
        if weak and need in (0, len(weak)):
            for i in weak:
                verdicts[i] = (verdicts[i][0], need > 0, "counters")
    out: list[tuple[Rcpt, bool | None, int | None, str]] = []
    for r, ok, how in verdicts:
        if r.reply is not None:
            code: int | None = r.reply
        elif ok is None:
            code = None
        elif ok:
            code = 250
        else:  # DENY* as logged, or the 550 "I cannot deliver mail for <…>" behind code=OK
            code = REPLY.get(r.code, 550) if r.code not in ("OK", "CONT") else 550
        out.append((r, ok, code, how))
    return out


def message_size(t: Txn) -> int | None:
    """Haraka's ``size=`` counts the terminating ``.\\r\\n`` (``.\\n`` from a bare-LF client)."""
    raw = (t.message or {}).get("size", "")
    if not raw.isdecimal():
        return None
    return max(0, int(raw) - (2 if t.bare_lf else 3))


def refuse(events: list[SpanEvent], out: list[Output], host: str, ts: int, *, stage: str, code: int,
            reason: str) -> None:
    """A refusal: the span's ``smtp.reject`` event and a ``rejected`` count."""
    events.append(_reject(ts, stage, code, reason))
    out.append(Count(MTA, host, ts, "rejected", reason=f"{code} {reason}"))


def _duration_s(text: str | None) -> float | None:
    """``time=`` of a disconnect line, in seconds; None for what is not a finite, non-negative
    number (a damaged line: "²0.1", "nan", "inf")."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _reject(ts: int, stage: str, code: int, reason: str) -> SpanEvent:
    return SpanEvent("smtp.reject", ts, {"smtp.reject.stage": stage, "smtp.response.code": code,
                                         "smtp.reject.reason": reason})


def address(attrs: dict[str, Any], role: str, ip: str | None, port: str | None) -> None:
    if ip:
        attrs[f"{role}.address"] = ip
    if port and str(port).isdecimal():
        attrs[f"{role}.port"] = int(port)
