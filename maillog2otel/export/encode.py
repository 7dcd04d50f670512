"""``SpanData`` and ``MetricData`` -> OTLP protobuf requests.

Two encoders give the same requests:

- ``encode_spans`` / ``encode_metrics`` build opentelemetry-proto message objects (no SDK span
  objects, no per-span event limit); OTLP/JSON and the tests use them.
- ``encode_spans_bytes`` / ``encode_metrics_bytes`` write the serialized ``Export…ServiceRequest``
  directly in the protobuf wire format, for OTLP/HTTP protobuf and gRPC. Building one message object
  per span, attribute, value and event cost more than anything else in a full backfill; these write
  the bytes of each field, cache the encoded attribute keys and the encoded (key, value) pairs of
  low-cardinality values (bounded), and give byte for byte what ``SerializeToString`` gives for the
  objects (tests/test_encode.py parses them with the official classes and compares).
"""

from __future__ import annotations

import struct
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
        self._encoded: dict[tuple[str, str], bytes] = {}

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

    def encoded(self, key: tuple[str, str]) -> bytes:
        """The ``resource`` field (number 1 of ResourceSpans/ResourceMetrics/ResourceLogs), serialized."""
        b = self._encoded.get(key)
        if b is None:
            out: list[bytes] = []
            _attrs(self.attrs(key), b"\n", out)  # Resource.attributes = 1
            b = self._encoded[key] = _field(b"\n", b"".join(out))
        return b


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


# ---------------------------------------------------------------------------------------------------
# The protobuf wire format, written by hand. Field numbers and types are opentelemetry-proto's
# (trace.proto, metrics.proto, common.proto, resource.proto); fields are written in field-number
# order and fields at their proto3 default are left out, as upb's SerializeToString does, so the
# bytes are the same. A tag byte is (field number << 3) | wire type: 0 varint, 1 fixed64,
# 2 length-delimited, 5 fixed32.

_B = tuple(bytes((i,)) for i in range(256))
_U64 = 1 << 64
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_pack_tq = struct.Struct("<BQ").pack  # tag byte + fixed64
_pack_tqtq = struct.Struct("<BQBQ").pack  # two of them (start and end times)
_pack_td = struct.Struct("<Bd").pack  # tag byte + double
_pack_tsq = struct.Struct("<Bq").pack  # tag byte + sfixed64


# The varints of lengths below 2^14 (one or two bytes), ready; and, filled as met, a length's field
# head (tag byte + length) for the two length-delimited fields every span has: one lookup instead
# of a concatenation (each allocates, and copies through the buffer protocol)
_LEN = _B[:0x80] + tuple(bytes((n & 0x7F | 0x80, n >> 7)) for n in range(0x80, 0x4000))


def _heads() -> list[bytes | None]:
    return [None] * 0x4000


def _head(heads: list[bytes | None], tag: bytes, n: int) -> bytes:
    """Field head ``tag`` + length ``n``, from ``heads`` (the table of that tag) when n < 2^14."""
    if n < 0x4000:
        h = heads[n]
        if h is None:
            h = heads[n] = tag + _LEN[n]
        return h
    return tag + _varint(n)


def _varint(n: int) -> bytes:
    """A base-128 varint; a negative n is written as int64 two's complement (ten bytes)."""
    if 0 <= n < 0x80:
        return _B[n]
    if 0 < n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if 0 < n < 0x200000:  # three bytes: ports, sizes
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0:
        n += _U64
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: tag, length, body."""
    n = len(body)
    return tag + (_LEN[n] if n < 0x4000 else _varint(n)) + body


def _str(tag: bytes, s: str) -> bytes:
    """A string field, or nothing for the empty string (proto3 default)."""
    return _field(tag, s.encode()) if s else b""


def _int64(v: int) -> bytes:
    if not _I64_MIN <= v <= _I64_MAX:
        raise ValueError(f"Value out of range: {v}")
    return _varint(v)


def _any(v: Any) -> bytes:
    """An AnyValue's body, for any Python value, exactly as ``_value`` maps it."""
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"  # bool_value = 2
    if isinstance(v, int):
        return b"\x18" + _int64(v)  # int_value = 3
    if isinstance(v, float):
        return _pack_td(0x21, v)  # double_value = 4
    if isinstance(v, (list, tuple)):
        # array_value = 5: ArrayValue.values = 1
        return _field(b"*", b"".join([_field(b"\n", _any(x)) for x in v]))
    return _field(b"\n", str(v).encode())  # string_value = 1


