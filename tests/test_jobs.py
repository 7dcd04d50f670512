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


def content(receiver: OtlpHttpReceiver) -> tuple[list[bytes], list[bytes]]:
    """Every span and every metric point sent, each with its resource and scope (and metric),
    sorted: what a run exported, whatever requests it was cut into."""
    spans, points = [], []
    for req in receiver.received.traces:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                head = rs.resource.SerializeToString() + ss.scope.SerializeToString()
                spans.extend(head + sp.SerializeToString() for sp in ss.spans)
    for req in receiver.received.metrics:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    head = (rm.resource.SerializeToString() + sm.scope.SerializeToString()
                            + m.name.encode() + m.description.encode() + m.unit.encode() + kind.encode())
                    points.extend(head + dp.SerializeToString() for dp in getattr(m, kind).data_points)
    return sorted(spans), sorted(points)


def resumable_export(paths: list[Path], jobs: str, state: Path, *extra: str) -> tuple[tuple, str]:
    receiver = OtlpHttpReceiver()
    try:
        proc = run_cli("backfill", "--state", str(state), "--jobs", jobs, "--timezone", "UTC", "--year",
                       "2026", "--hostname", "mx", *extra, *map(str, paths),
                       env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
        assert proc.returncode == 0, proc.stderr.decode()
        assert not state.exists()  # complete: removed
        return content(receiver), proc.stderr.decode()
    finally:
        receiver.close()


def resume_summary(stderr: str) -> list[str]:
    """The summary without timing and without the number of checkpoints (when they fall depends
    on how far the export has got, which --jobs changes)."""
    return [line for line in summary(stderr) if "checkpoints" not in line]


@pytest.mark.parametrize("name", sorted(SETS))
def test_same_export_for_any_jobs_with_a_resume_state(name: str, tmp_path: Path) -> None:
    """With a resume state (the default of a backfill exporting over OTLP) a second process builds,
    exports and checkpoints: every span and point is the one process's (requests are cut at the
    checkpoints, whose times differ)."""
    one, err1 = resumable_export(SETS[name], "1", tmp_path / "s1.json")
    assert one[0] or one[1]
    two, err2 = resumable_export(SETS[name], "2", tmp_path / "s2.json")
    assert two == one
    assert resume_summary(err2) == resume_summary(err1)


def test_resume_state_with_two_jobs_on_a_generated_log(tmp_path: Path) -> None:
    """Many checkpoints (one per 1,000 spans or points, in-process to set that): each is saved by
    the main process once the export process has exported what came before it; the same spans and
    points as one process."""
    from maillog2otel.config import build_settings
    from maillog2otel.runner import run_backfill

    log = tmp_path / "postfix.log"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--mta", "postfix", "--lines",
                    "30000", "--out", str(log)], check=True, capture_output=True)
    got = {}
    for jobs in (1, 2):
        receiver = OtlpHttpReceiver()
        try:
            settings = build_settings(env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint),
                                      timezone="UTC", quiet=True)
            state = tmp_path / f"s{jobs}.json"
            assert run_backfill([str(log)], settings, state=str(state), checkpoint_items=1000, jobs=jobs) == 0
            assert not state.exists()
            got[jobs] = content(receiver)
            assert len(receiver.received.traces) >= 10
        finally:
            receiver.close()
    assert got[2] == got[1]


def test_auto_is_one_process_and_jobs_n_is_taken_as_given() -> None:
    """auto: one process (two measured no faster here, docs/scaling.md); --jobs N is taken as given
    (at most 2) where something is exported; nothing exported: one."""
    from maillog2otel import parallel
    from maillog2otel.config import build_settings

    otlp = build_settings(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    nothing = build_settings(env={}, exporter="none")
    assert parallel.choose_jobs(None, otlp) == 1
    assert parallel.choose_jobs(1, otlp) == 1
    assert parallel.choose_jobs(2, otlp) == 2
    assert parallel.choose_jobs(3, otlp) == 2
    assert parallel.choose_jobs(2, nothing) == 1
