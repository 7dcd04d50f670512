"""Runs a command end to end: opens sources and sinks, drives the pipeline, reports."""

from __future__ import annotations

import sys
import time

from maillog2otel.config import Settings
from maillog2otel.export.base import ExportError, Sink, make_sinks
from maillog2otel.export.encode import Resources
from maillog2otel.pipeline import Pipeline, backfill_records
from maillog2otel.sources import SourceError, SourceStats, check_readable


def _resources(settings: Settings) -> Resources:
    return Resources(service_name=settings.service_name, service_version=settings.service_version,
                     extra=settings.resource_attributes)


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self.total, self.enabled = total_bytes, enabled and sys.stderr.isatty()
        self.next_at = time.monotonic() + 0.5

    def update(self, stats: SourceStats, lines: int) -> None:
        if not self.enabled or time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + 0.5
        frac = min(1.0, stats.bytes / self.total) if self.total else 0.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}%  {lines:,} lines")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 70 + "\r")


def _total_bytes(paths: list[str]) -> int:
    import os

    total = 0
    for p in paths:
        if p != "-" and not p.endswith(".gz"):
            try:
                total += os.stat(p).st_size
            except OSError:
                pass
    return total


def run_backfill(paths: list[str], settings: Settings, *, grammars_dir: str | None = None,
                 sinks: tuple[Sink, Sink] | None = None) -> int:
    for p in paths:
        try:
            check_readable(p)
        except SourceError as exc:
            sys.stderr.write(f"maillog2otel: {exc}\n")
            return 1
    if sinks is None:
        span_sink, metric_sink = make_sinks(settings.traces, settings.metrics, _resources(settings),
                                            budget_s=settings.retry_budget_s)
    else:
        span_sink, metric_sink = sinks
    pipeline = Pipeline(settings, span_sink, metric_sink, grammars_dir=grammars_dir)
    stats = SourceStats()
    progress = Progress(_total_bytes(paths), not settings.quiet)
    started = time.monotonic()
    code = 0
    try:
        n = 0
        for rec in backfill_records(paths, settings, pipeline, stats):
            pipeline.feed(rec)
            n += 1
            if not n & 0x3FFF:
                progress.update(stats, pipeline.counters.lines)
        pipeline.finish()
        span_sink.close()
        metric_sink.close()
    except ExportError as exc:
        sys.stderr.write(f"maillog2otel: {exc}\n")
        code = 1
    except SourceError as exc:
        sys.stderr.write(f"maillog2otel: {exc}\n")
        code = 1
    progress.done()
    for err in stats.errors:
        sys.stderr.write(f"maillog2otel: {err}\n")
        code = code or 1
    if not settings.quiet:
        _summary(pipeline, stats, span_sink, metric_sink, time.monotonic() - started)
    return code


def _summary(p: Pipeline, stats: SourceStats, span_sink: Sink, metric_sink: Sink, elapsed: float) -> None:
    c = p.counters
    rate = c.lines / elapsed if elapsed > 0 else 0.0
    lines = [
        f"lines     {c.lines:,} read: {c.parsed:,} parsed, {c.foreign:,} foreign, {c.unparsed:,} unparsed"
        + (f" ({c.unframed:,} without a log envelope)" if c.unframed else ""),
        f"mail      {c.connections:,} connections, {c.messages:,} messages queued, {c.deliveries:,} delivery "
        f"attempts, {c.rejected:,} rejections",
        f"exported  {span_sink.stats.spans:,} spans, {metric_sink.stats.points:,} metric points",
        f"time      {elapsed:.2f}s, {rate:,.0f} lines/s",
    ]
    if stats.invalid_utf8 or stats.oversized:
        lines.append(f"input     {stats.invalid_utf8:,} lines with invalid UTF-8 (replaced), "
                     f"{stats.oversized:,} lines over 1 MiB (cut)")
    gave_up = {k: v for counts in p.correlator_stats().values() for k, v in counts.items()}
    if gave_up:
        lines.append("state     " + ", ".join(f"{k}={v}" for k, v in sorted(gave_up.items())))
    sys.stderr.write("".join(f"maillog2otel: {line}\n" for line in lines))


