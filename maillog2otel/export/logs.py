"""``--logs``: every line of a known MTA as an OTLP log record, stamped with the trace and span
of the connection, message or delivery it belongs to, so a backend shows a trace's log lines.

The pipeline calls ``LineExporter.line(record, event, mta)`` (through ``maillog2otel.ops``) after
the correlator has seen the line; the correlator put the line's span on ``event.ctx``
(``(trace_id, span_id)`` or a ``LogContext`` it fills in later). A record is held ``HOLD_NS``
of log time (or until ``MAX_HELD`` are waiting) before it is read and sent, so a correlator
that learns a line's span a moment after the line (a bounce notice that joins its parent's
trace) still stamps it.

Each record: ``time_unix_nano`` = the line's own time (none for Haraka logs without timestamps),
``observed_time_unix_nano`` = when it was read, ``severity_number``/``severity_text`` from the
line where it says (Postfix ``warning:``/``error:``/``fatal:``/``panic:``, Haraka's level, Exim's
``**``/``==``), else INFO; ``body`` = the line's message after the syslog envelope; attributes
``host.name``, ``process.executable.name`` (``postfix/smtpd``), ``process.pid``, ``mta.name``,
``maillog2otel.rule`` (the grammar rule that recognised it; absent when unparsed). Resource: the
same (host, MTA) resource as the spans. Lines of other programs (dovecot, amavis …) and lines with
no envelope are not exported.

Transports: OTLP/HTTP ``/v1/logs`` or gRPC ``LogsService`` with the traces' retry rules
(``send_with_retry``); ``console``: only counted in the summary; ``none``: nothing.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1 import logs_pb2

from maillog2otel.config import ExportTarget, display_endpoint
from maillog2otel.export.base import ExportError
from maillog2otel.export.encode import SCOPE, Resources, attributes
from maillog2otel.records import Event, LogContext, Record

log = logging.getLogger("maillog2otel.export")

HOLD_NS = 5_000_000_000
MAX_HELD = 20_000
BATCH = 1000

TRACE, DEBUG, INFO, INFO2, WARN, ERROR, FATAL = 1, 5, 9, 10, 13, 17, 21
_POSTFIX_LEVEL = {"warning": (WARN, "WARN"), "error": (ERROR, "ERROR"), "fatal": (FATAL, "FATAL"),
                  "panic": (24, "FATAL")}
_HARAKA_LEVEL = {"DATA": (TRACE, "TRACE"), "PROTOCOL": (DEBUG + 1, "DEBUG"), "DEBUG": (DEBUG, "DEBUG"),
                 "INFO": (INFO, "INFO"), "NOTICE": (INFO2, "NOTICE"), "WARN": (WARN, "WARN"),
                 "ERROR": (ERROR, "ERROR"), "CRIT": (FATAL, "CRIT"), "ALERT": (FATAL + 1, "ALERT"),
                 "EMERG": (FATAL + 2, "EMERG")}
_POSTFIX_RX = re.compile(r"(?:[0-9A-Za-z]+: )?(warning|error|fatal|panic): ")
_HARAKA_RX = re.compile(r'\[([A-Z]+)\] |\{"level":"([a-zA-Z]+)"|level=([A-Za-z]+) ')


# Credentials some MTAs write at their normal levels: Exim quotes a refused AUTH command whole
# (`SMTP protocol error in "AUTH PLAIN <base64>"`), Haraka logs each step of an AUTH exchange with
# the client's base64 answer (`hook=unrecognized_command plugin=auth/… params=<user or password>`)
# and at PROTOCOL the exchange itself (`C: AUTH PLAIN <base64>`; the answers to 334 and, at
# DEBUG, every plugin's hook line that repeats one: the correlator names those in
# ``Event.fields["secret"]``). Never exported, whatever --redact says.
_CREDENTIALS = re.compile(
    r'(?i)(?<="AUTH )(\S+) [^"]+(?=")'  # Exim
    r"|(?<=plugin=auth/)(\S+ function=\S+ params=)(?!AUTH )(?:\"[^\"]*\"|\S+)"  # Haraka INFO
    r'|(?<="plugin":"auth/)([^"]*".*?"params":)"(?!AUTH")[^"]*"'  # Haraka json
    r'|(?<=\bC: AUTH )(\S+) (?!state=\d)[^\s"]+')  # Haraka PROTOCOL
HIDDEN = "[credentials]"


def hide_credentials(body: str, ev: Event | None) -> str:
    if ev is not None and (secret := ev.fields.get("secret")):
        return body.replace(secret, HIDDEN)
    if "AUTH" not in body and "auth/" not in body:
        return body
    return _CREDENTIALS.sub(_hide, body)


def _hide(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        return f"{m.group(1)} {HIDDEN}"
    if m.group(2) is not None:
        return f"{m.group(2)}{HIDDEN}"
    if m.group(3) is not None:
        return f'{m.group(3)}"{HIDDEN}"'
    return f"{m.group(4)} {HIDDEN}"


def severity(rec: Record, mta: str | None) -> tuple[int, str]:
    """(OTLP severity number, text) from what the line itself says; INFO when it says nothing."""
    msg = rec.message
    if mta == "haraka":
        m = _HARAKA_RX.search(msg, 0, 80)
        if m:
            level = (m.group(1) or m.group(2) or m.group(3)).upper()
            return _HARAKA_LEVEL.get(level, (INFO, level))
        return INFO, "INFO"
    if mta == "exim":
        parts = msg.split(" ", 3)
        flag = parts[1] if len(parts) > 1 else ""
        if flag in ("**", "=="):
            return WARN, "WARN"
        if "panic" in rec.program or msg.startswith(("PANIC", "panic")):
            return FATAL, "PANIC"
        return INFO, "INFO"
    m = _POSTFIX_RX.match(msg)
    if m:
        return _POSTFIX_LEVEL[m.group(1)]
    return INFO, "INFO"


@dataclass(slots=True)
class LogStats:
    records: int = 0
    requests: int = 0
    retries: int = 0
    failed: int = 0
    last_error: str = ""
    state: str = "ok"


class CountingLogSink:
    """``console`` and ``none``: records are counted, not shown (a log line is already on disk)."""

    def __init__(self, exporter: str) -> None:
        self.exporter = exporter
        self.stats = LogStats()

    def records(self, batch: list[tuple[tuple[str, str], logs_pb2.LogRecord]]) -> None:
        self.stats.records += len(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class OtlpLogSink:
    """Batches log records and sends them with the same retry rules as spans and metrics."""

    def __init__(self, target: ExportTarget, resources: Resources, *, budget_s: float, batch: int = BATCH,
                 lossy: bool = False) -> None:
        from maillog2otel.export.otlp import make_sender

        self.target, self.resources, self.budget_s, self.batch = target, resources, budget_s, batch
        self.sender = make_sender(target, "logs")
        self.exporter = "otlp"
        self.lossy = lossy  # tail --lossy: a batch that fails is dropped and counted, the run goes on
        self.stats = LogStats()
        self._pending: list[tuple[tuple[str, str], logs_pb2.LogRecord]] = []
        self._warned = False

    def records(self, batch: list[tuple[tuple[str, str], logs_pb2.LogRecord]]) -> None:
        self._pending.extend(batch)
        if len(self._pending) >= self.batch:
            self._send()

    def flush(self) -> None:
        if self._pending:
            self._send()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.sender.close()

    def _send(self) -> None:
        from maillog2otel.export.otlp import send_with_retry

        batch, self._pending = self._pending, []
        request = encode_logs(batch, self.resources)

        def waiting(result: Any, wait: float) -> None:
            self.stats.retries += 1
            self.stats.state = "retrying"
            self.stats.last_error = result.error
            if not self._warned:
                log.warning("logs export failing (%s); retrying, next try in %.1fs", result.error, wait)
                self._warned = True

        result = send_with_retry(self.sender, request, self.budget_s, waiting)
        self.stats.requests += 1
        if result.ok:
            if self._warned:
                log.warning("logs export recovered")
                self._warned = False
            self.stats.state = "ok"
            self.stats.records += len(batch)
            return
        self.stats.failed += len(batch)
        self.stats.state = "failed"
        self.stats.last_error = result.error
        if self.lossy:
            if not self._warned:
                log.warning("logs export failing (%s); dropping log records (--lossy)", result.error)
                self._warned = True
            return
        raise ExportError(f"could not export {len(batch)} log records to "
                          f"{display_endpoint(self.target.endpoint)}: {result.error}")


def encode_logs(batch: list[tuple[tuple[str, str], logs_pb2.LogRecord]], resources: Resources
                ) -> ExportLogsServiceRequest:
    by_resource: dict[tuple[str, str], list[logs_pb2.LogRecord]] = {}
    for key, rec in batch:
        by_resource.setdefault(key, []).append(rec)
    req = ExportLogsServiceRequest()
    for key, items in by_resource.items():
        rl = req.resource_logs.add(resource=resources.get(key))
        rl.scope_logs.add(scope=SCOPE, log_records=items)
    return req


class LineExporter:
    """The pipeline's line hook: builds a log record per line, holds it briefly, hands it on."""

    def __init__(self, sink: OtlpLogSink | CountingLogSink, redactor: Any = None) -> None:
        self.sink, self.redactor = sink, redactor
        self.held: deque[tuple[Record, Event | None, str]] = deque()
        self.latest_ns = 0
        self.lines = 0

    @property
    def stats(self) -> LogStats:
        return self.sink.stats

    def line(self, rec: Record, ev: Event | None, mta: str) -> None:
        self.lines += 1
        held = self.held
        held.append((rec, ev, mta))
        ts = rec.ts_ns
        self.latest_ns = max(self.latest_ns, ts)
        cut = self.latest_ns - HOLD_NS
        if held[0][0].ts_ns <= cut or len(held) > MAX_HELD:
            out = []
            while held and (held[0][0].ts_ns <= cut or len(held) > MAX_HELD):
                out.append(self._build(*held.popleft()))
                if len(out) >= BATCH:
                    self.sink.records(out)
                    out = []
            if out:
                self.sink.records(out)

    def _build(self, rec: Record, ev: Event | None, mta: str) -> tuple[tuple[str, str], logs_pb2.LogRecord]:
        number, text = severity(rec, mta)
        body = hide_credentials(rec.message, ev)
        if self.redactor is not None:
            body = self.redactor.log_line(body)
        attrs: dict[str, Any] = {"host.name": rec.host, "process.executable.name": rec.program,
                                 "process.pid": rec.pid, "mta.name": mta}
        lr = logs_pb2.LogRecord(observed_time_unix_nano=time.time_ns(), severity_number=number,  # type: ignore[arg-type]
                                severity_text=text, body=AnyValue(string_value=body))
        if not rec.ts_inferred:
            lr.time_unix_nano = rec.ts_ns
        if ev is not None:
            attrs["maillog2otel.rule"] = ev.rule
            ctx = ev.ctx
            if ctx is not None:
                trace_id, span_id = (ctx.trace_id, ctx.span_id) if isinstance(ctx, LogContext) else ctx
                if trace_id:
                    lr.trace_id = trace_id
                    lr.flags = 0x1
                    if span_id:
                        lr.span_id = span_id
        lr.attributes.extend(attributes(attrs))
        return (rec.host, mta), lr

    def tick(self, now_ns: int) -> None:
        """Log time moved on without a line (tail): release what has waited long enough."""
        if self.held and self.held[0][0].ts_ns <= now_ns - HOLD_NS:
            self.latest_ns = max(self.latest_ns, now_ns)
            out = []
            while self.held and self.held[0][0].ts_ns <= now_ns - HOLD_NS:
                out.append(self._build(*self.held.popleft()))
            for i in range(0, len(out), BATCH):
                self.sink.records(out[i:i + BATCH])

    def flush(self) -> None:
        """Everything held goes out now (end of input, a tail checkpoint)."""
        if self.held:
            out = [self._build(*x) for x in self.held]
            self.held.clear()
            for i in range(0, len(out), BATCH):
                self.sink.records(out[i:i + BATCH])
        self.sink.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.sink.close()


def make_line_exporter(target: ExportTarget, resources: Resources, *, budget_s: float,
                       redactor: Any = None, lossy: bool = False) -> LineExporter | None:
    """The exporter for ``settings.logs``, or None when log records are off."""
    if target.exporter == "none":
        return None
    if target.exporter == "otlp":
        sink: OtlpLogSink | CountingLogSink = OtlpLogSink(target, resources, budget_s=budget_s, lossy=lossy)
    else:
        sink = CountingLogSink(target.exporter)
    return LineExporter(sink, redactor)

