"""Test helpers that ship with the package: run the pipeline in memory and look at what it made.

    result = run_pipeline(["fixtures/postfix/port-logging.log"], timezone="UTC")
    result.connections()          # smtp.connection spans
    result.metric_total("postfix.messages", {"smtp.result": "delivered"})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maillog2otel.config import Settings, build_settings
from maillog2otel.export.base import SinkStats
from maillog2otel.pipeline import Counters, Pipeline, _Collecting, backfill_records
from maillog2otel.records import MessageDone, SpanData
from maillog2otel.sources import SourceStats
from maillog2otel.telemetry.metrics import MetricData


class CollectingSink(_Collecting):
    """Keeps every span and metric point in memory."""

    def __init__(self) -> None:
        self.span_list: list[SpanData] = []
        self.metric_list: list[MetricData] = []
        self.done: list[MessageDone] = []
        self.stats = SinkStats()

    def spans(self, spans: list[SpanData]) -> None:
        self.span_list.extend(spans)
        self.stats.spans += len(spans)

    def metrics(self, data: list[MetricData]) -> None:
        self.metric_list.extend(data)
        self.stats.points += sum(len(m.points) for m in data)

    def hint(self, done: MessageDone) -> None:
        self.done.append(done)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Result:
    spans: list[SpanData]
    metrics: list[MetricData]
    counters: Counters
    source: SourceStats
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def connections(self) -> list[SpanData]:
        return [s for s in self.spans if s.name == "smtp.connection"]

    def deliveries(self) -> list[SpanData]:
        return [s for s in self.spans if s.name == "smtp.delivery"]

    def metric_total(self, name: str, attrs: dict[str, Any] | None = None) -> float:
        """The last cumulative value of a counter series (0 if it never appeared)."""
        value = 0.0
        last_time = -1
        for md in self.metrics:
            if md.name != name:
                continue
            for p in md.points:
                if (attrs or {}) == p.attrs and p.time_ns >= last_time:
                    last_time, value = p.time_ns, (p.value if md.kind != "histogram" else p.count)
        return value


def run_pipeline(paths: list[str], *, settings: Settings | None = None, fast: bool = True,
                 **options: Any) -> Result:
    """Backfill ``paths`` in memory with ``build_settings(**options)`` (env ignored)."""
    settings = settings or build_settings(env={}, exporter="none", **options)
    spans, metrics = CollectingSink(), CollectingSink()
    pipeline = Pipeline(settings, spans, metrics, fast=fast)
    stats = SourceStats()
    for rec in backfill_records(paths, settings, pipeline, stats):
        pipeline.feed(rec)
    pipeline.finish()
    return Result(spans.span_list, metrics.metric_list, pipeline.counters, stats, pipeline.correlator_stats())


def logs_without_observed_time(body: bytes) -> bytes:
    """An OTLP logs request with each record's observed time zeroed: that time is the wall clock
    when the line was read, so no two runs agree on it; everything else is as sent."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    req.ParseFromString(body)
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                rec.observed_time_unix_nano = 0
    return req.SerializeToString()
