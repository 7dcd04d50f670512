"""``maillog2otel backfill`` on Exim's logs as a user runs it, exporting to a real OTLP/HTTP
receiver on 127.0.0.1 that decodes with opentelemetry-proto."""

from __future__ import annotations

import json

from conftest import FIXTURES, OtlpHttpReceiver, clean_env, run_cli

from maillog2otel.testing import run_pipeline

FIX = FIXTURES / "exim"
TRUTH = json.loads((FIX / "rich.truth.json").read_text())
NS = 1_000_000_000


def backfill(receiver: OtlpHttpReceiver, *paths: str) -> str:
    proc = run_cli("backfill", "--timezone", "UTC", "--hostname", "mx", *paths,
                   env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stderr.decode()


def attrs_of(obj) -> dict:  # an opentelemetry-proto Span, Event or data point
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in obj.attributes}


def last_values(receiver: OtlpHttpReceiver, name: str, key: str | None = None) -> dict:
    """The last cumulative value of each series of a metric (a histogram's count)."""
    out: dict = {}
    points = sorted(receiver.received.metric_points(name), key=lambda p: p.time_unix_nano)
    for p in points:
        label = attrs_of(p).get(key) if key else None
        out[label] = p.count if hasattr(p, "bucket_counts") else (p.as_int or p.as_double)
    return out


def test_rich_log_exports_connections_deliveries_and_metrics(otlp_http: OtlpHttpReceiver) -> None:
    err = backfill(otlp_http, str(FIX / "rich.mainlog"), str(FIX / "rich.rejectlog"))
    assert "0 unparsed" in err
    spans = otlp_http.received.spans()
    conns = [s for s in spans if s.name == "smtp.connection"]
    tcp = {(a["client.address"], a["client.port"]): s for s in conns if "client.port" in (a := attrs_of(s))}
    assert len(conns) == len(TRUTH["connections"]) + 1  # and the exim -bs session over a pipe
    first_ns = min(s.start_time_unix_nano for s in conns)
    for c in TRUTH["connections"]:
        s = tcp[(c["client_address"], c["client_port"])]
        a = attrs_of(s)
        assert s.kind == 2 and a["mta.name"] == "exim" and a["smtp.helo_host"] == c["helo"]
        # historical timestamps: the log's own (millisecond stamps), not the time of the run
        assert abs(s.start_time_unix_nano / NS - c["start_unix"]) < 0.01
        assert s.start_time_unix_nano <= s.end_time_unix_nano <= c["end_unix"] * NS + 0.01 * NS
        assert (s.status.code == 2) == (c["end"] == "drop")
        times = [e.time_unix_nano for e in s.events]
        assert times == sorted(times)
        assert all(s.start_time_unix_nano - NS <= t <= s.end_time_unix_nano + 3 * NS for t in times)
        queued = [attrs_of(e)["smtp.queue_id"] for e in s.events if e.name == "smtp.queue_ok"]
        assert queued == [t["queue_id"] for t in c["transactions"] if t["data_code"] == 250]
    conn_ids = {s.span_id for s in conns}
    deliveries = [s for s in spans if s.name == "smtp.delivery"]
    for d in deliveries:
        a = attrs_of(d)
        assert d.kind == 3 and a["smtp.result"] in ("delivered", "deferred", "bounced")
        if a["smtp.message.origin"] in ("smtpd", "bounce"):
            assert d.parent_span_id in conn_ids
        assert d.start_time_unix_nano <= d.end_time_unix_nano
    resource = attrs_of(otlp_http.received.resource_spans()[0].resource)
    assert (resource["service.name"], resource["host.name"], resource["service.instance.id"]) == (
        "exim", "mx", "mx/exim")
    # the same IDs as an in-memory run of the same logs: they are a function of the log
    mem = run_pipeline([str(FIX / "rich.mainlog"), str(FIX / "rich.rejectlog")], timezone="UTC",
                       hostname="mx")
    ids = sorted((s.trace_id, s.span_id) for s in spans)
    assert ids == sorted((m.trace_id, m.span_id) for m in mem.spans)
    assert last_values(otlp_http, "exim.messages", "smtp.result") == {
        "queued": 15, "delivered": 14, "deferred": 6, "bounced": 1, "rejected": 3}
    assert last_values(otlp_http, "exim.connections") == {None: len(conns)}
    assert last_values(otlp_http, "exim.connection.duration") == {None: len(conns)}
    assert last_values(otlp_http, "exim.message.size") == {None: 15}
    hooks = last_values(otlp_http, "exim.hook.total", "exim.hook")
    assert hooks["connect"] == len(conns) and hooks["helo"] == 1 and hooks["starttls"] == 1
    for p in otlp_http.received.metric_points("exim.messages"):  # log-time points
        assert first_ns - 60 * NS <= p.start_time_unix_nano <= p.time_unix_nano < first_ns + 3600 * NS


