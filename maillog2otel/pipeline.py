"""Wires the stages together; the only module that knows their order.

sources -> framing -> grammars (parse) -> correlate -> telemetry -> export
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from maillog2otel import mtas
from maillog2otel.config import Settings
from maillog2otel.correlate.base import CorrelateSettings, Correlator
from maillog2otel.export.base import Sink
from maillog2otel.framing import EXIM_FRAGMENT, Fragments, Framer, LocalClock, YearGuess
from maillog2otel.parse import Grammar
from maillog2otel.records import Connection, Count, Delivery, Event, MessageDone, Output, Record
from maillog2otel.sources import SourceStats, first_mtime, group_streams, read_lines
from maillog2otel.telemetry import reasons, redact
from maillog2otel.telemetry import stitch as stitch_state
from maillog2otel.telemetry.metrics import Aggregator
from maillog2otel.telemetry.spans import connection_span, delivery_span
from maillog2otel.telemetry.stitch import Stitcher

NS = 1_000_000_000
_MAX_SHAPES = 500
_MASKS = [
    (re.compile(r"<[^<>\s]*@[^<>\s]*>|[\w.+-]+@[\w.-]+"), "<addr>"),
    (re.compile(r"\b[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}(?:\.\d+)*\b"), "<uuid>"),
    (re.compile(r"\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}\b"), "<msgid>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b[0-9a-f]*:[0-9a-f:]+:[0-9a-f]*\b"), "<ip>"),
    (re.compile(r"\b[0-9A-F]{6,}\b"), "<qid>"),
    (re.compile(r"\d+"), "N"),
]


_UNROUTED: tuple = ()  # a Record whose (host, program) was not seen yet


def shape_of(text: str) -> str:
    """A line with addresses, IDs and numbers masked: what ``check`` groups unparsed lines by."""
    text = text[:160]
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


@dataclass(slots=True)
class Counters:
    """What became of every line read: ``lines == parsed + known + foreign + unparsed``.

    ``parsed``: understood, it feeds telemetry; ``known``: an MTA's line recognised as one that
    carries nothing to export (``Rule.known``); ``foreign``: another program's; ``unparsed``: an
    MTA's line no rule recognises, or a line without a log envelope (``unframed``, part of it)."""

    lines: int = 0
    parsed: int = 0
    known: int = 0
    foreign: int = 0
    unparsed: int = 0
    unframed: int = 0
    connections: int = 0
    messages: int = 0
    deliveries: int = 0
    rejected: int = 0
    # (mta, program) -> [parsed, known, unparsed]
    by_program: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    shapes: dict[str, list] = field(default_factory=dict)  # shape -> [count, example]
    known_rules: dict[tuple[str, str], int] = field(default_factory=dict)  # (mta, rule) -> lines; check only
    first_ns: int | None = None
    last_ns: int | None = None

    def note_shape(self, text: str) -> None:
        shape = shape_of(text)
        entry = self.shapes.get(shape)
        if entry is not None:
            entry[0] += 1
        elif len(self.shapes) < _MAX_SHAPES:
            self.shapes[shape] = [1, text[:300]]


