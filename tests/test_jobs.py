"""``backfill --jobs``: the export stage in a second process sends byte for byte what one process
sends, in the same order, to a real OTLP/HTTP receiver; every fixture set and a generated log."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, OtlpHttpReceiver, clean_env, run_cli

SETS = {
    **{f"postfix/{p.stem}": [p] for p in sorted((FIXTURES / "postfix").glob("*.log"))},
    **{f"exim/{p.stem}": [p] for p in sorted((FIXTURES / "exim").glob("*.mainlog"))},
    **{f"haraka/{p.stem}": [p] for p in sorted((FIXTURES / "haraka").glob("*.log"))},
    # several streams merged by time, with spans stitched into one trace across the hops
    "chain": [FIXTURES / "chain" / n for n in ("postfix.log", "exim.mainlog", "haraka.log")],
    "chain/halfclose": [FIXTURES / "chain" / n for n in ("halfclose.postfix.log", "halfclose.exim.mainlog",
                                                         "halfclose.haraka.log")],
}


def export(paths: list[Path], jobs: str, *extra: str, **env: str) -> tuple[list[bytes], str]:
    """The request bodies one backfill sent, in the order they arrived, and its stderr. (Spans and
    metrics leave one process in one sequence; log records of ``--logs`` from another.) No resume
    state: a resumable backfill runs as one process (test_resume_state_runs_as_one_process)."""
    receiver = OtlpHttpReceiver()
    try:
        proc = run_cli("backfill", "--no-state", "--jobs", jobs, "--timezone", "UTC", "--year", "2026",
                       "--hostname", "mx",
                       *extra, *map(str, paths),
                       env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, **env))
        assert proc.returncode == 0, proc.stderr.decode()
        got = receiver.received
        if "--logs" in extra:  # per signal: log records are sent by the main process
            for req in got.logs:  # when the line was read: the one field that differs between runs
                for rl in req.resource_logs:
                    for sl in rl.scope_logs:
                        for lr in sl.log_records:
                            lr.observed_time_unix_nano = 0
            return ([r.SerializeToString() for r in got.traces] + [b"--"]
                    + [r.SerializeToString() for r in got.metrics] + [b"--"]
                    + [r.SerializeToString() for r in got.logs]), proc.stderr.decode()
        return list(got.raw), proc.stderr.decode()
    finally:
        receiver.close()


def summary(stderr: str) -> list[str]:
    """The run's summary without its timing line."""
    return [line for line in stderr.splitlines() if "lines/s" not in line]


@pytest.mark.parametrize("name", sorted(SETS))
def test_same_export_for_any_jobs(name: str) -> None:
    one, err1 = export(SETS[name], "1")
    assert one, "nothing exported"
    for jobs in ("2", "3"):
        other, err = export(SETS[name], jobs)
        assert len(other) == len(one), f"--jobs {jobs}: {len(other)} requests, not {len(one)}"
        assert other == one, f"--jobs {jobs}: a request differs"
        assert summary(err) == summary(err1)


def test_same_export_on_a_generated_log(tmp_path: Path) -> None:
    log = tmp_path / "postfix.log"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--mta", "postfix", "--lines",
                    "30000", "--out", str(log)], check=True, capture_output=True)
    # metrics every 10 s of log time: many interval boundaries between spans
    one, _ = export([log], "1", OTEL_METRIC_EXPORT_INTERVAL="10000")
    two, _ = export([log], "2", OTEL_METRIC_EXPORT_INTERVAL="10000")
    assert len(one) >= 10
    assert two == one


def test_redaction_and_logs_are_the_same_with_two_jobs() -> None:
    paths = SETS["postfix/port-logging"]
    one, _ = export(paths, "1", "--redact", "domain", "--redact-clients", "drop", "--logs")
    two, _ = export(paths, "2", "--redact", "domain", "--redact-clients", "drop", "--logs")
    assert two == one


def test_collector_down_is_a_clear_error_with_two_jobs() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli("backfill", "--jobs", "2", "--timezone", "UTC", "--retry-for", "1",
                   str(FIXTURES / "postfix" / "port-logging.log"),
                   env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}"))
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "could not export" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_bad_jobs_value(value: str) -> None:
    proc = run_cli("backfill", "--jobs", value, "--exporter", "none",
                   str(FIXTURES / "postfix" / "port-logging.log"))
    assert proc.returncode == 2
    assert "--jobs" in proc.stderr.decode()


def test_resume_state_runs_as_one_process(tmp_path: Path) -> None:
    """--jobs 2 with a resume state: one process, said so, and the spans of a --jobs 1 run (a
    resumable run exports at its checkpoints, so its requests are cut differently)."""
    log = FIXTURES / "postfix" / "port-logging.log"

    def span_ids(*opts: str) -> list[bytes]:
        receiver = OtlpHttpReceiver()
        try:
            proc = run_cli("backfill", *opts, "--timezone", "UTC", "--year", "2026", "--hostname", "mx",
                           str(log), env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
            assert proc.returncode == 0, proc.stderr.decode()
            if "--state" in opts:
                assert "keeps no resume state: running as one process" in proc.stderr.decode()
            return sorted(sp.span_id for req in receiver.received.traces for rs in req.resource_spans
                          for ss in rs.scope_spans for sp in ss.spans)
        finally:
            receiver.close()

    ids = span_ids("--jobs", "2", "--state", str(tmp_path / "s.json"))
    assert ids and ids == span_ids("--no-state", "--jobs", "1")
