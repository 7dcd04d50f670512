"""Haraka: connections by UUID, transactions ``UUID.n``, outbound queue items ``UUID.n.m``.

A connection is the UUID before the first dot: every line of it carries that UUID, with the
number of the last transaction appended (the ``disconnect`` line too). It opens at ``connect`` and
closes at ``disconnect``; ``haraka_span`` builds the span then, from what the level of the log
shows (learned per stream from its own lines):

- INFO (Haraka's default): ``sender``, ``recipient``, ``message``, ``queue`` and ``disconnect``
  lines, and the non-CONT hook results. HELO/EHLO is known only from ``disconnect helo= esmtp=``
  and RSET not at all; such events are inferred (``smtp.event.inferred``) where Haraka's code makes
  them certain. A ``recipient … code=OK`` line may be a refusal (no plugin answered, the client is
  not relaying: Haraka logs CONT as OK and replies 550); the hook results, the relay flag, the
  last refusal and the ``rcpts=a/t/r`` counters settle it where they can.
- PROTOCOL: the ``C:``/``S:`` lines give every command and its reply; DEBUG (which PROTOCOL
  includes) gives ``running X hooks`` for every hook run, so ``haraka.hook.total`` is exact.

Outbound lines go to ``haraka_outbound``; continuation lines of a record that ended inside a
quoted value (Haraka before 3.3 did not collapse line breaks) are attached here, to the record
before them in the same stream, before that record is used.
"""

from __future__ import annotations

from typing import Any

from maillog2otel.correlate import haraka_state
from maillog2otel.correlate.base import CorrelateSettings, Grace, Stats, Table
from maillog2otel.correlate.haraka_auth import (
    Attempt,
    auth_hook,
    info_step,
    proto_answer,
    proto_command,
    proto_reply,
)
from maillog2otel.correlate.haraka_outbound import Item, Message, Outbound
from maillog2otel.correlate.haraka_span import (
    MTA,
    REPLY,
    Conn,
    Rcpt,
    Txn,
    accepted,
    address,
    build,
    message_size,
    refuse,
)
from maillog2otel.grammars.haraka import OPEN, continue_kv
from maillog2otel.records import Count, Delivery, Event, Output, SpanEvent
from maillog2otel.telemetry.ids import ids_for

_VERBOSE = {"INFO", "DEBUG", "PROTOCOL", "DATA"}  # levels that log every non-CONT hook result
_SWEEP_NS = 1_000_000_000  # housekeeping at most once per second of log time
_OUTBOUND_RULES = {"delivered", "temp_fail", "bounce", "outbound_rcpt", "socket_fail", "mx_lookup_fail",
                   "double_bounce", "outbound_enqueue", "created_transaction"}


