"""OTLP transports: HTTP (protobuf or JSON) and gRPC, with the standard exporters' settings.

We send requests built by ``encode`` ourselves rather than through the SDK exporters, because we
must see each export's result (nothing is dropped silently) and because building spans through
the SDK costs most of a backfill's time. Retries follow the OTLP specification: 429, 502, 503,
504 and connection errors are retried with exponential back-off (``Retry-After`` honoured); any
other error is final for that request.
"""

from __future__ import annotations

import gzip
import logging
import random
import time
import zlib
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from maillog2otel.config import ExportTarget, display_endpoint

log = logging.getLogger("maillog2otel.export")
_RETRYABLE_HTTP = {429, 502, 503, 504}


@dataclass(slots=True)
class SendResult:
    ok: bool
    retryable: bool = False
    error: str = ""
    retry_after_s: float | None = None


class HttpSender:
    """POSTs one serialized request; one attempt per call (the caller owns the retry loop).

    ``send`` takes a message object, or for ``http/protobuf`` the request already serialized
    (``encode_spans_bytes``): ``accepts_bytes`` says which the caller may hand it."""

    def __init__(self, target: ExportTarget) -> None:
        import requests

        self.target = target
        self.session = requests.Session()
        self.session.headers.update(target.headers)
        self.json = target.protocol == "http/json"
        self.accepts_bytes = not self.json  # OTLP/JSON needs the message objects
        self.session.headers["Content-Type"] = "application/json" if self.json else "application/x-protobuf"
        self.session.headers["User-Agent"] = "maillog2otel"
        if target.compression:
            self.session.headers["Content-Encoding"] = target.compression
        if target.certificate:
            self.session.verify = target.certificate
        if target.client_certificate and target.client_key:
            self.session.cert = (target.client_certificate, target.client_key)

    def send(self, request: Message | bytes) -> SendResult:
        import requests

        if isinstance(request, bytes):
            body = request
        else:
            body = _json_body(request) if self.json else request.SerializeToString()
        if self.target.compression == "gzip":
            body = gzip.compress(body, compresslevel=5)
        elif self.target.compression == "deflate":
            body = zlib.compress(body)
        try:
            resp = self.session.post(self.target.endpoint, data=body, timeout=self.target.timeout_s)
        except requests.RequestException as exc:
            return SendResult(False, True, _describe(exc))
        if 200 <= resp.status_code < 300:
            return SendResult(True)
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        detail = resp.text[:200].strip() if resp.headers.get("Content-Type", "").startswith("text") else ""
        return SendResult(False, resp.status_code in _RETRYABLE_HTTP,
                          f"HTTP {resp.status_code} from {display_endpoint(self.target.endpoint)}"
                          + (f": {detail}" if detail else ""),
                          retry_after)

    def close(self) -> None:
        self.session.close()


class GrpcSender:
    """Calls the OTLP Export RPC; UNAVAILABLE, RESOURCE_EXHAUSTED and friends are retryable.

    The request goes as given when it is already serialized (``encode_spans_bytes``), else it is
    serialized here: the call is the service's own method with a serializer that takes both."""

    accepts_bytes = True

    _RETRYABLE = ("CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE",
                  "DATA_LOSS", "RESOURCE_EXHAUSTED")

    def __init__(self, target: ExportTarget, signal: str) -> None:
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.target = target
        endpoint = target.endpoint
        scheme, _, rest = endpoint.partition("://")
        if not rest:
            scheme, rest = "", endpoint
        address = rest.split("/", 1)[0]  # gRPC has no path: a base path is dropped, as in the SDK
        insecure = target.insecure if target.insecure is not None else scheme == "http"
        compression = grpc.Compression.Gzip if target.compression == "gzip" else None
        if insecure:
            self.channel = grpc.insecure_channel(address, compression=compression)
        else:
            root = open(target.certificate, "rb").read() if target.certificate else None  # noqa: SIM115
            key = open(target.client_key, "rb").read() if target.client_key else None  # noqa: SIM115
            cert = open(target.client_certificate, "rb").read() if target.client_certificate else None  # noqa: SIM115
            creds = grpc.ssl_channel_credentials(root, key, cert)
            self.channel = grpc.secure_channel(address, creds, compression=compression)
        module, service, response = {
            "traces": (trace_service_pb2, "TraceService", "ExportTraceServiceResponse"),
            "metrics": (metrics_service_pb2, "MetricsService", "ExportMetricsServiceResponse"),
            "logs": (logs_service_pb2, "LogsService", "ExportLogsServiceResponse"),
        }[signal]
        method = module.DESCRIPTOR.services_by_name[service].methods_by_name["Export"]
        self.call = self.channel.unary_unary(  # "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            f"/{method.containing_service.full_name}/{method.name}", request_serializer=_serialized,
            response_deserializer=getattr(module, response).FromString)
        self.metadata = list(target.headers.items())
        self.grpc = grpc

    def send(self, request: Message | bytes) -> SendResult:
        try:
            self.call(request, timeout=self.target.timeout_s, metadata=self.metadata)
        except self.grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            return SendResult(False, code in self._RETRYABLE,
                              f"gRPC {code} from {display_endpoint(self.target.endpoint)}: "
                              f"{getattr(exc, 'details', lambda: '')()}")
        return SendResult(True)

    def close(self) -> None:
        self.channel.close()


def _serialized(request: Message | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def make_sender(target: ExportTarget, signal: str) -> HttpSender | GrpcSender:
    return GrpcSender(target, signal) if target.protocol == "grpc" else HttpSender(target)


def send_with_retry(sender: HttpSender | GrpcSender, request: Message | bytes, budget_s: float,
                    on_wait: Any = None) -> SendResult:
    """Retry a retryable failure with exponential back-off (1 s, 2 s, … 30 s, ±20 %) until the
    budget runs out (``budget_s`` < 0: forever, for a live tail)."""
    deadline = time.monotonic() + budget_s
    delay = 1.0
    while True:
        result = sender.send(request)
        if result.ok or not result.retryable:
            return result
        wait = result.retry_after_s if result.retry_after_s is not None else delay * random.uniform(0.8, 1.2)
        if budget_s >= 0 and time.monotonic() + wait > deadline:
            return result
        if on_wait is not None:
            on_wait(result, wait)
        time.sleep(wait)
        delay = min(delay * 2, 30.0)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _describe(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "NewConnectionError" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return type(exc).__name__


def _json_body(request: Message) -> bytes:
    """OTLP/JSON: proto3 JSON, except trace and span IDs in hex (not base64)."""
    import base64
    import json

    from google.protobuf.json_format import MessageToDict

    doc = MessageToDict(request, use_integers_for_enums=True)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    node[k] = base64.b64decode(v).hex()
                else:
                    fix(v)
        elif isinstance(node, list):
            for x in node:
                fix(x)

    fix(doc)
    return json.dumps(doc, separators=(",", ":")).encode()
