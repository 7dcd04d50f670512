"""Runs a command end to end: opens sources and sinks, drives the pipeline, reports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time

from maillog2otel import ops as ops_mod
from maillog2otel import parallel
from maillog2otel.config import Settings
from maillog2otel.export.base import ExportError, NullSink, Sink, make_sinks
from maillog2otel.export.encode import Resources
from maillog2otel.pipeline import Pipeline, backfill_records, stream_framer, warn_untimed
from maillog2otel.sources import SourceError, SourceStats, check_readable, group_streams, read_lines


def _resources(settings: Settings) -> Resources:
    return Resources(service_name=settings.service_name, service_version=settings.service_version,
                     extra=settings.resource_attributes)


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self.total, self.enabled = total_bytes, enabled and sys.stderr.isatty()
        self.next_at = time.monotonic() + 0.5
        self.lines = 0

    def update(self, stats: SourceStats, lines: int) -> None:
        self.lines = lines
        if not self.enabled or time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + 0.5
        frac = min(1.0, stats.bytes / self.total) if self.total else 0.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}%  {lines:,} lines")
        sys.stderr.flush()

    def waiting(self, signal: str, since: float | None, error: str) -> None:
        """The collector refuses (``since``: when it started) or is back (None): reading is paused."""
        if not self.enabled:
            return
        if since is None:
            self.done()
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(since))
        text = f"waiting for collector since {stamp} ({error}); {self.lines:,} lines read"
        sys.stderr.write("\r" + text[:110].ljust(70))
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 110 + "\r")


def _total_bytes(paths: list[str]) -> int:
    total = 0
    for p in paths:
        if p != "-" and not p.endswith(".gz"):
            with contextlib.suppress(OSError):
                total += os.stat(p).st_size
    return total


CHECKPOINT_S = 5.0  # a resumable backfill exports and saves its state at least this often …
CHECKPOINT_ITEMS = 8192  # … and when this many spans or metric points wait for export


def _state_path(paths: list[str], settings: Settings, state: str | None, use_state: bool | None,
                sinks: object) -> str | None:
    """Where a backfill keeps its state, or None. Default: on when files are read (stdin cannot
    be read again from a position) and something is exported over OTLP (a collector accepts data,
    so a re-run would otherwise send it twice)."""
    from maillog2otel import state as statefile

    if use_state is False:
        return None
    if state:
        return state
    otlp = "otlp" in (settings.traces.exporter, settings.metrics.exporter)
    if use_state is None and ("-" in paths or not otlp or sinks is not None):
        return None
    path = statefile.default_state_path(paths, kind="backfill")
    try:  # a default place that cannot be written (no home, read-only) must not stop the backfill
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.access(os.path.dirname(path), os.W_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        sys.stderr.write(f"maillog2otel: cannot keep a state in {os.path.dirname(path)} ({exc}): an "
                         "interrupted run will start again from the first line (--state PATH: elsewhere)\n")
        return None
    return path


def run_backfill(paths: list[str], settings: Settings, *, grammars_dir: str | None = None,
                 sinks: tuple[Sink, Sink] | None = None, linger_s: float = 0.0, state: str | None = None,
                 use_state: bool | None = None, checkpoint_s: float = CHECKPOINT_S,
                 checkpoint_items: int = CHECKPOINT_ITEMS, jobs: int | None = 1) -> int:
    """Read ``paths`` to the end and export. The collector is waited out (``retry_budget_s`` < 0)
    or given a deadline; with a state file (``maillog2otel.resume``) a stopped run continues.
    ``jobs``: processes (maillog2otel.parallel), None for ``auto``; sinks given run in this one."""
    for p in paths:
        try:
            check_readable(p)
        except SourceError as exc:
            sys.stderr.write(f"maillog2otel: {exc}\n")
            return 1
    if state and "-" in paths:
        sys.stderr.write("maillog2otel: --state needs files: stdin cannot be read again from a position\n")
        return 2
    state_path = _state_path(paths, settings, state, use_state, sinks)
    progress = Progress(_total_bytes(paths), not settings.quiet)
    jobs = 1 if sinks is not None else parallel.choose_jobs(jobs, settings)
    if sinks is not None:
        span_sink, metric_sink = sinks
    elif jobs > 1:
        span_sink, metric_sink = parallel.remote_sinks()
    else:
        span_sink, metric_sink = make_sinks(settings.traces, settings.metrics, _resources(settings),
                                            budget_s=settings.retry_budget_s, on_wait=progress.waiting)
    if state_path is not None:
        return _Resumable(paths, settings, span_sink, metric_sink, state_path, progress, grammars_dir,
                          linger_s, checkpoint_s, checkpoint_items, jobs).run()
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
    started = time.monotonic()
    code = 0
    try:
        _feed_all(paths, settings, pipeline, stats, progress, ops)
        pipeline.finish()
        span_sink.close()
        metric_sink.close()
        ops.close(error="; ".join(stats.errors) or None, linger_s=linger_s)
    except ExportError as exc:
        progress.done()
        sys.stderr.write(f"maillog2otel: {exc}\n")
        if "-" not in paths:
            sys.stderr.write("maillog2otel: no state was kept (--no-state, or nothing exported over OTLP): "
                             "running the command again starts from the first line\n")
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


def _feed_all(paths: list[str], settings: Settings, pipeline: Pipeline, stats: SourceStats,
              progress: Progress, ops: ops_mod.Ops) -> None:
    """Every record of ``paths`` into the pipeline, progress every 16384 records. One stream (the
    common case) is read, framed and fed in this one loop: what ``backfill_records`` does, without
    a generator's suspend and resume between each line and the pipeline."""
    streams = group_streams(paths)
    n = 0
    if len(streams) > 1:
        for rec in backfill_records(paths, settings, pipeline, stats):
            pipeline.feed(rec)
            n += 1
            if not n & 0x3FFF:
                progress.update(stats, pipeline.counters.lines)
                ops.update(sources=paths)
        return
    stream = streams[0]
    frame = stream_framer(stream, 0, settings).frame
    feed, unframed = pipeline.feed, pipeline.unframed
    untimed = 0
    for path in stream:
        for text, offset in read_lines(path, stats):
            rec = frame(text, offset)
            if rec is None:
                unframed(text)
                continue
            if rec.ts_inferred:
                untimed += 1
            feed(rec)
            n += 1
            if not n & 0x3FFF:
                progress.update(stats, pipeline.counters.lines)
                ops.update(sources=paths)
    warn_untimed(stream[-1], untimed, n - untimed)


