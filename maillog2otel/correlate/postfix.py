"""Postfix: smtpd sessions by (host, instance, pid), messages by (host, instance, queue ID).

A session opens at ``connect from`` and closes at ``disconnect from``; ``<QID>: client=`` is the
bridge from the session to its messages. A message remembers the trace of the connection that
brought it until ``removed``, so a delivery attempted days later (deferred mail) is still a child
of that connection's span. Postfix logs no line for an accepted HELO, MAIL or RCPT: those events
are inferred from the disconnect summary, ``qmgr from=`` and the delivery ``to=`` lines, and
marked ``smtp.event.inferred``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from maillog2otel.correlate.base import NS, CorrelateSettings, Grace, Stats, Table
from maillog2otel.records import (
    Connection,
    Count,
    Delivery,
    Event,
    LogContext,
    MessageDone,
    Output,
    SpanEvent,
)
from maillog2otel.telemetry.ids import ids_for, span_id_for

MTA = "postfix"
_RESULTS = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced", "expired": "expired",
            "SOFTBOUNCE": "deferred"}
# The next hop's own ID in its reply: Postfix, Exim and Haraka (one trace across hops).
NEXT_HOP_ID = re.compile(
    r"queued as (?P<pf>[0-9A-Za-z]+)\b|\bid=(?P<exim>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})"
    r"|\((?P<haraka>[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\.\d+)\)"
)
_RELAY = re.compile(r"(?P<name>[^\[\s]*)\[(?P<addr>[^\]]*)\](?::(?P<port>\d+))?")
_COMMANDS = ("helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data", "bdat",
             "rset", "noop", "vrfy", "etrn", "quit", "help", "unknown")


_ORDER = {"postfix.postscreen.test": -2, "postfix.dnsbl.listed": -2, "postfix.postscreen": -1,
          "smtp.helo": 0, "smtp.ehlo": 0, "smtp.starttls": 1, "smtp.auth": 1, "smtp.mail": 2, "smtp.rcpt": 3,
          "smtp.reject": 3, "smtp.data": 4, "smtp.content_action": 4, "smtp.queue_ok": 5,
          "smtp.reset_transaction": 6, "smtp.abort": 7}


# (command, its count attribute, its accepted-count attribute), in the order the attributes are set
_COMMAND_ATTRS = tuple((cmd, f"smtp.command.{cmd}", f"smtp.command.{cmd}.ok") for cmd in _COMMANDS)


def _event_order(e: SpanEvent) -> tuple[int, int]:
    return (e.ts_ns, _ORDER.get(e.name, 9))


_EXPIRY_EVERY_NS = 60 * NS
_NO_ID = b""  # the trace and span ID of everything when nothing reads them (CorrelateSettings.span_ids)
# postscreen hands a client that passed to smtpd at once (smtpd's "connect from" follows its PASS
# line); a busy smtpd pool can keep it waiting, never for long
HANDOFF_NS = 60 * NS
# postscreen verdicts after which the client goes on to smtpd (unless a DISCONNECT line follows:
# after the deep protocol tests a new client must come back)
_PASSED = frozenset({"PASS NEW", "PASS OLD", "ALLOWLISTED", "WHITELISTED"})
# postscreen lines that end a client's chances (the first one is the connection's verdict); the
# DATA/BDAT lines are protocol notes, not tests
_NOT_FAILURES = frozenset({"DATA without valid RCPT", "BDAT without valid RCPT"})
# the client went away or stalled: the connection ends in error, as smtpd's lost connection/timeout
_CLIENT_FAULT = frozenset({"HANGUP", "COMMAND TIME LIMIT"})
_AFTER_HELLO = re.compile(r" after (EHLO|HELO)\b")


def _relay_attrs(relay: str) -> dict[str, Any]:
    """``mx.example[192.0.2.1]:25`` -> the server attributes of a delivery span (none for ``local``)."""
    m = _RELAY.fullmatch(relay)
    if m is None:
        return {}
    attrs: dict[str, Any] = {"server.address": m["addr"]}
    if m["port"]:
        attrs["server.port"] = int(m["port"])
    if m["name"]:
        attrs["net.peer.name"] = m["name"]
    return attrs


def next_hop_queue_id(text: str) -> str | None:
    # each of NEXT_HOP_ID's branches needs one of these: most replies ("delivered to mailbox")
    # have none, and a substring test is far cheaper than the search
    if "queued as " not in text and "id=" not in text and "(" not in text:
        return None
    m = NEXT_HOP_ID.search(text)
    return (m["pf"] or m["exim"] or m["haraka"]) if m else None


@dataclass(slots=True)
class Session:
    key: tuple[str, str, int]
    trace_id: bytes
    span_id: bytes
    start_ns: int
    last_ns: int
    attrs: dict[str, Any]
    events: list[SpanEvent] = field(default_factory=list)
    error: str | None = None
    end_ns: int = 0
    counts: dict[str, str] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    helo: str | None = None
    tls_ns: int | None = None
    sender: str | None = None  # MAIL FROM seen in a reject line's from=<…>
    auth_seen: dict[str, int] = field(default_factory=dict)  # AUTH results proved by their own lines


@dataclass(slots=True)
class Message:
    key: tuple[str, str, str]
    trace_id: bytes
    parent_span_id: bytes | None
    first_ns: int
    last_ns: int
    session: Session | None = None
    origin: str = "smtpd"
    client_ns: int | None = None
    data_ns: int | None = None
    message_id: str | None = None
    mail_from: str | None = None
    size: int | None = None
    nrcpt: int | None = None
    queued_ns: int | None = None
    rejected: bool = False
    parent_queue_id: str | None = None
    rcpts: dict[str, str] = field(default_factory=dict)  # recipient -> last result
    attempts: int = 0
    log_ctx: LogContext | None = None  # the span of this message's lines (--logs); not saved
    # (trace ID, the start of its deliveries' span ID keys): made once per message, not per
    # delivery; made again when the trace ID changes (a bounce notice joins its parent's)
    span_key: tuple[bytes, str] | None = None
    # [second, {span ID key: uses}] of its latest deliveries: one recipient can be delivered twice
    # in a second (to=<u@x> and to=<u@x>, orig_to=<list@x>: cleanup keeps both when the original
    # recipients differ), and the second must not get the first's span ID
    id_uses: list[Any] | None = None


class PostfixCorrelator:
    mta = MTA

    def __init__(self, settings: CorrelateSettings | None = None) -> None:
        self.s = settings or CorrelateSettings()
        self.stats = Stats()
        self.sessions: Table[tuple[str, str, int], Session] = Table(self.s.max_sessions, self.stats,
                                                                    "session")
        self.messages: Table[tuple[str, str, str], Message] = Table(self.s.max_messages, self.stats,
                                                                    "message")
        self.closing: Grace[Session] = Grace()
        self._closing = self.closing.queue  # looked at on every new second of log time: no call
        # postscreen's connections by (host, instance, client address, port): open ones, and those
        # that passed and wait for smtpd's "connect from" to continue them
        self.screens: Table[tuple[str, str, str, int], Session] = Table(self.s.max_sessions, self.stats,
                                                                        "postscreen")
        self.handoffs: Table[tuple[str, str, str, int], Session] = Table(self.s.max_sessions, self.stats,
                                                                         "postscreen_handoff")
        self.screen_by_addr: dict[tuple[str, str], tuple[str, str, str, int]] = {}  # dnsblog: by address
        self.client_tls: dict[tuple[str, str, int], dict[str, Any]] = {}  # smtp pid -> TLS of next to=
        # per host: the second of the last connect, and how often each connection ID key was used in it
        self.connects: dict[str, tuple[int, dict[str, int]]] = {}
        # relay=… text -> the server attributes it gives (a few distinct relays in a whole log)
        self._relays: dict[str, dict[str, Any]] = {}
        self.now_ns = 0
        self._next_expiry = 0
        self._ids = self.s.span_ids
        self._handlers = {
            "smtpd_connect": self._connect, "smtpd_disconnect": self._disconnect,
            "smtpd_client": self._client, "smtpd_reject": self._reject, "smtpd_abort": self._abort,
            "tls_established": self._tls, "cleanup_message_id": self._message_id,
            "cleanup_action": self._cleanup_action, "cleanup_removed": self._removed,
            "qmgr_active": self._active, "qmgr_expired": self._expired, "qmgr_removed": self._removed,
            "pickup_uid": self._pickup, "delivery_status": self._delivery,
            "bounce_notification": self._bounce, "postscreen_connect": self._screen_connect,
            "postscreen_verdict": self._postscreen, "postscreen_test": self._screen_test,
            "dnsblog_listed": self._dnsblog, "postscreen_busy": self._screen_busy,
            "smtpd_sasl_failed": self._sasl_failed,
            "master_process_exit": self._process_exit,
        }

    # --- pipeline interface --------------------------------------------------------------

    def feed(self, ev: Event) -> list[Output]:
        out: list[Output] = []
        ts = ev.record.ts_ns
        if ts > self.now_ns:
            self.now_ns = ts
            if self._closing and self._closing[0][0] <= ts:
                for sess in self.closing.due(ts):
                    out.append(self._connection(sess))
            if ts >= self._next_expiry:  # a backfill never ticks: expire in log time as lines come
                self._next_expiry = ts + _EXPIRY_EVERY_NS
                self._expire(ts, out)
        handler = self._handlers.get(ev.rule)
        if handler is not None:
            handler(ev, out)
        return out

    def tick(self, now_ns: int) -> list[Output]:
        """Emit what is due at log time ``now_ns``: closed sessions past their grace, sessions
        idle too long, messages kept past their retention."""
        out: list[Output] = [self._connection(s) for s in self.closing.due(now_ns)]
        self._expire(now_ns, out)
        return out

    def _expire(self, now_ns: int, out: list[Output]) -> None:
        while (s := self.sessions.oldest()) is not None and now_ns - s.last_ns > self.s.session_idle_ns:
            self.sessions.pop(s.key)
            s.error = s.error or "session idle: no disconnect logged"
            s.end_ns = s.last_ns
            self.stats.bump("session_idle")
            out.append(self._connection(s))
        while (s := self.screens.oldest()) is not None and now_ns - s.last_ns > self.s.session_idle_ns:
            self._unscreen(self.screens, s)
            s.error = s.error or "session idle: no disconnect logged"
            s.end_ns = s.last_ns
            self.stats.bump("session_idle")
            out.append(self._connection(s))
        while (s := self.handoffs.oldest()) is not None and now_ns - s.last_ns > HANDOFF_NS:
            self._unscreen(self.handoffs, s)
            s.end_ns = s.last_ns
            self.stats.bump("postscreen_pass_without_smtpd")
            out.append(self._connection(s))
        while (m := self.messages.oldest()) is not None and now_ns - m.last_ns > self.s.message_retention_ns:
            self.messages.pop(m.key)
            self.stats.bump("message_expired_from_state")

    def finish(self) -> list[Output]:
        """End of input: closed sessions go out; open ones end with ERROR "log ended"."""
        out: list[Output] = [self._connection(s) for s in self.closing.drain()]
        for s in self.sessions.values():
            self.sessions.pop(s.key)
            s.error = s.error or "log ended"
            s.end_ns = s.last_ns
            out.append(self._connection(s))
        for table in (self.screens, self.handoffs):
            for s in table.values():
                self._unscreen(table, s)
                if table is self.screens:
                    s.error = s.error or "log ended"
                else:  # passed: the log ends before smtpd's connect line
                    self.stats.bump("postscreen_pass_without_smtpd")
                s.end_ns = s.last_ns
                out.append(self._connection(s))
        return out

    def open_counts(self) -> dict[str, int]:
        return {"sessions": len(self.sessions), "messages": len(self.messages),
                "postscreen": len(self.screens) + len(self.handoffs)}

    def oldest_open_ns(self) -> int | None:
        """Log time of the oldest open session's first line (state size and lag reports)."""
        starts = [s.start_ns for s in (self.sessions.oldest(), self.screens.oldest(), self.handoffs.oldest())
                  if s is not None]
        return min(starts) if starts else None

    # --- state across restarts (tail) ------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        """Everything needed to continue after a restart, as JSON-able data."""
        return {
            "now_ns": self.now_ns,
            "sessions": [_session_state(s) for s in self.sessions.values()],
            "closing": [[due, _session_state(s)] for due, s in self.closing.entries()],
            "messages": [_message_state(m) for m in self.messages.values()],
            "screens": [[list(k), _session_state(s)] for k, s in self.screens.items()],
            "handoffs": [[list(k), _session_state(s)] for k, s in self.handoffs.items()],
            "connects": {h: [ts, keys] for h, (ts, keys) in self.connects.items()},
            "stats": dict(self.stats.counts),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.now_ns = state.get("now_ns", 0)
        self.stats.counts.update(state.get("stats", {}))
        self.connects = {h: (ts, dict(keys)) for h, (ts, keys) in state.get("connects", {}).items()}
        by_key: dict[tuple[str, str, int], Session] = {}
        for raw in state.get("sessions", []):
            sess = _session_from(raw)
            self.sessions.put(sess.key, sess)
            by_key[sess.key] = sess
        for due, raw in state.get("closing", []):
            sess = _session_from(raw)
            self.closing.push(due, sess)
            by_key[sess.key] = sess
        for table, name in ((self.screens, "screens"), (self.handoffs, "handoffs")):
            for skey, raw in state.get(name, []):
                key = (skey[0], skey[1], skey[2], skey[3])
                table.put(key, _session_from(raw))
                if table is self.screens:
                    self.screen_by_addr[(key[0], key[2])] = key
        for raw in state.get("messages", []):
            msg = _message_from(raw)
            skey = raw.get("session")
            if skey is not None and (sess := by_key.get(tuple(skey))) is not None:  # type: ignore[arg-type]
                msg.session = sess
                sess.messages.append(msg)
            self.messages.put(msg.key, msg)

    # --- smtpd sessions --------------------------------------------------------------------

    def _skey(self, ev: Event) -> tuple[str, str, int]:
        return (ev.record.host, ev.fields.get("instance", "postfix"), ev.record.pid or 0)

    def _session(self, ev: Event) -> Session | None:
        rec = ev.record
        s = self.sessions.get((rec.host, ev.fields.get("instance", "postfix"), rec.pid or 0))
        if s is not None:
            s.last_ns = rec.ts_ns
            ev.ctx = (s.trace_id, s.span_id)
        return s

    def _connect(self, ev: Event, out: list[Output]) -> None:
        f, rec = ev.fields, ev.record
        key = self._skey(ev)
        old = self.sessions.pop(key)
        if old is not None:  # smtpd serves one client at a time: a new connect ends the old one
            old.error = old.error or "no disconnect logged"
            old.end_ns = old.last_ns
            self.stats.bump("session_superseded")
            out.append(self._connection(old))
        port = f.get("client_port")
        if self._ids:
            conn = f"{rec.host}|postfix|{key[1]}|{key[2]}|{rec.ts_ns}|{f['client_address']}:{port}"
            trace_id, span_id = ids_for(self._nth(rec.host, rec.ts_ns, conn))
        else:
            trace_id = span_id = _NO_ID
        attrs: dict[str, Any] = {"mta.name": MTA, "client.address": f["client_address"],
                                 "smtp.service": f.get("service", "smtpd"), "process.pid": key[2]}
        if port is not None:
            attrs["client.port"] = port
        if f["client_name"] and f["client_name"] != "unknown":
            attrs["net.peer.name"] = f["client_name"]
        sess = Session(key, trace_id, span_id, rec.ts_ns, rec.ts_ns, attrs)
        screen = (self._handoff(rec.host, key[1], f["client_address"], port, rec.ts_ns) if self.handoffs
                  else None)
        if screen is not None:  # the client postscreen passed: smtpd continues its span
            sess.trace_id, sess.span_id, sess.start_ns = screen.trace_id, screen.span_id, screen.start_ns
            sess.attrs = {**screen.attrs, **attrs}
            sess.events = screen.events
            trace_id, span_id = sess.trace_id, sess.span_id
        ev.ctx = (trace_id, span_id)
        evicted = self.sessions.put(key, sess)
        if evicted is not None:
            evicted.error = evicted.error or "evicted: too many open sessions"
            evicted.end_ns = evicted.last_ns
            out.append(self._connection(evicted))

    def _nth(self, host: str, ts_ns: int, key: str) -> str:
        """``key`` the first time in this second, then ``key|2``, ``key|3``…: one smtpd serves
        client after client, and without smtpd_client_port_logging (the default) one client's two
        connections in one second differ in nothing but their order in the log."""
        seen = self.connects.get(host)
        if seen is None or seen[0] != ts_ns:
            seen = self.connects[host] = (ts_ns, {})
        n = seen[1][key] = seen[1].get(key, 0) + 1
        return key if n == 1 else f"{key}|{n}"

    def _disconnect(self, ev: Event, out: list[Output]) -> None:
        sess = self.sessions.pop(self._skey(ev))
        if sess is None:
            self.stats.bump("disconnect_without_connect")
            return
        ev.ctx = (sess.trace_id, sess.span_id)
        sess.end_ns = ev.record.ts_ns
        sess.counts = ev.fields.get("counts", {})
        self.closing.push(sess.end_ns + self.s.grace_ns, sess)

    def _abort(self, ev: Event, out: list[Output]) -> None:
        sess = self._session(ev)
        if sess is None:
            return
        f = ev.fields
        what = f"{f['abort']} after {f['stage']}"
        sess.error = what
        if not self.s.span_events:
            return
        attrs: dict[str, Any] = {"smtp.abort": f["abort"], "smtp.stage": f["stage"]}
        if "bytes" in f:
            attrs["smtp.bytes_received"] = f["bytes"]
        sess.events.append(SpanEvent("smtp.abort", ev.record.ts_ns, attrs))

    def _tls(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        if not self.s.span_events:  # only spans read TLS: the line still keeps its session alive
            if f["direction"] != "to":
                self._session(ev)
            return
        tls = {"tls.protocol.version": f["tls_version"], "tls.cipher": f["tls_cipher"],
               "smtp.tls.trust": f["tls_trust"]}
        if f["direction"] == "to":  # outbound: the same smtp pid's next to= line
            self.client_tls[(ev.record.host, f.get("instance", "postfix"), ev.record.pid or 0)] = tls
            return
        sess = self._session(ev)
        if sess is None:
            return
        sess.attrs["smtp.tls"] = True
        sess.attrs.update(tls)
        sess.tls_ns = ev.record.ts_ns
        sess.events.append(SpanEvent("smtp.starttls", ev.record.ts_ns, dict(tls)))

    def _reject(self, ev: Event, out: list[Output]) -> None:
        f, rec = ev.fields, ev.record
        action, stage = f["action"], f["stage"]
        tail: dict[str, str] = f.get("tail", {})
        sess = None
        if f.get("service") == "postscreen":
            if "client_port" in f and (sess := self._screen(ev)) is not None:
                self._screen_reject(ev, sess)
        else:
            sess = self._session(ev)
            qid = f.get("queue_id")
            if sess is None and qid and qid != "NOQUEUE":  # cleanup's milter-reject: find by queue ID
                msg = self.messages.get((rec.host, f.get("instance", "postfix"), qid))
                sess = msg.session if msg else None
                if msg is not None and action.endswith("reject"):
                    msg.rejected = True
        if action in ("reject", "milter-reject", "proxy-reject"):
            out.append(Count(MTA, rec.host, rec.ts_ns, "rejected", reason=f.get("reply_text")))
        if sess is None:
            return
        ev.ctx = (sess.trace_id, sess.span_id)
        if not self.s.span_events:  # what follows is the span's (HELO name, MAIL FROM, events)
            return
        if "helo" in tail:
            sess.helo = tail["helo"]
        if "from" in tail:
            sess.sender = tail["from"]
        attrs: dict[str, Any] = {"smtp.reject.action": action, "smtp.reject.stage": stage,
                                 "smtp.reject.reason": f.get("reply_text", "")}
        if "reply_code" in f:
            attrs["smtp.response.code"] = f["reply_code"]
        if "reply_enhanced" in f:
            attrs["smtp.response.enhanced_code"] = f["reply_enhanced"]
        if stage == "RCPT" and "to" in tail:
            sess.events.append(SpanEvent("smtp.rcpt", rec.ts_ns, {
                "smtp.rcpt_to": tail["to"], "smtp.rcpt.accepted": action not in ("reject", "hold", "discard")
                and not action.startswith("milter"), "smtp.response.code": f.get("reply_code", 0)}))
        elif stage == "MAIL" and "from" in tail:
            sess.events.append(SpanEvent("smtp.mail", rec.ts_ns, {
                "smtp.mail_from": tail["from"], "smtp.response.code": f.get("reply_code", 0)}))
        sess.events.append(SpanEvent("smtp.reject", rec.ts_ns, attrs))

    def _process_exit(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        if not f["path"].endswith("/smtpd"):
            return
        sess = self.sessions.pop((ev.record.host, f.get("instance", "postfix"), f["child_pid"]))
        if sess is not None:
            sess.error = f"smtpd {f['how']} {f['code']}"
            sess.end_ns = ev.record.ts_ns
            out.append(self._connection(sess))

    # --- postscreen -------------------------------------------------------------------------
    # One span per connection postscreen accepts, keyed by client address and port: it ends at
    # postscreen's DISCONNECT, or smtpd's session continues it when postscreen passed the client.

    def _pskey(self, ev: Event) -> tuple[str, str, str, int]:
        f = ev.fields
        return (ev.record.host, f.get("instance", "postfix"), f["client_address"], f["client_port"])

    def _screen(self, ev: Event) -> Session | None:
        key = self._pskey(ev)
        s = self.screens.get(key) or self.handoffs.get(key)
        if s is not None:
            s.last_ns = ev.record.ts_ns
            ev.ctx = (s.trace_id, s.span_id)
        return s

    def _unscreen(self, table: Table[tuple[str, str, str, int], Session], s: Session) -> None:
        key = (s.key[0], s.key[1], s.attrs["client.address"], s.attrs["client.port"])
        table.pop(key)
        if self.screen_by_addr.get((key[0], key[2])) == key:
            del self.screen_by_addr[(key[0], key[2])]

    def _handoff(self, host: str, instance: str, addr: str, port: int | None, ts: int) -> Session | None:
        """The passed postscreen connection smtpd's "connect from" continues: the same address and
        port, or (no smtpd_client_port_logging) the oldest passed one from that address."""
        s = None
        if port is not None:
            s = self.handoffs.get((host, instance, addr, port))
        else:
            s = next((c for k, c in self.handoffs.items() if k[:3] == (host, instance, addr)), None)
        if s is None or ts - s.last_ns > HANDOFF_NS:
            return None
        self._unscreen(self.handoffs, s)
        return s

    def _screen_connect(self, ev: Event, out: list[Output]) -> None:
        f, rec = ev.fields, ev.record
        key = self._pskey(ev)
        for table in (self.screens, self.handoffs):
            old = table.get(key)
            if old is not None:  # one client address and port is one connection at a time
                self._unscreen(table, old)
                if table is self.screens:  # a passed one just never reached smtpd
                    old.error = old.error or "no disconnect logged"
                old.end_ns = old.last_ns
                self.stats.bump("session_superseded")
                out.append(self._connection(old))
        if self._ids:
            conn = f"{rec.host}|postscreen|{key[1]}|{rec.pid}|{rec.ts_ns}|{key[2]}:{key[3]}"
            trace_id, span_id = ids_for(self._nth(rec.host, rec.ts_ns, conn))
        else:
            trace_id = span_id = _NO_ID
        attrs: dict[str, Any] = {"mta.name": MTA, "client.address": key[2], "client.port": key[3],
                                 "server.address": f["server_address"], "server.port": f["server_port"],
                                 "smtp.service": "postscreen", "process.pid": rec.pid or 0}
        sess = Session((rec.host, key[1], rec.pid or 0), trace_id, span_id, rec.ts_ns, rec.ts_ns, attrs)
        ev.ctx = (trace_id, span_id)
        self.screen_by_addr[(rec.host, key[2])] = key
        evicted = self.screens.put(key, sess)
        if evicted is not None:
            self._unscreen(self.screens, evicted)
            evicted.error = evicted.error or "evicted: too many open sessions"
            evicted.end_ns = evicted.last_ns
            out.append(self._connection(evicted))

    def _postscreen(self, ev: Event, out: list[Output]) -> None:
        verdict = ev.fields["verdict"]
        key = self._pskey(ev)
        sess = self._screen(ev)
        if sess is None:
            self.stats.bump("postscreen_without_connect")
            return
        if verdict == "DISCONNECT":  # postscreen's own end of the connection
            self._unscreen(self.handoffs if key in self.handoffs else self.screens, sess)
            sess.end_ns = ev.record.ts_ns
            self.closing.push(sess.end_ns + self.s.grace_ns, sess)
            return
        if not verdict.endswith("VETO"):  # a veto only says an allowlisting did not apply
            sess.attrs.setdefault("postfix.postscreen.verdict", verdict)
        sess.events.append(SpanEvent("postfix.postscreen", ev.record.ts_ns,
                                     {"postfix.postscreen.verdict": verdict}))
        if verdict in _PASSED and key in self.screens:
            self.screens.pop(key)
            self.handoffs.put(key, sess)

    def _screen_test(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        sess = self._screen(ev)
        if sess is None:
            self.stats.bump("postscreen_without_connect")
            return
        test = f["test"]
        # "14 after 0.08 from " + ": EHLO x\r\n" -> "14 after 0.08: EHLO x\r\n"
        detail = re.sub(r"\s*\b(?:from|for)\s*$", "", f["detail"]).strip() + f["rest"]
        attrs: dict[str, Any] = {"postfix.postscreen.test": test, "postfix.postscreen.detail": detail.strip()}
        if test == "DNSBL rank":
            test = "DNSBL"
            attrs["postfix.postscreen.test"] = test
            rank = int(detail.split()[0]) if detail.split() and detail.split()[0].isdecimal() else None
            if rank is not None:
                attrs["postfix.postscreen.dnsbl.rank"] = rank
                sess.attrs["postfix.postscreen.dnsbl.rank"] = rank
        sess.events.append(SpanEvent("postfix.postscreen.test", ev.record.ts_ns, attrs))
        if m := _AFTER_HELLO.match(f["rest"]):  # "… after EHLO": postscreen's engine took that command
            sess.counts.setdefault(m[1].lower(), "1")
        if test not in _NOT_FAILURES:
            sess.attrs.setdefault("postfix.postscreen.verdict", test)
        if test in _CLIENT_FAULT:
            sess.error = sess.error or f"postscreen {test} {detail.strip()}"

    def _dnsblog(self, ev: Event, out: list[Output]) -> None:
        """dnsblog names the address it looked up: the newest postscreen connection from it."""
        key = self.screen_by_addr.get((ev.record.host, ev.fields["client_address"]))
        sess = self.screens.get(key) if key is not None else None
        if sess is None:
            self.stats.bump("dnsblog_without_connection")
            return
        ev.ctx = (sess.trace_id, sess.span_id)
        sess.events.append(SpanEvent("postfix.dnsbl.listed", ev.record.ts_ns, {
            "postfix.dnsbl.domain": ev.fields["dnsbl"], "postfix.dnsbl.result": ev.fields["dnsbl_result"]}))

    def _screen_busy(self, ev: Event, out: list[Output]) -> None:
        """Every screening port busy: postscreen refuses the client at once (pflogsumm counts it
        as a rejection too); its reply is always 421 4.3.2 (postscreen.c)."""
        rec, reason = ev.record, ev.fields["reason"]
        out.append(Count(MTA, rec.host, rec.ts_ns, "rejected", reason=reason))
        sess = self._screen(ev)
        if sess is None:
            return
        sess.attrs.setdefault("postfix.postscreen.verdict", "BUSY")
        sess.events.append(SpanEvent("smtp.reject", rec.ts_ns, {
            "smtp.reject.action": "reject", "smtp.reject.stage": "CONNECT", "smtp.reject.reason": reason,
            "smtp.response.code": 421, "smtp.response.enhanced_code": "4.3.2"}))

    def _screen_reject(self, ev: Event, sess: Session) -> None:
        """What postscreen's own SMTP engine proves: the HELO/EHLO (proto=), the MAIL (from=) and
        each rejected RCPT, as the counts smtpd's disconnect line would give."""
        tail: dict[str, str] = ev.fields.get("tail", {})
        proto = tail.get("proto", "").rstrip(",")
        counts = sess.counts
        if proto:
            counts["ehlo" if proto == "ESMTP" else "helo"] = "1"
        if "from" in tail:
            counts["mail"] = "1"
        if ev.fields["stage"] == "RCPT":
            ok, _, total = counts.get("rcpt", "0/0").partition("/")
            counts["rcpt"] = f"{ok}/{int(total or ok) + 1}"

    # --- SASL AUTH -------------------------------------------------------------------------

    def _sasl_failed(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        sess = self._session(ev)
        if sess is None:
            self.stats.bump("auth_without_session")
            return
        attrs: dict[str, Any] = {"smtp.auth.method": f["sasl_method"], "smtp.auth.accepted": False}
        user = f.get("sasl_username")
        if user and user != "(unavailable)":
            attrs["smtp.auth.user"] = user
        if f["sasl_result"] == "aborted":  # the client sent "*": always 501 (smtpd_sasl_glue.c)
            attrs["smtp.auth.reason"] = "authentication aborted"
            attrs["smtp.response.code"] = 501
            attrs["smtp.response.enhanced_code"] = "5.7.0"
        else:  # 535 5.7.8, or 454 4.7.0 for a temporary failure: the line does not say which
            attrs["smtp.auth.reason"] = f.get("reason") or "authentication failed"
        sess.auth_seen["failed"] = sess.auth_seen.get("failed", 0) + 1
        sess.events.append(SpanEvent("smtp.auth", ev.record.ts_ns, attrs))

    # --- messages --------------------------------------------------------------------------

    def _mkey(self, ev: Event, qid: str | None = None) -> tuple[str, str, str]:
        return (ev.record.host, ev.fields.get("instance", "postfix"), qid or ev.fields["queue_id"])

    def _new_message(self, key: tuple[str, str, str], ts: int, sess: Session | None, origin: str,
                     out: list[Output]) -> Message:
        if sess is not None:
            trace_id, parent = sess.trace_id, sess.span_id
        else:
            trace_id = ids_for(f"{key[0]}|postfix|{key[1]}|{key[2]}|{ts}|message")[0] if self._ids else _NO_ID
            parent = None
        msg = Message(key, trace_id, parent, ts, ts, sess, origin)
        old = self.messages.get(key)
        if old is not None:  # short queue IDs repeat: a new message under a live ID ends the old one
            self.stats.bump("queue_id_reused")
            self.messages.pop(key)
        self.messages.put(key, msg)
        return msg

    def _message(self, ev: Event, out: list[Output], create: str | None = None) -> Message | None:
        f = ev.fields
        qid = f.get("queue_id")
        if not qid or qid == "NOQUEUE":
            return None
        rec = ev.record
        key = (rec.host, f.get("instance", "postfix"), qid)
        msg = self.messages.get(key)
        if msg is None and create:
            if create == "lazy":
                self.stats.bump("message_seen_mid_flight")
            msg = self._new_message(key, rec.ts_ns, None, create, out)
        if msg is not None:
            msg.last_ns = rec.ts_ns
            if self._ids:
                if msg.log_ctx is None:
                    msg.log_ctx = LogContext(msg.trace_id, msg.parent_span_id)
                ev.ctx = msg.log_ctx
        return msg

    def _client(self, ev: Event, out: list[Output]) -> None:
        sess = self._session(ev)
        msg = self._new_message(self._mkey(ev), ev.record.ts_ns, sess, "smtpd", out)
        msg.client_ns = ev.record.ts_ns
        extra = ev.fields.get("extra", {})
        if sess is not None:
            sess.messages.append(msg)
            if "sasl_method" in extra:
                sess.attrs["smtp.auth.method"] = extra["sasl_method"]
                if not sess.auth_seen.get("accepted"):  # every client= line of the session repeats it
                    sess.auth_seen["accepted"] = 1
                    auth = {"smtp.auth.method": extra["sasl_method"], "smtp.auth.accepted": True,
                            # the one reply to a successful AUTH (smtpd_sasl_glue.c)
                            "smtp.response.code": 235, "smtp.response.enhanced_code": "2.7.0"}
                    if "sasl_username" in extra:
                        auth["smtp.auth.user"] = extra["sasl_username"]
                    sess.events.append(SpanEvent("smtp.auth", ev.record.ts_ns, auth))
            if "sasl_username" in extra:
                sess.attrs["smtp.auth.user"] = extra["sasl_username"]
        if "orig_queue_id" in extra:
            msg.parent_queue_id = extra["orig_queue_id"]

    def _pickup(self, ev: Event, out: list[Output]) -> None:
        msg = self._new_message(self._mkey(ev), ev.record.ts_ns, None, "pickup", out)
        msg.mail_from = ev.fields["mail_from"]

    def _message_id(self, ev: Event, out: list[Output]) -> None:
        msg = self._message(ev, out, create="lazy")
        if msg is not None and ev.fields["header"] == "message-id":
            msg.message_id = ev.fields["message_id"]
            msg.data_ns = ev.record.ts_ns

    def _cleanup_action(self, ev: Event, out: list[Output]) -> None:
        f, rec = ev.fields, ev.record
        msg = self._message(ev, out)
        sess = msg.session if msg else None
        action = f["action"]
        if action == "reject":
            out.append(Count(MTA, rec.host, rec.ts_ns, "rejected", reason=f.get("reason")))
            if msg is not None:
                msg.rejected = True
        if sess is None or not self.s.span_events:
            return
        reason = f.get("reason", "")
        code = reason.split(" ", 1)[0]
        attrs: dict[str, Any] = {"smtp.reject.action": action, "smtp.reject.stage": "END-OF-MESSAGE",
                                 "smtp.reject.reason": f"{f['what']} {f['content']}: {reason}".strip()}
        if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", code):
            attrs["smtp.response.enhanced_code"] = code
            attrs["smtp.response.code"] = int(code[0]) * 100 + 50
        if f.get("helo"):
            sess.helo = f["helo"]
        name = "smtp.reject" if action == "reject" else "smtp.content_action"
        sess.events.append(SpanEvent(name, rec.ts_ns, attrs))

    def _active(self, ev: Event, out: list[Output]) -> None:
        f, rec = ev.fields, ev.record
        msg = self._message(ev, out, create="lazy")
        if msg is None:
            return
        msg.attempts += 1
        msg.mail_from = f["mail_from"]
        if msg.queued_ns is None:  # "(queue active)" repeats every retry round: count it once
            msg.queued_ns, msg.size, msg.nrcpt = rec.ts_ns, f["size"], f["nrcpt"]
            out.append(Count(MTA, rec.host, rec.ts_ns, "queued", f["size"]))

    def _expired(self, ev: Event, out: list[Output]) -> None:
        msg = self._message(ev, out, create="lazy")
        if msg is None:
            return
        for rcpt, result in list(msg.rcpts.items()):
            if result == "deferred":
                msg.rcpts[rcpt] = "expired"
                out.append(self._delivery_span(msg, ev, rcpt, "expired", ev.record.ts_ns, {
                    "smtp.response": f"message {ev.fields['status']}, returned to sender"}))

    def _removed(self, ev: Event, out: list[Output]) -> None:
        msg = self._message(ev, out)
        if msg is None:
            return
        self.messages.pop(msg.key)
        if self.s.span_events:  # only the stitcher reads it, and only spans go there
            out.append(MessageDone(MTA, ev.record.host, msg.trace_id, ev.record.ts_ns))

    def _bounce(self, ev: Event, out: list[Output]) -> None:
        parent = self._message(ev, out)
        key = self._mkey(ev, ev.fields["new_queue_id"])
        child = self.messages.get(key)
        if child is None:
            child = self._new_message(key, ev.record.ts_ns, None, "bounce", out)
        child.origin = "bounce"
        child.parent_queue_id = ev.fields["queue_id"]
        if parent is not None:  # the notice joins its parent's trace
            child.trace_id, child.parent_span_id = parent.trace_id, parent.parent_span_id
            if child.log_ctx is not None:  # its cleanup line came first
                child.log_ctx.trace_id, child.log_ctx.span_id = child.trace_id, child.parent_span_id

    def _delivery(self, ev: Event, out: list[Output]) -> None:
        f, rec = ev.fields, ev.record
        result = _RESULTS.get(f["status"])
        if result is None:  # address verification probes, sendmail -v traces: not deliveries
            return
        msg = self._message(ev, out, create="lazy")
        if msg is None:
            return
        kv: dict[str, str] = f["kv"]
        rcpt = f["rcpt_to"]
        msg.rcpts[rcpt] = result
        if not self.s.span_events:  # metrics only: no span, so none of its attributes (metrics read
            # the host, result and time); the IDs stay when --logs' records read them
            if self.client_tls:
                self.client_tls.pop((rec.host, f.get("instance", "postfix"), rec.pid or 0), None)
            ts = rec.ts_ns
            span_id = _NO_ID
            if self._ids:
                span_id = self._span_id(msg, rcpt, ts, result)
                ev.ctx = (msg.trace_id, span_id)
            out.append(Delivery(MTA, rec.host, msg.trace_id, span_id, msg.parent_span_id, ts, ts, result, {},
                                parent_pending=msg.session is not None))
            return
        text = f.get("status_text", "")
        if text.startswith("(") and text.endswith(")"):
            text = text[1:-1]
        attrs: dict[str, Any] = {"smtp.response": text, "postfix.daemon": f.get("service", "")}
        for k, name in (("dsn", "smtp.dsn"), ("relay", "smtp.relay"), ("orig_to", "smtp.orig_rcpt_to"),
                        ("delays", "postfix.delays"), ("tls", "postfix.tls_feature"),
                        ("conn_use", "postfix.conn_use")):
            if k in kv:
                attrs[name] = kv[k]
        if "delay" in kv:
            attrs["smtp.delay_s"] = _float(kv["delay"])
        if "relay" in kv:
            relay = kv["relay"]
            peer = self._relays.get(relay)
            if peer is None:
                peer = self._relays[relay] = _relay_attrs(relay)
                if len(self._relays) > 4096:  # bounded: relays repeat, but a log may have many
                    self._relays.clear()
            if peer:
                attrs.update(peer)
        tls = (self.client_tls.pop((rec.host, f.get("instance", "postfix"), rec.pid or 0), None)
               if self.client_tls else None)
        if tls:
            attrs.update(tls)
        if result == "delivered" and (nxt := next_hop_queue_id(text)):
            attrs["smtp.next_hop.queue_id"] = nxt
        start = rec.ts_ns
        delays = kv.get("delays", "").split("/")
        if len(delays) == 4:  # connection setup + transmission: the attempt itself
            start -= int((_float(delays[2]) + _float(delays[3])) * NS)
        span = self._delivery_span(msg, ev, rcpt, result, start, attrs)
        ev.ctx = (span.trace_id, span.span_id)
        out.append(span)

    def _delivery_span(self, msg: Message, ev: Event, rcpt: str, result: str, start_ns: int,
                       attrs: dict[str, Any]) -> Delivery:
        rec = ev.record
        attrs["smtp.queue_id"] = msg.key[2]
        attrs["smtp.rcpt_to"] = rcpt
        attrs["smtp.result"] = result
        attrs["mta.name"] = MTA
        if msg.mail_from is not None:
            attrs["smtp.mail_from"] = msg.mail_from
        if msg.parent_queue_id:
            attrs["smtp.parent_queue_id"] = msg.parent_queue_id
        attrs["smtp.message.origin"] = msg.origin
        span_id = self._span_id(msg, rcpt, rec.ts_ns, result) if self._ids else _NO_ID
        error = attrs.get("smtp.response") if result in ("bounced", "expired") else None
        return Delivery(MTA, rec.host, msg.trace_id, span_id, msg.parent_span_id, min(start_ns, rec.ts_ns),
                        rec.ts_ns, result, attrs, error, parent_pending=msg.session is not None)

    def _span_id(self, msg: Message, rcpt: str, ts_ns: int, result: str) -> bytes:
        base = msg.span_key
        if base is None or base[0] is not msg.trace_id:
            base = msg.span_key = (msg.trace_id, f"{msg.trace_id.hex()}|{msg.key}|")
        key = f"{base[1]}{rcpt}|{ts_ns}|{result}"
        uses = msg.id_uses
        if uses is None or uses[0] != ts_ns:
            uses = msg.id_uses = [ts_ns, {}]
        n = uses[1][key] = uses[1].get(key, 0) + 1
        return span_id_for(key if n == 1 else f"{key}|{n}")

    # --- the SERVER span -----------------------------------------------------------------------

    def _close_message(self, msg: Message) -> None:
        msg.session = None  # the span is out: later lines of the message only make deliveries
        if msg.queued_ns is None and (msg.rejected or msg.data_ns is None):
            # rejected at end of DATA, or RSET after RCPT: this queue ID will get no more lines
            # (no "removed" before Postfix 3.10), and short IDs get reused
            self.messages.pop(msg.key)

    def _connection(self, s: Session) -> Connection:
        """Build the span's events, adding what Postfix proves but never logs as a line."""
        counts = s.counts
        attrs = s.attrs
        commands: dict[str, int] = {"connect": 1}
        if counts:
            for cmd, name, name_ok in _COMMAND_ATTRS:
                value = counts.get(cmd)
                if value is not None:
                    ok, _, total = value.partition("/")
                    commands[cmd] = attrs[name] = int(total or ok)
                    if total:
                        attrs[name_ok] = int(ok)
            value = counts.get("commands")
            if value is not None:
                ok, _, total = value.partition("/")
                attrs["smtp.commands"] = int(total or ok)
                attrs["smtp.commands.ok"] = int(ok)
        # AUTH attempts: the disconnect summary's auth=ok/total when there is one (it also counts
        # attempts no line names, e.g. 503 before EHLO), else what the lines proved
        auth_seen = s.auth_seen
        auth: dict[str, int] = {}
        if auth_seen or "auth" in counts:
            auth = dict(auth_seen)
            if "auth" in counts:
                ok, _, total = counts["auth"].partition("/")
                auth["accepted"] = max(int(ok), auth.get("accepted", 0))
                auth["failed"] = max(int(total or ok) - int(ok), auth.get("failed", 0))
            auth = {k: n for k, n in auth.items() if n}
        if not self.s.span_events:  # metrics only: the span's events would be thrown away
            for msg in s.messages:
                self._close_message(msg)
            return Connection(MTA, s.key[0], s.trace_id, s.span_id, s.start_ns, max(s.end_ns, s.start_ns),
                              attrs, [], s.error, commands, auth)
        events = list(s.events)
        # attempts only the summary counts; a login that no client= line names came after the
        # failures that were logged (a client stops trying once it is in)
        if auth:
            last_failure = max((e.ts_ns for e in events if e.name == "smtp.auth"), default=s.start_ns)
            for result, n in auth.items():
                for _ in range(n - auth_seen.get(result, 0)):
                    at = last_failure if result == "accepted" else s.start_ns
                    events.append(SpanEvent("smtp.auth", at, {"smtp.auth.accepted": result == "accepted",
                                                              "smtp.event.inferred": True}))
        last_ns = s.end_ns or s.last_ns
        helo = s.helo
        for verb, name in (("ehlo", "smtp.ehlo"), ("helo", "smtp.helo")):
            wanted = _ok(counts.get(verb))
            if wanted <= 0:
                continue
            already = 0
            for e in events:
                if e.name == name:
                    already += 1
            for i in range(wanted - already):
                hello: dict[str, Any] = {"smtp.event.inferred": True}
                if helo:
                    hello["smtp.helo_host"] = helo
                events.append(SpanEvent(name, s.tls_ns if (i and s.tls_ns) else s.start_ns, hello))
        if helo:
            attrs["smtp.helo_host"] = helo
        # Accepted MAIL, RCPT and DATA: one event per command the summary counts as accepted, with
        # the addresses later lines proved (qmgr from=, delivery to=) where a message carries them.
        mails: list[SpanEvent] = []
        rcpts: list[SpanEvent] = []
        datas: list[SpanEvent] = []
        transactions = 0
        for msg in s.messages:
            at = msg.client_ns or s.start_ns
            mail: dict[str, Any] = {"smtp.event.inferred": True}
            if msg.mail_from is not None:
                mail["smtp.mail_from"] = msg.mail_from
            mails.append(SpanEvent("smtp.mail", at, mail))
            known = list(msg.rcpts)
            for i in range(max(msg.nrcpt or 0, len(known))):
                rcpt: dict[str, Any] = {"smtp.event.inferred": True, "smtp.rcpt.accepted": True,
                                        "smtp.response.code": 250}
                if i < len(known):
                    rcpt["smtp.rcpt_to"] = known[i]
                rcpts.append(SpanEvent("smtp.rcpt", at, rcpt))
            qid = msg.key[2]
            if msg.data_ns is not None:
                data: dict[str, Any] = {"smtp.event.inferred": True, "smtp.queue_id": qid}
                if msg.message_id is not None:
                    data["smtp.message_id"] = msg.message_id
                if msg.size is not None:
                    data["smtp.message.size_bytes"] = msg.size
                datas.append(SpanEvent("smtp.data", msg.data_ns, data))
            if msg.queued_ns is not None and not msg.rejected:
                transactions += 1
                events.append(SpanEvent("smtp.queue_ok", msg.queued_ns, {
                    "smtp.queue_id": qid, "smtp.queue_msg": f"250 2.0.0 Ok: queued as {qid}"}))
                if msg.size is not None:
                    attrs["smtp.message.size_bytes"] = msg.size
            self._close_message(msg)
        if counts:
            ok_mail, ok_rcpt = _ok(counts.get("mail")), _ok(counts.get("rcpt"))
            ok_data = _ok(counts.get("data"))
            for _ in range(ok_mail - len(mails)):
                mail = {"smtp.event.inferred": True}
                if s.sender is not None:
                    mail["smtp.mail_from"] = s.sender
                mails.append(SpanEvent("smtp.mail", last_ns, mail))
            for _ in range(ok_rcpt - len(rcpts)):
                rcpts.append(SpanEvent("smtp.rcpt", last_ns, {"smtp.event.inferred": True,
                                                              "smtp.rcpt.accepted": True}))
            for _ in range(ok_data - len(datas)):
                datas.append(SpanEvent("smtp.data", last_ns, {"smtp.event.inferred": True}))
            del mails[ok_mail:]
            del rcpts[ok_rcpt:]
            del datas[ok_data:]
            attrs["smtp.transactions"] = ok_mail
        else:
            attrs["smtp.transactions"] = transactions
        events += mails
        events += rcpts
        events += datas
        for _ in range(_ok(counts.get("rset"))):
            events.append(SpanEvent("smtp.reset_transaction", last_ns, {"smtp.event.inferred": True}))
        # Lines have 1 s resolution at best: within a tick, keep SMTP's own order.
        events.sort(key=_event_order)
        attrs["smtp.messages_queued"] = transactions
        return Connection(MTA, s.key[0], s.trace_id, s.span_id, s.start_ns, max(s.end_ns, s.start_ns), attrs,
                          events, s.error, commands, auth)


def _events_state(events: list[SpanEvent]) -> list[list[Any]]:
    return [[e.name, e.ts_ns, e.attrs] for e in events]


def _session_state(s: Session) -> dict[str, Any]:
    return {"key": list(s.key), "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
            "start_ns": s.start_ns, "last_ns": s.last_ns, "attrs": s.attrs, "events": _events_state(s.events),
            "error": s.error, "end_ns": s.end_ns, "counts": s.counts, "helo": s.helo, "tls_ns": s.tls_ns,
            "sender": s.sender, "auth_seen": s.auth_seen}


def _session_from(d: dict[str, Any]) -> Session:
    return Session(tuple(d["key"]), bytes.fromhex(d["trace_id"]), bytes.fromhex(d["span_id"]),  # type: ignore[arg-type]
                   d["start_ns"], d["last_ns"], d["attrs"], [SpanEvent(*e) for e in d["events"]], d["error"],
                   d["end_ns"], d["counts"], [], d["helo"], d["tls_ns"], d.get("sender"),
                   d.get("auth_seen", {}))


_MESSAGE_FIELDS = ("first_ns", "last_ns", "origin", "client_ns", "data_ns", "message_id", "mail_from", "size",
                   "nrcpt", "queued_ns", "rejected", "parent_queue_id", "rcpts", "attempts")


def _message_state(m: Message) -> dict[str, Any]:
    d = {f: getattr(m, f) for f in _MESSAGE_FIELDS}
    d.update(key=list(m.key), trace_id=m.trace_id.hex(),
             parent_span_id=m.parent_span_id.hex() if m.parent_span_id else None,
             session=list(m.session.key) if m.session is not None else None, id_uses=m.id_uses)
    return d


def _message_from(d: dict[str, Any]) -> Message:
    m = Message(tuple(d["key"]), bytes.fromhex(d["trace_id"]),  # type: ignore[arg-type]
                bytes.fromhex(d["parent_span_id"]) if d["parent_span_id"] else None,
                d["first_ns"], d["last_ns"])
    for f in _MESSAGE_FIELDS:
        setattr(m, f, d[f])
    m.id_uses = d.get("id_uses")  # absent from the state files of versions before it
    return m


def _ok(value: str | None) -> int:
    return int(value.partition("/")[0]) if value else 0


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
