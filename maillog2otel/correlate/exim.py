"""Exim: sessions by Ci= / pid / client ip:port, messages by message ID until ``Completed``.

Connection lines need ``+smtp_connection``. Before 4.97 the daemon writes the open line, so its
``[pid]`` is the daemon's: the session is found again on the child's first line by the client's
``[ip]:port`` (without ``+incoming_port``: the oldest unbound session from that ip), and that
line binds the child's pid. From 4.97 ``Ci=`` (the child's pid) names the session on its lines.
The ``no MAIL`` line comes after the close line: closed sessions wait ``grace_ns`` for it.

Without connection lines (the upstream and Debian default) a *synthetic* session gathers what
proves one: ``<=`` lines of one receiving process (``[pid]``, else the message ID's middle part,
which is that pid), and rejections and disconnections from the same ip and HELO name within a
minute. Its span says ``exim.reconstructed=partial``; its length is not the session's.

Deliveries are written by other processes, so they join a message only by its ID; a message
keeps its session's trace until ``Completed``, and a bounce (``<= <> R=parent``) joins its
parent's trace. The reject log repeats main-log lines: when both are read, an entry already seen
with the same time, pid and text in another stream is dropped; its ``Envelope-to:`` line names the
recipients of a message rejected at DATA.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from maillog2otel.correlate.base import NS, CorrelateSettings, Grace, Stats, Table
from maillog2otel.correlate.exim_messages import REPLY, MessageBook
from maillog2otel.correlate.exim_span import MTA, Session, Txn, build_connection, tls_attrs
from maillog2otel.records import Count, Event, Output, SpanEvent
from maillog2otel.telemetry.ids import ids_for

SYNTHETIC_IDLE_NS = 60 * NS  # a session without connection lines ends a minute after its last line
_NO_IDS = (b"", b"")  # a session's trace and span ID when nothing reads them (CorrelateSettings.span_ids)
_B62 = {c: i for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")}
_LOCAL_SMTP = re.compile(r"local-e?smtp")  # -bs: SMTP over a pipe (not -bS batches)
_TLS_PROTO = re.compile(r"(?:utf8)?(?:e?smtpsa?|e?ssmtpa?)")
_CLOSE = {"by QUIT": "quit", "by EOF": "eof", "by DROP in ACL": "drop_acl"}
_ADDR_IN_TEXT = re.compile(r"\[(?P<ip>[^\]\s]+)\](?::(?P<port>\d+))?")
# smtp_in.c: the replies to an AUTH command Exim refuses before any authenticator runs
_AUTH_REFUSAL = {"AUTH command used when not advertised": 503, "already authenticated": 503,
                 "not permitted in mail transaction": 503,
                 "invalid character in authentication mechanism name": 501}
_SET_ID = re.compile(r" \(set_id=(?P<user>[^)]*)\)")
# an AUTH command as Exim quotes it (protocol errors, dropped calls) carries the client's initial
# response, base64 credentials: only the mechanism is kept
_AUTH_DATA = re.compile(r'(?i)(?<="AUTH )(\S+) [^"]+(?=")')


def _hide_auth_data(text: str) -> str:
    return _AUTH_DATA.sub(r"\1 …", text) if "AUTH " in text.upper() else text


# globals.c acl_wherecodes: a deny answers 550 except at these commands; a defer answers 451
_DENY_CODE = {"AUTH": 503, "ETRN": 458, "VRFY": 252, "ATRN": 450}
# Lines that also go to the reject log (LOG_REJECT): the copies to drop when both logs are read.
_REJECTLOG_RULES = frozenset({
    "rejected", "dropped_by_acl", "sender_verify", "rcpt_discarded", "rejected_helo", "rejected_helo_verify",
    "rejected_mail", "unqualified_rejected", "too_many_recipients", "auth_failed", "refused_connection",
    "connection_refused", "call_dropped", "synchronization_error", "eof_on_input"})


def id_pid(msgid: str) -> int | None:
    """The receiving process's pid, the middle part of a message ID (base 62)."""
    parts = msgid.split("-")
    if len(parts) != 3:
        return None
    n = 0
    for ch in parts[1]:
        n = n * 62 + _B62.get(ch, 0)
    return n


_TLS_PROTOS: dict[str, bool] = {}


def _tls_proto(proto: str) -> bool:
    """Whether P= names a protocol over TLS; a log has a handful of P= values, on every arrival."""
    tls = _TLS_PROTOS.get(proto)
    if tls is None:
        tls = _TLS_PROTO.fullmatch(proto) is not None
        if len(_TLS_PROTOS) < 256:
            _TLS_PROTOS[proto] = tls
    return tls


