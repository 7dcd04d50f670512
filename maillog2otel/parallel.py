"""``backfill --jobs``: the export stage in a second process, with or without a resume state.

Where a full backfill's CPU goes (docs/scaling.md, callgrind per process): reading, framing,
parsing and correlating (with the span attributes and events the correlators build) cost about
1.8× as much as building spans, aggregating metrics, encoding OTLP and sending it, in the pure
Python build; handing the outputs over costs ≈25 % more in all, so two processes gain ≤1.27×.
The cut between the two halves is the correlator's output: ``Connection``, ``Delivery``,
``Count`` and ``MessageDone`` records, about 0.55 per Postfix line.

The main process runs the pipeline up to the correlators (``RemotePipeline``) and, instead of
building telemetry, appends operations to a batch in the order the serial pipeline would have
performed them: the outputs of one correlator call with the log time they were made at, a
metric-interval advance, a new (host, MTA) source, a checkpoint. The export process
(``_export_main``) runs an ordinary ``Pipeline`` whose correlators stay idle and replays each
operation on it (``_outputs``, ``_advance``, ``aggregator.source``), so stitching, metric
intervals, batching and the requests sent are those of a serial run, in the same order: the
output does not depend on ``--jobs``. A pipe with the OS's small buffer between them is the
back-pressure: when the collector is slow or down, the export process stops reading and the main
process waits.

The transfer: a batch of operations is one pickle, the records in it reduced to (class, field
values). Measured against marshal of plain tuples (docs/scaling.md), that costs the same to write
and less to read: the cost is the attribute dictionaries' strings, which both must copy.

With a resume state (``maillog2otel.resume``) the stitcher's and the metrics' state live in the
export process, the correlators' and the read positions in the main one. A checkpoint is an
operation like the others: the main process takes its half of the state (positions, framers,
counters, correlators) when it sends it; the export process, having replayed everything before
it, takes its half (stitcher, metric series), exports everything it holds (blocking while the
collector refuses) and only then answers; the main process writes the state file when the answer
comes. So the file never covers data the collector has not taken, and a run killed at any point
re-sends at most the checkpoint in flight, as with one process. One checkpoint at a time is in
flight; the export process dies with the main one (``PR_SET_PDEATHSIG``), so a killed run sends
nothing more.

More jobs than two buy nothing yet: the correlator is one sequential state machine per stream
set (a session's lines and a message's lines must meet in one place, in log order), so the main
process is the ceiling; docs/scaling.md says what 8 or 16 cores would need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import multiprocessing
import operator
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from maillog2otel.config import Settings
from maillog2otel.export.base import ExportError, NullSink, SinkStats
from maillog2otel.pipeline import Pipeline
from maillog2otel.records import Connection, Count, Delivery, MessageDone, Output, SpanEvent
from maillog2otel.telemetry.metrics import Aggregator
from maillog2otel.telemetry.stitch import Stitcher

BATCH_OPS = 1024  # operations per message: amortises the pickling call and the pipe write

_OUTPUTS, _ADVANCE, _SOURCE, _CHECKPOINT, _FINISH = range(5)


def _reducers() -> dict:
    """Records pickled as (class, field values), ≈40 % cheaper than pickle's default for
    slotted dataclasses (their state goes through ``__getstate__`` and a dict of slot names)."""
    table = {}
    for cls in (Connection, Delivery, Count, MessageDone, SpanEvent):
        values = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))
        table[cls] = lambda o, cls=cls, values=values: (cls, values(o))
    return table


def pack(ops: list[tuple], reducers: dict) -> bytes:
    """One batch of operations as one pickle."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = reducers
    pickler.dump(ops)
    return buf.getvalue()


def parse_jobs(value: str) -> int | None:
    """``--jobs``: a positive number, or ``auto`` (None)."""
    if value.strip().lower() == "auto":
        return None
    n = int(value)
    if n < 1:
        raise ValueError("--jobs takes a number of processes (1 or more) or auto")
    return n


