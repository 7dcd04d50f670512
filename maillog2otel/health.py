"""``--prometheus HOST:PORT``: ``/metrics`` for Prometheus and ``/health``, ``/ready``, ``/live``.

One small HTTP server in a daemon thread. The reading loop (``backfill`` or ``tail``) calls
``update(pipeline)`` now and then; that renders the exposition text and a health snapshot on the
loop's own thread (so the server never touches state that is being changed) and the server hands
out the latest copy. The exporters' state (``ok``, ``retrying``, ``failed``) is read live from
their stats, so ``/ready`` turns 503 while the loop is blocked retrying a collector that is down.

    ops = OpsServer("127.0.0.1:9464", mode="tail", sources=paths)
    ops.start()
    ...  ops.update(pipeline)   # after each batch of lines / tick
    ops.stop()

- ``/live``: 200 while the server runs and the loop has reported within ``stall_s`` (or is
  waiting on a collector); 503 when it seems stuck.
- ``/ready``: 200 once the loop has reported and no exporter is retrying or has failed; else 503.
- ``/health``: the whole report (below), 200 when ready, else 503.

Report: ``status``, ``mode``, ``version``, ``uptime_s``, ``sources`` (the paths followed or read),
``lines`` (read, parsed, known, foreign, unparsed), ``last_log_time`` and ``lag_s`` (wall time minus the
newest line's log time: seconds behind in ``tail``; in a ``backfill`` it is the age of the log),
``open`` (sessions and messages per MTA), ``exporters`` (per signal: exporter, endpoint without
credentials, state, requests, retries, exported, last error), ``last_error``. Header values (API
keys) are never part of it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from maillog2otel import __version__
from maillog2otel.config import display_endpoint
from maillog2otel.export.prometheus import CONTENT_TYPE, render

log = logging.getLogger("maillog2otel")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all interfaces) -> (host, port)."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdecimal() or int(port) > 65535:
        raise ValueError(f"--prometheus wants HOST:PORT (e.g. 127.0.0.1:9464), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


safe_endpoint = display_endpoint


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    when = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unwrap(sink: Any) -> Any:
    for _ in range(6):  # redaction, tail's buffer … around the real sink
        if hasattr(sink, "target"):
            break
        inner = getattr(sink, "inner", None) or getattr(sink, "sink", None)
        if inner is None:
            break
        sink = inner
    return sink


def _exporter_report(sink: Any, signal: str) -> dict[str, Any]:
    real = _unwrap(sink)
    stats = getattr(sink, "stats", None) or getattr(real, "stats", None)
    target = getattr(real, "target", None)
    kind = {"NullSink": "none", "ConsoleSpans": "console",
            "ConsoleMetrics": "console"}.get(type(real).__name__)
    report: dict[str, Any] = {"exporter": getattr(target, "exporter", None) or getattr(real, "exporter", None)
                              or kind or type(real).__name__}
    if target is not None:
        report["endpoint"] = safe_endpoint(target.endpoint)
        report["protocol"] = target.protocol
    if stats is not None:
        report["state"] = getattr(stats, "state", "ok")
        for key in ("requests", "retries"):
            report[key] = getattr(stats, key, 0)
        report["exported"] = {"traces": getattr(stats, "spans", 0), "metrics": getattr(stats, "points", 0),
                              "logs": getattr(stats, "records", 0)}[signal]
        if getattr(stats, "last_error", ""):
            report["last_error"] = stats.last_error
    return report


class OpsServer:
    """Serves ``/metrics`` and the health endpoints for one run; see the module's docstring."""

    def __init__(self, listen: str, *, mode: str = "backfill", sources: Iterable[Any] = (),
                 stall_s: float = 300.0, min_interval_s: float = 1.0) -> None:
        self.host, self._port = parse_listen(listen)
        self.mode, self.stall_s, self.min_interval_s = mode, stall_s, min_interval_s
        self.sources = list(sources)
        self.started_ns = time.time_ns()
        self._lock = threading.Lock()
        self._metrics = b"# no data yet\n"
        self._snapshot: dict[str, Any] = {}
        self._sinks: dict[str, Any] = {}
        self._updated_mono: float | None = None
        self._last_render = 0.0
        self._last_ns: int | None = None
        self.last_error = ""
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1] if self.server is not None else self._port

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        ops = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE, ops.metrics_text())
                elif path in ("/health", "/ready", "/live"):
                    code, doc = ops.check(path[1:])
                    self._send(code, "application/json", json.dumps(doc, indent=1).encode() + b"\n")
                else:
                    self._send(404, "text/plain", b"try /metrics, /health, /ready or /live\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        try:
            self.server = Server((self.host, self._port), Handler)
        except OSError as exc:
            raise OSError(
                f"--prometheus {self.host}:{self._port}: cannot listen: {exc.strerror or exc}") from None
        self.thread = threading.Thread(target=self.server.serve_forever, name="maillog2otel-ops", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # --- from the reading loop -------------------------------------------------------------------

    def update(self, pipeline: Any, *, logs: Any = None, sources: Iterable[Any] | None = None,
               error: str | None = None, force: bool = False) -> None:
        """Take a snapshot of ``pipeline`` (at most every ``min_interval_s`` unless ``force``)."""
        now = time.monotonic()
        self._updated_mono = now
        if sources is not None:
            self.sources = list(sources)
        if error:
            self.last_error = error
        self._sinks = {"traces": pipeline.span_sink, "metrics": pipeline.metric_sink}
        if logs is not None:
            self._sinks["logs"] = logs
        if not force and now - self._last_render < self.min_interval_s:
            return
        self._last_render = now
        from maillog2otel.telemetry import redact

        exported = {}
        for signal, key in (("traces", "spans"), ("metrics", "points"), ("logs", "records")):
            sink = self._sinks.get(signal)
            if sink is not None:
                exported[{"traces": "spans", "metrics": "metric_points", "logs": "log_records"}[signal]] = \
                    getattr(sink.stats, key, 0)
        text = render(pipeline.aggregator, pipeline.counters, exported,
                      redact.from_settings(pipeline.settings))
        c = pipeline.counters
        snapshot = {
            "lines": {"read": c.lines, "parsed": c.parsed, "known": c.known, "foreign": c.foreign,
                      "unparsed": c.unparsed},
            "mail": {"connections": c.connections, "messages": c.messages, "deliveries": c.deliveries,
                     "rejected": c.rejected},
            "open": pipeline.open_counts(),
        }
        with self._lock:
            self._metrics = text.encode()
            self._snapshot = snapshot
            self._last_ns = c.last_ns

    # --- from the server thread -------------------------------------------------------------------

    def metrics_text(self) -> bytes:
        with self._lock:
            return self._metrics

    def report(self) -> dict[str, Any]:
        with self._lock:
            snap = dict(self._snapshot)
            last_ns = self._last_ns
        exporters = {signal: _exporter_report(sink, signal) for signal, sink in list(self._sinks.items())}
        states = [e.get("state", "ok") for e in exporters.values()]
        errors = [e["last_error"] for e in exporters.values() if e.get("last_error")]
        if "failed" in states:
            status = "failing"
        elif "retrying" in states:
            status = "degraded"
        elif self._updated_mono is None:
            status = "starting"
        else:
            status = "ok"
        wall = time.time_ns()
        doc: dict[str, Any] = {
            "status": status, "mode": self.mode, "version": __version__,
            "uptime_s": round((wall - self.started_ns) / 1e9, 3),
            "sources": self.sources,
            **snap,
            "last_log_time": _iso(last_ns),
            "lag_s": round((wall - last_ns) / 1e9, 3) if last_ns is not None else None,
            "last_update_s_ago": round(time.monotonic() - self._updated_mono, 3)
            if self._updated_mono is not None else None,
            "exporters": exporters,
            "last_error": self.last_error or (errors[-1] if errors else None),
        }
        return doc

    def check(self, which: str) -> tuple[int, dict[str, Any]]:
        doc = self.report()
        waiting = doc["status"] == "degraded"
        if which == "live":
            age = doc["last_update_s_ago"]
            alive = age is None or age < self.stall_s or waiting
            return (200 if alive else 503), {"status": "alive" if alive else "stalled",
                                             "last_update_s_ago": age}
        ready = doc["status"] == "ok"
        if which == "ready":
            return (200 if ready else 503), {"status": doc["status"], "last_error": doc["last_error"]}
        return (200 if ready else 503), doc


def make_ops_server(settings: Any, *, mode: str, sources: Iterable[Any] = ()) -> OpsServer | None:
    """The server ``settings.prometheus`` asks for (started), or None."""
    listen = getattr(settings, "prometheus", None)
    if not listen:
        return None
    ops = OpsServer(listen, mode=mode, sources=sources)
    ops.start()
    return ops
