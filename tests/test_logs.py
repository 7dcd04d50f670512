"""--logs: every MTA line as an OTLP log record with its connection's or delivery's trace and span,
checked against a real OTLP receiver and against the log file read independently here."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import FIXTURES, OtlpGrpcReceiver, OtlpHttpReceiver, clean_env, run_cli

from maillog2otel.export.logs import ERROR, INFO, WARN, severity
from maillog2otel.records import Record

LOG = FIXTURES / "postfix" / "port-logging.log"
_LINE = re.compile(r"^\S+ +\d+ [\d:]+ (?P<host>\S+) (?P<prog>[^\[:]+)\[(?P<pid>\d+)\]: (?P<msg>.*)$")


def _attrs(record) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in record.attributes}


def _smtpd_sessions(path: Path) -> list[list[tuple[int, str]]]:
    """The lines of each smtpd session, connect to disconnect, as (pid, message): read here, not
    by the code under test."""
    open_by_pid: dict[int, list[tuple[int, str]]] = {}
    sessions = []
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if not m or not m["prog"].endswith("/smtpd"):
            continue
        pid, msg = int(m["pid"]), m["msg"]
        if msg.startswith("connect from "):
            open_by_pid[pid] = [(pid, msg)]
            sessions.append(open_by_pid[pid])
        elif pid in open_by_pid:
            open_by_pid[pid].append((pid, msg))
            if msg.startswith("disconnect from "):
                del open_by_pid[pid]
    return sessions


def test_every_line_of_a_connection_carries_its_span(otlp_http: OtlpHttpReceiver) -> None:
    proc = run_cli("backfill", "--timezone", "UTC", "--logs", "--endpoint", otlp_http.endpoint, str(LOG))
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    n_lines = len(LOG.read_text().splitlines())
    records = otlp_http.received.log_records()
    assert len(records) == n_lines == 107 and f"{n_lines} log records" in err
    by_line = {}
    for resource, r in records:
        a = _attrs(r)
        assert resource["host.name"] == a["host.name"] == "mx" and a["mta.name"] == "postfix"
        assert r.time_unix_nano > 0 and r.observed_time_unix_nano > 0
        by_line.setdefault((a["process.pid"], r.body.string_value), []).append(r)
    spans = otlp_http.received.spans()
    connections = {(s.trace_id, s.span_id): s for s in spans if s.name == "smtp.connection"}
    sessions = _smtpd_sessions(LOG)
    assert len(sessions) == len(connections) == 14
    for session in sessions:
        ids = set()
        for key in session:
            (r,) = by_line[key]
            ids.add((r.trace_id, r.span_id))
        assert len(ids) == 1, session  # one span for all of a connection's lines …
        (ctx,) = ids
        span = connections[ctx]  # … and it is that connection's span
        port = re.search(r"\]:(\d+)", session[0][1])[1]
        assert {kv.key: kv.value.int_value for kv in span.attributes}["client.port"] == int(port)
    # delivery lines carry their delivery span, message lines their connection's trace
    deliveries = {(s.trace_id, s.span_id) for s in spans if s.name == "smtp.delivery"}
    traces = {s.trace_id for s in spans}
    stamped = 0
    for _, r in records:
        a = _attrs(r)
        if a.get("maillog2otel.rule") == "delivery_status" and "status=" in r.body.string_value:
            assert (r.trace_id, r.span_id) in deliveries, r.body.string_value
        if r.trace_id:
            stamped += 1
            assert r.trace_id in traces, r.body.string_value  # never a trace without spans (NDRs)
    assert stamped >= 100


def test_logs_over_grpc_and_severity(otlp_grpc: OtlpGrpcReceiver, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(LOG.read_text() + "Nov 22 03:00:01 mx postfix/smtpd[9]: warning: hostname x.example "
                   "does not resolve to address 192.0.2.1\n")
    env = clean_env(OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    proc = run_cli("backfill", "--timezone", "UTC", "--logs", "--endpoint", otlp_grpc.endpoint, str(log),
                   env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    records = otlp_grpc.received.log_records()
    assert len(records) == 108
    warn = [r for _, r in records if "does not resolve" in r.body.string_value]
    assert [(r.severity_number, r.severity_text) for r in warn] == [(WARN, "WARN")]
    assert {r.severity_text for _, r in records} == {"INFO", "WARN"}


def test_off_by_default_and_retried_like_spans(otlp_http: OtlpHttpReceiver) -> None:
    proc = run_cli("backfill", "--timezone", "UTC", "--endpoint", otlp_http.endpoint, str(LOG))
    assert proc.returncode == 0 and otlp_http.received.logs == []
    assert "log records" not in proc.stderr.decode()
    otlp_http.received.traces.clear()
    otlp_http.fail_next = 2  # the collector is down for the first two requests
    proc = run_cli("backfill", "--timezone", "UTC", "--logs", "--endpoint", otlp_http.endpoint, str(LOG))
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(otlp_http.received.log_records()) == 107


def test_a_collector_that_refuses_logs_is_a_clear_error(otlp_http: OtlpHttpReceiver) -> None:
    otlp_http.fail_next = 10**6
    proc = run_cli("backfill", "--timezone", "UTC", "--logs", "--retry-for", "1", "--endpoint",
                   otlp_http.endpoint, str(LOG))
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "could not export" in err and "Traceback" not in err


def test_severity_from_the_line() -> None:
    def rec(program: str, message: str) -> Record:
        return Record(0, "mx", program, 1, message)

    assert severity(rec("postfix/smtpd", "warning: TLS library problem"), "postfix") == (WARN, "WARN")
    assert severity(rec("postfix/qmgr", "4F9D195432: removed"), "postfix") == (INFO, "INFO")
    assert severity(rec("postfix/master", "fatal: bind 0.0.0.0 port 25"), "postfix")[0] > ERROR
    assert severity(rec("haraka", "[ERROR] [-] [core] plugin failed"), "haraka") == (ERROR, "ERROR")
    assert severity(rec("haraka", '{"level":"warn","uuid":"x"}'), "haraka") == (WARN, "WARN")
    assert severity(rec("exim", "1xUxng-0002TS-2f ** bad@x.test R=dnslookup: 550"), "exim") == (WARN, "WARN")