def choose_jobs(requested: int | None, settings: Settings) -> int:
    """How many processes a backfill uses: 1 or 2 (see the module docstring for why not more).

    ``auto`` is one process: on two idle cores (2026-12-07, compiled build, 200k Postfix lines,
    median of 3) two processes took 0.9–1.05× one's wall time for ≈35 % more CPU, and with the other
    core busy 0.78× (docs/scaling.md): the hand-over costs what the second core gains. ``--jobs 2``
    is there for whoever measures otherwise on their machine; the output is the same.
    ``--prometheus`` serves the metric series from the main process, so it keeps the export there."""
    if getattr(settings, "prometheus", None):
        return 1
    if settings.traces.exporter == "none" and settings.metrics.exporter == "none":
        return 1  # nothing after the correlator worth a process
    if requested is None:
        return 1
    return min(requested, 2)


class _ForwardingAggregator(Aggregator):
    """The main process's aggregator: new sources go to the export process; it keeps no series,
    only the interval boundary, so the main process knows when the next advance is due."""

    def __init__(self, owner: RemotePipeline, interval_ns: int) -> None:
        super().__init__(interval_ns)
        self.owner = owner

    def source(self, host: str, mta: str) -> None:
        self.owner.op((_SOURCE, host, mta))


class _RemoteSink(NullSink):
    """Stands in for a sink in the main process; the export process's counts land in ``stats``."""

    def spans(self, spans: list) -> None:
        raise AssertionError("spans are built in the export process")

    def metrics(self, data: list) -> None:
        raise AssertionError("metric points are built in the export process")


def remote_sinks() -> tuple[_RemoteSink, _RemoteSink]:
    return _RemoteSink(), _RemoteSink()


@dataclasses.dataclass
class Resume:
    """What the export process of a resumable backfill needs: the saved pipeline state to start
    from (None: a new run), how many spans or points it holds before asking for a checkpoint, and
    the state lock's descriptor (closed there, so only the main process holds the lock)."""

    saved: dict | None
    flush_at: int
    lock_fd: int | None = None


@dataclasses.dataclass
class Exported:
    """The export process's answer to a checkpoint or the finish."""

    seq: int
    state: dict  # its half of Pipeline.save_state: "stitch", "aggregator"
    spans: SinkStats
    metrics: SinkStats
    rejected: int = 0  # spans and points the collector refused for good (BufferedSink.rejected)


def _copy_stats(into: SinkStats, src: SinkStats) -> None:
    for f in dataclasses.fields(SinkStats):
        setattr(into, f.name, getattr(src, f.name))


