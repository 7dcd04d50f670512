"""``backfill --jobs``: the export stage in a second process.

Where a full backfill's CPU goes (benchmarks/README.md, ``stages.py``): reading, framing, parsing
and correlating cost about as much as building spans, aggregating metrics, encoding OTLP and
sending it. The cut between the two halves is the correlator's output: ``Connection``,
``Delivery``, ``Count`` and ``MessageDone`` records, about 0.55 per Postfix line, which pickle at
≈3 µs per line (≈3.9 µs per line for parsed events, which would move less work for more copying).

The main process runs the pipeline up to the correlators (``RemotePipeline``) and, instead of
building telemetry, appends three kinds of operations to a batch in the order the serial pipeline
would have performed them: the outputs of one correlator call with the log time they were made
at, a metric-interval advance, a new (host, MTA) source. The export process (``_export_main``)
runs an ordinary ``Pipeline`` whose correlators stay idle and replays each operation on it
(``_outputs``, ``_advance``, ``aggregator.source``), so stitching, metric intervals, batching and
the requests sent are those of a serial run, in the same order: the output does not depend on
``--jobs``. A pipe with the OS's small buffer between them is the back-pressure: when the
collector is slow or down, the export process stops reading and the main process waits.

More jobs than two buy nothing yet: the correlator is one sequential state machine per stream
set (a session's lines and a message's lines must meet in one place, in log order), so the main
process is the ceiling; see docs/scaling.md for running one process per host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import multiprocessing
import operator
import os
import pickle
import sys
from collections.abc import Iterable
from typing import Any

from maillog2otel.config import Settings
from maillog2otel.export.base import ExportError, NullSink
from maillog2otel.pipeline import Pipeline
from maillog2otel.records import Connection, Count, Delivery, MessageDone, Output, SpanEvent
from maillog2otel.telemetry.metrics import Aggregator

AUTO_MIN_BYTES = 64 << 20  # below this a second process's start-up (≈0.3 s CPU) outweighs its gain
BATCH_OPS = 512  # operations per pickled message: amortises the pickling call and the pipe write

_OUTPUTS, _ADVANCE, _SOURCE = 0, 1, 2


def _reducers() -> dict:
    """Pickle the records as (class, field values): ≈40 % cheaper than the default for slotted
    dataclasses (their state goes through ``__getstate__`` and a dict of slot names)."""
    table = {}
    for cls in (Connection, Delivery, Count, MessageDone, SpanEvent):
        values = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))
        table[cls] = lambda o, cls=cls, values=values: (cls, values(o))
    return table


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_jobs(value: str) -> int | None:
    """``--jobs``: a positive number, or ``auto`` (None)."""
    if value.strip().lower() == "auto":
        return None
    n = int(value)
    if n < 1:
        raise ValueError("--jobs takes a number of processes (1 or more) or auto")
    return n


def choose_jobs(requested: int | None, settings: Settings, total_bytes: int) -> int:
    """How many processes a backfill uses: 1 or 2 (see the module docstring for why not more).

    ``auto`` takes the second process only where it pays: at least two usable cores of which one
    is idle (by the load average), an input large enough to amortise starting it, and something
    to export. ``--prometheus`` serves the
    metric series from the main process, so it keeps the export there too."""
    if getattr(settings, "prometheus", None):
        return 1
    if settings.traces.exporter == "none" and settings.metrics.exporter == "none":
        return 1  # nothing after the correlator worth a process
    if requested is None:
        n = cpus()
        # a second process only pays on a core nobody else is using: on a busy machine the two
        # halves compete for one core and the pickling between them is pure cost
        idle = n - os.getloadavg()[0] if hasattr(os, "getloadavg") else n
        return 2 if n >= 2 and idle >= 1.0 and total_bytes >= AUTO_MIN_BYTES else 1
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
    """Stands in for a sink in the main process; the export process fills ``stats`` at the end."""

    def spans(self, spans: list) -> None:
        raise AssertionError("spans are built in the export process")

    def metrics(self, data: list) -> None:
        raise AssertionError("metric points are built in the export process")


def remote_sinks() -> tuple[_RemoteSink, _RemoteSink]:
    return _RemoteSink(), _RemoteSink()


class RemotePipeline(Pipeline):
    """The pipeline up to the correlators; telemetry is built and exported by a second process."""

    def __init__(self, settings: Settings, span_sink: _RemoteSink, metric_sink: _RemoteSink, *,
                 grammars_dir: str | None = None, resources: Any = None) -> None:
        super().__init__(settings, span_sink, metric_sink, grammars_dir=grammars_dir)  # type: ignore[arg-type]
        self.remote_spans, self.remote_metrics = span_sink, metric_sink
        self.aggregator = _ForwardingAggregator(self, self.aggregator.interval_ns)
        self._ops: list[tuple] = []
        self._buf = io.BytesIO()
        self._reducers = _reducers()
        # fork where there is one: the child starts in milliseconds with the modules loaded; it is
        # started before any thread of ours exists (ops.attach comes after the pipeline)
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._recv_ops, self._send_ops = ctx.Pipe(duplex=False)
        self._recv_result, self._send_result = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_export_main, name="maillog2otel-export", daemon=True,
                                 args=(settings, grammars_dir, resources, self._recv_ops, self._send_result))
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

    # --- the pipe ---------------------------------------------------------------------------

    def _send(self) -> None:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        pickler = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = self._reducers
        pickler.dump(self._ops)
        self._ops = []
        data = buf.getvalue()
        try:
            self._send_ops.send_bytes(data)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self._raise_from_child()

    def _raise_from_child(self) -> None:
        """The export process stopped early: say why, as the serial run would have."""
        reply: tuple = ("error", "RuntimeError", "the export process ended without a word")
        with contextlib.suppress(EOFError, OSError):
            if self._recv_result.poll(30):
                reply = self._recv_result.recv()
        self._proc.join(5)
        if reply[0] == "error":
            kind, text = reply[1], reply[2]
            if kind == "ExportError":
                raise ExportError(text)
            raise RuntimeError(f"export process: {kind}: {text}")
        raise RuntimeError(f"export process: unexpected reply {reply[0]!r}")

    def finish(self) -> None:
        super().finish()  # correlators' last outputs are recorded like any others
        self._ops.append(("finish", self.counters.last_ns))
        self._send()
        try:
            reply = self._recv_result.recv()
        except EOFError:
            self._raise_from_child()
            return
        if reply[0] != "done":
            kind, text = reply[1], reply[2]
            if kind == "ExportError":
                raise ExportError(text)
            raise RuntimeError(f"export process: {kind}: {text}")
        self.remote_spans.stats, self.remote_metrics.stats = reply[1], reply[2]
        self._proc.join(30)

    def close(self) -> None:
        """After an error in the main process: the export process stops without exporting more."""
        with contextlib.suppress(OSError):
            self._send_ops.close()
        if self._proc.is_alive():
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()


def _export_main(settings: Settings, grammars_dir: str | None, resources: Any, ops_in: Any,
                 result_out: Any) -> None:
    """The export process: replay the main process's operations on an ordinary pipeline."""
    from maillog2otel.export.base import make_sinks

    try:
        span_sink, metric_sink = make_sinks(settings.traces, settings.metrics, resources,
                                            budget_s=settings.retry_budget_s)
        p = Pipeline(settings, span_sink, metric_sink, grammars_dir=grammars_dir)
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
                else:  # "finish"
                    c.last_ns = op[1]
                    p.finish()
                    span_sink.close()
                    metric_sink.close()
                    sys.stdout.flush()  # console exporter
                    result_out.send(("done", span_sink.stats, metric_sink.stats))
                    return
    except ExportError as exc:
        result_out.send(("error", "ExportError", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported to the main process, which raises it
        result_out.send(("error", type(exc).__name__, str(exc)))
    finally:
        sys.stdout.flush()