# Attribute encodings, cached per container field (the field's tag byte is part of the bytes kept):
# (key, value) -> the whole field (tag, length, KeyValue), for str and int values, and apart from
# them for floats. A str never equals an int, and bools (kept apart, per key) and floats (their own
# table; 0.0 and -0.0, equal but not the same bytes, never kept) never go in with them, so True and
# 1, or 1 and 1.0, cannot be confused. A key that has shown _VALUES_PER_KEY distinct values is
# high-cardinality (addresses, queue IDs, ports): its new values are encoded each time and not kept.
# Bounded: _VALUES_TOTAL entries in all (then every cache starts again), _KEYS_MAX keys.
_KEYS_MAX = 4096
_VALUES_PER_KEY = 512
_VALUES_TOTAL = 50_000


class _AttributeCache:
    __slots__ = ("bools", "distinct", "floats", "high_cardinality", "kept", "key_fields", "kvs")

    def __init__(self) -> None:
        self.kvs: dict[bytes, dict[tuple[str, Any], bytes]] = {}  # tag -> (key, value) -> field
        self.floats: dict[bytes, dict[tuple[str, float], bytes]] = {}  # the same for float values
        self.bools: dict[bytes, dict[str, tuple[bytes, bytes]]] = {}  # tag -> key -> (False, True) fields
        self.key_fields: dict[str, bytes] = {}
        self.distinct: dict[str, int] = {}  # key -> values kept
        self.high_cardinality: set[str] = set()
        self.kept = 0

    def for_tag(self, tag: bytes) -> tuple[dict[tuple[str, Any], bytes], dict[str, tuple[bytes, bytes]],
                                           dict[tuple[str, float], bytes]]:
        kvs = self.kvs.get(tag)
        if kvs is None:
            kvs = self.kvs[tag] = {}
            self.bools[tag] = {}
            self.floats[tag] = {}
        return kvs, self.bools[tag], self.floats[tag]

    def key_field(self, k: str) -> bytes:
        """KeyValue.key = 1, serialized (nothing for the empty key)."""
        b = self.key_fields.get(k)
        if b is None:
            b = _str(b"\n", k)
            if len(self.key_fields) < _KEYS_MAX:
                self.key_fields[k] = b
        return b

    def new(self, tag: bytes, cache: dict[tuple[str, Any], bytes], k: str, v: str | int) -> bytes:
        """Encode attribute (k, v), v a str or an int, and keep it unless k is high-cardinality."""
        key = self.key_fields.get(k)
        if key is None:
            key = self.key_field(k)
        # KeyValue.value = 2: AnyValue.string_value = 1 or int_value = 3; joined, not concatenated
        # piece by piece (each + allocates and copies): high-cardinality values come here every time
        if type(v) is str:
            vb = v.encode()
            n = len(vb)
            if n < 0x7E:  # the value's lengths are one byte each
                kv = b"".join((key, b"\x12", _B[n + 2], b"\n", _B[n], vb))
            else:
                kv = key + _field(b"\x12", _field(b"\n", vb))
        else:
            iv = _LEN[v] if 0 <= v < 0x4000 else _int64(v)  # type: ignore[operator]
            kv = b"".join((key, b"\x12", _B[len(iv) + 1], b"\x18", iv))
        m = len(kv)
        b = b"".join((tag, _LEN[m] if m < 0x4000 else _varint(m), kv))
        if k not in self.high_cardinality:
            self._keep(cache, (k, v), b)
        return b

    def new_float(self, tag: bytes, cache: dict[tuple[str, float], bytes], k: str, v: float) -> bytes:
        b = _field(tag, self.key_field(k) + b"\x12\x09" + _pack_td(0x21, v))  # double_value = 4
        if v != 0.0 and k not in self.high_cardinality:  # 0.0 == -0.0: neither is kept
            self._keep(cache, (k, v), b)
        return b

    def _keep(self, cache: dict, kv: tuple[str, Any], b: bytes) -> None:
        k = kv[0]
        n = self.distinct.get(k, 0)
        if n >= _VALUES_PER_KEY:
            if len(self.high_cardinality) < _KEYS_MAX:
                self.high_cardinality.add(k)
            return
        if self.kept >= _VALUES_TOTAL:
            for c in self.kvs.values():
                c.clear()
            for c in self.floats.values():
                c.clear()
            self.distinct.clear()
            self.kept = n = 0
        cache[kv] = b
        self.distinct[k] = n + 1
        self.kept += 1

    def bool_pair(self, tag: bytes, bools: dict[str, tuple[bytes, bytes]], k: str) -> tuple[bytes, bytes]:
        key = self.key_field(k)
        # KeyValue.value = 2: AnyValue.bool_value = 2
        pair = (_field(tag, key + b"\x12\x02\x10\x00"), _field(tag, key + b"\x12\x02\x10\x01"))
        if len(bools) < _KEYS_MAX:
            bools[k] = pair
        return pair