class _Terminated(BaseException):
    """SIGTERM during a resumable backfill: leave as Ctrl-C does, saying how to continue."""


def _terminate(_signum: int, _frame: object) -> None:
    raise _Terminated


class _Resumable:
    """A backfill with a state file: exports only at checkpoints, each followed by the state of
    that moment; continues an interrupted run of the same command (``maillog2otel.resume``)."""

    def __init__(self, paths: list[str], settings: Settings, span_sink: Sink, metric_sink: Sink,
                 state_path: str, progress: Progress, grammars_dir: str | None, linger_s: float,
                 checkpoint_s: float, checkpoint_items: int, jobs: int = 1) -> None:
        from maillog2otel.tail import BufferedSink, _ExportGuard

        self.paths, self.settings, self.state_path = paths, settings, state_path
        self.inner = (span_sink, metric_sink)
        guard = _ExportGuard(threading.Event())  # never stopped: SIGINT/SIGTERM end the process
        self.spans = BufferedSink(span_sink, "spans", guard, flush_at=checkpoint_items)
        self.metrics = BufferedSink(metric_sink, "metrics", guard, flush_at=checkpoint_items)
        self.progress, self.grammars_dir, self.linger_s = progress, grammars_dir, linger_s
        self.checkpoint_s, self.checkpoint_items, self.jobs = checkpoint_s, checkpoint_items, jobs
        self.lock_fd: int | None = None
        self.streams = group_streams(paths)
        self.positions: list[list[int] | None] = [None] * len(self.streams)
        self.stats = SourceStats()
        self.checkpoints = 0
        self.before = {"spans": 0, "points": 0, "lines": 0}  # exported by the interrupted runs
        self.latest: list[tuple | None] = []  # see _run

    def run(self) -> int:
        from maillog2otel import resume
        from maillog2otel import state as statefile

        lock = statefile.StateLock(self.state_path, "backfill")
        try:
            lock.acquire()
            self.lock_fd = lock.fd
            saved = statefile.load(self.state_path, "backfill")
            inputs = [[resume.identify(p) for p in s] for s in self.streams]
            notes: list[str] = []
            if saved is not None:
                resume.check_settings(saved.get("settings", {}), self.settings, self.state_path)
                notes = resume.check_inputs(saved["inputs"], inputs, saved["positions"], self.state_path)
                self._order(saved["inputs"])
        except (statefile.StateError, OSError) as exc:
            lock.release()
            sys.stderr.write(f"maillog2otel: {exc}\n")
            return 2
        self.inputs = inputs
        try:
            return self._run(saved, notes)
        finally:
            lock.release()
            if not os.path.exists(self.state_path):  # nothing to continue: leave no lock file behind
                statefile.remove(self.state_path)

    def _order(self, saved: list[list[dict]]) -> None:
        """The sets in the order the interrupted run had them (positions are by index)."""
        by_first = {os.path.abspath(s[0]): s for s in self.streams}
        self.streams = [by_first[files[0]["path"]] for files in saved]

    def _run(self, saved: dict | None, notes: list[str]) -> int:
        settings = self.settings
        if self.jobs > 1:  # the export stage and its half of each checkpoint in a second process
            remote = parallel.RemotePipeline(
                settings, *self.inner, grammars_dir=self.grammars_dir,  # type: ignore[arg-type]
                resources=_resources(settings),
                resume=parallel.Resume(saved["pipeline"] if saved is not None else None,
                                       self.checkpoint_items, self.lock_fd))
            remote.on_checkpoint = self._saved
            pipeline: Pipeline = remote
        else:
            pipeline = Pipeline(settings, self.spans, self.metrics,  # type: ignore[arg-type]
                                grammars_dir=self.grammars_dir)
        self.pipeline = pipeline
        try:
            return self._read(saved, notes)
        finally:
            _stop_export(pipeline)

    def _read(self, saved: dict | None, notes: list[str]) -> int:
        from maillog2otel import resume

        settings, pipeline = self.settings, self.pipeline
        remote = pipeline if isinstance(pipeline, parallel.RemotePipeline) else None
        framers = None
        if saved is not None:
            pipeline.load_state(saved["pipeline"])
            resume.load_counters(pipeline.counters, self.stats, saved.get("counters", {}))
            self.positions = [list(p) if p is not None else None for p in saved["positions"]]
            framers = saved.get("framers")
            self.before = {k: int(v) for k, v in saved.get("exported", {}).items()}
            self.checkpoints = int(saved.get("checkpoints", 0))
            self.before["lines"] = pipeline.counters.lines
            for note in notes:
                sys.stderr.write(f"maillog2otel: {note}\n")
            sys.stderr.write(f"maillog2otel: continuing the interrupted backfill of {self.state_path}: "
                             f"{pipeline.counters.lines:,} lines were exported before\n")
        try:
            ops = ops_mod.attach(pipeline, settings, _resources(settings), mode="backfill",
                                 sources=self.paths, budget_s=settings.retry_budget_s)
        except OSError as exc:
            sys.stderr.write(f"maillog2otel: {exc}\n")
            return 1
        self.ops = ops
        reader = resume.Reader(self.streams, settings, self.stats, self.positions, framers)
        self.reader = reader
        started = time.monotonic()
        last = started
        # the last item fed from each set: its (file index, offset) become positions at a checkpoint
        # (a list per line for every line would be built for the few a checkpoint reads)
        self.latest = latest = [None] * len(self.streams)
        feed, unframed = pipeline.feed, pipeline.unframed
        code = 0
        old_term = None
        if threading.current_thread() is threading.main_thread():  # SIGTERM: stop as Ctrl-C does
            old_term = signal.signal(signal.SIGTERM, _terminate)
        try:
            for n, item in enumerate(reader.items(), start=1):
                rec = item[4]
                if rec is None:
                    unframed(item[5])
                else:
                    feed(rec)
                latest[item[1]] = item
                if not n & 0x3FF:
                    if remote is not None:  # checkpoints done meanwhile are saved now
                        remote.poll()
                        due = remote.checkpoint_due or (
                            not remote.checkpoint_pending and time.monotonic() - last >= self.checkpoint_s)
                    else:
                        due = self.spans.full or self.metrics.full or \
                            time.monotonic() - last >= self.checkpoint_s
                    if due and resume.resumable(pipeline):
                        self._checkpoint()
                        last = time.monotonic()
                    if not n & 0x3FFF:
                        self.progress.update(self.stats, pipeline.counters.lines)
                        ops.update(sources=self.paths)
            pipeline.finish()
            self._flush()
            for sink in self.inner:
                sink.close()
            ops.close(error="; ".join(self.stats.errors) or None, linger_s=self.linger_s)
        except ExportError as exc:
            self.progress.done()
            sys.stderr.write(f"maillog2otel: {exc}\n")
            self._stopped()
            ops.abort(str(exc))
            code = 1
        except SourceError as exc:
            sys.stderr.write(f"maillog2otel: {exc}\n")
            ops.abort(str(exc))
            code = 1
        except (KeyboardInterrupt, _Terminated) as exc:
            self.progress.done()
            why = "terminated" if isinstance(exc, _Terminated) else "interrupted"
            sys.stderr.write(f"maillog2otel: {why}\n")
            self._stopped()
            ops.abort(why)
            code = 143 if isinstance(exc, _Terminated) else 130
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
        self.progress.done()
        for err in self.stats.errors:
            sys.stderr.write(f"maillog2otel: {err}\n")
            code = code or 1
        rejected = remote.rejected if remote is not None else self.spans.rejected + self.metrics.rejected
        if code == 0:
            from maillog2otel import state as statefile

            statefile.remove(self.state_path)  # done: the same command later reads everything again
            code = 1 if rejected else 0  # rejected for good: a re-run would not change it
        if not self.settings.quiet:
            self._summary(time.monotonic() - started, rejected)
        return code

    def _flush(self) -> None:
        self.spans.flush()
        self.metrics.flush()
        for sink in self.inner:
            sink.flush()

    def _checkpoint(self) -> None:
        """Take the state, export everything emitted before it (blocking while the collector
        refuses), then replace the state file: it never covers data the collector has not taken."""
        from maillog2otel import resume
        from maillog2otel import state as statefile

        snapshot = self.pipeline.save_state()  # also hands pending spans to the buffers
        for si, item in enumerate(self.latest):
            if item is not None:
                self.positions[si] = [item[2], item[3]]
        doc = {
            "paths": self.paths, "inputs": self.inputs, "settings": resume.settings_key(self.settings),
            "positions": [list(p) if p is not None else None for p in self.positions],
            "framers": [statefile.framer_state(f) for f in self.reader.framers],
            "counters": resume.save_counters(self.pipeline.counters, self.stats),
            "pipeline": snapshot,
        }
        if isinstance(self.pipeline, parallel.RemotePipeline):
            # the export process completes the state and exports; _saved writes the file then.
            # Until then this process goes on: its half is copied now, as the file would hold it
            # (a correlator's state may share objects it keeps changing)
            if self.ops.exporter is not None:
                self.ops.exporter.flush()
            self.pipeline.checkpoint(json.loads(json.dumps(doc, ensure_ascii=False)))
            return
        self._flush()
        if self.ops.exporter is not None:  # log records held for their span's IDs go now
            self.ops.exporter.flush()
        self._saved(doc)

    def _saved(self, doc: dict, _done: object = None) -> None:
        """Everything before the checkpoint of ``doc`` is exported: its state replaces the file."""
        from maillog2otel import state as statefile

        self.checkpoints += 1
        doc["exported"] = self._exported()
        doc["checkpoints"] = self.checkpoints
        statefile.save(self.state_path, doc, "backfill")

    def _exported(self) -> dict[str, int]:
        return {"spans": self.before.get("spans", 0) + self.spans.stats.spans,
                "points": self.before.get("points", 0) + self.metrics.stats.points}

    def _stopped(self) -> None:
        """Say how to continue after a deadline or Ctrl-C."""
        import shlex

        if not self.checkpoints:
            sys.stderr.write("maillog2otel: nothing was exported yet; running the same command again "
                             "starts from the first line\n")
            return
        cmd = shlex.join(["maillog2otel", *sys.argv[1:]]) if sys.argv[1:2] == ["backfill"] else \
            "the same maillog2otel backfill command"
        sys.stderr.write(f"maillog2otel: the state {self.state_path} keeps the last exported position; "
                         f"continue with: {cmd}\n")

    def _summary(self, elapsed: float, rejected: int) -> None:
        total = self._exported()
        exported = f"exported  {total['spans']:,} spans, {total['points']:,} metric points" + (
            f" ({self.spans.stats.spans:,} and {self.metrics.stats.points:,} by this run)"
            if self.before.get("lines") else "")
        extra = [f"resume    {self.state_path} ({self.checkpoints:,} checkpoints"
                 + (", removed: the run is complete)" if not os.path.exists(self.state_path) else ")")]
        if rejected:
            extra.append(f"lost      {rejected:,} spans and points rejected by the collector (not retried)")
        _summary(self.pipeline, self.stats, self.spans, self.metrics, elapsed,  # type: ignore[arg-type]
                 self.ops, exported=exported, lines_before=self.before.get("lines", 0), extra=extra)