def test_default_selector_exports_inferred_sessions(otlp_http: OtlpHttpReceiver) -> None:
    """Without connection lines: sessions rebuilt from arrivals and rejections, marked as such and
    kept out of the duration histogram (only the disconnection line's D= gives a real length)."""
    backfill(otlp_http, str(FIX / "default.mainlog"))
    conns = [s for s in otlp_http.received.spans() if s.name == "smtp.connection"]
    assert conns and all(attrs_of(s)["exim.reconstructed"] == "partial" for s in conns)
    assert last_values(otlp_http, "exim.connection.duration") == {None: 1}
    assert last_values(otlp_http, "exim.messages", "smtp.result")["delivered"] == 14


def test_rerun_sends_identical_ids(otlp_http: OtlpHttpReceiver) -> None:
    backfill(otlp_http, str(FIX / "rich.mainlog"))
    first = sorted((s.trace_id, s.span_id, s.parent_span_id) for s in otlp_http.received.spans())
    otlp_http.received.traces.clear()
    backfill(otlp_http, str(FIX / "rich.mainlog"))
    second = sorted((s.trace_id, s.span_id, s.parent_span_id) for s in otlp_http.received.spans())
    assert first == second and len(first) == len(set(first))


def test_every_line_carries_its_span_with_logs(otlp_http: OtlpHttpReceiver) -> None:
    """--logs: a session's lines (the child's pid; the daemon's open line by its client port)
    carry the session's span; a delivery line carries its delivery span."""
    proc = run_cli("backfill", "--timezone", "UTC", "--hostname", "mx", "--logs", str(FIX / "rich.mainlog"),
                   env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http.endpoint))
    assert proc.returncode == 0, proc.stderr.decode()
    records = [r for _, r in otlp_http.received.log_records()]
    assert len(records) == len((FIX / "rich.mainlog").read_text().splitlines())
    spans = otlp_http.received.spans()
    sessions = {attrs_of(s)["process.pid"]: s for s in spans if s.name == "smtp.connection"}
    deliveries = {s.span_id for s in spans if s.name == "smtp.delivery"}
    checked = 0
    for r in records:
        pid, body = attrs_of(r)["process.pid"], r.body.string_value
        if pid in sessions:
            assert (r.trace_id, r.span_id) == (sessions[pid].trace_id, sessions[pid].span_id), body
            checked += 1
        elif body.startswith("SMTP connection from ["):  # written by the daemon: found by the port
            port = int(body.split("]:", 1)[1].split()[0])
            (s,) = [s for s in sessions.values() if attrs_of(s).get("client.port") == port]
            assert (r.trace_id, r.span_id) == (s.trace_id, s.span_id)
            checked += 1
        elif " => " in body or " ** " in body or (" == " in body and "retry time not reached" not in body):
            assert r.span_id in deliveries, body
            checked += 1
    assert checked > 60