_ATTRS = _AttributeCache()


def _attrs(attrs: Mapping[str, Any], tag: bytes, out: list[bytes]) -> None:
    """Append each attribute (None values left out) as field ``tag`` holding a KeyValue."""
    cache, bools, floats = _ATTRS.for_tag(tag)
    _put_attrs(attrs, tag, cache, bools, floats, out.append)


def _put_attrs(attrs: Mapping[str, Any], tag: bytes, cache: dict[tuple[str, Any], bytes],
               bools: dict[str, tuple[bytes, bytes]], floats: dict[tuple[str, float], bytes],
               append: Any) -> None:
    # the items' own (key, value) tuples are the cache keys: no tuple is built per attribute
    get = cache.get
    for kv in attrs.items():
        v = kv[1]
        t = type(v)
        if t is str or t is int:
            b = get(kv)
            if b is None:
                b = _ATTRS.new(tag, cache, kv[0], v)
        elif v is None:
            continue
        elif t is bool:
            pair = bools.get(kv[0])
            if pair is None:
                pair = _ATTRS.bool_pair(tag, bools, kv[0])
            b = pair[v]
        elif t is float:
            b = floats.get(kv)  # type: ignore[arg-type]
            if b is None:
                b = _ATTRS.new_float(tag, floats, kv[0], v)
        else:
            b = _field(tag, _ATTRS.key_field(kv[0]) + _field(b"\x12", _any(v)))
        append(b)


# Span names and event names: a few dozen, each field encoded once.
_NAMES_MAX = 4096
_span_names: dict[str, bytes] = {}
_event_names: dict[str, bytes] = {}


def _name(cache: dict[str, bytes], tag: bytes, name: str) -> bytes:
    b = cache.get(name)
    if b is None:
        b = _str(tag, name)
        if len(cache) < _NAMES_MAX:
            cache[name] = b
    return b


_KINDS = tuple(b"0" + _B[k] if k else b"" for k in range(8))  # Span.kind = 6
_FLAGS_SAMPLED = b"\x85\x01\x01\x00\x00\x00"  # Span.flags = 16, fixed32 1
_STATUS_ERROR_CODE = b"\x18\x02"  # Status.code = 3: STATUS_CODE_ERROR


def _scope_field() -> bytes:
    # ScopeSpans/ScopeMetrics/ScopeLogs.scope = 1: InstrumentationScope name = 1, version = 2
    return _field(b"\n", _str(b"\n", SCOPE.name) + _str(b"\x12", SCOPE.version))


_SCOPE_FIELD = _scope_field()


_SPAN_HEADS = _heads()  # ScopeSpans.spans = 2
_EVENT_HEADS = _heads()  # Span.events = 11


