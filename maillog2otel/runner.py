"""Runs a command end to end: opens sources and sinks, drives the pipeline, reports."""

from __future__ import annotations

import contextlib
import sys
import time

from maillog2otel import ops as ops_mod
from maillog2otel import parallel
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
            with contextlib.suppress(OSError):
                total += os.stat(p).st_size
    return total


def run_backfill(paths: list[str], settings: Settings, *, grammars_dir: str | None = None,
                 sinks: tuple[Sink, Sink] | None = None, linger_s: float = 0.0, jobs: int | None = 1) -> int:
    """``jobs``: processes (maillog2otel.parallel), None for ``auto``; sinks given run in this one."""
    for p in paths:
        try:
            check_readable(p)
        except SourceError as exc:
            sys.stderr.write(f"maillog2otel: {exc}\n")
            return 1
    jobs = parallel.choose_jobs(jobs, settings, _total_bytes(paths)) if sinks is None else 1
    if sinks is not None:
        span_sink, metric_sink = sinks
    elif jobs > 1:
        span_sink, metric_sink = parallel.remote_sinks()
    else:
        span_sink, metric_sink = make_sinks(settings.traces, settings.metrics, _resources(settings),
                                            budget_s=settings.retry_budget_s)
    if jobs > 1:  # the export stage in a second process; the same output
        pipeline: Pipeline = parallel.RemotePipeline(
            settings, span_sink, metric_sink, grammars_dir=grammars_dir,  # type: ignore[arg-type]
            resources=_resources(settings))
    else:
        pipeline = Pipeline(settings, span_sink, metric_sink, grammars_dir=grammars_dir)
    try:  # --logs, --prometheus (maillog2otel.ops)
        ops = ops_mod.attach(pipeline, settings, _resources(settings), mode="backfill", sources=paths,
                             budget_s=settings.retry_budget_s)
    except OSError as exc:
        sys.stderr.write(f"maillog2otel: {exc}\n")
        _stop_export(pipeline)
        return 1
    stats = SourceStats()
    progress = Progress(_total_bytes(paths), not settings.quiet)
    started = time.monotonic()
    code = 0
    try:
        # n counts the lines fed so far (from 1): progress every 16384 lines
        for n, rec in enumerate(backfill_records(paths, settings, pipeline, stats), start=1):
            pipeline.feed(rec)
            if not n & 0x3FFF:
                progress.update(stats, pipeline.counters.lines)
                ops.update(sources=paths)
        pipeline.finish()
        span_sink.close()
        metric_sink.close()
        ops.close(error="; ".join(stats.errors) or None, linger_s=linger_s)
    except ExportError as exc:
        sys.stderr.write(f"maillog2otel: {exc}\n")
        ops.abort(str(exc))
        code = 1
    except SourceError as exc:
        sys.stderr.write(f"maillog2otel: {exc}\n")
        ops.abort(str(exc))
        code = 1
    finally:
        _stop_export(pipeline)
    progress.done()
    for err in stats.errors:
        sys.stderr.write(f"maillog2otel: {err}\n")
        code = code or 1
    if not settings.quiet:
        _summary(pipeline, stats, span_sink, metric_sink, time.monotonic() - started, ops)
    return code


def _stop_export(pipeline: Pipeline) -> None:
    """With --jobs 2: the export process ends (at once, after an error) when the run does."""
    if isinstance(pipeline, parallel.RemotePipeline):
        pipeline.close()


def _summary(p: Pipeline, stats: SourceStats, span_sink: Sink, metric_sink: Sink, elapsed: float,
             ops: ops_mod.Ops | None = None) -> None:
    c = p.counters
    rate = c.lines / elapsed if elapsed > 0 else 0.0
    lines = [
        f"lines     {c.lines:,} read: {c.parsed:,} parsed, {c.foreign:,} foreign, {c.unparsed:,} unparsed"
        + (f" ({c.unframed:,} without a log envelope)" if c.unframed else ""),
        f"mail      {c.connections:,} connections, {c.messages:,} messages queued, {c.deliveries:,} delivery "
        f"attempts, {c.rejected:,} rejections",
        f"exported  {span_sink.stats.spans:,} spans, {metric_sink.stats.points:,} metric points"
        + (f", {ops.exporter.stats.records:,} log records" if ops is not None and ops.exporter else ""),
        f"time      {elapsed:.2f}s, {rate:,.0f} lines/s",
    ]
    if stats.invalid_utf8 or stats.oversized:
        lines.append(f"input     {stats.invalid_utf8:,} lines with invalid UTF-8 (replaced), "
                     f"{stats.oversized:,} lines over 1 MiB (cut)")
    gave_up = {k: v for counts in p.correlator_stats().values() for k, v in counts.items()}
    if gave_up:
        lines.append("state     " + ", ".join(f"{k}={v}" for k, v in sorted(gave_up.items())))
    sys.stderr.write("".join(f"maillog2otel: {line}\n" for line in lines))