class Pipeline:
    """Feeds records through grammars and correlators, and their outputs to the sinks."""

    def __init__(self, settings: Settings, span_sink: Sink, metric_sink: Sink, *,
                 correlate: CorrelateSettings | None = None, fast: bool = True,
                 grammars_dir: str | None = None, collect_shapes: bool = False, live: bool = False) -> None:
        self.settings = settings
        self.span_sink, self.metric_sink = span_sink, metric_sink
        self.traces_on = settings.traces.exporter != "none" or isinstance(span_sink, _Collecting)
        self.metrics_on = settings.metrics.exporter != "none" or isinstance(metric_sink, _Collecting)
        # operations hooks (docs/operations.md): redaction in front of the sinks; --logs' line hook
        self.span_sink, self.metric_sink = redact.wrap_sinks(settings, span_sink, metric_sink)
        self.log_sink: LineSink | None = None
        self.counters = Counters()
        self.collect_shapes = collect_shapes
        extra = mtas.user_grammar_modules(grammars_dir)
        self.stages: dict[str, tuple[Grammar, Correlator]] = {}
        logs = getattr(settings, "logs", None)
        logs_on = logs is not None and logs.exporter != "none"
        correlate = dataclasses.replace(correlate or CorrelateSettings(), span_events=self.traces_on,
                                        span_ids=self.traces_on or logs_on or live)
        for name in mtas.available():
            if settings.mta in ("auto", name):
                self.stages[name] = mtas.load(name, correlate, fast=fast, extra=extra.get(name))
        self.aggregator = Aggregator(settings.export_interval_ms * 1_000_000, settings.metric_namespace,
                                     settings.delta)
        self.aggregator.classify = reasons.classifier(settings)
        self._next_bucket: int | None = None
        self._seen_sources: set[tuple[str, str]] = set()
        self.fragments = Fragments()  # Exim's long entries, split by its syslog writer
        self._routes: dict[tuple[str, str, str | None], tuple | None] = {}  # see _route
        self._pending_spans: list = []
        # spans wait here briefly: one trace across mail hops
        # live: link tables bounded tighter, as the tail writes them whole at every checkpoint
        self.stitcher = Stitcher(window_ns=2 * NS, server_window_ns=0, max_entries=20_000) if live \
            else Stitcher()

    # --- per line ----------------------------------------------------------------------

    def unframed(self, text: str) -> None:
        c = self.counters
        c.lines += 1
        c.unparsed += 1
        c.unframed += 1
        key = ("?", "(no envelope)")
        c.by_program.setdefault(key, [0, 0, 0])[2] += 1
        if self.collect_shapes:
            c.note_shape(text)

    def _route(self, rec: Record) -> tuple[str, Callable, Callable, list[int]] | None:
        """Where lines of this (host, program) go: the MTA, its parse and feed, its counter row.
        None for other programs. Cached: the answer depends on the message only for Haraka run as
        ``node``, which is looked at line by line."""
        mta = mtas.detect(rec)
        stage = self.stages.get(mta) if mta else None
        if stage is None:
            if rec.program in ("node", "haraka.js"):
                return None
            self._routes[(rec.host, rec.program, rec.mta)] = None
            return None
        if (rec.host, mta) not in self._seen_sources:
            self._seen_sources.add((rec.host, mta))
            self.aggregator.source(rec.host, mta)
        by_program = self.counters.by_program
        key = (mta, rec.program)
        counts = by_program.get(key)
        if counts is None:  # bounded: past 1000 programs, the rest share one row per MTA
            key = key if len(by_program) < 1000 else (mta, "(other programs)")
            counts = by_program.setdefault(key, [0, 0, 0])
        route = (mta, stage[0].parse, stage[1].feed, counts)
        if len(self._routes) < 10_000 and rec.program not in ("node", "haraka.js"):
            self._routes[(rec.host, rec.program, rec.mta)] = route
        return route

    def feed(self, rec: Record, route: tuple[str, Callable, Callable, list[int]] | None = None,
             lines: int = 1) -> None:
        """Parse and correlate one log line. With ``route`` (Exim's syslog pieces joined, the
        pieces left at the end): a record already counted and routed, which took ``lines`` lines.
        One body for both: a second call per line cost as much as a stage's step."""
        c = self.counters
        if route is None:
            c.lines += 1
            route = self._routes.get((rec.host, rec.program, rec.mta), _UNROUTED)
            if route is _UNROUTED:
                route = self._route(rec)
            if route is None:
                c.foreign += 1
                return
            if route[0] == "exim" and rec.message[:1] == "[" and (m := EXIM_FRAGMENT.match(rec.message)):
                for whole, n in self.fragments.add(rec, m):  # held until its last piece
                    self.feed(whole, route, n)
                return
        mta, parse, correlate, counts = route
        ts = rec.ts_ns
        last = c.last_ns
        if last is None or ts > last:
            c.last_ns = ts
            if last is None:
                c.first_ns = ts
        ev = parse(rec)
        if ev is None:
            c.unparsed += lines
            counts[2] += lines
            if self.collect_shapes:
                c.note_shape(f"{rec.program}: {rec.message}")
            if self.log_sink is not None:
                self.log_sink.line(rec, None, mta)
            return
        if ev.known:  # counted, never correlated: it carries nothing to export
            c.known += lines
            counts[1] += lines
            if self.collect_shapes:
                k = (mta, ev.rule)
                c.known_rules[k] = c.known_rules.get(k, 0) + lines
            if self.log_sink is not None:
                self.log_sink.line(rec, ev, mta)
        else:
            c.parsed += lines
            counts[0] += lines
            outs = correlate(ev)
            if self.log_sink is not None:
                self.log_sink.line(rec, ev, mta)
            if outs:
                self._outputs(outs)
        if self.metrics_on:
            nb = self._next_bucket
            if nb is None or ts >= nb:
                self._advance(ts)

    # --- outputs -------------------------------------------------------------------------

    def _outputs(self, outs: Iterable[Output]) -> None:
        c = self.counters
        stitch = self.stitcher.add
        now = c.last_ns or 0
        agg = self.aggregator if self.metrics_on else None
        hold = self.stitcher.hold
        for o in outs:
            if hold and hold[0][0] <= now:  # what is due leaves before the next span can link to it
                self._release(self.stitcher.release(now))
                hold = self.stitcher.hold
            if isinstance(o, Connection):
                c.connections += 1
                if self.traces_on:
                    stitch(connection_span(o), now)
                if agg:
                    agg.connection(o)
            elif isinstance(o, Delivery):
                c.deliveries += 1
                if self.traces_on:
                    stitch(delivery_span(o), now)
                if agg:
                    agg.delivery(o)
            elif isinstance(o, Count):
                if o.result == "queued":
                    c.messages += 1
                elif o.result == "rejected":
                    c.rejected += 1
                if agg:
                    agg.count(o)
            elif isinstance(o, MessageDone) and self.traces_on:
                stitch(o, now)
        if self.stitcher.hold and (self.stitcher.server_window_ns == 0 or self.stitcher.hold[0][0] <= now):
            self._release(self.stitcher.release(now))

    def _release(self, items: list) -> None:
        """Hand released spans to the sink in batches, and hints in their place among them."""
        for item in items:
            if isinstance(item, MessageDone):
                if self._pending_spans:
                    self._flush_spans()
                self.span_sink.hint(item)
            else:
                self._pending_spans.append(item)
        if len(self._pending_spans) >= 256:
            self._flush_spans()

    def _flush_spans(self, final: bool = False) -> None:
        if final and self.stitcher.hold:
            self._release(self.stitcher.drain())
        if self._pending_spans:
            spans, self._pending_spans = self._pending_spans, []
            self.span_sink.spans(spans)

    def _advance(self, ts: int) -> None:
        data = self.aggregator.advance(ts)
        self._next_bucket = self.aggregator.bucket_end
        if data:
            self._release(self.stitcher.release(ts))
            self._flush_spans()  # spans first: a metric point never describes an unsent span
            self.metric_sink.metrics(data)

    def tick(self, now_ns: int) -> None:
        """Log time moved on without a line (live mode): emit what became due."""
        if self.log_sink is not None:
            self.log_sink.tick(now_ns)
        for _, correlator in self.stages.values():
            outs = correlator.tick(now_ns)
            if outs:
                self._outputs(outs)
        if self.metrics_on:
            self._advance(now_ns)
        self._release(self.stitcher.release(now_ns))
        self._flush_spans()

    def finish(self) -> None:
        """End of input: open sessions end as ERROR "log ended", the last metric interval closes."""
        for rec, lines in self.fragments.drain():  # pieces of sets that never finished: as they are
            route = self._routes.get((rec.host, rec.program, rec.mta)) or self._route(rec)
            if route is not None:
                self.feed(rec, route, lines)
        for _, correlator in self.stages.values():
            outs = correlator.finish()
            if outs:
                self._outputs(outs)
        self._flush_spans(final=True)
        if self.metrics_on and self.counters.last_ns is not None:
            data = self.aggregator.close(self.counters.last_ns)
            if data:
                self.metric_sink.metrics(data)

    def save_state(self) -> dict:
        """The whole correlation and metric state, JSON-able: what ``tail`` saves with its offsets
        (after the sinks accepted everything emitted so far) so a restart continues exactly here.
        Spans still waiting for a next-hop link are part of the state, not sent yet."""
        self._flush_spans()
        return {"version": 1, "stitch": stitch_state.save_state(self.stitcher),
                "correlators": {name: corr.save_state() for name, (_, corr) in self.stages.items()},
                "aggregator": self.aggregator.save_state(), "next_bucket": self._next_bucket,
                "sources": [list(x) for x in sorted(self._seen_sources)]}

    def load_state(self, state: dict) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unsupported state version {state.get('version')!r}")
        for name, corr_state in state.get("correlators", {}).items():
            if name in self.stages:
                self.stages[name][1].load_state(corr_state)
        self.aggregator.load_state(state.get("aggregator", {}))
        stitch_state.load_state(self.stitcher, state.get("stitch", {}))
        self._next_bucket = state.get("next_bucket")
        self._seen_sources = {tuple(x) for x in state.get("sources", [])}  # type: ignore[misc]
        self._routes.clear()

    def open_counts(self) -> dict[str, dict[str, int]]:
        return {name: corr.open_counts() for name, (_, corr) in self.stages.items()}

    def correlator_stats(self) -> dict[str, dict[str, int]]:
        return {name: dict(corr.stats.counts) for name, (_, corr) in self.stages.items()}