def _stop_export(pipeline: Pipeline) -> None:
    """With --jobs 2: the export process ends (at once, after an error) when the run does."""
    if isinstance(pipeline, parallel.RemotePipeline):
        pipeline.close()


def _summary(p: Pipeline, stats: SourceStats, span_sink: Sink, metric_sink: Sink, elapsed: float,
             ops: ops_mod.Ops | None = None, *, exported: str | None = None, lines_before: int = 0,
             extra: list[str] | None = None) -> None:
    c = p.counters
    rate = (c.lines - lines_before) / elapsed if elapsed > 0 else 0.0
    lines = [
        f"lines     {c.lines:,} read: {c.parsed:,} understood, {c.known:,} known, {c.foreign:,} foreign, "
        f"{c.unparsed:,} unparsed"
        + (f" ({c.unframed:,} without a log envelope)" if c.unframed else ""),
        f"mail      {c.connections:,} connections, {c.messages:,} messages queued, {c.deliveries:,} delivery "
        f"attempts, {c.rejected:,} rejections",
        (exported or f"exported  {span_sink.stats.spans:,} spans, {metric_sink.stats.points:,} metric points")
        + (f", {ops.exporter.stats.records:,} log records" if ops is not None and ops.exporter else ""),
        f"time      {elapsed:.2f}s, {rate:,.0f} lines/s",
        *(extra or []),
    ]
    if stats.invalid_utf8 or stats.oversized:
        lines.append(f"input     {stats.invalid_utf8:,} lines with invalid UTF-8 (replaced), "
                     f"{stats.oversized:,} lines over 1 MiB (cut)")
    gave_up = {k: v for counts in p.correlator_stats().values() for k, v in counts.items()}
    if gave_up:
        lines.append("state     " + ", ".join(f"{k}={v}" for k, v in sorted(gave_up.items())))
    sys.stderr.write("".join(f"maillog2otel: {line}\n" for line in lines))


