#!/usr/bin/env python3
"""A local OTLP/HTTP receiver for benchmarks: decodes every request with opentelemetry-proto,
counts what it got, and discards it.

    python benchmarks/otlp_sink.py [--port 0]      # prints "LISTENING http://127.0.0.1:PORT"

It binds 127.0.0.1 only. Endpoints: ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` (protobuf,
or JSON with ``Content-Type: application/json``; ``Content-Encoding: gzip|deflate`` honoured),
answering 200 with the empty Export…ServiceResponse as the OTLP specification asks. ``GET /stats``
returns the counts as JSON (``?reset=1`` zeroes them after reading). It runs until SIGTERM/SIGINT
or ``--max-seconds`` (a safety bound, default 3 h), then prints its final counts on stderr.

Decoding is real work (it is what a collector does first), so the sink's CPU time competes with
the exporter's on a 2-core machine: run.py reports it beside each run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_LOCK = threading.Lock()


def _zero() -> dict:
    return {
        "requests": 0,
        "bytes": 0,
        "spans": 0,
        "metric_points": 0,
        "metrics": 0,
        "log_records": 0,
        "errors": 0,
        "decode_s": 0.0,
        "first_request": None,
        "last_request": None,
    }


STATS = _zero()


def _count_traces(req: ExportTraceServiceRequest) -> dict:
    return {"spans": sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)}


def _count_metrics(req: ExportMetricsServiceRequest) -> dict:
    points = metrics = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                metrics += 1
                kind = m.WhichOneof("data")
                if kind is not None:
                    points += len(getattr(m, kind).data_points)
    return {"metric_points": points, "metrics": metrics}


def _count_logs(req: ExportLogsServiceRequest) -> dict:
    return {"log_records": sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)}


ROUTES = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse, _count_traces),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse, _count_metrics),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse, _count_logs),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the OTLP exporters expect
    server_version = "otlp-sink/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/stats":
            self._reply(404, b"not found\n", "text/plain")
            return
        with _LOCK:
            body = json.dumps(STATS).encode()
            if parse_qs(url.query).get("reset") == ["1"]:
                STATS.clear()
                STATS.update(_zero())
        self._reply(200, body, "application/json")

    def do_POST(self):
        path = urlparse(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        route = ROUTES.get(path)
        if route is None:
            self._reply(404, b"not found\n", "text/plain")
            return
        req_cls, resp_cls, count = route
        t0 = time.perf_counter()
        try:
            enc = (self.headers.get("Content-Encoding") or "").lower()
            data = (
                gzip.decompress(raw) if enc == "gzip" else zlib.decompress(raw) if enc == "deflate" else raw
            )
            is_json = (self.headers.get("Content-Type") or "").startswith("application/json")
            req = req_cls()
            if is_json:
                json_format.Parse(data, req, ignore_unknown_fields=True)
            else:
                req.ParseFromString(data)
            counts = count(req)
        except Exception as exc:  # noqa: BLE001 — a malformed body is the client's bug: tell it, count it
            with _LOCK:
                STATS["errors"] += 1
            self._reply(400, f"cannot decode: {exc}\n".encode(), "text/plain")
            return
        dt = time.perf_counter() - t0
        now = time.time()
        with _LOCK:
            STATS["requests"] += 1
            STATS["bytes"] += len(raw)
            STATS["decode_s"] += dt
            for k, v in counts.items():
                STATS[k] += v
            STATS["first_request"] = STATS["first_request"] or now
            STATS["last_request"] = now
        if is_json:
            self._reply(200, b"{}", "application/json")
        else:
            self._reply(200, resp_cls().SerializeToString(), "application/x-protobuf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Local OTLP/HTTP sink that decodes and discards.")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--max-seconds", type=float, default=3 * 3600, help="exit after this long (safety bound)")
    a = ap.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    timer = threading.Timer(a.max_seconds, stop)
    timer.daemon = True
    timer.start()
    print(f"LISTENING http://127.0.0.1:{server.server_address[1]} pid={os.getpid()}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        print(f"otlp_sink: {json.dumps(STATS)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