class LineSink(Protocol):
    """Takes every line of a known MTA after correlation (``export.logs.LineExporter``)."""

    def line(self, rec: Record, ev: Event | None, mta: str) -> None: ...
    def tick(self, now_ns: int) -> None: ...


class _Collecting:
    """Marker for sinks that collect data in memory (tests, ``check``): always built."""


def default_host(settings: Settings) -> str:
    return settings.hostname or socket.gethostname().split(".")[0]


def stream_framer(paths: list[str], index: int, settings: Settings) -> Framer:
    """The framer of one rotated set: year-less stamps are placed from its oldest file's mtime."""
    clock = LocalClock(settings.timezone)
    if settings.year is not None:
        year = YearGuess(settings.year, ref_month=12)
    else:
        mtime = first_mtime(paths)
        ref = dt.datetime.fromtimestamp(mtime if mtime is not None else time.time(), clock.tz)
        year = YearGuess(ref.year, ref_month=ref.month)
    return Framer(stream=index, clock=clock, year=year, default_host=default_host(settings))


def stream_records(paths: list[str], index: int, settings: Settings, pipeline: Pipeline,
                   stats: SourceStats, on_line: Callable[[], None] | None = None) -> Iterator[Record]:
    """One rotated set, oldest file first, framed; lines without an envelope are counted."""
    framer = stream_framer(paths, index, settings)
    untimed = timed = 0
    for path in paths:
        for text, offset in read_lines(path, stats):
            rec = framer.frame(text, offset)
            if rec is None:
                pipeline.unframed(text)
                continue
            if rec.ts_inferred:
                untimed += 1
            else:
                timed += 1
            yield rec
    warn_untimed(paths[-1], untimed, timed)


def warn_untimed(path: str, untimed: int, timed: int) -> None:
    if untimed > timed:  # a few stamp-less start-up lines are normal; a stamp-less log is not
        logging.getLogger("maillog2otel").warning(
            "%s: %d of %d lines carry no time (Haraka with timestamps=false?). A backfill cannot know "
            "when they happened: their spans and metric points carry the last time seen before them, "
            "or 1970-01-01 when there was none. Durations come from Haraka's own time= and stay right. "
            "Set timestamps=true in Haraka's log.ini, or read such a log live with tail.",
            path, untimed, untimed + timed)


def backfill_records(paths: list[str], settings: Settings, pipeline: Pipeline,
                     stats: SourceStats) -> Iterator[Record]:
    """All streams, merged by time when there are several (one trace across hops)."""
    streams = group_streams(paths)
    gens = [stream_records(s, i, settings, pipeline, stats) for i, s in enumerate(streams)]
    if len(gens) == 1:
        return gens[0]
    return heapq.merge(*gens, key=lambda r: r.ts_ns)
