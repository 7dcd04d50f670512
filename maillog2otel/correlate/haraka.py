"""Haraka: connections by UUID, transactions ``UUID.n``, outbound queue items ``UUID.n.m``.

A connection is the UUID before the first dot: every line of it carries that UUID, with the
number of the last transaction appended (the ``disconnect`` line too). It opens at ``connect`` and
closes at ``disconnect``; the span is built at the close, from what the level of the log shows:

- INFO (Haraka's default): ``sender``, ``recipient``, ``message``, ``queue`` and ``disconnect``
  lines, and the non-CONT hook results. HELO/EHLO is known only from ``disconnect helo= esmtp=``
  and RSET not at all; such events are inferred (``smtp.event.inferred``) where Haraka's code makes
  them certain. A ``recipient … code=OK`` line may be a refusal (no plugin answered, the client is
  not relaying: Haraka logs CONT as OK and replies 550): a recipient counts as accepted when a
  ``hook=rcpt … retval=OK`` line names it, when the connection relays, or when the transaction's
  ``rcpts=a/t/r`` counters leave no other reading.
- PROTOCOL: the ``C:``/``S:`` lines give every command and its reply; DEBUG (which PROTOCOL
  includes) gives ``running X hooks`` for every hook run, so ``haraka.hook.total`` is exact.

Outbound lines go to ``haraka_outbound``; continuation lines of a record that ended inside a
quoted value (Haraka before 3.3 did not collapse line breaks) are attached here, to the record
before them in the same stream, before that record is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from maillog2otel.correlate import haraka_state
from maillog2otel.correlate.base import CorrelateSettings, Grace, Stats, Table
from maillog2otel.correlate.haraka_outbound import Item, Message, Outbound
from maillog2otel.grammars.haraka import OPEN, continue_kv
from maillog2otel.records import Connection, Count, Event, MessageDone, Output, SpanEvent
from maillog2otel.telemetry.ids import ids_for

MTA = "haraka"
NS = 1_000_000_000
_REPLY = {"OK": 250, "CONT": 250, "DENY": 550, "DENYDISCONNECT": 550, "DENYSOFT": 450,
          "DENYSOFTDISCONNECT": 450, "DISCONNECT": 421}
_NO_RDNS = {"", "NXDOMAIN", "DNSERROR", "Unknown"}
_VERBOSE = {"INFO", "DEBUG", "PROTOCOL", "DATA"}  # levels that log every non-CONT hook result
_OUTBOUND_RULES = {"delivered", "temp_fail", "bounce", "outbound_rcpt", "socket_fail", "mx_lookup_fail",
                   "double_bounce", "outbound_enqueue", "created_transaction"}
# the commands whose single hook the INFO lines of a connection prove ran (see _hooks)
_TXN_HOOK_LINES = ("mail", "rcpt", "data", "data_post", "queue_ok")


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


class HarakaCorrelator:
    mta = MTA

    def __init__(self, settings: CorrelateSettings | None = None) -> None:
        self.s = settings or CorrelateSettings()
        self.stats = Stats()
        self.conns: Table[tuple[str, str], Conn] = Table(self.s.max_sessions, self.stats, "session")
        self.closing: Grace[Conn] = Grace()
        self.outbound = Outbound(self.s, self.stats)
        self.held: dict[str, Event] = {}  # "host|stream" -> a record waiting for its continuation
        self.verbose: set[str] = set()  # "host|stream" written at INFO or more: hook results show
        self.now_ns = 0
        self._handlers = {
            "connect": self._connect, "disconnect": self._disconnect, "mail": self._mail, "rcpt": self._rcpt,
            "message": self._message, "queue": self._queue, "hook_result": self._hook_result,
            "client_gone": self._client_gone, "tls_secured": self._tls, "haproxy": self._haproxy,
            "protocol_client": self._client_line, "protocol_server": self._server_line,
            "running_hooks": self._running, "data_problem": self._data_problem,
        }

    # --- pipeline interface --------------------------------------------------------------------

    def feed(self, ev: Event) -> list[Output]:
        out: list[Output] = []
        ts = ev.record.ts_ns
        if ts > self.now_ns:
            self.now_ns = ts
            if len(self.closing):
                out.extend(o for c in self.closing.due(ts) for o in self._close(c))
        key = f"{ev.record.host}|{ev.record.stream}"
        level = ev.fields.get("level") or ev.fields.get("loglevel")
        if level in _VERBOSE:
            self.verbose.add(key)
        elif ev.rule == "loglevel":  # the level was lowered (log.ini reloaded)
            self.verbose.discard(key)
        held = self.held.pop(key, None)
        if held is not None:
            if ev.rule == "other" and "level" not in ev.fields:  # an untagged line: the rest of it
                held.fields["kv"] = continue_kv(held.fields["kv"], ev.record.message)
                self.stats.bump("continuation_line")
                ev = held
            else:
                self._dispatch(held, out)
        if OPEN in ev.fields.get("kv", ()):
            self.held[key] = ev
            return out
        self._dispatch(ev, out)
        return out

    def _dispatch(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        uuid = f.get("uuid", "-")
        if f.get("origin") == "outbound" or ev.rule in _OUTBOUND_RULES or uuid.count(".") >= 2:
            self.outbound.feed(ev, out)
            return
        handler = self._handlers.get(ev.rule)
        if handler is not None:
            handler(ev, out)
        elif ev.rule == "other" and "level" not in f:
            self.stats.bump("untagged_line")
        elif uuid != "-" and (conn := self._conn(ev)) is not None and ev.rule == "running_plugin":
            conn.debug = True

    def tick(self, now_ns: int) -> list[Output]:
        out: list[Output] = []
        for key, ev in list(self.held.items()):
            if now_ns - ev.record.ts_ns > self.s.grace_ns:
                self._dispatch(self.held.pop(key), out)
        out.extend(o for c in self.closing.due(now_ns) for o in self._close(c))
        while (c := self.conns.oldest()) is not None and now_ns - c.last_ns > self.s.session_idle_ns:
            self.conns.pop((c.host, c.uuid))
            c.error = c.error or "session idle: no disconnect logged"
            c.end_ns = c.last_ns
            self.stats.bump("session_idle")
            out.extend(self._close(c))
        self.outbound.expire(now_ns)
        return out

    def finish(self) -> list[Output]:
        out: list[Output] = []
        for key in list(self.held):
            self._dispatch(self.held.pop(key), out)
        out.extend(o for c in self.closing.drain() for o in self._close(c))
        for c in self.conns.values():
            self.conns.pop((c.host, c.uuid))
            c.error = c.error or "log ended"
            c.end_ns = c.last_ns
            out.extend(self._close(c))
        return out

    def open_counts(self) -> dict[str, int]:
        return {"sessions": len(self.conns), **self.outbound.open_counts()}

    def oldest_open_ns(self) -> int | None:
        c = self.conns.oldest()
        return c.start_ns if c is not None else None

    def save_state(self) -> dict[str, Any]:
        return haraka_state.dump({
            "now_ns": self.now_ns, "stats": dict(self.stats.counts), "held": self.held,
            "conns": list(self.conns.values()), "closing": self.closing.entries(),
            "messages": list(self.outbound.messages.values()), "items": list(self.outbound.items.values()),
            "windows": self.outbound.windows, "verbose": sorted(self.verbose)})

    def load_state(self, state: dict[str, Any]) -> None:
        st = haraka_state.load(state, {c.__name__: c for c in (Conn, Txn, Rcpt, Message, Item)})
        self.now_ns = st.get("now_ns", 0)
        self.stats.counts.update(st.get("stats", {}))
        self.held = st.get("held", {})
        for c in st.get("conns", []):
            self.conns.put((c.host, c.uuid), c)
        for due, c in st.get("closing", []):
            self.closing.push(due, c)
        for m in st.get("messages", []):
            self.outbound.messages.put((m.host, m.key), m)
        for i in st.get("items", []):
            self.outbound.items.put((i.host, i.key), i)
        self.outbound.windows = st.get("windows", {})
        self.verbose = set(st.get("verbose", []))

    # --- connections ---------------------------------------------------------------------------

    def _conn(self, ev: Event) -> Conn | None:
        uuid = ev.fields.get("uuid", "-")
        if uuid == "-":
            return None
        c = self.conns.get((ev.record.host, uuid.split(".", 1)[0]))
        if c is not None:
            c.last_ns = max(c.last_ns, ev.record.ts_ns)
            ev.ctx = (c.trace_id, c.span_id)  # --logs: the line belongs to the connection's span
        return c

    def _txn(self, c: Conn, ev: Event, create: bool = False) -> Txn | None:
        """The transaction a line names (``UUID.n``); the last one when the line has no number."""
        parts = ev.fields.get("uuid", "").split(".")
        n = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        for t in reversed(c.txns):
            if n is None or t.n == n:
                return t
        if create and n is not None:
            t = Txn(n, ev.record.ts_ns)
            c.txns.append(t)
            return t
        return None

    def _connect(self, ev: Event, out: list[Output]) -> None:
        rec, kv = ev.record, ev.fields["kv"]
        uuid = ev.fields.get("uuid", "-").split(".", 1)[0]
        if uuid == "-":
            self.stats.bump("connect_without_uuid")
            return
        old = self.conns.pop((rec.host, uuid))
        if old is not None:
            old.error, old.end_ns = old.error or "connected again", old.last_ns
            out.extend(self._close(old))
        trace_id, span_id = ids_for(f"{rec.host}|{MTA}|{uuid}")
        attrs: dict[str, Any] = {"mta.name": MTA, "haraka.uuid": uuid}
        _address(attrs, "client", kv.get("ip"), kv.get("port"))
        _address(attrs, "server", kv.get("local_ip"), kv.get("local_port"))
        c = Conn(uuid, rec.host, trace_id, span_id, rec.ts_ns, rec.ts_ns, attrs, rec.ts_inferred,
                 stream=f"{rec.host}|{rec.stream}")
        ev.ctx = (trace_id, span_id)
        evicted = self.conns.put((rec.host, uuid), c)
        if evicted is not None:
            evicted.error = evicted.error or "evicted: too many open sessions"
            evicted.end_ns = evicted.last_ns
            out.extend(self._close(evicted))

    def _disconnect(self, ev: Event, out: list[Output]) -> None:
        c = self._conn(ev)
        if c is None:
            self.stats.bump("disconnect_without_connect")
            return
        self.conns.pop((c.host, c.uuid))
        c.disconnect, c.end_ns = ev.fields["kv"], ev.record.ts_ns
        for t in c.txns:  # a client gone before the OK leaves its queueing window open
            self.outbound.close_window(c.host, f"{c.uuid}.{t.n}")
        self.closing.push(c.end_ns + self.s.grace_ns, c)

    def _client_gone(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is not None:
            c.error = f"client {ev.fields['how']}"
            c.events.append(SpanEvent("smtp.abort", ev.record.ts_ns, {"smtp.abort": c.error}))

    def _tls(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is None:
            return
        kv = ev.fields["kv"]
        tls = {name: kv[k] for k, name in (("version", "tls.protocol.version"), ("cipher", "tls.cipher"),
                                           ("verified", "haraka.tls.verified")) if k in kv}
        c.attrs.update(tls, **{"smtp.tls": True})
        c.tls_ns = ev.record.ts_ns
        c.events.append(SpanEvent("smtp.starttls", ev.record.ts_ns, tls))

    def _haproxy(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is not None:
            c.proxy = ev.fields["kv"]

    def _data_problem(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is not None and (t := self._txn(c, ev)) is not None:
            t.bare_lf = t.bare_lf or "bare line-feed - ." in ev.fields["problem"]
            c.events.append(SpanEvent("haraka.data_problem", ev.record.ts_ns,
                                      {"haraka.problem": ev.fields["problem"]}))

    # --- transactions --------------------------------------------------------------------------

    def _mail(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is None:
            return
        prev = c.txns[-1] if c.txns else None
        if prev is not None and prev.reset_ns is None:  # MAIL resets an open transaction first
            prev.reset_ns = ev.record.ts_ns
        t = self._txn(c, ev, create=True)
        if t is None:
            return
        kv = ev.fields.get("kv", {})
        t.first_ns, t.mail_from, t.mail_code = ev.record.ts_ns, ev.fields["mail_from"], kv.get("code", "CONT")
        if _REPLY.get(t.mail_code, 250) >= 400:
            t.reset_ns = ev.record.ts_ns

    def _rcpt(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is None or (t := self._txn(c, ev, create=True)) is None:
            return
        kv, addr = ev.fields.get("kv", {}), ev.fields["rcpt_to"]
        t.rcpts.append(Rcpt(addr, ev.record.ts_ns, kv.get("code", "OK"), kv.get("msg", ""),
                            t.rcpt_ok_pending or addr in t.hook_ok))
        t.rcpt_ok_pending = False

    def _message(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is None or (t := self._txn(c, ev, create=True)) is None:
            return
        t.message, t.message_ns = ev.fields["kv"], ev.record.ts_ns
        if _REPLY.get(t.message.get("code", "CONT"), 250) >= 400:
            t.reset_ns = ev.record.ts_ns

    def _queue(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is None or (t := self._txn(c, ev, create=True)) is None:
            return
        kv, ts = ev.fields["kv"], ev.record.ts_ns
        code, msg = kv.get("code", ""), kv.get("msg", "")
        t.queue.append([ts, code, msg])
        key = f"{c.uuid}.{t.n}"
        if code == "CONT" and msg.startswith("Message Queued"):  # queue_outbound: outbound takes it
            t.outbound = True
            self.outbound.message(c.host, key, ts, c.trace_id, c.span_id, mail_from=t.mail_from,
                                  rcpts=[r.addr for r in t.rcpts if _accepted(r, True)[0]],
                                  size=_message_size(t))
            self.outbound.open_window(c.host, key)
        elif code == "OK":
            t.queued_ns, t.queue_msg, t.reset_ns = ts, msg, t.reset_ns or ts
            self.outbound.close_window(c.host, key)
            if t.outbound:
                self.outbound.count_queued(c.host, key, ts, out)
            else:
                out.append(Count(MTA, c.host, ts, "queued", _message_size(t)))
        elif _REPLY.get(code, 250) >= 400:
            t.reset_ns = ts
            self.outbound.close_window(c.host, key)

    def _hook_result(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is None:
            return
        kv, ts = ev.fields["kv"], ev.record.ts_ns
        hook, retval = kv.get("hook", ""), kv.get("retval", "")
        if ev.fields.get("level") in ("DEBUG", "PROTOCOL", "DATA"):
            c.debug = True
        if retval != "CONT":
            c.hook_lines[hook] = c.hook_lines.get(hook, 0) + 1
        t = self._txn(c, ev)
        if hook in ("helo", "ehlo") and c.debug_helos and not c.debug_helos[-1][1]:
            c.debug_helos[-1][1] = kv.get("params", "")
        if hook == "rcpt" and retval == "OK" and t is not None:
            t.hook_ok.append(kv.get("params", "").strip("<>"))
        elif hook in ("queue", "queue_outbound") and t is not None:
            t.queue.append([ts, retval, kv.get("msg", "")])
            t.outbound = t.outbound or hook == "queue_outbound"
        elif _REPLY.get(retval, 250) >= 400 and hook not in ("mail", "rcpt", "rcpt_ok", "data_post", "queue",
                                                            "queue_outbound"):
            # refusals of the later commands have their own lines; these (connect, helo…) do not
            _refuse(c.events, out, c.host, ts, stage=hook.upper(), code=_REPLY[retval],
                    reason=kv.get("msg", ""))
            c.events[-1].attrs["haraka.plugin"] = kv.get("plugin", "")

    def _running(self, ev: Event, out: list[Output]) -> None:
        if (c := self._conn(ev)) is None:
            return
        hook = ev.fields["hook"]
        c.debug = True
        c.hooks[hook] = c.hooks.get(hook, 0) + 1
        if hook in ("helo", "ehlo"):  # DEBUG without PROTOCOL: the hook run dates the command
            c.debug_helos.append([hook, "", ev.record.ts_ns, None])
        t = self._txn(c, ev)
        if t is None:
            return
        if hook == "reset_transaction":
            t.resets.append(ev.record.ts_ns)
        elif hook == "rcpt_ok":
            t.rcpt_ok_pending = True
        elif hook == "queue_outbound":
            t.outbound = True

    # --- PROTOCOL: the conversation ------------------------------------------------------------

    def _client_line(self, ev: Event, out: list[Output]) -> None:
        if ev.fields.get("origin") != "core" or (c := self._conn(ev)) is None:
            return  # queue/smtp_forward and other plugins' own SMTP clients
        c.protocol = True
        line = ev.fields["line"]
        verb = line.split(" ", 1)[0].lower()
        c.commands.setdefault(verb, [0, 0])[0] += 1
        c.last_cmd = verb
        if verb in ("helo", "ehlo"):
            c.helos.append([verb, line.partition(" ")[2].strip(), ev.record.ts_ns, None])
        elif verb == "data" and (t := self._txn(c, ev)) is not None:
            t.data_ns = ev.record.ts_ns

    def _server_line(self, ev: Event, out: list[Output]) -> None:
        if ev.fields.get("origin") != "core" or (c := self._conn(ev)) is None or ev.fields["sep"] == "-":
            return
        code, text, verb = ev.fields["reply_code"], ev.fields["reply_text"], c.last_cmd
        c.last_cmd = None
        if verb is None:
            return
        if code < 400 and verb in c.commands:
            c.commands[verb][1] += 1
        t = self._txn(c, ev)
        if verb in ("helo", "ehlo") and c.helos:
            c.helos[-1][3] = code
        elif verb == "mail" and t is not None:
            t.mail_reply = code
        elif verb == "rcpt" and t is not None and t.rcpts:
            t.rcpts[-1].reply, t.rcpts[-1].reply_text = code, text
        elif verb == "data" and t is not None:
            if code == 354:
                c.last_cmd = "<message>"
            else:
                t.data_refused = [code, text, ev.record.ts_ns]

    # --- the SERVER span -----------------------------------------------------------------------

    def _close(self, c: Conn) -> list[Output]:
        """The span and the counts that only the whole connection settles."""
        d = c.disconnect or {}
        relaying = {"Y": True, "N": False}.get(d.get("relay", ""))
        # "not relaying, so refused" holds only where an accepting plugin's hook=rcpt line would show
        refusing = relaying if relaying or c.stream in self.verbose else None
        _last_refusal(c, d.get("lr", ""))
        out: list[Output] = []
        events = list(c.events)
        events.extend(self._helo_events(c, d))
        transactions = 0
        for t in c.txns:
            transactions += self._txn_events(c, t, True if t.outbound else refusing, events, out)
        for t in c.txns:
            if t.queued_ns is not None and not t.outbound:  # a queue plugin took it: nothing follows
                out.append(MessageDone(MTA, c.host, c.trace_id, t.queued_ns))
        attrs = _attrs(c, d)
        attrs["smtp.transactions"] = sum(1 for t in c.txns if t.mail_from is not None
                                         and (t.mail_reply or _REPLY.get(t.mail_code, 250)) < 400)
        attrs["smtp.messages_queued"] = transactions
        end = max(c.end_ns, c.start_ns)
        if c.inferred_ts and d.get("time"):  # no times in the log: the connection's own clock
            end = c.start_ns + int(float(d["time"]) * NS)
        events.sort(key=lambda e: e.ts_ns)
        conn = Connection(MTA, c.host, c.trace_id, c.span_id, c.start_ns, end, attrs, events, c.error,
                          self._hooks(c, d, relaying, refusing))
        return [conn, *out]

    def _helo_events(self, c: Conn, d: dict[str, str]) -> list[SpanEvent]:
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

    def _txn_events(self, c: Conn, t: Txn, relaying: bool | None, events: list[SpanEvent],
                    out: list[Output]) -> int:
        """Events of one transaction; returns 1 if it was queued."""
        host = c.host
        if t.mail_from is not None:
            code = t.mail_reply or _REPLY.get(t.mail_code, 250)
            events.append(SpanEvent("smtp.mail", t.first_ns, {
                "smtp.mail_from": t.mail_from, "smtp.response.code": code, "haraka.code": t.mail_code}))
            if code >= 400:
                _refuse(events, out, host, t.first_ns, stage="MAIL", code=code,
                        reason=f"sender <{t.mail_from}> denied")
        for r, accepted, code, evidence in _resolve(t, relaying):
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
                _refuse(events, out, host, r.ts_ns, stage="RCPT", code=code, reason=reason)
        if t.data_refused is not None:
            code, text, ts = t.data_refused
            events.append(_reject(ts, "DATA", code, text))
        if t.message is not None:
            m = t.message
            data: dict[str, Any] = {"smtp.queue_id": f"{c.uuid}.{t.n}", "haraka.code": m.get("code", "")}
            if m.get("mid"):
                data["smtp.message_id"] = m["mid"]
            size = _message_size(t)
            if size is not None:
                data["smtp.message.size_bytes"] = size
                data["haraka.data_bytes"] = int(m["size"])
            events.append(SpanEvent("smtp.data", t.message_ns, data))
            code = _REPLY.get(m.get("code", "CONT"), 250)
            if code >= 400:
                _refuse(events, out, host, t.message_ns, stage="DATA", code=code,
                        reason=m.get("msg", "") or "Message denied")
        queued = self._queue_events(c, t, events, out)
        for ts in t.resets:
            events.append(SpanEvent("smtp.reset_transaction", ts, {}))
        if not t.resets and not c.debug and (t.reset_ns is not None or c.disconnect is not None):
            ts = t.reset_ns if t.reset_ns is not None else c.end_ns
            events.append(SpanEvent("smtp.reset_transaction", ts, {"smtp.event.inferred": True}))
        return queued

    def _queue_events(self, c: Conn, t: Txn, events: list[SpanEvent], out: list[Output]) -> int:
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
            size = _message_size(t)
            if size is not None:
                c.attrs["smtp.message.size_bytes"] = size
            return 1
        if t.outbound and c.error is not None and t.queue and t.queue[-1][1] == "CONT":
            # outbound took it, but the client left before the OK: queued (its items will show),
            # never acknowledged (the client will send it again)
            events.append(SpanEvent("haraka.queue.unacknowledged", t.queue[-1][0], {"smtp.queue_id": qid}))
            return 0
        if t.message is not None and _REPLY.get(t.message.get("code", "CONT"), 250) < 400 and t.queue:
            ts, code, msg = t.queue[-1]
            reply = _REPLY.get(code, 451) if code != "CONT" else 451  # CONT left alone: "Queuing declined"
            _refuse(events, out, c.host, ts, stage="QUEUE", code=reply, reason=msg)
        return 0

    def _hooks(self, c: Conn, d: dict[str, str], relaying: bool | None,
               refusing: bool | None) -> dict[str, int]:
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
        for t in c.txns:
            verdicts = _resolve(t, True if t.outbound else refusing)
            counts = {"mail": int(t.mail_from is not None), "rcpt": len(t.rcpts),
                      "rcpt_ok": sum(1 for r, ok, _, _ in verdicts if ok or r.hook_ok),
                      "data": int(t.message is not None), "data_post": int(t.message is not None),
                      "queue_ok": int(t.queued_ns is not None)}
            if t.queue or t.queued_ns is not None:
                counts["queue_outbound" if t.outbound or relaying else "queue"] = 1
            if c.disconnect is not None:
                counts["reset_transaction"] = 1
            for k, v in counts.items():
                if v:
                    n[k] = n.get(k, 0) + v
        if c.disconnect is not None:
            n["disconnect"] = 1
        for hook, lines in c.hook_lines.items():  # one non-CONT result per hook run
            n[hook] = max(n.get(hook, 0), lines)
        return n


# --- helpers -------------------------------------------------------------------------------------


def _attrs(c: Conn, d: dict[str, str]) -> dict[str, Any]:
    """Span attributes: the connect line's, corrected and completed by the disconnect summary."""
    attrs = c.attrs
    connect_ip = attrs.get("client.address")
    if c.proxy is not None:  # the connect line named the proxy; the client is in the PROXY header
        attrs["haraka.proxy.address"] = attrs.pop("client.address", None)
        attrs.pop("client.port", None)
        src, _, sport = c.proxy.get("src_ip", "").rpartition(":")
        dst, _, dport = c.proxy.get("dst_ip", "").rpartition(":")
        _address(attrs, "client", d.get("ip") or src, sport)
        _address(attrs, "server", dst, dport)
    elif d.get("ip") and d["ip"] != connect_ip:  # a proxy we saw no PROXY line of (NOTICE level)
        attrs["haraka.proxy.address"] = connect_ip
        attrs.pop("client.port", None)
        _address(attrs, "client", d["ip"], None)
    if d.get("rdns", "") not in _NO_RDNS:
        attrs["net.peer.name"] = d["rdns"]
    helo = d.get("helo") or (c.helos[-1][1] if c.helos else "")
    if helo:
        attrs["smtp.helo_host"] = helo
    if d.get("tls") == "Y":
        attrs["smtp.tls"] = True
    for k, name in (("relay", "haraka.relay"), ("early", "haraka.early_talker"), ("esmtp", "haraka.esmtp"),
                    ("pipe", "haraka.pipelining")):
        if k in d:
            attrs[name] = d[k] == "Y"
    for k in ("errors", "txns", "bytes"):
        if d.get(k, "").isdigit():
            attrs[f"haraka.{k}"] = int(d[k])
    if d.get("time"):
        attrs["haraka.duration_s"] = d["time"]
    for k in ("rcpts", "msgs"):
        for part, value in zip(("accepted", "tempfailed", "rejected"), d.get(k, "").split("/"), strict=False):
            if value.isdigit():
                attrs[f"haraka.{k}.{part}"] = int(value)
    if d.get("lr"):
        attrs["haraka.last_reject"] = d["lr"]
    for verb, (sent, ok) in c.commands.items():
        attrs[f"smtp.command.{verb}"] = sent
        attrs[f"smtp.command.{verb}.ok"] = ok
    return attrs