class _SpanWriter:
    """Writes Spans (ScopeSpans.spans, field 2) with the attribute caches of one request at hand:
    one lookup of each cache per request, not per span, attribute list or event."""

    __slots__ = ("ebools", "ecache", "efloats", "enames", "lbools", "lcache", "lfloats", "sbools",
                 "scache", "sfloats", "snames")

    def __init__(self) -> None:
        a = _ATTRS
        self.scache, self.sbools, self.sfloats = a.for_tag(b"J")  # Span.attributes = 9
        self.ecache, self.ebools, self.efloats = a.for_tag(b"\x1a")  # Event.attributes = 3
        self.lcache, self.lbools, self.lfloats = a.for_tag(b'"')  # Link.attributes = 4
        self.snames, self.enames = _span_names, _event_names

    def span(self, s: SpanData, out: list[bytes]) -> None:
        tid, sid = s.trace_id, s.span_id
        p: list[bytes]
        if len(tid) == 16 and len(sid) == 8:  # trace_id = 1, span_id = 2: pieces, not concatenated
            p = [b"\n\x10", tid, b"\x12\x08", sid]
        else:
            p = [_field(b"\n", tid) if tid else b"", _field(b"\x12", sid) if sid else b""]
        append = p.append
        parent = s.parent_span_id
        if parent:  # parent_span_id = 4
            if len(parent) == 8:
                append(b'"\x08')
                append(parent)
            else:
                append(_field(b'"', parent))
        name = self.snames.get(s.name)
        append(name if name is not None else _name(self.snames, b"*", s.name))  # name = 5
        kind = s.kind
        append(_KINDS[kind] if 0 <= kind < 8 else b"0" + _varint(kind))  # kind = 6 (int32 enum)
        start, end = s.start_ns, s.end_ns
        if start and end:
            append(_pack_tqtq(0x39, start, 0x41, end))  # start_time_unix_nano = 7, end = 8 (fixed64)
        elif start:
            append(_pack_tq(0x39, start))
        elif end:
            append(_pack_tq(0x41, end))
        if s.attrs:
            _put_attrs(s.attrs, b"J", self.scache, self.sbools, self.sfloats, append)  # attributes = 9
        if s.events:
            enames, ecache, ebools, efloats = self.enames, self.ecache, self.ebools, self.efloats
            event_heads = _EVENT_HEADS
            for e in s.events:  # events = 11: Event time_unix_nano = 1 (fixed64), name = 2, attributes = 3
                name = enames.get(e.name)
                if name is None:
                    name = _name(enames, b"\x12", e.name)
                ts = e.ts_ns
                if e.attrs:
                    ep = [_pack_tq(0x09, ts) if ts else b"", name]
                    _put_attrs(e.attrs, b"\x1a", ecache, ebools, efloats, ep.append)
                    body = b"".join(ep)
                else:
                    body = _pack_tq(0x09, ts) + name if ts else name
                n = len(body)
                h = event_heads[n] if n < 0x4000 else None
                append(h if h is not None else _head(event_heads, b"Z", n))
                append(body)
        for trace_id, span_id, link_attrs in s.links:  # links = 13: trace_id = 1, span_id = 2, attributes = 4
            lp = [_field(b"\n", trace_id) if trace_id else b"", _field(b"\x12", span_id) if span_id else b""]
            _put_attrs(link_attrs, b'"', self.lcache, self.lbools, self.lfloats, lp.append)
            append(_field(b"j", b"".join(lp)))
        if s.status_error is not None:  # status = 15: Status message = 2, code = 3
            append(_field(b"z", _str(b"\x12", s.status_error) + _STATUS_ERROR_CODE))
        append(_FLAGS_SAMPLED)
        body = b"".join(p)
        n = len(body)
        h = _SPAN_HEADS[n] if n < 0x4000 else None
        out.append(h if h is not None else _head(_SPAN_HEADS, b"\x12", n))
        out.append(body)


def _request(groups: dict[tuple[str, str], list[bytes]], resources: Resources) -> bytes:
    """An Export…ServiceRequest: per resource, field 1 holding (resource = 1, scope_spans/_metrics = 2
    holding (scope = 1, then the items, each already written as its field 2))."""
    out: list[bytes] = []
    for key, items in groups.items():
        resource = resources.encoded(key)
        scope = _SCOPE_FIELD
        n_scope = len(scope) + sum(map(len, items))
        scope_head = b"\x12" + _varint(n_scope)
        out.append(b"\n" + _varint(len(resource) + len(scope_head) + n_scope))
        out.append(resource)
        out.append(scope_head)
        out.append(scope)
        out.extend(items)
    return b"".join(out)


