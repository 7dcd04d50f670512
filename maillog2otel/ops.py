"""The operations features a run switches on: ``--logs`` (log records) and ``--prometheus``
(``/metrics`` and health), hooked into a ``Pipeline`` as its line hook so ``backfill`` and ``tail``
get them the same way:

    ops = ops_mod.attach(pipeline, settings, resources, mode="tail", sources=paths, budget_s=-1)
    ...                            # the pipeline calls ops.line() per line, ops.tick() per tick
    ops.close()                    # after pipeline.finish(): last log records out, server stopped

Redaction and reject classes need no call: the pipeline applies them from the settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from maillog2otel.export.encode import Resources
from maillog2otel.export.logs import LineExporter, make_line_exporter
from maillog2otel.health import OpsServer
from maillog2otel.records import Event, Record


class Ops:
    """The pipeline's line hook when ``--logs`` and/or ``--prometheus`` are on."""

    def __init__(self, pipeline: Any, exporter: LineExporter | None, server: OpsServer | None) -> None:
        self.pipeline, self.exporter, self.server = pipeline, exporter, server
        self._n = 0

    @property
    def active(self) -> bool:
        return self.exporter is not None or self.server is not None

    def line(self, rec: Record, ev: Event | None, mta: str) -> None:
        if self.exporter is not None:
            self.exporter.line(rec, ev, mta)
        if self.server is not None:
            self._n += 1
            if not self._n & 0x3FF:
                self.update()

    def tick(self, now_ns: int) -> None:
        if self.exporter is not None:
            self.exporter.tick(now_ns)
        self.update()

    def update(self, *, sources: Iterable[Any] | None = None, error: str | None = None,
               force: bool = False) -> None:
        if self.server is not None:
            self.server.update(self.pipeline, logs=self.exporter, sources=sources, error=error, force=force)

    def close(self, *, error: str | None = None, linger_s: float = 0.0) -> None:
        """Send the held log records (may raise ``ExportError``), publish the final values, keep
        serving ``linger_s`` seconds (so a scrape sees them), stop the server."""
        try:
            if self.exporter is not None:
                self.exporter.close()
        finally:
            if self.server is not None:
                self.update(error=error, force=True)
                if linger_s > 0:
                    time.sleep(linger_s)
                self.server.stop()


    def abort(self, error: str) -> None:
        """The run failed: publish the error and stop serving (held log records are not sent)."""
        if self.server is not None:
            self.update(error=error, force=True)
            self.server.stop()


def attach(pipeline: Any, settings: Any, resources: Resources, *, mode: str, sources: Iterable[Any] = (),
           budget_s: float = 120.0, lossy: bool = False) -> Ops:
    """Build what ``settings`` asks for (``logs``, ``prometheus``) and hook it into ``pipeline``.
    Starting the server can raise ``OSError`` (address in use) with a sentence for the user."""
    from maillog2otel.health import make_ops_server
    from maillog2otel.telemetry import redact

    target = getattr(settings, "logs", None)
    exporter = None
    if target is not None:
        exporter = make_line_exporter(target, resources, budget_s=budget_s,
                                      redactor=redact.from_settings(settings), lossy=lossy)
    server = make_ops_server(settings, mode=mode, sources=sources)
    ops = Ops(pipeline, exporter, server)
    if ops.active:
        pipeline.log_sink = ops
        if server is not None:
            pipeline.metrics_on = True  # /metrics needs the series even when OTLP metrics are off
            ops.update(force=True)
    return ops
