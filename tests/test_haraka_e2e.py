"""``maillog2otel backfill`` on Haraka's logs as a user runs it, exporting to a real OTLP/HTTP
receiver on 127.0.0.1 that decodes with opentelemetry-proto."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, OtlpHttpReceiver, clean_env, run_cli

FIX = FIXTURES / "haraka"
NS = 1_000_000_000


def backfill(receiver: OtlpHttpReceiver, path: str) -> str:
    proc = run_cli("backfill", "--timezone", "UTC", "--hostname", "mx", path,
                   env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stderr.decode()


def attrs_of(obj) -> dict:  # an opentelemetry-proto Span, Event, Resource or data point
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in obj.attributes}


def last_values(receiver: OtlpHttpReceiver, name: str, key: str | None = None) -> dict:
    out: dict = {}
    for p in sorted(receiver.received.metric_points(name), key=lambda p: p.time_unix_nano):
        label = attrs_of(p).get(key) if key else None
        out[label] = p.count if hasattr(p, "bucket_counts") else (p.as_int or p.as_double)
    return out


@pytest.mark.parametrize("name", ["info-json", "protocol-default"])
def test_backfill_exports_connections_deliveries_and_metrics(otlp_http: OtlpHttpReceiver, name: str) -> None:
    truth = json.loads((FIX / f"{name}.truth.json").read_text())
    err = backfill(otlp_http, str(FIX / f"{name}.log"))
    assert "lines carry no time" not in err
    spans = otlp_http.received.spans()
    conns = {attrs_of(s)["client.port"]: s for s in spans if s.name == "smtp.connection"}
    assert len(conns) == len(truth["connections"])
    for c in truth["connections"]:
        s = conns[c["client_port"]]
        a = attrs_of(s)
        assert s.kind == 2 and a["mta.name"] == "haraka" and a["client.address"] == c["client_address"]
        assert a["smtp.helo_host"] == c["helo"]
        assert abs(s.start_time_unix_nano / NS - c["start_unix"]) < 0.05  # the log's own times
        assert abs(s.end_time_unix_nano / NS - c["end_unix"]) < 0.05
        assert (s.status.code == 2) == (c["end"] == "drop")
        times = [e.time_unix_nano for e in s.events]
        assert times == sorted(times)
        assert all(s.start_time_unix_nano <= t <= s.end_time_unix_nano for t in times)
        queued = [attrs_of(e)["smtp.queue_id"] for e in s.events if e.name == "smtp.queue_ok"]
        assert queued == [t["queue_id"] for t in c["transactions"] if t["data_code"] == 250]
    by_span = {s.span_id: s for s in conns.values()}
    deliveries = [s for s in spans if s.name == "smtp.delivery"]
    results: dict[tuple[str, str], str] = {}
    for d in sorted(deliveries, key=lambda d: d.end_time_unix_nano):
        a = attrs_of(d)
        assert d.kind == 3 and d.start_time_unix_nano <= d.end_time_unix_nano
        if a["smtp.message.origin"] == "smtpd":  # retries too: children of the connection, same trace
            parent = by_span[d.parent_span_id]
            assert parent.trace_id == d.trace_id
            assert any(attrs_of(e).get("smtp.queue_id") == a["smtp.queue_id"] for e in parent.events
                       if e.name == "smtp.queue_ok")
            results[(a["smtp.queue_id"], a["smtp.rcpt_to"])] = a["smtp.result"]
        assert (d.status.code == 2) == (a["smtp.result"] == "bounced")
    outbound = {q: os for q, os in truth["outcomes"].items() if any(q == k for k, _ in results)}
    assert {(q, o["to"]): o["result"] for q, os in outbound.items() for o in os} == results
    resource = attrs_of(otlp_http.received.resource_spans()[0].resource)
    assert (resource["service.name"], resource["host.name"]) == ("haraka", "mx")
    queued = sum(1 for c in truth["connections"] for t in c["transactions"] if t["data_code"] == 250)
    messages = last_values(otlp_http, "haraka.messages", "smtp.result")
    assert messages["queued"] == queued and messages["rejected"] == 2
    assert messages["delivered"] == 6 and messages["deferred"] == 4 and messages["bounced"] == 3
    assert last_values(otlp_http, "haraka.connections") == {None: len(conns)}
    assert last_values(otlp_http, "haraka.connection.duration") == {None: len(conns)}
    assert last_values(otlp_http, "haraka.message.size") == {None: queued}
    assert set(last_values(otlp_http, "haraka.up").values()) == {1}
    hooks = last_values(otlp_http, "haraka.hook.total", "haraka.hook")
    assert hooks["mail"] == sum(len(c["transactions"]) for c in truth["connections"])
    first = min(s.start_time_unix_nano for s in spans)
    points = [p for name in ("haraka.connections", "haraka.messages")
              for p in otlp_http.received.metric_points(name)]
    assert all(first - 60 * NS <= p.time_unix_nano <= first + 3600 * NS for p in points)  # log time


def test_rerun_sends_identical_ids(otlp_http: OtlpHttpReceiver) -> None:
    path = str(FIX / "protocol-logfmt.log")
    backfill(otlp_http, path)
    first = sorted((s.trace_id, s.span_id, s.parent_span_id) for s in otlp_http.received.spans())
    otlp_http.received.traces.clear()
    backfill(otlp_http, path)
    assert sorted((s.trace_id, s.span_id, s.parent_span_id) for s in otlp_http.received.spans()) == first
    assert len(set(first)) == len(first)


def test_a_log_without_times_is_exported_with_a_clear_warning(otlp_http: OtlpHttpReceiver) -> None:
    err = backfill(otlp_http, str(FIX / "info-default-notimestamps.log"))
    assert "149 of 149 lines carry no time" in err and "timestamps=true" in err
    conns = [s for s in otlp_http.received.spans() if s.name == "smtp.connection"]
    assert len(conns) == 8 and all(s.start_time_unix_nano == 0 for s in conns)
    truth = json.loads((FIX / "info-default-notimestamps.truth.json").read_text())
    want = sorted(c["end_unix"] - c["start_unix"] for c in truth["connections"])
    got = sorted((s.end_time_unix_nano - s.start_time_unix_nano) / NS for s in conns)
    assert all(abs(a - b) < 0.05 for a, b in zip(got, want, strict=True))  # Haraka's time=
