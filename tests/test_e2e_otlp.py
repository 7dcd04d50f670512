"""``maillog2otel backfill`` as a user runs it, exporting to real OTLP receivers on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, OtlpGrpcReceiver, OtlpHttpReceiver, clean_env, run_cli

LOG = FIXTURES / "postfix" / "port-logging.log"
TRUTH = json.loads((FIXTURES / "postfix" / "port-logging.truth.json").read_text())
NS = 1_000_000_000


def backfill(receiver: OtlpHttpReceiver | OtlpGrpcReceiver, *args: str, **env: str) -> str:
    proc = run_cli("backfill", "--timezone", "UTC", *args, str(LOG),
                   env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, **env))
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stderr.decode()


def span_attrs(span) -> dict:  # an opentelemetry-proto Span
    out = {}
    for kv in span.attributes:
        out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
    return out


def check_export(received) -> None:
    spans = received.spans()
    conns = [s for s in spans if s.name == "smtp.connection"]
    deliveries = [s for s in spans if s.name == "smtp.delivery"]
    assert len(conns) == len(TRUTH["connections"])
    truth_by_port = {c["client_port"]: c for c in TRUTH["connections"]}
    for s in conns:
        a = span_attrs(s)
        c = truth_by_port[a["client.port"]]
        assert s.kind == 2  # SERVER
        assert a["client.address"] == c["client_address"] and a["mta.name"] == "postfix"
        # historical timestamps: the log's own, not the time of the run (1 s log resolution; the
        # client's time is rounded to the millisecond)
        assert abs(s.start_time_unix_nano / NS - c["start_unix"]) <= 1.0005
        assert s.end_time_unix_nano >= s.start_time_unix_nano
        assert (s.status.code == 2) == (c["end"] == "drop")
        times = [e.time_unix_nano for e in s.events]
        assert times == sorted(times)  # events in log order
        for e in s.events:
            assert s.start_time_unix_nano - NS <= e.time_unix_nano <= s.end_time_unix_nano + 3 * NS
    conn_ids = {s.span_id for s in conns}
    for d in deliveries:
        assert d.kind == 3  # CLIENT
        a = span_attrs(d)
        assert a["smtp.result"] in ("delivered", "deferred", "bounced", "expired")
        if a["smtp.message.origin"] == "smtpd":
            assert d.parent_span_id in conn_ids
    resources = received.resource_spans()
    attrs = {kv.key: kv.value.string_value for kv in resources[0].resource.attributes}
    assert attrs["service.name"] == "postfix" and attrs["host.name"] == "mx"
    assert attrs["service.instance.id"] == "mx/postfix"
    delivered = received.metric_points("postfix.messages")
    assert delivered, "no metric points"
    first_ns = min(s.start_time_unix_nano for s in conns)
    for p in delivered:  # log-time points: the start is the first log time of the series
        assert p.time_unix_nano >= p.start_time_unix_nano >= first_ns - 60 * NS
        assert p.time_unix_nano < first_ns + 3600 * NS


def test_http_export(otlp_http: OtlpHttpReceiver) -> None:
    err = backfill(otlp_http)
    check_export(otlp_http.received)
    assert "14 connections" in err and "unparsed" in err


def test_grpc_export(otlp_grpc: OtlpGrpcReceiver) -> None:
    backfill(otlp_grpc, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    check_export(otlp_grpc.received)


def test_gzip_and_headers(otlp_http: OtlpHttpReceiver) -> None:
    err = backfill(otlp_http, OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
                   OTEL_EXPORTER_OTLP_HEADERS="x-api-key=s3cr3t%20value,X-Tenant=a")
    check_export(otlp_http.received)
    assert all(h.get("x-api-key") == "s3cr3t value" and h.get("x-tenant") == "a"
               for h in otlp_http.received.headers)
    assert all(h.get("content-encoding") == "gzip" for h in otlp_http.received.headers)
    assert "s3cr3t" not in err


def test_rerun_sends_identical_ids(otlp_http: OtlpHttpReceiver) -> None:
    backfill(otlp_http)
    first = sorted((s.trace_id, s.span_id, s.parent_span_id) for s in otlp_http.received.spans())
    otlp_http.received.traces.clear()
    backfill(otlp_http)
    second = sorted((s.trace_id, s.span_id, s.parent_span_id) for s in otlp_http.received.spans())
    assert first == second and len(first) == len(set(first))


def test_collector_down_for_a_while_loses_nothing(otlp_http: OtlpHttpReceiver) -> None:
    otlp_http.fail_next = 2  # 503 twice, then up: retried with back-off
    backfill(otlp_http)
    check_export(otlp_http.received)


def test_collector_down_for_good_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli("backfill", "--timezone", "UTC", str(LOG), env=clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}", MAILLOG2OTEL_RETRY_BUDGET_S="2"))
    assert proc.returncode == 1
    assert "could not export" in proc.stderr.decode() and "connection refused" in proc.stderr.decode()


def test_per_signal_endpoint_is_used_verbatim(otlp_http: OtlpHttpReceiver) -> None:
    proc = run_cli("backfill", "--timezone", "UTC", "--no-metrics", str(LOG), env=clean_env(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{otlp_http.endpoint}/v1/traces"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert otlp_http.received.spans() and not otlp_http.received.metrics


@pytest.mark.parametrize("exporter", ["none", "console"])
def test_sdk_disabled_or_other_exporters_send_nothing(otlp_http: OtlpHttpReceiver, exporter: str) -> None:
    proc = run_cli("backfill", "--timezone", "UTC", str(LOG), env=clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http.endpoint, OTEL_TRACES_EXPORTER=exporter,
        OTEL_METRICS_EXPORTER=exporter))
    assert proc.returncode == 0 and otlp_http.requests == 0
    proc = run_cli("backfill", "--timezone", "UTC", str(LOG), env=clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http.endpoint, OTEL_SDK_DISABLED="true"))
    assert proc.returncode == 0 and otlp_http.requests == 0