def run_check(paths: list[str], settings: Settings, *, strict: bool, grammars_dir: str | None) -> int:
    from maillog2otel.export.base import NullSink

    for p in paths:
        try:
            check_readable(p)
        except SourceError as exc:
            sys.stderr.write(f"maillog2otel: {exc}\n")
            return 1
    span_sink, metric_sink = NullSink(), NullSink()
    pipeline = Pipeline(settings, span_sink, metric_sink, grammars_dir=grammars_dir, collect_shapes=True)
    pipeline.traces_on = True  # build spans so the counts are those a backfill would export
    stats = SourceStats()
    for rec in backfill_records(paths, settings, pipeline, stats):
        pipeline.feed(rec)
    open_now = pipeline.open_counts()
    pipeline.finish()
    c = pipeline.counters
    w = sys.stdout.write
    w(f"{c.lines:,} lines: {c.parsed:,} parsed, {c.foreign:,} foreign (other programs), {c.unparsed:,} unparsed\n")
    w(f"{c.connections:,} connections, {c.messages:,} messages queued, {c.deliveries:,} delivery attempts, "
      f"{c.rejected:,} rejections reconstructed\n\n")
    w(f"{'mta':<8} {'program':<32} {'parsed':>10} {'unparsed':>10}\n")
    for (mta, prog), (ok, bad) in sorted(c.by_program.items()):
        w(f"{mta:<8} {prog:<32} {ok:>10,} {bad:>10,}\n")
    for mta, counts in open_now.items():
        if any(counts.values()):
            w(f"\nleft open at the end ({mta}): " + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + "\n")
    if c.shapes:
        w("\nmost common unparsed line shapes (addresses, IDs and numbers masked):\n")
        for shape, (count, example) in sorted(c.shapes.items(), key=lambda kv: -kv[1][0])[:20]:
            w(f"{count:>8,}  {shape}\n          e.g. {example[:200]}\n")
    for err in stats.errors:
        w(f"error: {err}\n")
    return 1 if (strict and c.unparsed) or stats.errors else 0


def run_tail(paths: list[str], settings: Settings, *, state_path: str | None = None,
             from_beginning: bool = False, force_polling: bool | None = None, lossy: bool = False,
             buffer: int = 20_000, grammars_dir: str | None = None,
             sinks: tuple[Sink, Sink] | None = None) -> int:
    """Follow files (or stdin) until SIGTERM/SIGINT, or EOF on stdin (``maillog2otel.tail``).

    Sinks retry forever (reading pauses while the collector is down, nothing is lost); with
    ``lossy`` they try once per back-off step and the oldest data beyond ``buffer`` are dropped."""
    from maillog2otel import state as statefile
    from maillog2otel.tail import Tailer, TailOptions

    if "-" in paths and paths != ["-"]:
        sys.stderr.write("maillog2otel: tail reads either stdin (-) or files, not both\n")
        return 2
    if sinks is None:
        span_sink, metric_sink = make_sinks(settings.traces, settings.metrics, _resources(settings),
                                            budget_s=0.0 if lossy else -1.0, live=True)
    else:
        span_sink, metric_sink = sinks
    options = TailOptions(state_path=state_path or statefile.default_state_path(paths),
                          from_beginning=from_beginning, force_polling=force_polling, lossy=lossy,
                          buffer=buffer)
    started = time.monotonic()
    try:
        tailer = Tailer(paths, settings, span_sink, metric_sink, options, grammars_dir=grammars_dir)
        code = tailer.run()
    except (statefile.StateError, ValueError) as exc:
        sys.stderr.write(f"maillog2otel: {exc}\n")
        return 2
    if not settings.quiet:
        elapsed = time.monotonic() - started
        lines = [*tailer.summary(), f"time      {elapsed:.1f}s"]
        sys.stderr.write("".join(f"maillog2otel: {line}\n" for line in lines))
    return code
