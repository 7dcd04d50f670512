"""``SpanData`` and ``MetricData`` -> OTLP protobuf requests, built directly with
opentelemetry-proto (no SDK span objects: ~4x faster, and no per-span event limit)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from maillog2otel import __version__
from maillog2otel.records import SpanData
from maillog2otel.telemetry.metrics import GAUGE, HISTOGRAM, MetricData

SCOPE = InstrumentationScope(name="maillog2otel", version=__version__)
_CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
_DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, (list, tuple)):
        from opentelemetry.proto.common.v1.common_pb2 import ArrayValue

        return AnyValue(array_value=ArrayValue(values=[_value(x) for x in v]))
    return AnyValue(string_value=str(v))


def attributes(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in attrs.items() if v is not None]


class Resources:
    """One OTLP Resource per (host, mta), built once."""

    def __init__(self, *, service_name: str | None, service_version: str | None,
                 extra: Mapping[str, str]) -> None:
        self.service_name, self.service_version, self.extra = service_name, service_version, extra
        self._cache: dict[tuple[str, str], Resource] = {}

    def attrs(self, key: tuple[str, str]) -> dict[str, str]:
        host, mta = key
        attrs = {"service.name": self.service_name or mta,
                 # fixed, not the SDK's random UUID, so a re-run is recognisably the same instance
                 "service.instance.id": f"{host}/{mta}", "host.name": host, "mta.name": mta,
                 "telemetry.sdk.name": "maillog2otel", "telemetry.sdk.language": "python",
                 "telemetry.sdk.version": __version__}
        if self.service_version:
            attrs["service.version"] = self.service_version
        attrs.update(self.extra)
        return attrs

    def get(self, key: tuple[str, str]) -> Resource:
        r = self._cache.get(key)
        if r is None:
            r = self._cache[key] = Resource(attributes=attributes(self.attrs(key)))
        return r


def encode_spans(spans: Iterable[SpanData], resources: Resources) -> ExportTraceServiceRequest:
    by_resource: dict[tuple[str, str], list[trace_pb2.Span]] = {}
    for s in spans:
        span = trace_pb2.Span(
            trace_id=s.trace_id, span_id=s.span_id, name=s.name, kind=s.kind,
            start_time_unix_nano=s.start_ns, end_time_unix_nano=s.end_ns, attributes=attributes(s.attrs),
            events=[trace_pb2.Span.Event(time_unix_nano=e.ts_ns, name=e.name, attributes=attributes(e.attrs))
                    for e in s.events],
            status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message=s.status_error)
            if s.status_error is not None else None,
            flags=0x1,  # sampled
        )
        if s.parent_span_id:
            span.parent_span_id = s.parent_span_id
        for trace_id, span_id, link_attrs in s.links:
            span.links.add(trace_id=trace_id, span_id=span_id, attributes=attributes(link_attrs))
        by_resource.setdefault(s.resource, []).append(span)
    req = ExportTraceServiceRequest()
    for key, items in by_resource.items():
        rs = req.resource_spans.add(resource=resources.get(key))
        rs.scope_spans.add(scope=SCOPE, spans=items)
    return req


def encode_metrics(data: Iterable[MetricData], resources: Resources) -> ExportMetricsServiceRequest:
    by_resource: dict[tuple[str, str], list[metrics_pb2.Metric]] = {}
    for md in data:
        m = metrics_pb2.Metric(name=md.name, unit=md.unit, description=md.description)
        temporality = _DELTA if md.delta else _CUMULATIVE
        if md.kind == GAUGE:
            m.gauge.data_points.extend(
                metrics_pb2.NumberDataPoint(attributes=attributes(p.attrs), start_time_unix_nano=p.start_ns,
                                            time_unix_nano=p.time_ns, as_int=int(p.value)) for p in md.points)
        elif md.kind == HISTOGRAM:
            m.histogram.aggregation_temporality = temporality
            for p in md.points:
                dp = m.histogram.data_points.add(
                    attributes=attributes(p.attrs), start_time_unix_nano=p.start_ns, time_unix_nano=p.time_ns,
                    count=p.count, sum=p.total, bucket_counts=p.counts or [], explicit_bounds=list(p.bounds))
                if p.minimum is not None:
                    dp.min = p.minimum
                if p.maximum is not None:
                    dp.max = p.maximum
        else:
            m.sum.aggregation_temporality = temporality
            m.sum.is_monotonic = md.monotonic
            m.sum.data_points.extend(
                metrics_pb2.NumberDataPoint(attributes=attributes(p.attrs), start_time_unix_nano=p.start_ns,
                                            time_unix_nano=p.time_ns, as_int=int(p.value)) for p in md.points)
        by_resource.setdefault(md.resource, []).append(m)
    req = ExportMetricsServiceRequest()
    for key, items in by_resource.items():
        rm = req.resource_metrics.add(resource=resources.get(key))
        rm.scope_metrics.add(scope=SCOPE, metrics=items)
    return req
