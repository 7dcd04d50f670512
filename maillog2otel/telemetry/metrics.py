"""The six metrics and the AUTH attempts counter, aggregated in log time.

SDK instruments stamp collection time, so a backfill could not carry historical timestamps
(otel-and-tailing.md §2). Here every observation carries its log time; a series starts at the
first log time it was seen; at each ``interval_ns`` boundary of log time every series is
snapshot into a point stamped with that boundary. Points are cumulative by default (replays of the
same log send the same points) or delta when the OTLP temporality preference asks for it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from maillog2otel.records import Connection, Count, Delivery

SUM, HISTOGRAM, GAUGE = "sum", "histogram", "gauge"
MAX_GAP_INTERVALS = 10_080  # a week of 1-minute intervals: points through a longer silence are skipped
_CLASS_SEP = "|"  # "rejected|relay_denied": one series per (result, reject class)

# OTel's default bounds reach 10 s; SMTP sessions run to minutes (ms).
DURATION_BOUNDS_MS = (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000,
                      60000, 300000, 1800000)
# Powers of 4 from 1 KiB to 64 MiB: mail sizes (haraka.md §4.1).
SIZE_BOUNDS_BYTES = tuple(float(1024 * 4**i) for i in range(9))


@dataclass(frozen=True, slots=True)
class MetricDef:
    suffix: str
    kind: str
    unit: str
    description: str
    attr: str | None = None  # the one attribute key, "{ns}" replaced by the namespace
    bounds: tuple[float, ...] = ()


METRICS = {
    "connections": MetricDef("connections", SUM, "{connection}",
                             "SMTP connections opened, counted at the connect line"),
    "hook": MetricDef("hook.total", SUM, "{call}",
                      "SMTP commands and hooks the log proves ran, by name", "{ns}.hook"),
    "duration": MetricDef("connection.duration", HISTOGRAM, "ms",
                          "SMTP connection duration, connect line to disconnect line",
                          bounds=DURATION_BOUNDS_MS),
    "size": MetricDef("message.size", HISTOGRAM, "By", "Size of each queued message",
                      bounds=SIZE_BOUNDS_BYTES),
    "messages": MetricDef("messages", SUM, "{message}",
                          "Messages by result: queued once per message; delivered, deferred and bounced "
                          "per recipient and attempt; rejected per rejection", "smtp.result"),
    "auth": MetricDef("auth.attempts", SUM, "{attempt}",
                      "SMTP AUTH attempts by result (accepted, failed)", "smtp.auth.result"),
    "up": MetricDef("up", GAUGE, "1", "1 while a log source of this MTA is being read"),
}


@dataclass(slots=True)
class Series:
    start_ns: int
    value: float = 0
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    last_emitted: tuple[float, list[int], float] | None = None  # for delta temporality


@dataclass(slots=True)
class Point:
    """One data point, ready for any encoder."""

    attrs: dict[str, Any]
    start_ns: int
    time_ns: int
    value: float = 0
    counts: list[int] | None = None
    bounds: tuple[float, ...] = ()
    total: float = 0.0
    count: int = 0
    minimum: float | None = None
    maximum: float | None = None


@dataclass(slots=True)
class MetricData:
    resource: tuple[str, str]  # (host, mta)
    name: str
    kind: str
    unit: str
    description: str
    monotonic: bool
    delta: bool
    points: list[Point]


SeriesKey = tuple[str, str, str, str | None]  # host, mta, metric, attribute value


class Aggregator:
    """Counts and histograms per (host, mta, metric, attribute) in log time."""

    def __init__(self, interval_ns: int, namespace: str | None = None, delta: bool = False,
                 max_series: int = 2000) -> None:
        self.interval_ns = max(interval_ns, 1_000_000)
        self.namespace, self.delta, self.max_series = namespace, delta, max_series
        self.series: dict[SeriesKey, Series] = {}
        self.bucket_end: int | None = None
        self.sources: set[tuple[str, str]] = set()  # (host, mta) being read: the up gauge
        self.overflow = 0
        self.time_jumps = 0  # gaps of log time longer than MAX_GAP_INTERVALS, skipped over
        # reject reason -> bounded class (telemetry/reasons.py): rejected counts get smtp.reject.class
        self.classify: Callable[[str | None], str] | None = None

    # --- observations ------------------------------------------------------------------

    def _series(self, key: SeriesKey, ts: int) -> Series:
        s = self.series.get(key)
        if s is None:
            if len(self.series) >= self.max_series:  # bounded cardinality: fold into one series
                self.overflow += 1
                key = (key[0], key[1], key[2], "_other")
                s = self.series.get(key)
                if s is not None:
                    return s
            bounds = METRICS[key[2]].bounds
            s = self.series[key] = Series(ts, counts=[0] * (len(bounds) + 1) if bounds else [])
        return s

    def add(self, host: str, mta: str, metric: str, ts: int, value: float = 1,
            attr: str | None = None) -> None:
        self.sources.add((host, mta))
        self._series((host, mta, metric, attr), ts).value += value

    def record(self, host: str, mta: str, metric: str, ts: int, value: float) -> None:
        self.sources.add((host, mta))
        self._observe((host, mta, metric, None), ts, value)

    def _observe(self, key: SeriesKey, ts: int, value: float) -> None:
        s = self.series.get(key) or self._series(key, ts)
        s.counts[bisect.bisect_left(METRICS[key[2]].bounds, value)] += 1
        s.total += value
        s.minimum = min(s.minimum, value)
        s.maximum = max(s.maximum, value)

    # The three below run once per correlator output: each looks its series up directly (one
    # dict lookup of a key tuple; ``_series`` only for a new one) and notes the source once.

    def connection(self, c: Connection) -> None:
        host, mta, start = c.host, c.mta, c.start_ns
        self.sources.add((host, mta))
        get = self.series.get
        key: SeriesKey = (host, mta, "connections", None)
        s = get(key) or self._series(key, start)
        s.value += 1
        for name, n in c.commands.items():
            key = (host, mta, "hook", name)
            s = get(key) or self._series(key, start)
            s.value += n
        for result, n in c.auth.items():
            key = (host, mta, "auth", result)
            s = get(key) or self._series(key, start)
            s.value += n
        if c.duration_known:
            self._observe((host, mta, "duration", None), c.end_ns, (c.end_ns - start) / 1e6)

    def delivery(self, d: Delivery) -> None:
        if d.counted:
            self.sources.add((d.host, d.mta))
            key = (d.host, d.mta, "messages", d.result)
            s = self.series.get(key) or self._series(key, d.end_ns)
            s.value += 1

    def count(self, c: Count) -> None:
        result = c.result
        if result == "rejected" and self.classify is not None:
            result = f"rejected{_CLASS_SEP}{self.classify(c.reason)}"
        host, mta = c.host, c.mta
        self.sources.add((host, mta))
        key: SeriesKey = (host, mta, "messages", result)
        s = self.series.get(key) or self._series(key, c.ts_ns)
        s.value += 1
        if c.size_bytes is not None:
            self._observe((c.host, c.mta, "size", None), c.ts_ns, float(c.size_bytes))

    def source(self, host: str, mta: str) -> None:
        self.sources.add((host, mta))

    # --- state across restarts: series continue without a reset --------------------------

    def save_state(self) -> dict[str, Any]:
        return {"bucket_end": self.bucket_end, "overflow": self.overflow,
                "sources": [list(x) for x in sorted(self.sources)],
                "series": [[list(k), s.start_ns, s.value, s.counts, s.total,
                            None if s.minimum == float("inf") else s.minimum,
                            None if s.maximum == float("-inf") else s.maximum,
                            list(s.last_emitted) if s.last_emitted else None]
                           for k, s in self.series.items()]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.bucket_end = state.get("bucket_end")
        self.overflow = state.get("overflow", 0)
        self.sources = {tuple(x) for x in state.get("sources", [])}  # type: ignore[misc]
        for key, start, value, counts, total, lo, hi, last in state.get("series", []):
            self.series[tuple(key)] = Series(  # type: ignore[index]
                start, value, counts, total, float("inf") if lo is None else lo,
                float("-inf") if hi is None else hi, tuple(last) if last else None)  # type: ignore[arg-type]

    # --- log time ----------------------------------------------------------------------

    def advance(self, now_ns: int) -> list[MetricData]:
        """Close every interval that log time ``now_ns`` has passed; one snapshot per interval."""
        if self.bucket_end is None:
            self.bucket_end = (now_ns // self.interval_ns + 1) * self.interval_ns
            return []
        out: list[MetricData] = []
        if (now_ns - self.bucket_end) // self.interval_ns > MAX_GAP_INTERVALS:
            # log time jumped (a silent week, or one line stamped decades ahead): one point at the
            # gap's start, then on from the interval of now_ns, not one point per empty interval
            out.extend(self.snapshot(self.bucket_end))
            self.bucket_end = (now_ns // self.interval_ns) * self.interval_ns
            self.time_jumps += 1
        while now_ns >= self.bucket_end:
            out.extend(self.snapshot(self.bucket_end))
            self.bucket_end += self.interval_ns
        return out

    def close(self, end_ns: int | None = None) -> list[MetricData]:
        """End of input: one last snapshot at the end of the interval in progress."""
        if self.bucket_end is None:
            return []
        # a series may start after the last line's time (Haraka without stamps: a connection
        # lasts its logged time= past the line): the last snapshot must still include it
        latest = max((s.start_ns for s in self.series.values()), default=0)
        return self.snapshot(max(end_ns if end_ns is not None else self.bucket_end, latest))

    def snapshot(self, time_ns: int) -> list[MetricData]:
        grouped: dict[tuple[str, str, str], list[Point]] = {}
        for (host, mta, metric, attr), s in self.series.items():
            if s.start_ns > time_ns:
                continue
            d = METRICS[metric]
            ns = self.namespace or mta
            attrs = {d.attr.replace("{ns}", ns): attr} if d.attr and attr is not None else {}
            if attr is not None and _CLASS_SEP in attr:
                attrs = dict(zip((d.attr, "smtp.reject.class"), attr.split(_CLASS_SEP, 1), strict=True))
            if d.kind == SUM:
                value, start = s.value, s.start_ns
                if self.delta:
                    prev = s.last_emitted[0] if s.last_emitted else 0
                    start = s.last_emitted[2] if s.last_emitted else s.start_ns
                    s.last_emitted = (s.value, [], time_ns)
                    value -= prev
                point = Point(attrs, start, time_ns, value)
            else:
                counts, start = list(s.counts), s.start_ns
                total, count = s.total, sum(s.counts)
                if self.delta:
                    prev_counts = s.last_emitted[1] if s.last_emitted else [0] * len(counts)
                    start = s.last_emitted[2] if s.last_emitted else s.start_ns
                    total -= s.last_emitted[0] if s.last_emitted else 0
                    s.last_emitted = (s.total, list(s.counts), time_ns)
                    counts = [a - b for a, b in zip(counts, prev_counts, strict=True)]
                    count = sum(counts)
                point = Point(attrs, start, time_ns, counts=counts, bounds=d.bounds, total=total, count=count,
                              minimum=s.minimum if s.minimum != float("inf") else None,
                              maximum=s.maximum if s.maximum != float("-inf") else None)
            grouped.setdefault((host, mta, metric), []).append(point)
        for host, mta in sorted(self.sources):
            grouped.setdefault((host, mta, "up"), []).append(Point({}, time_ns, time_ns, 1))
        out = []
        for (host, mta, metric), points in grouped.items():
            d = METRICS[metric]
            ns = self.namespace or mta
            out.append(MetricData((host, mta), f"{ns}.{d.suffix}", d.kind, d.unit, d.description,
                                  d.kind == SUM, self.delta and d.kind != GAUGE, points))
        return out
