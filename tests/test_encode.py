"""The hand-written OTLP wire encoder (``encode_spans_bytes`` / ``encode_metrics_bytes``) against the
opentelemetry-proto message objects (``encode_spans`` / ``encode_metrics``): every fixture log's spans
and metric points, and generated ones, parsed back with the official classes must equal the objects
(and, since both write fields in number order and leave defaults out, be the same bytes)."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from conftest import FIXTURES, OtlpGrpcReceiver, OtlpHttpReceiver
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from maillog2otel.config import ExportTarget, build_settings
from maillog2otel.export import encode as enc
from maillog2otel.export.base import OtlpSink
from maillog2otel.export.encode import (
    Resources,
    encode_metrics,
    encode_metrics_bytes,
    encode_spans,
    encode_spans_bytes,
)
from maillog2otel.records import SpanData, SpanEvent
from maillog2otel.telemetry.metrics import GAUGE, HISTOGRAM, SUM, MetricData, Point
from maillog2otel.testing import run_pipeline

LOGS = sorted(p for p in FIXTURES.glob("*/*") if p.suffix in (".log", ".mainlog", ".rejectlog"))
PLAIN = Resources(service_name=None, service_version=None, extra={})
CONFIGURED = Resources(service_name="mail-ü", service_version="1.2.3",
                       extra={"deployment.environment": "prod", "": "", "k8s.pod.name": "x" * 300})
_RUNS: dict[str, object] = {}


def run(path: Path):
    if str(path) not in _RUNS:
        _RUNS[str(path)] = run_pipeline([str(path)], timezone="UTC", year=2026)
    return _RUNS[str(path)]


def same_spans(spans: list[SpanData], resources: Resources = PLAIN) -> None:
    raw = encode_spans_bytes(spans, resources)
    expected = encode_spans(spans, resources)
    assert ExportTraceServiceRequest.FromString(raw) == expected
    assert raw == expected.SerializeToString()


def same_metrics(data: list[MetricData], resources: Resources = PLAIN) -> None:
    raw = encode_metrics_bytes(data, resources)
    expected = encode_metrics(data, resources)
    assert ExportMetricsServiceRequest.FromString(raw) == expected
    assert raw == expected.SerializeToString()


def test_every_fixture_is_covered() -> None:
    assert {p.parent.name for p in LOGS} == {"postfix", "exim", "haraka", "chain"} and len(LOGS) >= 20


@pytest.mark.parametrize("path", LOGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_spans_and_metrics(path: Path) -> None:
    result = run(path)
    assert result.spans or path.suffix == ".rejectlog"
    assert result.metrics
    for resources in (PLAIN, CONFIGURED):
        same_spans(result.spans, resources)
        same_metrics(result.metrics, resources)
    for i in range(0, len(result.spans), 5):  # small batches, as a live tail sends them
        same_spans(result.spans[i:i + 5])
    for md in result.metrics:
        same_metrics([md])


def test_fixture_delta_metrics_and_many_resources() -> None:
    s = build_settings(env={"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"}, exporter="none",
                       timezone="UTC", year=2026)
    exim = FIXTURES / "exim"
    result = run_pipeline([str(exim / "rich.mainlog"), str(exim / "rich.rejectlog")], settings=s)
    assert any(md.delta for md in result.metrics)
    same_metrics(result.metrics)
    # several resources in one request, interleaved
    spans = [s for path in LOGS[:8] for s in run(path).spans]
    assert len({s.resource for s in spans}) > 1
    same_spans(spans[::2] + spans[1::2], CONFIGURED)
    same_metrics([md for path in LOGS[:8] for md in run(path).metrics], CONFIGURED)


def test_bounded_caches_give_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With tiny limits, keys go high-cardinality and all caches start again many times."""
    monkeypatch.setattr(enc, "_ATTRS", enc._AttributeCache())
    monkeypatch.setattr(enc, "_VALUES_PER_KEY", 3)
    monkeypatch.setattr(enc, "_VALUES_TOTAL", 20)
    monkeypatch.setattr(enc, "_KEYS_MAX", 10)
    monkeypatch.setattr(enc, "_NAMES_MAX", 2)
    monkeypatch.setattr(enc, "_span_names", {})
    monkeypatch.setattr(enc, "_event_names", {})
    for path in LOGS:
        result = run(path)
        same_spans(result.spans)
        same_metrics(result.metrics)
    cache = enc._ATTRS
    assert cache.high_cardinality and len(cache.key_fields) <= 10 and cache.kept <= 20
    assert sum(len(c) for c in cache.kvs.values()) + sum(len(c) for c in cache.floats.values()) <= 20


