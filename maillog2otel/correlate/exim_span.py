"""Exim sessions and transactions, and how one becomes the ``smtp.connection`` span.

Exim never logs an accepted HELO, MAIL, RCPT or DATA: the span's events for them are inferred
from what later lines prove (``P=`` says HELO or EHLO and STARTTLS, ``<=`` the sender, size and
``for`` recipients, deliveries the recipients when ``for`` is not logged, ``C=`` on the ``no
MAIL`` line the exact command list) and carry ``smtp.event.inferred``. Rejections, resets and
errors are real lines and keep their own time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from maillog2otel.records import Connection, SpanEvent

MTA = "exim"
NS = 1_000_000_000
_EXTRA = "exim.extra."  # where a state saved before Session.extra kept its counts: in the attributes
# Within one log tick keep SMTP's own order (lines have 1 s resolution without +millisec).
_ORDER = {"smtp.helo": 0, "smtp.ehlo": 0, "smtp.starttls": 1, "smtp.auth": 1, "smtp.mail": 2, "smtp.rcpt": 3,
          "smtp.reject": 3, "smtp.data": 4, "smtp.queue_ok": 5, "smtp.reset_transaction": 6}
_TLS_VERSION = re.compile(r"^(?:TLS|SSL)(\d)")


@dataclass(slots=True)
class Txn:
    """One MAIL transaction, as far as the log proves it."""

    start_ns: int
    mail_from: str | None = None
    mail_ns: int | None = None  # a line proved the MAIL command by then (a rejection with F=)
    accepted: list[str] = field(default_factory=list)
    rejected_rcpts: int = 0
    msgid: str | None = None
    data_ns: int | None = None
    queued_ns: int | None = None
    size: int | None = None
    message_id: str | None = None
    end: str = "open"  # queued | rejected | incomplete | open
    reset: bool = False

    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Txn:
        return cls(**d)


@dataclass(slots=True)
class Session:
    """One inbound SMTP session (or, without connection lines, the part the log proves)."""

    key: str
    host: str
    trace_id: bytes
    span_id: bytes
    start_ns: int
    last_ns: int
    end_ns: int = 0
    ip: str | None = None
    port: int | None = None
    pid: int | None = None
    ci: str | None = None
    user: str | None = None  # local -bs: the calling user
    helo: str | None = None
    protocol: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)
    txns: list[Txn] = field(default_factory=list)
    error: str | None = None
    close_reason: str | None = None
    command_list: str | None = None  # C= of the "no MAIL" line: the last 20 commands
    synthetic: bool = False
    duration_s: float | None = None  # D= when Exim logged it
    closed: bool = False
    emitted: bool = False  # its span is out: deliveries need not wait for it (stitching)
    auth: dict[str, int] = field(default_factory=dict)  # AUTH attempts by result (Connection.auth)
    auth_event: int | None = None  # index in events of the accepted login's smtp.auth event
    # commands only rejection lines prove (EximCorrelator._count), by name; None until one does
    extra: dict[str, int] | None = None

    def txn(self, ts: int, mail_from: str | None = None, proved: bool = False) -> Txn:
        """The transaction in progress, or a new one."""
        t = self.txns[-1] if self.txns and self.txns[-1].end == "open" else None
        if t is None:
            t = Txn(ts)
            self.txns.append(t)
        if mail_from is not None and t.mail_from is None:
            t.mail_from = mail_from
        if proved and t.mail_ns is None:
            t.mail_ns = ts
        return t

    def touch(self, ts: int) -> None:
        self.last_ns = max(self.last_ns, ts)
        self.start_ns = min(self.start_ns, ts)

    def state(self) -> dict[str, Any]:
        skip = ("trace_id", "span_id", "events", "txns")
        d = {k: getattr(self, k) for k in self.__slots__ if k not in skip}  # type: ignore[attr-defined]
        d.update(trace_id=self.trace_id.hex(), span_id=self.span_id.hex(),
                 txns=[t.state() for t in self.txns],
                 events=[[e.name, e.ts_ns, e.attrs] for e in self.events])
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Session:
        d = dict(d)
        d["trace_id"], d["span_id"] = bytes.fromhex(d["trace_id"]), bytes.fromhex(d["span_id"])
        d["events"] = [SpanEvent(*e) for e in d["events"]]
        d["txns"] = [Txn.from_state(t) for t in d["txns"]]
        # a state saved before ``extra`` was a field kept those counts among the attributes
        if any(k.startswith(_EXTRA) for k in d["attrs"]):
            d["attrs"] = attrs = dict(d["attrs"])
            d["extra"] = {k[len(_EXTRA):]: attrs.pop(k) for k in [k for k in attrs if k.startswith(_EXTRA)]}
        return cls(**d)


def tls_attrs(tags: dict[str, Any]) -> dict[str, Any]:
    """``X=TLS1.3:ECDHE_X25519__RSA_PSS_RSAE_SHA256__AES_256_GCM:256 CV=no`` -> TLS attributes."""
    out: dict[str, Any] = {}
    x = tags.get("X")
    if isinstance(x, str) and x:
        parts = x.rstrip("*").split(":")
        out["tls.protocol.version"] = _TLS_VERSION.sub(r"TLSv\1", parts[0])  # as Postfix names it
        if len(parts) > 1:
            out["tls.cipher"] = ":".join(parts[1:-1] if len(parts) > 2 else parts[1:])
        if len(parts) > 2 and parts[-1].isdecimal():
            out["exim.tls.bits"] = int(parts[-1])
    if "CV" in tags:
        out["exim.tls.cert_verified"] = tags["CV"]
    if "DN" in tags:
        out["tls.client.subject"] = tags["DN"]
    if "SNI" in tags:
        out["tls.server.name"] = tags["SNI"]
    return out


def _helo_verb(s: Session) -> str:
    proto = (s.protocol or "").removeprefix("utf8").removeprefix("local-")
    # P=smtp is HELO; esmtp* EHLO; without P= (a session with rejections only) EHLO is assumed
    return "helo" if proto in ("smtp", "smtps", "ssmtp") else "ehlo"


def _command_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for raw in text.split(","):
        word = raw.strip().lower()
        if word and word != "...":
            counts[word] = counts.get(word, 0) + 1
    return counts


_COMMAND_ATTR = {name: f"smtp.command.{name}" for name in (
    "connect", "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "rset", "quit", "noop")}


def build_connection(s: Session, with_events: bool = True) -> Connection:
    """The SERVER span of a session: real events as logged, the rest inferred from what is proven.

    Once per session, but with every event dict written out literally (not copied from a shared
    one) and no per-attribute method calls: it was a quarter of Exim's correlation time. Without
    ``with_events`` (no span is exported) only what metrics read is made: the command and AUTH
    counts and the times; the span's attributes are not written either (``attrs`` is the session's
    own, as its lines left it): that was half of this function's cost."""
    s.emitted = True
    events = list(s.events) if with_events else []
    a = s.attrs
    tls = bool(a.get("smtp.tls"))
    helo = s.helo
    if helo is not None and with_events:
        a["smtp.helo_host"] = helo
    commands: dict[str, int] = {"connect": 1}
    if s.command_list is not None:
        commands.update(_command_counts(s.command_list))
        if with_events:
            a["exim.commands"] = s.command_list
    elif helo is not None or s.protocol is not None or s.txns:
        verb = _helo_verb(s)
        commands[verb] = 2 if tls and verb == "ehlo" else 1  # a new EHLO after STARTTLS
        if tls and not a.get("exim.tls_on_connect"):
            commands["starttls"] = 1
        if "smtp.auth.method" in a:
            commands["auth"] = 1
    start = s.start_ns
    for verb, name in (("helo", "smtp.helo"), ("ehlo", "smtp.ehlo")) if with_events else ():
        for i in range(commands.get(verb, 0)):
            attrs: dict[str, Any] = {"smtp.event.inferred": True}
            if helo is not None:
                attrs["smtp.helo_host"] = helo
            events.append(SpanEvent(name, start, attrs))
            if i == 0 and commands.get("starttls"):
                tls_attrs = {"smtp.event.inferred": True}
                tls_attrs.update((k, v) for k, v in a.items() if k[:4] == "tls.")
                events.append(SpanEvent("smtp.starttls", start, tls_attrs))
    mails = rcpts = datas = rsets = queued = 0
    for t in s.txns:
        mails += 1
        accepted = t.accepted
        n_accepted = len(accepted)
        n_ok = max(n_accepted, 1 if t.data_ns is not None or t.queued_ns is not None else 0)
        rcpts += n_ok + t.rejected_rcpts
        datas += t.data_ns is not None
        rsets += t.reset
        if not with_events:
            continue
        if t.queued_ns is not None and t.end == "queued":
            queued += 1
            if t.size is not None:
                a["smtp.message.size_bytes"] = t.size
        at = t.mail_ns or t.data_ns or t.queued_ns or t.start_ns
        mail: dict[str, Any] = {"smtp.event.inferred": True}
        if t.mail_from is not None:
            mail["smtp.mail_from"] = t.mail_from
        events.append(SpanEvent("smtp.mail", at, mail))
        for i in range(n_ok):
            rcpt: dict[str, Any] = {"smtp.event.inferred": True, "smtp.rcpt.accepted": True,
                                    "smtp.response.code": 250}
            if i < n_accepted:
                rcpt["smtp.rcpt_to"] = accepted[i]
            events.append(SpanEvent("smtp.rcpt", at, rcpt))
        if t.data_ns is not None:
            data: dict[str, Any] = {"smtp.event.inferred": True}
            if t.msgid is not None:
                data["smtp.queue_id"] = t.msgid
            if t.message_id is not None:
                data["smtp.message_id"] = t.message_id
            if t.size is not None:
                data["smtp.message.size_bytes"] = t.size
            events.append(SpanEvent("smtp.data", t.data_ns, data))
        if t.queued_ns is not None and t.end == "queued":
            events.append(SpanEvent("smtp.queue_ok", t.queued_ns, {
                "smtp.queue_id": t.msgid, "smtp.queue_msg": f"250 OK id={t.msgid}"}))
    if s.command_list is None:
        extra = s.extra or {}  # the session is done with it
        for name, seen in (("mail", mails), ("rcpt", rcpts), ("data", datas), ("rset", rsets)):
            if n := seen + extra.pop(name, 0):
                commands[name] = n
        for name, n in extra.items():  # commands that only rejection lines prove (rejected EHLO, AUTH)
            commands[name] = commands.get(name, 0) + n
        if s.close_reason == "quit":
            commands["quit"] = 1
    if with_events:
        for name, n in commands.items():
            a[_COMMAND_ATTR.get(name) or f"smtp.command.{name}"] = n
        a["smtp.transactions"] = mails
        a["smtp.messages_queued"] = queued
        if s.close_reason is not None:
            a["exim.close_reason"] = s.close_reason
        if s.synthetic:
            a["exim.reconstructed"] = "partial"
            a["smtp.connection.inferred"] = True
        # by time, then SMTP's order (_ORDER); stable: the keys made in one pass, not a call per event
        order = _ORDER.get
        keyed = [(e.ts_ns, order(e.name, 9), i, e) for i, e in enumerate(events)]
        keyed.sort()
        events = [k[3] for k in keyed]
    end = max(s.end_ns or s.last_ns, start)
    c = Connection(MTA, s.host, s.trace_id, s.span_id, start, end, a, events, s.error, commands)
    c.auth = s.auth  # the session is done with it
    # no open line and no D=: the span's length is not the session's, keep it out of the histogram
    c.duration_known = not s.synthetic or s.duration_s is not None
    return c