class RemotePipeline(Pipeline):
    """The pipeline up to the correlators; telemetry is built and exported by a second process."""

    def __init__(self, settings: Settings, span_sink: _RemoteSink, metric_sink: _RemoteSink, *,
                 grammars_dir: str | None = None, resources: Any = None,
                 resume: Resume | None = None) -> None:
        super().__init__(settings, span_sink, metric_sink, grammars_dir=grammars_dir)  # type: ignore[arg-type]
        self.remote_spans, self.remote_metrics = span_sink, metric_sink
        self.aggregator = _ForwardingAggregator(self, self.aggregator.interval_ns)
        self._ops: list[tuple] = []
        self._reducers = _reducers()
        self.rejected = 0
        self._seq = 0
        self._waiting: dict[int, dict] = {}  # checkpoint number -> the main process's half of its state
        self.on_checkpoint: Callable[[dict, Exported], None] | None = None
        # fork where there is one: the child starts in milliseconds with the modules loaded; it is
        # started before any thread of ours exists (ops.attach comes after the pipeline)
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._full = ctx.RawValue("b", 0)  # the export process holds enough for a checkpoint
        self._recv_ops, self._send_ops = ctx.Pipe(duplex=False)
        self._recv_result, self._send_result = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_export_main, name="maillog2otel-export", daemon=True,
                                 args=(settings, grammars_dir, resources, self._recv_ops, self._send_result,
                                       resume, self._full, os.getpid()))
        self._proc.start()
        self._recv_ops.close()  # ours is the writing end only: a dead child then breaks the pipe
        self._send_result.close()

    # --- what the serial pipeline would do in this process, recorded instead ----------------

    def op(self, item: tuple) -> None:
        ops = self._ops
        ops.append(item)
        if len(ops) >= BATCH_OPS:
            self._send()

    def _outputs(self, outs: Iterable[Output]) -> None:
        outs = list(outs)
        c = self.counters
        for o in outs:  # the summary's counts, as Pipeline._outputs keeps them
            t = type(o)
            if t is Connection:
                c.connections += 1
            elif t is Delivery:
                c.deliveries += 1
            elif t is Count:
                if o.result == "queued":  # type: ignore[union-attr]
                    c.messages += 1
                elif o.result == "rejected":  # type: ignore[union-attr]
                    c.rejected += 1
            elif t is not MessageDone:  # a subclass: counted as the serial pipeline counts it
                if isinstance(o, Connection):
                    c.connections += 1
                elif isinstance(o, Delivery):
                    c.deliveries += 1
                elif isinstance(o, Count):
                    if o.result == "queued":
                        c.messages += 1
                    elif o.result == "rejected":
                        c.rejected += 1
        self.op((_OUTPUTS, outs, c.last_ns))

    def _advance(self, ts: int) -> None:
        self.op((_ADVANCE, ts))
        self.aggregator.advance(ts)  # no series here: only the boundary moves
        self._next_bucket = self.aggregator.bucket_end

    def tick(self, now_ns: int) -> None:  # pragma: no cover - tail never uses this class
        raise NotImplementedError("the export process serves backfill only")

    def load_state(self, state: dict) -> None:
        """The correlators' state; the stitcher's and the series are the export process's (it
        loads the same state), here only the interval boundary."""
        super().load_state(state)
        bucket_end = self.aggregator.bucket_end
        self.aggregator = _ForwardingAggregator(self, self.aggregator.interval_ns)
        self.aggregator.bucket_end = bucket_end
        self.stitcher = Stitcher()

    # --- checkpoints (resumable backfill) -----------------------------------------------------

    @property
    def checkpoint_due(self) -> bool:
        """The export process holds enough for a checkpoint, and none is in flight."""
        return bool(self._full.value) and not self._waiting

    @property
    def checkpoint_pending(self) -> bool:
        return bool(self._waiting)

    def checkpoint(self, doc: dict) -> None:
        """Ask for a checkpoint after everything sent so far; ``doc`` is the main process's half
        of the state file (its "pipeline" holds the correlators' state), completed and handed to
        ``on_checkpoint`` when the export process has exported everything before it."""
        self._seq += 1
        self._waiting[self._seq] = doc
        self._ops.append((_CHECKPOINT, self._seq))
        self._send()  # now: the export process may be idle, waiting for the rest of a batch

    def poll(self) -> None:
        """Take the export process's answers that arrived (checkpoints done, or its error)."""
        while self._recv_result.poll():
            try:
                reply = self._recv_result.recv()
            except EOFError:
                self._raise_from_child()
            self._reply(reply)

    def _reply(self, reply: tuple) -> None:
        if reply[0] == "error":
            self._proc.join(5)
            kind, text = reply[1], reply[2]
            if kind == "ExportError":
                raise ExportError(text)
            raise RuntimeError(f"export process: {kind}: {text}")
        done: Exported = reply[1]
        _copy_stats(self.remote_spans.stats, done.spans)
        _copy_stats(self.remote_metrics.stats, done.metrics)
        self.rejected = done.rejected
        if reply[0] == "checkpoint":
            doc = self._waiting.pop(done.seq)
            doc["pipeline"].update(done.state)
            if self.on_checkpoint is not None:
                self.on_checkpoint(doc, done)

    # --- the pipe ---------------------------------------------------------------------------

    def _send(self) -> None:
        data = pack(self._ops, self._reducers)
        self._ops = []
        try:
            self._send_ops.send_bytes(data)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self._raise_from_child()

    def _raise_from_child(self) -> None:
        """The export process stopped early: say why, as the serial run would have."""
        reply: tuple = ("error", "RuntimeError", "the export process ended without a word")
        with contextlib.suppress(EOFError, OSError):
            while self._recv_result.poll(30):
                got = self._recv_result.recv()
                if got[0] == "error":
                    reply = got
                    break
                self._reply(got)  # a checkpoint that completed before the error still counts
        self._reply(reply)

    def finish(self) -> None:
        super().finish()  # correlators' last outputs are recorded like any others
        self._ops.append((_FINISH, self.counters.last_ns))
        self._send()
        while True:
            try:
                reply = self._recv_result.recv()
            except EOFError:
                self._raise_from_child()
                return
            self._reply(reply)
            if reply[0] == "done":
                break
        self._proc.join(30)

    def close(self) -> None:
        """After an error or a stop in the main process: the export process stops without
        exporting more (it reads the end of the pipe, or is terminated if stuck in an export)."""
        with contextlib.suppress(OSError):
            self._send_ops.close()
        if self._proc.is_alive():
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when the main one dies (SIGKILL included), so a killed
    backfill sends nothing after its last checkpoint's data. Elsewhere the end of the pipe does."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # died before the request took effect
        os._exit(1)