class _CountingSink(NullSink):
    """``check``'s span sink: spans are built (so the counts are a backfill's) and counted per MTA."""

    def __init__(self) -> None:
        super().__init__()
        self.by_mta: dict[str, dict[str, int]] = {}

    def spans(self, spans: list) -> None:
        self.stats.spans += len(spans)
        for s in spans:
            d = self.by_mta.setdefault(s.resource[1], {})
            d[s.name] = d.get(s.name, 0) + 1

    def metrics(self, data: list) -> None:
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
    w(f"{c.lines:,} lines: {c.parsed:,} understood, {c.known:,} known (nothing to export), "
      f"{c.foreign:,} foreign (other programs), {c.unparsed:,} unparsed\n")
    own = c.parsed + c.known + c.unparsed
    if own:
        w(f"{(c.parsed + c.known) / own:.2%} of the MTAs' own lines understood or known\n")
    w(f"{c.connections:,} connections, {c.messages:,} messages queued, {c.deliveries:,} delivery attempts, "
      f"{c.rejected:,} rejections reconstructed\n\n")
    w(f"{'mta':<8} {'program':<32} {'understood':>10} {'known':>10} {'unparsed':>10}\n")
    for (mta, prog), (ok, known, bad) in sorted(c.by_program.items()):
        w(f"{mta:<8} {prog:<32} {ok:>10,} {known:>10,} {bad:>10,}\n")
    for prog, n in sorted(foreign.items(), key=lambda kv: -kv[1])[:20]:
        w(f"{'foreign':<8} {prog[:32]:<32} {'':>10} {'':>10} {'':>10}  {n:,} lines of another program\n")
    if c.known_rules:
        w("\nknown lines by rule (recognised, nothing to export):\n")
        for (mta, rule), n in sorted(c.known_rules.items(), key=lambda kv: (-kv[1], kv[0]))[:30]:
            w(f"{mta:<8} {rule:<32} {n:>10,}\n")
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
