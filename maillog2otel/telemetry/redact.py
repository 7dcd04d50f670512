"""Redaction: mail addresses, and separately client addresses and HELO names, taken out of
everything that leaves the process (span attributes and events, log records, metric attributes,
the console).

Modes for addresses (``--redact``):

- ``none``: as logged.
- ``hash``: a keyed hash, ``h:`` + the first 16 hex digits of HMAC-SHA256(key, address in lower
  case). The same address gives the same value in every span, event and log record, and in every
  run with the same key, so a trace still correlates; without the key the value cannot be
  reversed by hashing guessed addresses.
- ``domain``: only the domain stays, as ``*@example.com`` (so text still reads as an address).
- ``drop``: an attribute that holds an address is removed; an address inside free text (reject
  replies, delivery responses, message IDs, log lines) becomes ``[redacted]``.

Addresses are found by key (``smtp.mail_from``, ``smtp.rcpt_to``, ``smtp.orig_rcpt_to``,
``smtp.auth.user``: the whole value, even a bare local part) and by pattern anywhere in any
string (``local@domain``, ``<local@domain>``, ``"quoted local"@domain``, ``local@[literal]``).
Message IDs (``<x@host>``) have the address form and are treated the same way.

Clients (``--redact-clients``: ``none``, ``hash``, ``drop``): ``client.address``,
``net.peer.name`` and ``smtp.helo_host`` of the connection span and its events, and the same
values wherever they occur in that span's text; in log records (which are single lines with no
span at hand) every IP address, every ``name[ip]`` and every HELO argument is replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from maillog2otel.records import SERVER, SpanData, SpanEvent

MODES = ("none", "hash", "domain", "drop")
CLIENT_MODES = ("none", "hash", "drop")
KEY_ENV = "MAILLOG2OTEL_REDACT_KEY"
DROPPED = "[redacted]"

ADDRESS_KEYS = frozenset({"smtp.mail_from", "smtp.rcpt_to", "smtp.orig_rcpt_to", "smtp.auth.user",
                          "smtp.sender", "smtp.recipient"})
CLIENT_KEYS = frozenset({"client.address", "net.peer.name", "smtp.helo_host"})
EVENT_CLIENT_KEYS = frozenset({"smtp.helo_host"})

# local@domain: dot-atom or quoted local part; a domain name or an address literal.
_LOCAL = r"""(?:"[^"\r\n]{0,64}"|[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*)"""
_DOMAIN = r"(?:\[[^\]\s]{1,64}\]|[\w-]+(?:\.[\w-]+)*)"
ADDRESS = re.compile(rf"(?<![\w!#$%&'*+/=?^`{{|}}~.-]){_LOCAL}@(?P<domain>{_DOMAIN})")
_IPV4 = r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\w)"
_IPV6 = (r"(?<![\w:])(?=[0-9A-Fa-f:.]*::|(?:[0-9A-Fa-f]{1,4}:){7})"
         r"[0-9A-Fa-f:]{2,39}(?:\d{1,3}(?:\.\d{1,3}){3})?(?![\w:])")
IP = re.compile(rf"{_IPV4}|{_IPV6}")
# Client names and HELO arguments in log lines of the three MTAs
_CLIENT_TEXT = re.compile(
    r"(?P<pre>\b(?:helo|host|remote_host|rdns)=<?)(?P<v>[^\s>,;]+)"  # Postfix helo=<x>, Haraka helo=/host=
    r"|(?P<pre2>\bH=\(?)(?P<v2>[^\s()\[\]]+)"  # Exim H=name (helo) / H=(helo)
    r"|(?P<pre3>\s\()(?P<v3>[^\s()\[\]]+)(?=\) \[)"  # Exim's "(helo) [ip]"
    r"|(?P<v4>[^\s\[\]<>=(),;:]+)(?=\[[0-9A-Fa-f:.]+\])"  # Postfix name[ip]
    # a HELO/EHLO command a line quotes (postscreen's PREGREET text, pipelining reports), not the
    # word after "after EHLO from …"
    r"|(?P<pre5>\b(?:EHLO|HELO|ehlo|helo) )(?!from\b)(?P<v5>[^\s\\]+)"
)