def test_cache_never_confuses_equal_values_of_other_types() -> None:
    attrs = [{"a": True}, {"a": 1}, {"a": 1.0}, {"a": "1"}, {"a": [1]}, {"a": (True,)}, {"a": 0},
             {"a": False}, {"a": 0.0}, {"a": -0.0}, {"a": ""}, {"a": None, "b": [None, 2.5, "x", [False]]},
             {"a": 1, "b": True}, {"a": True, "b": 1}, {"a": None}, {"a": 1.0, "b": 0}, {"b": (1,)},
             {"b": (True,)}]
    spans = [SpanData("s", 1, b"t" * 16, b"s" * 8, None, 1, 2, a, [SpanEvent("e", 3, a)], None, ("h", "m"),
                      [(b"l" * 16, b"k" * 8, a)]) for a in attrs]
    for _ in range(2):  # the second time from the caches
        same_spans(spans)
        for s in spans:
            same_spans([s])


def test_histogram_bounds_equal_but_not_the_same() -> None:
    def hist(bounds: tuple[float, ...]) -> MetricData:
        return MetricData(("h", "m"), "x", HISTOGRAM, "ms", "", False, False,
                          [Point({}, 1, 2, counts=[1, 0], bounds=bounds, total=1.0, count=1)])

    for bounds in [(0.0,), (-0.0,), (0,), (0.0,), (-0.0,)]:  # 0.0 == -0.0, but not in bytes
        same_metrics([hist(bounds)])


def test_out_of_range_ints_fail_as_in_protobuf() -> None:
    for v in (2**63, -(2**63) - 1, 10**30):
        span = SpanData("s", 1, b"t" * 16, b"s" * 8, None, 1, 2, {"big": v}, [], None, ("h", "m"))
        with pytest.raises(ValueError, match="out of range"):
            encode_spans([span], PLAIN)
        with pytest.raises(ValueError, match="out of range"):
            encode_spans_bytes([span], PLAIN)


# ---- generated spans and metric points ---------------------------------------------------------

U64 = st.integers(0, 2**64 - 1)
TIMES = st.one_of(st.just(0), st.just(2**64 - 1), st.integers(1, 2**64 - 2),
                  st.integers(1_500_000_000 * 10**9, 2_000_000_000 * 10**9))
INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1),
                  st.sampled_from([0, 1, -1, 127, 128, 2**63 - 1, -(2**63)]))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
TEXT = st.one_of(st.text(), st.text(min_size=100, max_size=300), st.sampled_from(["", "smtp", "é", "😀"]))
SCALARS = st.one_of(st.none(), TEXT, st.booleans(), INT64, FLOATS, st.binary(max_size=5))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.lists(inner, max_size=3).map(tuple)), max_leaves=8)
KEYS = st.one_of(st.sampled_from(["smtp.result", "client.port", "a", "", "smtp.event.inferred"]), TEXT)
ATTRS = st.dictionaries(KEYS, VALUES, max_size=8)
RESOURCE = st.sampled_from([("mx", "postfix"), ("mx", "exim"), ("relay-ü", "haraka"), ("", "")])
IDS16 = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))
IDS8 = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10))
EVENTS = st.builds(SpanEvent, name=TEXT, ts_ns=TIMES, attrs=ATTRS)
SPANS = st.builds(
    SpanData, name=TEXT, kind=st.integers(0, 5), trace_id=IDS16, span_id=IDS8,
    parent_span_id=st.one_of(st.none(), st.just(b""), IDS8), start_ns=TIMES, end_ns=TIMES, attrs=ATTRS,
    events=st.lists(EVENTS, max_size=4), status_error=st.one_of(st.none(), TEXT), resource=RESOURCE,
    links=st.lists(st.tuples(IDS16, IDS8, ATTRS), max_size=3))