def _last_refusal(c: Conn, lr: str) -> None:
    """``disconnect lr=`` is the connection's last reply of 400 or more: when it names one address,
    the last recipient of that address logged ``code=OK`` got it."""
    m = re.match(r"([45]\d\d) (.*)", lr)
    named = re.findall(r"<([^<>]*)>", lr)
    if m is None or len(set(named)) != 1:
        return
    for t in reversed(c.txns):
        for r in reversed(t.rcpts):
            if r.addr == named[0]:
                if r.reply is None and r.code in ("OK", "CONT") and not r.hook_ok:
                    r.reply, r.reply_text, r.from_lr = int(m[1]), m[2], True
                return


def _accepted(r: Rcpt, relaying: bool | None) -> tuple[bool | None, str]:
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
    verdicts = [(r, *_accepted(r, relaying)) for r in t.rcpts]
    counted = (t.message or {}).get("rcpts", "").split("/")[0]
    if counted.isdigit():
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
            code = _REPLY.get(r.code, 550) if r.code not in ("OK", "CONT") else 550
        out.append((r, ok, code, how))
    return out


def _message_size(t: Txn) -> int | None:
    """Haraka's ``size=`` counts the terminating ``.\\r\\n`` (``.\\n`` from a bare-LF client)."""
    raw = (t.message or {}).get("size", "")
    if not raw.isdigit():
        return None
    return max(0, int(raw) - (2 if t.bare_lf else 3))


def _refuse(events: list[SpanEvent], out: list[Output], host: str, ts: int, *, stage: str, code: int,
            reason: str) -> None:
    """A refusal: the span's ``smtp.reject`` event and a ``rejected`` count."""
    events.append(_reject(ts, stage, code, reason))
    out.append(Count(MTA, host, ts, "rejected", reason=f"{code} {reason}"))


def _reject(ts: int, stage: str, code: int, reason: str) -> SpanEvent:
    return SpanEvent("smtp.reject", ts, {"smtp.reject.stage": stage, "smtp.response.code": code,
                                         "smtp.reject.reason": reason})


def _address(attrs: dict[str, Any], role: str, ip: str | None, port: str | None) -> None:
    if ip:
        attrs[f"{role}.address"] = ip
    if port and str(port).isdigit():
        attrs[f"{role}.port"] = int(port)