class _CountingSink:
    """``check``'s span sink: spans are built (so the counts are a backfill's) and counted per MTA."""

    def __init__(self) -> None:
        from maillog2otel.export.base import SinkStats

        self.stats = SinkStats()
        self.by_mta: dict[str, dict[str, int]] = {}

    def spans(self, spans: list) -> None:
        self.stats.spans += len(spans)
        for s in spans:
            d = self.by_mta.setdefault(s.resource[1], {})
            d[s.name] = d.get(s.name, 0) + 1

    def metrics(self, data: list) -> None:
        pass

    def hint(self, done: object) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_check(paths: list[str], settings: Settings, *, strict: bool, grammars_dir: str | None) -> int:
    """Read without exporting; print per MTA and program what was understood (``check``)."""
    for p in paths:
        try:
            check_readable(p)
        except SourceError as exc:
            sys.stderr.write(f"maillog2otel: {exc}\n")
            return 1
    span_sink, metric_sink = _CountingSink(), _CountingSink()
    pipeline = Pipeline(settings, span_sink, metric_sink, grammars_dir=grammars_dir, collect_shapes=True)
    pipeline.traces_on = pipeline.metrics_on = True  # build everything, so the counts are a backfill's
    stats = SourceStats()
    c = pipeline.counters
    foreign: dict[str, int] = {}
    try:
        for rec in backfill_records(paths, settings, pipeline, stats):
            before = c.foreign
            pipeline.feed(rec)
            if c.foreign != before and (len(foreign) < 200 or rec.program in foreign):
                foreign[rec.program] = foreign.get(rec.program, 0) + 1
    except SourceError as exc:
        stats.errors.append(str(exc))
    open_now = pipeline.open_counts()
    pipeline.finish()
    per_mta: dict[str, dict[str, float]] = {}
    for (_host, mta, metric, attr), series in pipeline.aggregator.series.items():
        d = per_mta.setdefault(mta, {})
        if metric == "messages" and attr is not None:
            key = attr.split("|", 1)[0]
            d[key] = d.get(key, 0) + series.value
    w = sys.stdout.write
    w(f"{c.lines:,} lines: {c.parsed:,} parsed, {c.foreign:,} foreign (other programs), "
      f"{c.unparsed:,} unparsed\n")
    w(f"{c.connections:,} connections, {c.messages:,} messages queued, {c.deliveries:,} delivery attempts, "
      f"{c.rejected:,} rejections reconstructed\n\n")
    w(f"{'mta':<8} {'program':<32} {'parsed':>10} {'unparsed':>10}\n")
    for (mta, prog), (ok, bad) in sorted(c.by_program.items()):
        w(f"{mta:<8} {prog:<32} {ok:>10,} {bad:>10,}\n")
    for prog, n in sorted(foreign.items(), key=lambda kv: -kv[1])[:20]:
        w(f"{'foreign':<8} {prog[:32]:<32} {'':>10} {'':>10}  {n:,} lines of another program\n")
    mtas_seen = sorted({m for m, _ in c.by_program if m != "?"})
    if mtas_seen:
        w(f"\n{'mta':<8} {'connections':>11} {'queued':>8} {'deliveries':>10} {'delivered':>9} "
          f"{'deferred':>8} {'bounced':>7} {'rejected':>8} {'open sessions':>13} {'open messages':>13}\n")
        for mta in mtas_seen:
            spans = span_sink.by_mta.get(mta, {})
            m = per_mta.get(mta, {})
            o = open_now.get(mta, {})
            w(f"{mta:<8} {spans.get('smtp.connection', 0):>11,} {int(m.get('queued', 0)):>8,} "
              f"{spans.get('smtp.delivery', 0):>10,} {int(m.get('delivered', 0)):>9,} "
              f"{int(m.get('deferred', 0)):>8,} {int(m.get('bounced', 0)):>7,} "
              f"{int(m.get('rejected', 0)):>8,} {o.get('sessions', 0):>13,} {o.get('messages', 0):>13,}\n")
    for mta, counts in open_now.items():
        if any(counts.values()):
            w(f"\nleft open at the end ({mta}): " + ", ".join(f"{v:,} {k}" for k, v in counts.items())
              + " (sessions end as ERROR \"log ended\"; messages still queued keep no trace after the run)\n")
    gave_up = {k: v for counts in pipeline.correlator_stats().values() for k, v in counts.items()}
    if gave_up:
        w("\ncorrelation notes: " + ", ".join(f"{k}={v}" for k, v in sorted(gave_up.items())) + "\n")
    if c.shapes:
        w("\nmost common unparsed line shapes (addresses, IDs and numbers masked):\n")
        for shape, (count, example) in sorted(c.shapes.items(), key=lambda kv: -kv[1][0])[:20]:
            w(f"{count:>8,}  {shape}\n          e.g. {example[:200]}\n")
    if stats.invalid_utf8 or stats.oversized:
        w(f"\ninput: {stats.invalid_utf8:,} lines with invalid UTF-8 (replaced), "
          f"{stats.oversized:,} lines over 1 MiB (cut)\n")
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
        ops = ops_mod.attach(tailer.pipeline, settings, _resources(settings), mode="tail",
                             sources=[f.path for f in tailer.followers] or ["-"],
                             budget_s=0.0 if lossy else -1.0, lossy=lossy)
        code = tailer.run()
    except (statefile.StateError, ValueError, OSError) as exc:
        sys.stderr.write(f"maillog2otel: {exc}\n")
        return 2
    try:
        ops.close()
    except ExportError as exc:
        sys.stderr.write(f"maillog2otel: {exc}\n")
        code = code or 1
    if not settings.quiet:
        elapsed = time.monotonic() - started
        lines = [*tailer.summary(), f"time      {elapsed:.1f}s"]
        if ops.exporter is not None:
            lines.append(f"logs      {ops.exporter.stats.records:,} log records exported"
                         + (f", {ops.exporter.stats.failed:,} dropped (--lossy)"
                            if ops.exporter.stats.failed else ""))
        sys.stderr.write("".join(f"maillog2otel: {line}\n" for line in lines))
    return code