class RedactError(ValueError):
    """A redaction setting that cannot be used (unknown mode, missing key)."""


def load_key(key_file: str | None, env: Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key: the file's content (whitespace at the ends stripped), else the variable."""
    env = os.environ if env is None else env
    if key_file:
        try:
            with open(key_file, "rb") as fh:
                key = fh.read().strip()
        except OSError as exc:
            raise RedactError(f"cannot read redaction key file {key_file}: {exc.strerror}") from None
        if not key:
            raise RedactError(f"redaction key file {key_file} is empty")
        return key
    value = env.get(KEY_ENV)
    return value.encode() if value else None


class Redactor:
    """Applies the two switches to text, attributes, spans, metric data and log lines."""

    def __init__(self, mode: str = "none", clients: str = "none", key: bytes | None = None) -> None:
        if mode not in MODES:
            raise RedactError(f"unknown redaction mode {mode!r} (use none, hash, domain or drop)")
        if clients not in CLIENT_MODES:
            raise RedactError(f"unknown client redaction mode {clients!r} (use none, hash or drop)")
        if "hash" in (mode, clients) and not key:
            raise RedactError(f"--redact hash needs a key: --redact-key-file PATH or {KEY_ENV}")
        self.mode, self.clients, self.key = mode, clients, key
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:  # the key stays out of any output
        return f"Redactor(mode={self.mode!r}, clients={self.clients!r})"

    @property
    def active(self) -> bool:
        return self.mode != "none" or self.clients != "none"

    # --- values ----------------------------------------------------------------------------

    def hash(self, value: str) -> str:
        got = self._cache.get(value)
        if got is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            digest = hmac.new(self.key or b"", value.lower().encode("utf-8", "surrogateescape"),
                              hashlib.sha256).hexdigest()
            got = self._cache[value] = "h:" + digest[:16]
        return got

    def address(self, value: str) -> str | None:
        """One attribute value that is an address (or a bare local part); None: drop it."""
        if self.mode == "none" or value in ("", "<>"):
            return value
        bracket = value.startswith("<") and value.endswith(">")
        inner = value[1:-1] if bracket else value
        if self.mode == "drop":
            return None
        if self.mode == "hash":
            out = self.hash(inner)
        else:
            _, at, domain = inner.rpartition("@")
            out = f"*@{domain}" if at else "*"
        return f"<{out}>" if bracket else out

    def _sub_address(self, m: re.Match[str]) -> str:
        if self.mode == "hash":
            return self.hash(m.group(0))
        if self.mode == "domain":
            return "*@" + m.group("domain")
        return DROPPED

    def text(self, value: str) -> str:
        """Free text with every address in it redacted."""
        if self.mode == "none" or "@" not in value:
            return value
        return ADDRESS.sub(self._sub_address, value)

    def client(self, value: str) -> str | None:
        if self.clients == "none":
            return value
        return self.hash(value) if self.clients == "hash" else None

    def _client_sub(self, value: str) -> str:
        return self.hash(value) if self.clients == "hash" else DROPPED

    def log_line(self, line: str) -> str:
        """A whole log line: addresses, then (clients) IPs, ``name[ip]`` and HELO arguments."""
        line = self.text(line)
        if self.clients != "none":
            def sub(m: re.Match[str]) -> str:
                for pre, v in (("pre", "v"), ("pre2", "v2"), ("pre3", "v3"), (None, "v4"), ("pre5", "v5")):
                    if m.group(v) is not None:
                        return (m.group(pre) if pre else "") + self._client_sub(m.group(v))
                return m.group(0)  # pragma: no cover

            line = _CLIENT_TEXT.sub(sub, line)
            line = IP.sub(lambda m: self._client_sub(m.group(0)), line)
        return line

    # --- attributes, spans, metrics ---------------------------------------------------------

    def attrs(self, attrs: Mapping[str, Any], client_keys: frozenset[str] = frozenset(),
              client_values: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, raw in attrs.items():
            v: Any = raw
            if k in client_keys and self.clients != "none" and isinstance(raw, str):
                v = self.client(raw)
                if v is None:
                    continue
            elif k in ADDRESS_KEYS and isinstance(raw, str):
                v = self.address(raw)
                if v is None:
                    continue
            elif isinstance(raw, str):
                if self.mode == "drop" and "@" in raw and ADDRESS.fullmatch(raw.strip("<>")):
                    continue  # an attribute that is nothing but an address (a message ID)
                v = self.text(raw)
                if client_values:
                    for cv in client_values:
                        if cv in v:
                            v = v.replace(cv, self._client_sub(cv))
            elif isinstance(raw, (list, tuple)):
                v = [self.text(x) if isinstance(x, str) else x for x in raw]
            out[k] = v
        return out

    def span(self, s: SpanData) -> SpanData:
        client_keys = CLIENT_KEYS if s.kind == SERVER else frozenset()
        values: list[str] = []
        if self.clients != "none":
            values = [v for k in client_keys if isinstance(v := s.attrs.get(k), str) and len(v) > 2]
            values += [v for e in s.events
                       if isinstance(v := e.attrs.get("smtp.helo_host"), str) and len(v) > 2]
            values = sorted(set(values), key=len, reverse=True)  # longest first: a name before its part
        ev_keys = EVENT_CLIENT_KEYS if client_keys else frozenset()
        return replace(
            s, attrs=self.attrs(s.attrs, client_keys, values),
            events=[SpanEvent(e.name, e.ts_ns, self.attrs(e.attrs, ev_keys, values)) for e in s.events],
            status_error=self._status(s.status_error, values),
            links=[(t, sp, self.attrs(a)) for t, sp, a in s.links])

    def _status(self, text: str | None, values: list[str]) -> str | None:
        if text is None:
            return None
        text = self.text(text)
        for cv in values:
            text = text.replace(cv, self._client_sub(cv))
        return text

    def metric(self, md: Any) -> Any:
        points = [replace(p, attrs=self.attrs(p.attrs)) if p.attrs else p for p in md.points]
        return replace(md, points=points)

    def wrap(self, sink: Any) -> RedactingSink:
        return RedactingSink(sink, self)


class RedactingSink:
    """A sink in front of another: everything passes through the redactor first."""

    def __init__(self, inner: Any, redactor: Redactor) -> None:
        self.inner, self.redactor = inner, redactor

    @property
    def stats(self) -> Any:
        return self.inner.stats

    def spans(self, spans: list[SpanData]) -> None:
        self.inner.spans([self.redactor.span(s) for s in spans])

    def metrics(self, data: list[Any]) -> None:
        self.inner.metrics([self.redactor.metric(m) for m in data])

    def hint(self, done: Any) -> None:
        self.inner.hint(done)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything else the wrapped sink offers
        return getattr(self.inner, name)


def from_settings(settings: Any) -> Redactor | None:
    """The settings' redactor, or None when nothing is redacted."""
    mode = getattr(settings, "redact", "none")
    clients = getattr(settings, "redact_clients", "none")
    if mode == "none" and clients == "none":
        return None
    return Redactor(mode, clients, getattr(settings, "redact_key", None))


def wrap_sinks(settings: Any, span_sink: Any, metric_sink: Any) -> tuple[Any, Any]:
    """The pipeline's hook: both sinks behind the settings' redactor (unchanged when it is off)."""
    r = from_settings(settings)
    if r is None:
        return span_sink, metric_sink
    return r.wrap(span_sink), r.wrap(metric_sink)