class HarakaCorrelator:
    mta = MTA

    def __init__(self, settings: CorrelateSettings | None = None) -> None:
        self.s = settings or CorrelateSettings()
        self.stats = Stats()
        self.conns: Table[tuple[str, str], Conn] = Table(self.s.max_sessions, self.stats, "session")
        self._conns_get = self.conns.get
        self.closing: Grace[Conn] = Grace()
        self.closing_due: int | None = None  # when the first of ``closing`` is due: most lines need no look
        self.outbound = Outbound(self.s, self.stats)
        self.held: dict[str, Event] = {}  # "host|stream" -> a record waiting for its continuation
        self.verbose: set[str] = set()  # "host|stream" written at INFO or more: hook results show
        self.now_ns = 0
        self.swept_ns = 0
        self._stream: tuple[str, int, str] = ("", -1, "")  # host, stream, "host|stream" of the last line
        self._handlers = {
            "connect": self._connect, "disconnect": self._disconnect, "mail": self._mail, "rcpt": self._rcpt,
            "message": self._message, "queue": self._queue, "hook_result": self._hook_result,
            "client_gone": self._client_gone, "tls_secured": self._tls, "haproxy": self._haproxy,
            "protocol_client": self._client_line, "protocol_server": self._server_line,
            "running_hooks": self._running, "data_problem": self._data_problem,
            "auth_delay": self._auth_delay,
        }

    # --- pipeline interface --------------------------------------------------------------------

    def feed(self, ev: Event) -> list[Output]:
        out: list[Output] = []
        ts = ev.record.ts_ns
        if ts > self.now_ns:
            self.now_ns = ts
            if self.closing_due is not None and ts >= self.closing_due:
                self._closed(ts, out)
            if ts - self.swept_ns >= _SWEEP_NS:  # a backfill never ticks: its state must expire too
                self.swept_ns = ts
                self._expire(ts, out)
        rec, f = ev.record, ev.fields
        host, stream, key = self._stream
        if rec.stream != stream or rec.host != host:  # one string per stream, hashed once
            key = f"{rec.host}|{rec.stream}"
            self._stream = (rec.host, rec.stream, key)
        level = f.get("level") or f.get("loglevel")
        if level in _VERBOSE:
            if key not in self.verbose:
                self.verbose.add(key)
        elif ev.rule == "loglevel":  # the level was lowered (log.ini reloaded)
            self.verbose.discard(key)
        if self.held and (held := self.held.pop(key, None)) is not None:
            if ev.rule == "other" and "level" not in f:  # an untagged line: the rest of it
                held.fields["kv"] = continue_kv(held.fields["kv"], rec.message)
                self.stats.bump("continuation_line")
                ev = held
            else:
                self._dispatch(held, out)
        kv = ev.fields.get("kv")
        if kv is not None and OPEN in kv:
            self.held[key] = ev
            return out
        self._dispatch(ev, out)
        return out

    def _mark_pending(self, out: list[Output], first: int) -> None:
        """Deliveries logged while their connection's span is still to come (relayed mail often goes
        out before the client's QUIT): the stitcher keeps them until it comes."""
        closing: set[bytes] | None = None  # made only when an open connection does not settle it
        for o in out[first:]:
            if not isinstance(o, Delivery) or o.parent_span_id is None:
                continue
            uuid = str(o.attrs.get("smtp.queue_id", "")).split(".", 1)[0]
            conn = self._conns_get((o.host, uuid))
            if conn is not None and conn.span_id == o.parent_span_id:
                o.parent_pending = True
                continue
            if closing is None:
                closing = {c.span_id for c in self.closing.items()}  # a second of connections at most
            if o.parent_span_id in closing:
                o.parent_pending = True

    def _dispatch(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        rule = ev.rule
        uuid = f.get("uuid", "-")
        if f.get("origin") == "outbound" or rule in _OUTBOUND_RULES or uuid.count(".") >= 2:
            first = len(out)
            self.outbound.feed(ev, out)
            if len(out) > first and self.s.span_events:  # only the stitcher reads it: no spans, no stitcher
                self._mark_pending(out, first)
            return
        handler = self._handlers.get(rule)
        if handler is not None:
            handler(ev, out)
        elif rule == "other" and "level" not in f:
            self.stats.bump("untagged_line")
        elif uuid != "-" and (conn := self._conn(ev)) is not None and rule == "running_plugin":
            conn.debug = True

    def tick(self, now_ns: int) -> list[Output]:
        out: list[Output] = []
        for key, ev in list(self.held.items()):
            if now_ns - ev.record.ts_ns > self.s.grace_ns:
                self._dispatch(self.held.pop(key), out)
        self._closed(now_ns, out)
        self._expire(now_ns, out)
        return out

    def _closed(self, now_ns: int, out: list[Output]) -> None:
        """Connections past their grace go out (``closing`` is first in, first out)."""
        for c in self.closing.due(now_ns):
            out.extend(self._close(c))
        head = self.closing.entries()[:1]  # a second of connections at most
        self.closing_due = head[0][0] if head else None

    def _expire(self, now_ns: int, out: list[Output]) -> None:
        while (c := self.conns.oldest()) is not None and now_ns - c.last_ns > self.s.session_idle_ns:
            self.conns.pop((c.host, c.uuid))
            c.error = c.error or "session idle: no disconnect logged"
            c.end_ns = c.last_ns
            self.stats.bump("session_idle")
            out.extend(self._close(c))
        self.outbound.expire(now_ns)

    def finish(self) -> list[Output]:
        out: list[Output] = []
        for key in list(self.held):
            self._dispatch(self.held.pop(key), out)
        out.extend(o for c in self.closing.drain() for o in self._close(c))
        self.closing_due = None
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
        st = haraka_state.load(state, {c.__name__: c for c in (Conn, Txn, Rcpt, Message, Item, Attempt)})
        self.now_ns = st.get("now_ns", 0)
        self.stats.counts.update(st.get("stats", {}))
        self.held = st.get("held", {})
        for c in st.get("conns", []):
            self.conns.put((c.host, c.uuid), c)
        for due, c in st.get("closing", []):
            self.closing.push(due, c)
            self.closing_due = due if self.closing_due is None else self.closing_due
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
        rec = ev.record
        c = self._conns_get((rec.host, uuid.partition(".")[0]))
        if c is not None:
            if rec.ts_ns > c.last_ns:  # noqa: PLR1730  (max() is a call on most lines of a connection)
                c.last_ns = rec.ts_ns
            ev.ctx = (c.trace_id, c.span_id)  # --logs: the line belongs to the connection's span
        return c

    def _txn(self, c: Conn, ev: Event, create: bool = False) -> Txn | None:
        """The transaction a line names (``UUID.n``); the last one when the line has no number."""
        _, dot, rest = ev.fields.get("uuid", "").partition(".")
        num = rest.partition(".")[0]
        n = int(num) if dot and num.isdecimal() else None
        txns = c.txns
        if txns:
            last = txns[-1]
            if n is None or last.n == n:  # nearly every line names the newest transaction
                return last
            for t in reversed(txns):
                if t.n == n:
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
        address(attrs, "client", kv.get("ip"), kv.get("port"))
        address(attrs, "server", kv.get("local_ip"), kv.get("local_port"))
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
        due = c.end_ns + self.s.grace_ns
        self.closing.push(due, c)
        if self.closing_due is None:
            self.closing_due = due

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
        if REPLY.get(t.mail_code, 250) >= 400:
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
        if REPLY.get(t.message.get("code", "CONT"), 250) >= 400:
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
                                  rcpts=[r.addr for r in t.rcpts if accepted(r, True)[0]],
                                  size=message_size(t))
            self.outbound.open_window(c.host, key)
        elif code == "OK":
            t.queued_ns, t.queue_msg, t.reset_ns = ts, msg, t.reset_ns or ts
            self.outbound.close_window(c.host, key)
            if t.outbound:
                self.outbound.count_queued(c.host, key, ts, out)
            else:
                out.append(Count(MTA, c.host, ts, "queued", message_size(t)))
        elif REPLY.get(code, 250) >= 400:
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
        if c.auth_secret and kv.get("params") == c.auth_secret:
            ev.fields["secret"] = c.auth_secret
        # PROTOCOL: the C:/S: lines tell AUTH exactly
        if hook == "unrecognized_command" and not c.protocol and auth_hook(kv):
            info_step(c.auth, c.auth_failing, ts, kv.get("params", ""))
            c.auth_failing = False
        if hook in ("helo", "ehlo") and c.debug_helos and not c.debug_helos[-1][1]:
            c.debug_helos[-1][1] = kv.get("params", "")
        if hook == "rcpt" and retval == "OK":
            if (t := self._txn(c, ev)) is not None:
                t.hook_ok.append(kv.get("params", "").strip("<>"))
        elif hook in ("queue", "queue_outbound"):
            if (t := self._txn(c, ev)) is not None:
                t.queue.append([ts, retval, kv.get("msg", "")])
                t.outbound = t.outbound or hook == "queue_outbound"
        elif REPLY.get(retval, 250) >= 400 and hook not in ("mail", "rcpt", "rcpt_ok", "data_post", "queue",
                                                            "queue_outbound"):
            # refusals of the later commands have their own lines; these (connect, helo…) do not
            refuse(c.events, out, c.host, ts, stage=hook.upper(), code=REPLY[retval],
                    reason=kv.get("msg", ""))
            c.events[-1].attrs["haraka.plugin"] = kv.get("plugin", "")

    def _auth_delay(self, ev: Event, out: list[Output]) -> None:
        """``[auth/…] delaying for N seconds``: the AUTH step being answered failed (535)."""
        if (c := self._conn(ev)) is not None and not c.protocol:
            c.auth_failing = True

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
        c.auth_secret = ""
        if c.auth_answer:  # AUTH data (a user, a password), not a command
            c.auth_answer = False
            # --logs never exports it, nor the hook lines that repeat it (export.logs.hide_credentials)
            ev.fields["secret"] = c.auth_secret = line
            if c.auth:
                proto_answer(c.auth, line)
            c.last_cmd = "auth"
            return
        verb = line.split(" ", 1)[0].lower()
        c.commands.setdefault(verb, [0, 0])[0] += 1
        c.last_cmd = verb
        if verb == "auth":
            proto_command(c.auth, ev.record.ts_ns, line)
        elif verb in ("helo", "ehlo"):
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
        if verb == "auth" and c.auth:
            if code == 334:  # a challenge: the exchange goes on
                c.auth_answer = True
                return
            proto_reply(c.auth, ev.record.ts_ns, code, text)
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

    def _close(self, c: Conn) -> list[Output]:
        return build(c, c.stream in self.verbose, self.s.span_events)