class _Replies:
    """The export process's answers, written by a thread: a checkpoint's state may be larger than
    the pipe's buffer, and the main process reads answers only between lines, so writing it here
    could block while the main process blocks writing the next batch to us. Each answer is
    pickled when it is given: the state holds live objects (a histogram's counts) that the
    replay goes on changing."""

    def __init__(self, out: Any) -> None:
        import queue

        self.out = out
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="replies", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.q.get()) is not None:
            try:
                self.out.send_bytes(data)
            except OSError:  # the main process is gone
                return

    def send(self, item: tuple) -> None:
        self.q.put(pickle.dumps(item, pickle.HIGHEST_PROTOCOL))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()


def _export_main(settings: Settings, grammars_dir: str | None, resources: Any, ops_in: Any,
                 result_pipe: Any, resume: Resume | None, full: Any, parent: int) -> None:
    """The export process: replay the main process's operations on an ordinary pipeline."""
    from maillog2otel.export.base import make_sinks

    result_out = _Replies(result_pipe)
    try:
        _replay(settings, grammars_dir, resources, ops_in, result_out, resume, full, parent, make_sinks)
    finally:
        result_out.close()
        sys.stdout.flush()


def _replay(settings: Settings, grammars_dir: str | None, resources: Any, ops_in: Any, result_out: _Replies,
            resume: Resume | None, full: Any, parent: int, make_sinks: Callable) -> None:

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the main one decides
    if resume is not None and resume.lock_fd is not None:
        with contextlib.suppress(OSError):
            os.close(resume.lock_fd)
    try:
        span_sink, metric_sink = make_sinks(settings.traces, settings.metrics, resources,
                                            budget_s=settings.retry_budget_s)
        inner = (span_sink, metric_sink)
        buffers = None
        if resume is not None:
            from maillog2otel.tail import BufferedSink, _ExportGuard

            guard = _ExportGuard(threading.Event())  # never stopped: the main process ends this one
            buffers = (BufferedSink(span_sink, "spans", guard, flush_at=resume.flush_at),
                       BufferedSink(metric_sink, "metrics", guard, flush_at=resume.flush_at))
            span_sink, metric_sink = buffers  # type: ignore[assignment]
        p = Pipeline(settings, span_sink, metric_sink, grammars_dir=grammars_dir)
        if resume is not None and resume.saved is not None:
            # not the correlators': they stay idle here, and finish() would end their open
            # sessions a second time
            p.load_state({**resume.saved, "correlators": {}})

        def exported(seq: int, state: dict) -> Exported:
            return Exported(seq, state, inner[0].stats, inner[1].stats,
                            sum(b.rejected for b in buffers) if buffers else 0)

        def flush() -> None:
            if buffers is not None:
                for b in buffers:
                    b.flush()
            for sink in inner:
                sink.flush()

        c = p.counters
        outputs, advance, source = p._outputs, p._advance, p.aggregator.source
        while True:
            try:
                batch = pickle.loads(ops_in.recv_bytes())
            except EOFError:
                return  # the main process gave up: export nothing more
            for op in batch:
                kind = op[0]
                if kind == _OUTPUTS:
                    c.last_ns = op[2]
                    outputs(op[1])
                elif kind == _ADVANCE:
                    advance(op[1])
                elif kind == _SOURCE:
                    p._seen_sources.add((op[1], op[2]))
                    source(op[1], op[2])
                elif kind == _CHECKPOINT:  # as runner._Resumable._checkpoint, this half of it
                    snapshot = p.save_state()  # also hands pending spans to the buffers
                    flush()
                    result_out.send(("checkpoint", exported(op[1], {
                        "stitch": snapshot["stitch"], "aggregator": snapshot["aggregator"]})))
                else:  # _FINISH
                    c.last_ns = op[1]
                    p.finish()
                    flush()
                    for sink in inner:
                        sink.close()
                    sys.stdout.flush()  # console exporter
                    result_out.send(("done", exported(0, {})))
                    return
            if buffers is not None:
                full.value = buffers[0].full or buffers[1].full
    except ExportError as exc:
        result_out.send(("error", "ExportError", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported to the main process, which raises it
        result_out.send(("error", type(exc).__name__, str(exc)))
