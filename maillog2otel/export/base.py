"""Sinks: where finished spans and metric points go. One per signal, chosen by ``Settings``.

Every sink has the same verbs: ``spans``/``metrics`` take data, ``hint`` hears that a message's
trace is complete, ``flush`` pushes out what is buffered, ``close`` ends. ``OtlpSink`` raises
``ExportError`` when data could not be delivered within the retry budget: nothing is dropped
silently.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from maillog2otel.config import ExportTarget, display_endpoint
from maillog2otel.export.encode import (
    Resources,
    encode_metrics,
    encode_metrics_bytes,
    encode_spans,
    encode_spans_bytes,
)
from maillog2otel.records import MessageDone, SpanData
from maillog2otel.telemetry.metrics import MetricData

log = logging.getLogger("maillog2otel.export")


class ExportError(RuntimeError):
    """Data could not be delivered; the message says what, where and why."""


@dataclass(slots=True)
class SinkStats:
    spans: int = 0
    points: int = 0
    requests: int = 0
    retries: int = 0
    failed_spans: int = 0
    failed_points: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)
    state: str = "ok"  # ok | retrying | failed: what /health reports (maillog2otel.health)
    waiting_since: float | None = None  # wall time of the first refusal of the current outage


class Sink(Protocol):
    stats: SinkStats

    def spans(self, spans: list[SpanData]) -> None: ...
    def metrics(self, data: list[MetricData]) -> None: ...
    def hint(self, done: MessageDone) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class NullSink:
    """``none``: data is built (so counts are honest) and discarded."""

    def __init__(self) -> None:
        self.stats = SinkStats()

    def spans(self, spans: list[SpanData]) -> None:
        self.stats.spans += len(spans)

    def metrics(self, data: list[MetricData]) -> None:
        self.stats.points += sum(len(m.points) for m in data)

    def hint(self, done: MessageDone) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


WaitListener = Callable[[str, float | None, str], None]  # (signal, waiting since or None when back, error)


def waiting_text(signal: str, since: float, error: str, budget_s: float) -> str:
    """The sentence for a collector that refuses: since when, why, and until when we wait."""
    stamp = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    until = "for as long as it takes" if budget_s < 0 else f"for at most {budget_s:g}s (--retry-for)"
    return f"{signal} export failing: waiting for collector since {stamp} ({error}); reading paused, " \
        f"retrying {until}"


class OtlpSink:
    """Batches and sends one signal over OTLP; a failed batch is retried with back-off and the
    same request, and only counted as exported once the collector accepted it.

    While a batch is retried the caller is blocked in ``spans``/``metrics``/``flush``: reading
    pauses, so memory stays bounded whatever the outage's length. ``budget_s`` < 0 waits for ever;
    otherwise a batch refused for that long raises ``ExportError`` (a ``--retry-for`` deadline).
    ``on_wait`` hears when an outage starts and ends (the progress line)."""

    def __init__(self, target: ExportTarget, signal: str, resources: Resources, *, budget_s: float,
                 batch_spans: int = 512, batch_points: int = 2000,
                 on_wait: WaitListener | None = None) -> None:
        from maillog2otel.export.otlp import make_sender

        self.target, self.signal, self.resources, self.budget_s = target, signal, resources, budget_s
        self.sender = make_sender(target, signal)
        # protobuf (HTTP or gRPC): the request is written as bytes directly; JSON needs the objects
        raw = getattr(self.sender, "accepts_bytes", False)
        self._encode_spans = encode_spans_bytes if raw else encode_spans
        self._encode_metrics = encode_metrics_bytes if raw else encode_metrics
        self.batch_spans, self.batch_points = batch_spans, batch_points
        self._spans: list[SpanData] = []
        self._metrics: list[MetricData] = []
        self._n_points = 0
        self._warned = False
        self.on_wait = on_wait
        self.stats = SinkStats()

    def spans(self, spans: list[SpanData]) -> None:
        self._spans.extend(spans)
        if len(self._spans) >= self.batch_spans:
            self._send_spans()

    def metrics(self, data: list[MetricData]) -> None:
        self._metrics.extend(data)
        self._n_points += sum(len(m.points) for m in data)
        if self._n_points >= self.batch_points:
            self._send_metrics()

    def hint(self, done: MessageDone) -> None:
        pass

    def flush(self) -> None:
        if self._spans:
            self._send_spans()
        if self._metrics:
            self._send_metrics()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.sender.close()

    def _send_spans(self) -> None:
        batch, self._spans = self._spans, []
        self._send(self._encode_spans(batch, self.resources), len(batch), 0)

    def _send_metrics(self) -> None:
        batch, self._metrics, n = self._metrics, [], self._n_points
        self._n_points = 0
        self._send(self._encode_metrics(batch, self.resources), 0, n)

    def _send(self, request: object, n_spans: int, n_points: int) -> None:
        from maillog2otel.export.otlp import send_with_retry

        def waiting(result: object, wait: float) -> None:
            error = str(getattr(result, "error", "?"))
            self.stats.retries += 1
            self.stats.state, self.stats.last_error = "retrying", error
            if not self._warned:  # once per outage, not per batch
                self.stats.waiting_since = time.time()
                log.warning("%s", waiting_text(self.signal, self.stats.waiting_since, error, self.budget_s))
                self._warned = True
            if self.on_wait is not None:
                self.on_wait(self.signal, self.stats.waiting_since, error)

        result = send_with_retry(self.sender, request, self.budget_s, waiting)  # type: ignore[arg-type]
        self.stats.requests += 1
        if result.ok:
            if self._warned:
                since = self.stats.waiting_since or time.time()
                log.warning("%s export recovered: the collector accepted data again after %.0fs; continuing",
                            self.signal, time.time() - since)
                self._warned = False
                self.stats.waiting_since = None
                if self.on_wait is not None:
                    self.on_wait(self.signal, None, "")
            self.stats.spans += n_spans
            self.stats.points += n_points
            self.stats.state = "ok"
            return
        self.stats.failed_spans += n_spans
        self.stats.failed_points += n_points
        self.stats.last_error = result.error
        self.stats.state = "failed"
        what = f"{n_spans} spans" if n_spans else f"{n_points} metric points"
        why = result.error
        if self._warned and self.budget_s >= 0:
            why += f" (still refused after {self.budget_s:g}s, the --retry-for deadline)"
        self._warned = False
        self.stats.waiting_since = None
        raise ExportError(f"could not export {what} to {display_endpoint(self.target.endpoint)}: {why}")


def make_sinks(traces: ExportTarget, metrics: ExportTarget, resources: Resources, *, budget_s: float,
               live: bool = False, on_wait: WaitListener | None = None) -> tuple[Sink, Sink]:
    from maillog2otel.export.console import ConsoleMetrics, ConsoleSpans

    def one(target: ExportTarget, signal: str) -> Sink:
        if target.exporter == "otlp":
            return OtlpSink(target, signal, resources, budget_s=budget_s, on_wait=on_wait)
        if target.exporter == "console":
            return ConsoleSpans(sys.stdout) if signal == "traces" else ConsoleMetrics(sys.stdout, live=live)
        return NullSink()

    return one(traces, "traces"), one(metrics, "metrics")
