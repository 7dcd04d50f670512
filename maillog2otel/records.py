"""The records that flow between the pipeline's stages, in order.

``Record`` (framing) -> ``Event`` (grammars) -> ``Connection`` / ``Delivery`` / ``Count``
(correlate) -> ``SpanData`` and metric points (telemetry). Times are integer nanoseconds since
the epoch, in log time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SERVER = 2  # OTLP SpanKind values, kept numeric so no stage needs the proto module
CLIENT = 3
INTERNAL = 1


# not slots=True: Cython compiles Record as an extension type (records.pxd), and its dataclass
# rejects slots; the pure install pays ≈ 0.4 % of a line for it (benchmarks/README.md)
@dataclass
class Record:
    """One log entry with its envelope taken apart."""

    ts_ns: int
    host: str
    program: str
    pid: int | None
    message: str
    mta: str | None = None  # set when the envelope alone proves the MTA (Exim or Haraka native)
    stream: int = 0
    offset: int = 0  # where the line starts in its file: resume points for tail
    ts_inferred: bool = False  # no time in the line (Haraka without timestamps)
    cursor: str | None = None  # journald __CURSOR, to resume journalctl after it


@dataclass(slots=True)
class Event:
    """A line a grammar rule recognised: the rule's name and its typed fields."""

    rule: str
    fields: dict[str, Any]
    record: Record
    # The span this line belongs to, set by the correlator when it attaches the line to a
    # session, message or delivery: (trace_id, span_id) or a ``LogContext`` it fills in later.
    # ``--logs`` stamps the line's log record with it.
    ctx: tuple[bytes, bytes | None] | LogContext | None = None
    # a line of a ``known`` rule: recognised and counted, no fields, never correlated
    known: bool = False


@dataclass(slots=True)
class LogContext:
    """A line's span when the correlator learns it only after the line (a bounce notice joins its
    parent's trace at the ``bounce`` line, after the notice's own ``cleanup`` line): the correlator
    keeps this object, puts it on each such line's ``Event.ctx`` and updates it; the log exporter
    reads it a few seconds of log time after the line."""

    trace_id: bytes = b""
    span_id: bytes | None = None


@dataclass(slots=True)
class SpanEvent:
    name: str
    ts_ns: int
    attrs: dict[str, Any]


@dataclass(slots=True)
class Connection:
    """One inbound SMTP connection, closed (or given up on) and ready to become a SERVER span."""

    mta: str
    host: str
    trace_id: bytes
    span_id: bytes
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    events: list[SpanEvent]
    error: str | None = None
    commands: dict[str, int] = field(default_factory=dict)  # hook/command counts for metrics
    # AUTH attempts by result ("accepted" | "failed") for <mta>.auth.attempts; kept apart from the
    # smtp.auth events, which are not built when no span is exported
    auth: dict[str, int] = field(default_factory=dict)
    parent_span_id: bytes | None = None
    links: list[tuple[bytes, bytes, dict[str, Any]]] = field(default_factory=list)
    duration_known: bool = True  # False: no connect line and no D= (Exim's default log_selector)


@dataclass(slots=True)
class Delivery:
    """One delivery attempt of one message to one recipient: a CLIENT span."""

    mta: str
    host: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    start_ns: int
    end_ns: int
    result: str  # delivered | deferred | bounced | expired
    attrs: dict[str, Any]
    error: str | None = None
    links: list[tuple[bytes, bytes, dict[str, Any]]] = field(default_factory=list)
    counted: bool = True  # False: <mta>.messages counts this result elsewhere (Haraka: per queue item)
    # True while the connection span this delivery is a child of has not been emitted yet: the
    # stitcher keeps it until then, so a connection adopted into the previous hop's trace takes
    # its early deliveries along
    parent_pending: bool = False


@dataclass(slots=True)
class Count:
    """A metric fact that is not a span: a message queued (with its size) or a rejection."""

    mta: str
    host: str
    ts_ns: int
    result: str  # queued | rejected (Haraka also delivered | deferred | bounced, per queue item)
    size_bytes: int | None = None
    reason: str | None = None  # rejected: the reply text, for the bounded smtp.reject.class


@dataclass(slots=True)
class MessageDone:
    """A message left the queue: its trace will get no more spans (console grouping)."""

    mta: str
    host: str
    trace_id: bytes
    ts_ns: int


Output = Connection | Delivery | Count | MessageDone


@dataclass(slots=True)
class SpanData:
    """A finished span, transport-neutral; ``export`` encodes it."""

    name: str
    kind: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    events: list[SpanEvent]
    status_error: str | None
    resource: tuple[str, str]  # (host, mta): one OTLP resource each
    links: list[tuple[bytes, bytes, dict[str, Any]]] = field(default_factory=list)
    parent_pending: bool = False  # see Delivery.parent_pending