RESOURCES = st.builds(Resources, service_name=st.one_of(st.none(), TEXT),
                      service_version=st.one_of(st.none(), TEXT),
                      extra=st.dictionaries(TEXT, TEXT, max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spans=st.lists(SPANS, max_size=6), resources=RESOURCES)
def test_generated_spans(spans: list[SpanData], resources: Resources) -> None:
    same_spans(spans, resources)


def _number_points(kind: str) -> st.SearchStrategy[Point]:
    value = st.one_of(INT64, st.floats(-1e18, 1e18))
    return st.builds(Point, attrs=ATTRS, start_ns=TIMES, time_ns=TIMES, value=value)


HIST_POINTS = st.builds(
    Point, attrs=ATTRS, start_ns=TIMES, time_ns=TIMES,
    counts=st.one_of(st.none(), st.lists(U64, max_size=20)),
    bounds=st.one_of(st.sampled_from([(), (0, 5, 10, 25), (1024.0, 4096.0)]),
                     st.lists(FLOATS, max_size=10).map(tuple), st.lists(st.floats(0, 1e9), max_size=5)),
    total=FLOATS, count=U64, minimum=st.one_of(st.none(), FLOATS), maximum=st.one_of(st.none(), FLOATS))


@st.composite
def metric_data(draw: st.DrawFn) -> MetricData:
    kind = draw(st.sampled_from([SUM, GAUGE, HISTOGRAM]))
    points = draw(st.lists(HIST_POINTS if kind == HISTOGRAM else _number_points(kind), max_size=4))
    return MetricData(draw(RESOURCE), draw(TEXT), kind, draw(TEXT), draw(TEXT), draw(st.booleans()),
                      draw(st.booleans()), points)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(metric_data(), max_size=5), resources=RESOURCES)
def test_generated_metrics(data: list[MetricData], resources: Resources) -> None:
    same_metrics(data, resources)


# ---- the sinks send the bytes over protobuf transports, the objects as JSON ---------------------

def _sink(endpoint: str, signal: str, protocol: str) -> OtlpSink:
    path = {"traces": "/v1/traces", "metrics": "/v1/metrics"}[signal] if protocol != "grpc" else ""
    target = ExportTarget(exporter="otlp", protocol=protocol, endpoint=endpoint + path, timeout_s=10)
    return OtlpSink(target, signal, CONFIGURED, budget_s=5, batch_spans=7)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_sinks_send_the_wire_encoding(protocol: str) -> None:
    receiver = OtlpHttpReceiver() if protocol != "grpc" else OtlpGrpcReceiver()
    try:
        result = run(FIXTURES / "postfix" / "port-logging.log")
        spans = _sink(receiver.endpoint, "traces", protocol)
        metrics = _sink(receiver.endpoint, "metrics", protocol)
        assert spans._encode_spans is encode_spans_bytes and metrics._encode_metrics is encode_metrics_bytes
        for i in range(0, len(result.spans), 7):  # a batch of 7 goes at once
            spans.spans(result.spans[i:i + 7])
        metrics.metrics(result.metrics)
        spans.close()
        metrics.close()
        assert spans.stats.spans == len(result.spans)
        assert spans.stats.requests == math.ceil(len(result.spans) / 7)
        got = receiver.received
        expected = [encode_spans(result.spans[i:i + 7], CONFIGURED) for i in range(0, len(result.spans), 7)]
        assert got.traces == expected
        assert got.metrics == [encode_metrics(result.metrics, CONFIGURED)]
    finally:
        receiver.close()


def test_json_sink_still_sends_proto3_json(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies: list[bytes] = []

    class Reply:
        status_code = 200
        headers: dict[str, str] = {}  # noqa: RUF012 - a stand-in for requests' response
        text = ""

    def post(self, url: str, data: bytes, timeout: float) -> Reply:
        bodies.append(data)
        return Reply()

    monkeypatch.setattr("requests.Session.post", post)
    result = run(FIXTURES / "postfix" / "port-logging.log")
    sink = _sink("http://127.0.0.1:9", "traces", "http/json")
    assert sink._encode_spans is encode_spans
    sink.spans(result.spans[:5])
    sink.close()
    doc = json.loads(bodies[0])
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == result.spans[0].trace_id.hex()  # hex, not base64
    for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for k in ("traceId", "spanId", "parentSpanId"):
            if k in s:
                s[k] = base64.b64encode(bytes.fromhex(s[k])).decode()
    expected = encode_spans(result.spans[:5], CONFIGURED)
    assert json_format.ParseDict(doc, ExportTraceServiceRequest()) == expected


@pytest.mark.parametrize("size", [0, 1, 100, 127, 128, 200, 16_000, 16_383, 16_384, 16_400, 70_000])
def test_span_and_event_lengths_around_the_varint_steps(size: int) -> None:
    """Span and event bodies of every length class (one-, two- and three-byte varints; the heads of
    lengths below 2^14 come from tables filled as met): twice, the second time from the tables."""
    attrs = {"big": "x" * size} if size else {}
    spans = [SpanData("s", 1, b"t" * 16, b"s" * 8, b"p" * 8, 1, 2, attrs, [SpanEvent("e", 3, attrs)], None,
                      ("h", "m")),
             SpanData("s", 1, b"", b"", None, 0, 0, attrs, [SpanEvent("e", 0, {})], "", ("h", "m"))]
    for _ in range(2):
        same_spans(spans)
