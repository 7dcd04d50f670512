"""Shared fixtures: real OTLP receivers on 127.0.0.1 that decode with opentelemetry-proto."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
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

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


@dataclass
class Received:
    """Everything a receiver decoded, plus the raw headers of each request."""

    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    logs: list[ExportLogsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # every accepted request body, decompressed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list:
        with self.lock:
            return [s for req in self.traces for rs in req.resource_spans for ss in rs.scope_spans
                    for s in ss.spans]

    def resource_spans(self) -> list:
        with self.lock:
            return [rs for req in self.traces for rs in req.resource_spans]

    def log_records(self) -> list:
        """(resource attributes as a dict, LogRecord) for every log record received."""
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue

        def plain(v: AnyValue) -> object:
            return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None

        with self.lock:
            return [({kv.key: plain(kv.value) for kv in rl.resource.attributes}, r)
                    for req in self.logs for rl in req.resource_logs for sl in rl.scope_logs
                    for r in sl.log_records]

    def metric_points(self, name: str) -> list:
        out = []
        with self.lock:
            for req in self.metrics:
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            if m.name == name:
                                data = m.WhichOneof("data")
                                out.extend(getattr(m, data).data_points)
        return out


class OtlpHttpReceiver:
    """An OTLP/HTTP collector stand-in: decodes /v1/traces, /v1/metrics and /v1/logs (protobuf,
    gzip or not).

    ``fail_next`` makes the next N requests answer 503 (a collector that is down for a while)."""

    def __init__(self) -> None:
        self.received = Received()
        self.fail_next = 0
        self.fail_until = 0.0  # time.monotonic() before which every request gets 503
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests += 1
                if receiver.fail_next > 0 or time.monotonic() < receiver.fail_until:
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    self.send_response(503)
                    self.end_headers()
                    return
                enc = self.headers.get("Content-Encoding")
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                with receiver.received.lock:
                    receiver.received.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if self.path.endswith("/v1/traces"):
                        req = ExportTraceServiceRequest()
                        req.ParseFromString(body)
                        receiver.received.traces.append(req)
                        reply = ExportTraceServiceResponse().SerializeToString()
                    elif self.path.endswith("/v1/metrics"):
                        req = ExportMetricsServiceRequest()
                        req.ParseFromString(body)
                        receiver.received.metrics.append(req)
                        reply = ExportMetricsServiceResponse().SerializeToString()
                    elif self.path.endswith("/v1/logs"):
                        req = ExportLogsServiceRequest()
                        req.ParseFromString(body)
                        receiver.received.logs.append(req)
                        reply = ExportLogsServiceResponse().SerializeToString()
                    else:
                        self.send_response(404)
                        self.end_headers()
                        return
                    receiver.received.raw.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OtlpGrpcReceiver:
    """The same over gRPC, with the official service definitions."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.received = Received()
        received = self.received

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # gRPC's names
                with received.lock:
                    received.traces.append(request)
                    received.headers.append(dict(context.invocation_metadata()))
                return ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                with received.lock:
                    received.metrics.append(request)
                return ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                with received.lock:
                    received.logs.append(request)
                return ExportLogsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


@pytest.fixture
def otlp_http() -> Iterator[OtlpHttpReceiver]:
    r = OtlpHttpReceiver()
    yield r
    r.close()


@pytest.fixture
def otlp_grpc() -> Iterator[OtlpGrpcReceiver]:
    r = OtlpGrpcReceiver()
    yield r
    r.close()


_STATE_HOME: list[str] = []


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess run: no OTEL_* from the developer's shell, and state files
    (a backfill's, by default) in a directory of this test session, not the developer's home."""
    import tempfile

    if not _STATE_HOME:
        _STATE_HOME.append(tempfile.mkdtemp(prefix="maillog2otel-state-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["XDG_STATE_HOME"] = _STATE_HOME[0]
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m maillog2otel`` as a user would."""
    return subprocess.run([sys.executable, "-m", "maillog2otel", *args], env=env or clean_env(), input=stdin,
                          capture_output=True, timeout=timeout, check=False)