def encode_spans_bytes(spans: Iterable[SpanData], resources: Resources) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` that ``encode_spans`` builds, written directly."""
    groups: dict[tuple[str, str], list[bytes]] = {}
    last_key: tuple[str, str] | None = None
    out: list[bytes] = []
    span = _SpanWriter().span
    for s in spans:
        key = s.resource
        if key != last_key:
            out = groups.get(key)  # type: ignore[assignment]
            if out is None:
                out = groups[key] = []
            last_key = key
        span(s, out)
    return _request(groups, resources)


_CUMULATIVE_FIELD = b"\x10" + _B[_CUMULATIVE]  # Sum/Histogram.aggregation_temporality = 2
_DELTA_FIELD = b"\x10" + _B[_DELTA]
_bounds_cache: dict[int, tuple[tuple[float, ...], bytes]] = {}


def _times(p: Any, out: list[bytes]) -> None:
    # NumberDataPoint/HistogramDataPoint start_time_unix_nano = 2, time_unix_nano = 3 (fixed64)
    if p.start_ns:
        out.append(_pack_tq(0x11, p.start_ns))
    if p.time_ns:
        out.append(_pack_tq(0x19, p.time_ns))


def _number_point(p: Any) -> bytes:
    out: list[bytes] = []
    _times(p, out)
    out.append(_pack_tsq(0x31, int(p.value)))  # as_int = 6 (sfixed64, in a oneof: always written)
    _attrs(p.attrs, b":", out)  # attributes = 7
    return _field(b"\n", b"".join(out))  # data_points = 1


def _histogram_point(p: Any) -> bytes:
    out: list[bytes] = []
    _times(p, out)
    if p.count:
        out.append(_pack_tq(0x21, p.count))  # count = 4 (fixed64)
    out.append(_pack_td(0x29, p.total))  # sum = 5 (optional double: always set)
    if p.counts:
        out.append(_field(b"2", struct.pack(f"<{len(p.counts)}Q", *p.counts)))  # bucket_counts = 6, packed
    bounds = p.bounds
    if bounds:
        # by identity: the bounds are a metric definition's constant (and equal tuples may differ in
        # bytes: 0.0 == -0.0)
        cached = _bounds_cache.get(id(bounds))
        if cached is not None and cached[0] is bounds:
            out.append(cached[1])
        else:
            b = _field(b":", struct.pack(f"<{len(bounds)}d", *bounds))  # explicit_bounds = 7, packed
            if type(bounds) is tuple and len(_bounds_cache) < 64:
                _bounds_cache[id(bounds)] = (bounds, b)
            out.append(b)
    _attrs(p.attrs, b"J", out)  # attributes = 9
    if p.minimum is not None:
        out.append(_pack_td(0x59, p.minimum))  # min = 11
    if p.maximum is not None:
        out.append(_pack_td(0x61, p.maximum))  # max = 12
    return _field(b"\n", b"".join(out))  # data_points = 1


def _metric(md: MetricData) -> bytes:
    # Metric name = 1, description = 2, unit = 3, gauge = 5, sum = 7, histogram = 9
    head = _str(b"\n", md.name) + _str(b"\x12", md.description) + _str(b"\x1a", md.unit)
    temporality = _DELTA_FIELD if md.delta else _CUMULATIVE_FIELD
    if md.kind == GAUGE:
        data = _field(b"*", b"".join([_number_point(p) for p in md.points]))
    elif md.kind == HISTOGRAM:
        data = _field(b"J", b"".join([_histogram_point(p) for p in md.points]) + temporality)
    else:  # Sum: data_points = 1, aggregation_temporality = 2, is_monotonic = 3
        data = _field(b":", b"".join([_number_point(p) for p in md.points]) + temporality
                      + (b"\x18\x01" if md.monotonic else b""))
    return _field(b"\x12", head + data)  # ScopeMetrics.metrics = 2


def encode_metrics_bytes(data: Iterable[MetricData], resources: Resources) -> bytes:
    """The serialized ``ExportMetricsServiceRequest`` that ``encode_metrics`` builds, written directly."""
    groups: dict[tuple[str, str], list[bytes]] = {}
    for md in data:
        groups.setdefault(md.resource, []).append(_metric(md))
    return _request(groups, resources)