def _angle(text: str | None) -> str:
    text = (text or "").split(" ", 1)[0]
    return text[1:-1] if text[:1] == "<" and text[-1:] == ">" else text


class EximCorrelator:
    mta = MTA

    def __init__(self, settings: CorrelateSettings | None = None) -> None:
        self.s = settings or CorrelateSettings()
        self.stats = Stats()
        self.sessions: Table[str, Session] = Table(self.s.max_sessions, self.stats, "session")
        self.synthetic: Table[str, Session] = Table(self.s.max_sessions, self.stats, "synthetic_session")
        self.closing: Grace[Session] = Grace()
        self.book = MessageBook(self.s, self.stats)
        self.by_pid: dict[tuple[str, int], Session] = {}
        self.by_ci: dict[tuple[str, str], Session] = {}
        self.by_addr: dict[tuple[str, str, int | None], list[Session]] = {}
        self.synth: dict[tuple[str, str], list[Session]] = {}
        # reject-log copies: (host, time, pid, text) -> (stream, session, txn) of the entry
        self.recent: OrderedDict[tuple[Any, ...], tuple[int, Session | None, Txn | None]] = OrderedDict()
        self.entry: dict[int, tuple[Session | None, Txn | None]] = {}  # per stream: the last reject entry
        self.now_ns = 0
        h = self._handlers = {
            "connection_open": self._open, "connection_closed": self._closed, "connection_lost": self._lost,
            "no_mail": self._no_mail, "unexpected_disconnection": self._ended, "command_timeout": self._ended,
            "data_timeout": self._ended, "call_dropped": self._ended, "dropped_by_acl": self._ended,
            "tls_error": self._tls_error, "rejected": self._rejected,
            "incomplete_transaction": self._incomplete,
            "arrival": self._arrival, "rejectlog_envelope": self._envelope, "auth_failed": self._auth_failed,
            "protocol_error": self._protocol_error,
        }
        for rule in ("rejected_helo", "rejected_helo_verify", "rejected_mail", "unqualified_rejected",
                     "too_many_recipients", "synchronization_error", "connection_refused",
                     "refused_connection"):
            h[rule] = self._other_rejection
        for rule in ("sender_verify", "acl_warning", "eof_on_input"):
            h[rule] = self._session_note
        h.update(self.book.handlers)
        # _due runs on nearly every line (each new millisecond) and usually finds nothing: it peeks
        # at the heads of these directly (live value views, made once) instead of through the
        # Table/Grace methods
        self._closing_q = self.closing._q
        self._synthetic_d = self.synthetic._d
        self._sessions_d = self.sessions._d
        self._synthetic_v = self._synthetic_d.values()
        self._sessions_v = self._sessions_d.values()
        self._messages_v = self.book.table._d.values()
        self._idle_ns = self.s.session_idle_ns
        self._retention_ns = self.s.message_retention_ns

    # --- pipeline interface --------------------------------------------------------------

    def feed(self, ev: Event) -> list[Output]:
        out: list[Output] = []
        rec = ev.record
        rule = ev.rule
        if rec.ts_ns > self.now_ns:
            self.now_ns = rec.ts_ns
            self._due(rec.ts_ns, out)
        if self.entry and not rule.startswith("rejectlog_"):
            self.entry.pop(rec.stream, None)
        key = None
        if rule in _REJECTLOG_RULES:
            key = (rec.host, rec.ts_ns, self._pid(ev), rec.message)
            seen = self.recent.get(key)
            if seen is not None and seen[0] != rec.stream:  # the same entry from the other log
                self.stats.bump("rejectlog_duplicate")
                self.entry[rec.stream] = seen[1:]
                return out
        handler = self._handlers.get(rule)
        if handler is not None:
            handler(ev, out)
        if key is not None:
            s, txn = self.entry.get(rec.stream, (None, None))
            self.recent[key] = (rec.stream, s, txn)
            if len(self.recent) > 4096:
                self.recent.popitem(last=False)
        return out

    def tick(self, now_ns: int) -> list[Output]:
        out: list[Output] = []
        self._due(now_ns, out)
        return out

    def _due(self, now: int, out: list[Output]) -> None:
        q = self._closing_q
        if q and q[0][0] <= now:
            for s in self.closing.due(now):
                out.append(self._emit(s))
        v = self._synthetic_v
        while v and now - (s := next(iter(v))).last_ns > SYNTHETIC_IDLE_NS:
            self.synthetic.pop(s.key)
            out.append(self._emit(s))
        v = self._sessions_v
        while v and now - (s := next(iter(v))).last_ns > self._idle_ns:
            self.sessions.pop(s.key)
            s.error = s.error or "session idle: no close logged"
            self.stats.bump("session_idle")
            out.append(self._emit(s))
        v = self._messages_v
        if v and now - next(iter(v)).last_ns > self._retention_ns:
            self.book.expire(now)

    def finish(self) -> list[Output]:
        """End of input: closed and synthetic sessions go out; open ones end as ERROR "log ended"."""
        out: list[Output] = [self._emit(s) for s in self.closing.drain()]
        for s in self.synthetic.values():
            self.synthetic.pop(s.key)
            out.append(self._emit(s))
        for s in self.sessions.values():
            self.sessions.pop(s.key)
            s.error = s.error or "log ended"
            out.append(self._emit(s))
        return out

    def open_counts(self) -> dict[str, int]:
        return {"sessions": len(self.sessions) + len(self.synthetic), "messages": len(self.book.table)}

    def oldest_open_ns(self) -> int | None:
        starts = [s.start_ns for s in (self.sessions.oldest(), self.synthetic.oldest()) if s is not None]
        return min(starts) if starts else None

    # --- sessions: find, create, close, emit ------------------------------------------------

    def _pid(self, ev: Event) -> int | None:
        if ev.record.pid is not None:
            return ev.record.pid
        raw = ev.fields.get("exim_pid")
        return int(raw) if raw else None

    def _find(self, ev: Event, h: dict[str, Any] | None, user: str | None = None, *, create: bool = False,
              msgid: str | None = None) -> Session | None:
        """The session a line belongs to: by Ci=, by pid, by the client's ip:port; else, when
        ``create``, a synthetic one."""
        rec, f = ev.record, ev.fields
        host, ts = rec.host, rec.ts_ns
        pid = rec.pid
        if pid is None:
            pid = self._pid(ev)
        tags = f.get("tags")
        ci = (tags.get("Ci") if tags else None) or f.get("Ci")
        if h:
            ip, port = h.get("address"), h.get("port")
        else:
            ip = port = None
        s = self.by_ci.get((host, ci)) if ci else None
        if s is None and pid is not None:
            s = self.by_pid.get((host, pid))
            if s is not None and ((ip and s.ip and ip != s.ip) or (port and s.port and port != s.port)):
                s = None  # a reused pid
        if s is None and ip is not None and (group := self.by_addr.get((host, ip, port))):
            # an open session of that pid (or none yet) before one that closed (no port: heuristic)
            first = None
            for c in group:
                if c.pid is None or c.pid == pid:
                    if not c.closed:
                        s = c
                        break
                    if first is None:
                        first = c
            else:
                s = first
        if s is None and create and (ip is not None or user is not None):
            s = self._synthetic(ev, h, user, pid, id_pid(msgid) if msgid else None)
        if s is None:
            return None
        if pid is not None and s.pid is None:
            s.pid = pid
            s.attrs["process.pid"] = pid
            self.by_pid[(host, pid)] = s
        s.last_ns = max(s.last_ns, ts)  # Session.touch, without the call
        s.start_ns = min(s.start_ns, ts)
        ev.ctx = (s.trace_id, s.span_id)  # the line's span, for --logs
        d = self._synthetic_d if s.synthetic else self._sessions_d
        if s.key in d:
            d.move_to_end(s.key)
        if h:
            self._learn_client(s, h)
        return s

    def _learn_client(self, s: Session, h: dict[str, Any]) -> None:
        if s.ip is None:
            s.ip = h["address"]
            s.attrs["client.address"] = s.ip
        if s.port is None and "port" in h:
            s.port = h["port"]
            s.attrs["client.port"] = s.port
        if s.helo is None and h.get("helo") is not None:
            s.helo = h["helo"]
        if "name" in h:
            s.attrs["net.peer.name"] = h["name"]

    def _new_session(self, ev: Event, h: dict[str, Any] | None, user: str | None, start_ns: int, *,
                     synthetic: bool = False, pid: int | None = None) -> Session:
        host = ev.record.host
        who = f"{h['address']}:{h.get('port')}" if h else f"user:{user}"
        key = f"{host}|{'synthetic|' if synthetic else ''}{who}|{h.get('helo') if h else ''}|{pid}|{start_ns}"
        # a blake2b per session: skipped when no span, log record or saved state reads the IDs
        trace_id, span_id = ids_for(f"exim|{key}") if self.s.span_ids else _NO_IDS
        s = Session(key, host, trace_id, span_id, start_ns, start_ns, pid=pid, user=user, synthetic=synthetic,
                    attrs={"mta.name": MTA, "network.transport": "tcp" if h else "pipe"})
        if pid is not None:
            s.attrs["process.pid"] = pid
        if user is not None:
            s.attrs["exim.local_user"] = user
        if h:
            self._learn_client(s, h)
        table = self.synthetic if synthetic else self.sessions
        evicted = table.put(key, s)
        if evicted is not None:
            evicted.error = evicted.error or "evicted: too many open sessions"
            self._close(evicted, evicted.last_ns, None)
        return s

    def _synthetic(self, ev: Event, h: dict[str, Any] | None, user: str | None, pid: int | None,
                   id_pid_: int | None) -> Session:
        host, ts = ev.record.host, ev.record.ts_ns
        proc = pid if pid is not None else id_pid_
        who = (host, h["address"] if h else f"user:{user}")
        helo = h.get("helo") if h else None
        group = self.synth.setdefault(who, [])
        for s in reversed(group):
            if s.closed or ts - s.last_ns > SYNTHETIC_IDLE_NS:
                continue
            if helo is not None and s.helo is not None and helo != s.helo:
                continue
            if proc is not None and s.pid is not None and s.pid != proc:
                continue  # another receiving process: another connection
            if proc is not None and s.pid is None:
                s.pid = proc
                s.attrs["process.pid"] = proc
            return s
        s = self._new_session(ev, h, user, ts, synthetic=True, pid=proc)
        s.attrs["exim.correlation"] = "pid" if pid is not None else "message_id" if proc else "client_address"
        group.append(s)
        if pid is not None:
            self.by_pid[(host, pid)] = s
        return s

    def _close(self, s: Session, ts: int, reason: str | None, error: str | None = None,
               duration_s: float | None = None) -> None:
        s.end_ns = max(s.end_ns, ts)
        s.last_ns = max(s.last_ns, ts)
        if reason is not None and s.close_reason is None:
            s.close_reason = reason
        if error is not None and s.error is None:
            s.error = error
        if duration_s is not None:
            s.duration_s = duration_s
            if s.synthetic or "exim.reconstructed" in s.attrs:  # no open line: D= gives the start
                s.start_ns = min(s.start_ns, ts - int(duration_s * NS))
        if s.closed:
            return
        s.closed = True
        (self.synthetic if s.synthetic else self.sessions).pop(s.key)
        # whole-second stamps (no +millisec, syslog): a line 0.2 s later may be stamped a second later
        self.closing.push(ts + self.s.grace_ns + (NS if ts % NS == 0 else 0), s)

    def _emit(self, s: Session) -> Any:
        host = s.host
        if s.pid is not None and self.by_pid.get(pid_key := (host, s.pid)) is s:
            del self.by_pid[pid_key]
        if s.ci is not None and self.by_ci.get(ci_key := (host, s.ci)) is s:
            del self.by_ci[ci_key]
        if (group := self.by_addr.get(addr_key := (host, s.ip, s.port))) and s in group:
            group.remove(s)
            if not group:
                del self.by_addr[addr_key]
        if s.synthetic:  # the only ones synth holds
            synth_key = (host, s.ip or f"user:{s.user}")
            if (group := self.synth.get(synth_key)) and s in group:
                group.remove(s)
                if not group:
                    del self.synth[synth_key]
        return build_connection(s, self.s.span_events)

    def _partial(self, ev: Event, h: dict[str, Any] | None, user: str | None) -> Session:
        """A close line whose session began before the log did (or that no open line announced)."""
        s = self._new_session(ev, h, user, ev.record.ts_ns, pid=self._pid(ev))
        s.attrs["exim.reconstructed"] = "partial"
        ev.ctx = (s.trace_id, s.span_id)
        if s.pid is not None:
            self.by_pid[(s.host, s.pid)] = s
        return s

    # --- connection lines ----------------------------------------------------------------------

    def _open(self, ev: Event, out: list[Output]) -> None:
        f, rec = ev.fields, ev.record
        if "user" in f:  # local -bs: the process itself writes the line, its pid is the session's
            s = self._new_session(ev, None, f["user"], rec.ts_ns, pid=self._pid(ev))
            ev.ctx = (s.trace_id, s.span_id)
            if s.pid is not None:
                self.by_pid[(rec.host, s.pid)] = s
            s.attrs["exim.correlation"] = "pid"
            return
        h, tags = f["host"], f["tags"]
        port = h.get("port")
        key = (rec.host, h["address"], port)
        # the same client port again: the old session's end is not in the log
        if port is not None and (olds := self.by_addr.get(key)):
            for old in list(olds):
                if not old.closed:
                    self._close(old, old.last_ns, None, "no close logged")
        s = self._new_session(ev, h, None, rec.ts_ns)
        ev.ctx = (s.trace_id, s.span_id)
        self.by_addr.setdefault(key, []).append(s)
        s.attrs["exim.correlation"] = "client_port" if port is not None else "client_address"
        s.attrs["exim.connection_count"] = f["count"]
        if isinstance(tags.get("I"), dict):
            s.attrs["server.address"] = tags["I"].get("address")
            if "port" in tags["I"]:
                s.attrs["server.port"] = tags["I"]["port"]
        ci = tags.get("Ci")
        if ci:  # 4.97+: written by the child, whose pid Ci= is
            s.ci = ci
            s.attrs["exim.connection_id"] = ci
            s.attrs["exim.correlation"] = "connection_id"
            self.by_ci[(rec.host, ci)] = s
            pid = self._pid(ev)
            if pid is not None:
                s.pid = pid
                s.attrs["process.pid"] = pid
                self.by_pid[(rec.host, pid)] = s

    def _session_of(self, ev: Event, *, create: bool = False) -> Session | None:
        f = ev.fields
        tags = f.get("tags") or {}
        h = f.get("host") or tags.get("H")
        user = f.get("user") or (tags.get("U") if h is None else None)
        return self._find(ev, h, user, create=create, msgid=f.get("msgid"))

    def _closed(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        s = self._session_of(ev) or self._partial(ev, f.get("host"), f.get("user"))
        reason = f["reason"]
        name = _CLOSE.get(reason) or reason.split()[-1].lower()
        error = None if name in ("quit", "eof") else f"closed {reason}"
        self._close(s, ev.record.ts_ns, name, error, f["tags"].get("D"))

    def _lost(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        s = self._session_of(ev, create=True) or self._partial(ev, f.get("host"), f.get("user"))
        detail = f.get("detail", "").strip()
        if "msgid" in f and s.txns and s.txns[-1].end == "open":
            s.txns[-1].end = "incomplete"
        self._close(s, ev.record.ts_ns, "lost", f"connection lost {detail}".strip(), f.get("D") or
                    f["tags"].get("D"))

    def _no_mail(self, ev: Event, out: list[Output]) -> None:
        f = ev.fields
        tags = f["tags"]
        s = self._session_of(ev, create=True) or self._partial(ev, f.get("host"), f.get("user"))
        s.command_list = tags.get("C", "")
        self._auth(s, tags, ev.record.ts_ns)
        if isinstance(tags.get("I"), dict) and "server.address" not in s.attrs:
            s.attrs["server.address"] = tags["I"].get("address")
        quit_ = "QUIT" in s.command_list.split(",")
        self._close(s, ev.record.ts_ns, "quit" if quit_ else None, None, tags.get("D"))

    def _ended(self, ev: Event, out: list[Output]) -> None:
        """Lines that end a session abnormally: disconnection, timeouts, drops."""
        f, rule = ev.fields, ev.rule
        tags = {**f.get("tags", {}), **f.get("tags2", {})}
        s = self._session_of(ev, create=True)
        if rule in ("call_dropped", "dropped_by_acl"):
            out.append(Count(MTA, ev.record.host, ev.record.ts_ns, "rejected",
                             reason=_hide_auth_data(f.get("reason") or "") or None))
            self.entry[ev.record.stream] = (s, None)
        if s is None:
            return
        reason, error = {
            "unexpected_disconnection": ("lost", f"unexpected {f.get('what')} while reading SMTP command "
                                                 f"{f.get('detail', '')}".strip()),
            "command_timeout": ("timeout", "SMTP command timeout"),
            "data_timeout": ("data_timeout", "SMTP data timeout (message abandoned)"),
            "call_dropped": ("dropped", f"SMTP call dropped: {_hide_auth_data(f.get('reason', ''))}"),
            "dropped_by_acl": ("drop_acl", f"dropped by {f.get('reason', '')}"),
        }[rule]
        if rule == "data_timeout" and "F" in tags:
            s.txn(ev.record.ts_ns, tags["F"], proved=True).end = "incomplete"
        s.events.append(SpanEvent("exim.session_error", ev.record.ts_ns, {"exim.error": error}))
        self._close(s, ev.record.ts_ns, reason, error, tags.get("D"))

    def _tls_error(self, ev: Event, out: list[Output]) -> None:
        text = ev.fields["reason"]
        m = _ADDR_IN_TEXT.search(text)
        if m is None or not text.startswith("on "):
            return  # outbound: the delivery's == line tells the result
        s = self._find(ev, {"address": m["ip"], **({"port": int(m["port"])} if m["port"] else {})})
        if s is not None:
            s.error = s.error or f"TLS error {text}"
            s.events.append(SpanEvent("exim.tls_error", ev.record.ts_ns, {"exim.error": f"TLS error {text}"}))

    # --- rejections and other session lines -------------------------------------------------

    def _rejected(self, ev: Event, out: list[Output]) -> None:
        f, ts = ev.fields, ev.record.ts_ns
        out.append(Count(MTA, ev.record.host, ts, "rejected", reason=f.get("reason")))
        raw = f["stage"]
        # "rejected by non-SMTP ACL" / "by local_scan()": local submissions, not SMTP sessions
        s = self._session_of(ev, create=not raw.startswith("by "))
        self.entry[ev.record.stream] = (s, None)
        if s is None:
            return
        tags = f["tags"]
        temporary = "temporarily" in f
        code = 451 if temporary else _DENY_CODE.get(raw, 550)
        stage = ("END-OF-MESSAGE" if raw.startswith(("after DATA", "during MIME")) else "HELO"
                 if raw == "EHLO or HELO" else "CONNECT" if raw.startswith("connection") else raw)
        attrs: dict[str, Any] = {"smtp.reject.stage": stage, "smtp.response.code": code,
                                 "smtp.reject.reason": f.get("reason", ""),
                                 "smtp.reject.action": "defer" if temporary else "reject"}
        if f.get("argument"):
            attrs["exim.reject.argument"] = f["argument"]
        txn = None
        if stage == "RCPT":
            txn = s.txn(ts, tags.get("F"), proved=True)
            txn.rejected_rcpts += 1
            s.events.append(SpanEvent("smtp.rcpt", ts, {
                "smtp.rcpt_to": _angle(f.get("argument")), "smtp.rcpt.accepted": False,
                "smtp.response.code": code}))
        elif stage == "MAIL":
            s.events.append(SpanEvent("smtp.mail", ts, {
                "smtp.mail_from": _angle(f.get("argument")), "smtp.mail.accepted": False,
                "smtp.response.code": code}))
            self._count(s, "mail")
        elif stage in ("DATA", "END-OF-MESSAGE"):
            txn = s.txn(ts, tags.get("F"), proved=True)
            txn.end, txn.msgid = "rejected", f.get("msgid")
            if stage == "DATA":
                self._count(s, "data")
            else:
                txn.data_ns = txn.data_ns or ts
        elif stage == "HELO":
            self._count(s, "ehlo")
        elif stage == "AUTH":  # the AUTH ACL refused it: an attempt that failed
            self._count(s, "auth")
            self._auth_attempt(s, ts, False, (f.get("argument") or "").split(" ", 1)[0] or None, None, code,
                               None, f.get("reason"))
        self._auth(s, tags, ts)
        s.events.append(SpanEvent("smtp.reject", ts, attrs))
        self.entry[ev.record.stream] = (s, txn)

    def _other_rejection(self, ev: Event, out: list[Output]) -> None:
        """HELO syntax, unqualified addresses, too many recipients, sync errors, refused connections."""
        f, rule, ts = ev.fields, ev.rule, ev.record.ts_ns
        text = f.get("reason") or f.get("detail") or f.get("what") or rule
        out.append(Count(MTA, ev.record.host, ts, "rejected", reason=text))
        if rule in ("connection_refused", "refused_connection"):
            return  # refused before a session began (or by host_reject_connection): no span to add to
        s = self._session_of(ev, create=True)
        self.entry[ev.record.stream] = (s, None)
        if s is None:
            return
        stage, code = {"rejected_helo": ("HELO", 501), "rejected_helo_verify": ("HELO", 550),
                       "rejected_mail": ("MAIL", 550), "unqualified_rejected": ("RCPT", 501),
                       "too_many_recipients": ("RCPT", 452), "synchronization_error": ("SYNC", 554)}[rule]
        attrs = {"smtp.reject.stage": stage, "smtp.response.code": code, "smtp.reject.reason": text}
        s.events.append(SpanEvent("smtp.reject", ts, attrs))
        if rule == "rejected_helo":
            self._count(s, f["verb"].lower())
        elif rule == "rejected_mail":
            self._count(s, "mail")
        elif rule == "synchronization_error" and f["command"] == "connection from":
            self._close(s, ts, "sync_error", "SMTP protocol synchronization error")

    def _incomplete(self, ev: Event, out: list[Output]) -> None:
        f, ts = ev.fields, ev.record.ts_ns
        s = self._session_of(ev, create=True)
        if s is None:
            return
        txn = s.txn(ts, f.get("sender"), proved=True)
        for rcpt in f.get("rcpts", []):
            if rcpt not in txn.accepted:
                txn.accepted.append(rcpt)
        txn.end = "incomplete"
        if f["what"].startswith("RSET"):
            txn.reset = True
            s.events.append(SpanEvent("smtp.reset_transaction", ts, {}))

    def _auth_failed(self, ev: Event, out: list[Output]) -> None:
        """``<authenticator> authenticator failed for <host>: 535 Incorrect authentication data
        (set_id=<user>)``: the reply as sent, the attempted user when ``server_set_id`` names one."""
        f = ev.fields
        s = self._session_of(ev, create=True)
        self.entry[ev.record.stream] = (s, None)
        if s is None:
            return
        reason = f.get("reason", "")
        user = None
        if (m := _SET_ID.search(reason)) is not None:
            user = m["user"] or None
            reason = reason[:m.start()] + reason[m.end():]  # the user goes to smtp.auth.user only
        code = enhanced = None
        if (m := REPLY.search(reason)) is not None:
            code, enhanced = int(m["code"]), m["enh"]
            reason = reason[m.end():].strip()
        self._count(s, "auth")
        self._auth_attempt(s, ev.record.ts_ns, False, f["authenticator"], user, code, enhanced, reason)

    def _auth_attempt(self, s: Session, ts: int, accepted: bool, method: str | None, user: str | None,
                      code: int | None, enhanced: str | None = None, reason: str | None = None,
                      inferred: bool = False) -> None:
        """One AUTH attempt: counted always, an ``smtp.auth`` event when span events are made."""
        result = "accepted" if accepted else "failed"
        s.auth[result] = s.auth.get(result, 0) + 1
        if not self.s.span_events:
            return
        attrs: dict[str, Any] = {"smtp.auth.accepted": accepted}
        if method:
            attrs["smtp.auth.method"] = method
        if code is not None:
            attrs["smtp.response.code"] = code
        if enhanced:
            attrs["smtp.response.enhanced_code"] = enhanced
        if user:
            attrs["smtp.auth.user"] = user
        if reason:
            attrs["smtp.auth.reason"] = reason
        if inferred:
            attrs["smtp.event.inferred"] = True
        if accepted:
            s.auth_event = len(s.events)
        s.events.append(SpanEvent("smtp.auth", ts, attrs))

    def _protocol_error(self, ev: Event, out: list[Output]) -> None:
        s = self._session_of(ev, create=True)
        if s is None:
            return
        f, ts = ev.fields, ev.record.ts_ns
        command = f["command"][1:-1]
        if command[:5].upper() in ("AUTH", "AUTH "):
            self._auth_refused(s, ts, command, f["reason"])
            command = " ".join(command.split(" ", 2)[:2])  # without the credentials
        s.events.append(SpanEvent("smtp.protocol_error", ts, {
            "exim.error.kind": f["kind"], "exim.command": command, "exim.error": f["reason"]}))

    def _auth_refused(self, s: Session, ts: int, command: str, reason: str) -> None:
        """An AUTH command refused before an authenticator ran (``SMTP protocol error in "AUTH …"``)."""
        mechanism = command.split(" ", 2)[1] if " " in command else None
        code = _AUTH_REFUSAL.get(reason)
        if code is None and reason.endswith(" authentication mechanism not supported"):
            code = 504
        if code is None:
            return  # not one of smtp_in.c's AUTH refusals
        if reason == "already authenticated" and not s.auth.get("accepted"):
            # an earlier AUTH succeeded; which authenticator and user, a later A= may tell
            self._auth_attempt(s, ts, True, None, None, 235, inferred=True)
        self._count(s, "auth")
        self._auth_attempt(s, ts, False, mechanism, None, code, None, reason)

    def _session_note(self, ev: Event, out: list[Output]) -> None:
        s = self._session_of(ev, create=True)
        self.entry[ev.record.stream] = (s, None)
        if s is not None:
            text = " ".join(str(v) for k, v in ev.fields.items() if k in ("verdict", "address", "reason"))
            s.events.append(SpanEvent(f"exim.{ev.rule}", ev.record.ts_ns, {"exim.detail": text}))

    def _count(self, s: Session, command: str) -> None:
        """A command a rejection line proves that no transaction accounts for."""
        if s.extra is None:
            s.extra = {}
        s.extra[command] = s.extra.get(command, 0) + 1

    def _auth(self, s: Session, tags: dict[str, Any], ts: int) -> None:
        """``A=<authenticator>[:<id>]`` (on ``<=``, RCPT/DATA rejections and ``no MAIL``): the
        session's login succeeded. Exim writes no line when it happens, so the first line that
        shows it is the accepted attempt's event (inferred; Exim's reply to it is always 235)."""
        if "A" not in tags:
            return
        method, _, who = str(tags["A"]).partition(":")
        user = who.split(":")[0] or None
        s.attrs["smtp.auth.method"] = method
        if user:
            s.attrs["smtp.auth.user"] = user
        if not s.auth.get("accepted"):
            self._auth_attempt(s, ts, True, method, user, 235, inferred=True)
        elif s.auth_event is not None and s.auth_event < len(s.events):
            attrs = s.events[s.auth_event].attrs  # proved earlier by "already authenticated"
            attrs.setdefault("smtp.auth.method", method)
            if user:
                attrs.setdefault("smtp.auth.user", user)

    def _envelope(self, ev: Event, out: list[Output]) -> None:
        s, txn = self.entry.get(ev.record.stream, (None, None))
        if txn is None or s is None:
            return
        addresses = re.findall(r"<([^<>]*)>", ev.fields["value"])  # [^<>]: linear on a line of "<"
        if ev.fields["which"] == "to" and txn.end == "rejected":  # accepted RCPTs of a DATA rejection
            txn.accepted.extend(a for a in addresses if a not in txn.accepted)
        elif ev.fields["which"] == "from" and txn.mail_from is None and addresses:
            txn.mail_from = addresses[0]

    # --- messages ------------------------------------------------------------------------

    def _arrival(self, ev: Event, out: list[Output]) -> None:
        f, rec = ev.fields, ev.record
        msgid = f.get("msgid")
        if msgid is None:
            self.stats.bump("message_line_without_id")
            return
        tags = f["tags"]
        h, proto, size = tags.get("H"), str(tags.get("P") or ""), tags.get("S")
        out.append(Count(MTA, rec.host, rec.ts_ns, "queued", size if isinstance(size, int) else None))
        s = None
        if h is not None or _LOCAL_SMTP.match(proto):
            s = self._find(ev, h, None if h else tags.get("U"), create=True, msgid=msgid)
        msg = self.book.new(ev, msgid, s)
        msg.mail_from, msg.size = f["sender"], size
        parent = tags.get("R")
        if s is not None:
            txn = s.txn(rec.ts_ns, f["sender"])
            rt = tags.get("RT")
            txn.msgid, txn.queued_ns, txn.end, txn.size = msgid, rec.ts_ns, "queued", size
            txn.data_ns = rec.ts_ns - int(rt * NS) if isinstance(rt, float) else rec.ts_ns
            txn.message_id = tags.get("id") or tags.get("id*")
            accepted = txn.accepted
            for r in f.get("rcpts", ()):
                if r not in accepted:
                    accepted.append(r)
            msg.txn = txn
            s.start_ns = min(s.start_ns, txn.data_ns)
            s.protocol = proto or s.protocol
            s.attrs["exim.protocol"] = s.protocol
            if "X" in tags or _tls_proto(proto):
                s.attrs["smtp.tls"] = True
                s.attrs.update(tls_attrs(tags))
                if "ssmtp" in proto:
                    s.attrs["exim.tls_on_connect"] = True
            if "A" in tags:
                self._auth(s, tags, rec.ts_ns)
        elif parent is not None:
            msg.origin, msg.parent_msgid = "bounce", parent
            pm = self.book.table.get((rec.host, parent))
            if pm is not None:  # the bounce joins its parent's trace
                msg.trace_id, msg.parent_span_id = pm.trace_id, pm.parent_span_id
        else:
            msg.origin = "local"
        if s is None:
            ev.ctx = (msg.trace_id, msg.parent_span_id)

    # --- state across restarts (tail) ------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        live = [*self.sessions.values(), *self.synthetic.values(), *self.closing.items()]
        return {"now_ns": self.now_ns, "sessions": [s.state() for s in self.sessions.values()],
                "synthetic": [s.state() for s in self.synthetic.values()],
                "closing": [[due, s.state()] for due, s in self.closing.entries()],
                "messages": self.book.save(live), "stats": dict(self.stats.counts)}  # same order as live

    def load_state(self, state: dict[str, Any]) -> None:
        self.now_ns = state.get("now_ns", 0)
        self.stats.counts.update(state.get("stats", {}))
        loaded = [(None, Session.from_state(d)) for d in state.get("sessions", [])]
        loaded += [(None, Session.from_state(d)) for d in state.get("synthetic", [])]
        loaded += [(due, Session.from_state(d)) for due, d in state.get("closing", [])]
        for due, s in loaded:
            if due is not None:
                self.closing.push(due, s)
            else:
                (self.synthetic if s.synthetic else self.sessions).put(s.key, s)
            if s.pid is not None:
                self.by_pid[(s.host, s.pid)] = s
            if s.ci:
                self.by_ci[(s.host, s.ci)] = s
            if s.synthetic:
                self.synth.setdefault((s.host, s.ip or f"user:{s.user}"), []).append(s)
            elif s.ip is not None:
                self.by_addr.setdefault((s.host, s.ip, s.port), []).append(s)
        self.book.load(state.get("messages", []), [s for _, s in loaded])
