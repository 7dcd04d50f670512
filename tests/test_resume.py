"""Long backfills that survive: a collector that refuses for a while is waited out, a run stopped
at any point (SIGKILL, Ctrl-C, a ``--retry-for`` deadline) continues with the same command, and
inputs that changed meanwhile are refused. Every run is ``maillog2otel backfill`` as a user runs it,
exporting to the real OTLP/HTTP receiver of conftest; the truth is a clean run of the same log."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, OtlpHttpReceiver, clean_env, run_cli
from test_tail import shifted_copies

from maillog2otel.runner import CHECKPOINT_ITEMS

BIG_LINES = 100_000


@dataclass
class Truth:
    log: Path
    spans: Counter[bytes]  # span ID -> times exported (a generated log may repeat a session exactly)
    metrics: dict[tuple, tuple[int, float]]


def final_points(receiver: OtlpHttpReceiver) -> dict[tuple, tuple[int, float]]:
    """The last point of every series (name, attributes): its time and value (a sum's value, a
    histogram's count and sum). Cumulative series: these are the run's totals."""
    out: dict[tuple, tuple[int, float]] = {}
    with receiver.received.lock:
        for req in receiver.received.metrics:
            for rm in req.resource_metrics:
                res = tuple(sorted((kv.key, str(kv.value)) for kv in rm.resource.attributes))
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        for dp in getattr(m, kind).data_points:
                            attrs = tuple(sorted((kv.key, str(kv.value)) for kv in dp.attributes))
                            key = (res, m.name, attrs)
                            if kind == "histogram":
                                value: float = dp.count * 1e9 + dp.sum
                            elif kind in ("sum", "gauge"):
                                value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                            else:
                                continue
                            if key not in out or dp.time_unix_nano >= out[key][0]:
                                out[key] = (dp.time_unix_nano, value)
    return out


def span_ids(receiver: OtlpHttpReceiver) -> list[bytes]:
    return [s.span_id for s in receiver.received.spans()]


def command(log: Path, endpoint: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "maillog2otel", "backfill", "--endpoint", endpoint, "--timezone", "UTC",
            *extra, str(log)]


def clean_run(log: Path) -> Truth:
    receiver = OtlpHttpReceiver()
    try:
        proc = run_cli("backfill", "--endpoint", receiver.endpoint, "--timezone", "UTC", "-q", "--no-state",
                       str(log), timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        return Truth(log, Counter(span_ids(receiver)), final_points(receiver))
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Truth:
    """100k lines grown from the real Postfix recordings (benchmarks/generate.py), and what a clean
    backfill of them exports."""
    log = tmp_path_factory.mktemp("big") / "mail.log"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--lines", str(BIG_LINES),
                    "--seed", "13", "--out", str(log)], check=True, capture_output=True, timeout=120)
    truth = clean_run(log)
    assert len(truth.spans) > 20_000 and truth.metrics
    return truth


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Truth:
    """The real Postfix fixture, 25 shifted copies (2,675 lines, as in the issue's report)."""
    log = tmp_path_factory.mktemp("real") / "mail.log"
    log.write_text("".join(shifted_copies(25)))
    return clean_run(log)


def state_files(env: dict[str, str]) -> list[str]:
    d = Path(env["XDG_STATE_HOME"]) / "maillog2otel"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []  # a lock file beside a state too


def when_requests(receiver: OtlpHttpReceiver, n: int, action, timeout: float = 60) -> threading.Thread:
    """Run ``action`` once the receiver has answered ``n`` requests (a point in the run)."""
    def watch() -> None:
        deadline = time.monotonic() + timeout
        while receiver.requests < n and time.monotonic() < deadline:
            time.sleep(0.005)
        action()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_collector_refusing_at_the_start_is_waited_out(real: Truth, otlp_http: OtlpHttpReceiver,
                                                        tmp_path: Path) -> None:
    """The issue's case: 503 for the first stretch of the run (here 12 s; the code has no notion
    of how long), then up. The default waits: exit 0, every span and every metric total."""
    env = clean_env(XDG_STATE_HOME=str(tmp_path))
    otlp_http.fail_until = time.monotonic() + 12
    proc = subprocess.run(command(real.log, otlp_http.endpoint), env=env, capture_output=True, check=False,
                          timeout=90)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "waiting for collector since" in err and "HTTP 503" in err and "export recovered" in err
    assert Counter(span_ids(otlp_http)) == real.spans
    assert final_points(otlp_http) == real.metrics
    assert state_files(env) == []  # a finished run leaves no state


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"], ids=["one-process", "two-processes"])
def test_collector_outage_in_the_middle_pauses_reading(big: Truth, otlp_http: OtlpHttpReceiver,
                                                       tmp_path: Path, jobs: str) -> None:
    """Down for 12 s after a few batches: reading pauses (the process stops growing; with two, the
    main one, held by the pipe), then goes on; nothing is lost and nothing is sent twice."""
    env = clean_env(XDG_STATE_HOME=str(tmp_path))

    def outage() -> None:
        otlp_http.fail_until = time.monotonic() + 12

    when_requests(otlp_http, 5, outage)
    proc = subprocess.Popen(command(big.log, otlp_http.endpoint, "--jobs", jobs), env=env,
                            stderr=subprocess.PIPE)
    rss = []
    while proc.poll() is None:
        if otlp_http.fail_until > time.monotonic() + 1:
            rss.append(_rss_kib(proc.pid))
        time.sleep(0.2)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == 0, err
    assert err.count("waiting for collector since") >= 1 and "export recovered" in err
    assert Counter(span_ids(otlp_http)) == big.spans  # nothing lost, nothing sent twice
    assert final_points(otlp_http) == big.metrics
    rss = [r for r in rss if r]
    assert len(rss) >= 5 and max(rss) - min(rss) < 20_000, rss  # paused: memory does not grow meanwhile


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"], ids=["one-process", "two-processes"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM],
                         ids=["kill-9", "ctrl-c", "sigterm"])
def test_stopped_at_a_random_point_the_same_command_continues(big: Truth, otlp_http: OtlpHttpReceiver,
                                                              tmp_path: Path, how: signal.Signals,
                                                              jobs: str) -> None:
    """Stopped after a random number of accepted requests, then re-run as it was: the union of
    both runs' span IDs is the clean run's, the metric totals are the clean run's, and what was
    sent twice is at most the checkpoint in flight at the stop. With two processes the signal
    goes to the main one, as a user's kill does: the export process ends with it."""
    seed = random.randrange(1 << 30)
    stop_after = random.Random(seed).randint(2, 50)
    env = clean_env(XDG_STATE_HOME=str(tmp_path))
    cmd = command(big.log, otlp_http.endpoint, "--jobs", jobs)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    when_requests(otlp_http, stop_after, lambda: proc.poll() is None and proc.send_signal(how)).join(90)
    _, err1 = proc.communicate(timeout=60)
    first = len(span_ids(otlp_http))
    if proc.returncode in (130, 143):  # stopped cleanly (not when it had finished already)
        assert proc.returncode == 128 + how
        assert "continue with:" in err1.decode() or "nothing was exported yet" in err1.decode()
    second = subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=120)
    err = second.stderr.decode()
    assert second.returncode == 0, f"seed {seed}: {err}"
    ids = span_ids(otlp_http)
    assert set(ids) == set(big.spans), f"seed {seed}, stopped after {stop_after} requests"
    assert final_points(otlp_http) == big.metrics, f"seed {seed}"
    again = (Counter(ids) - big.spans).total()
    assert again <= CHECKPOINT_ITEMS + 2048, f"seed {seed}: {again} spans sent twice"
    if proc.returncode in (-signal.SIGKILL, 130, 143) and 0 < first < len(big.spans) and again < first:
        assert "continuing the interrupted backfill" in err
    assert state_files(env) == []


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"], ids=["one-process", "two-processes"])
def test_retry_for_deadline_stops_cleanly_and_says_how_to_resume(big: Truth, otlp_http: OtlpHttpReceiver,
                                                                 tmp_path: Path, jobs: str) -> None:
    env = clean_env(XDG_STATE_HOME=str(tmp_path))
    cmd = command(big.log, otlp_http.endpoint, "--retry-for", "2", "--jobs", jobs)

    def down() -> None:
        otlp_http.fail_until = time.monotonic() + 3600

    when_requests(otlp_http, 40, down)
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "--retry-for deadline" in err and "continue with: maillog2otel backfill" in err
    assert [n for n in state_files(env) if n.endswith(".json")], state_files(env)
    partial = len(set(span_ids(otlp_http)))  # stopped midway
    assert 0 < partial < len(big.spans)
    otlp_http.fail_until = 0
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "continuing the interrupted backfill" in proc.stderr.decode()
    assert set(span_ids(otlp_http)) == set(big.spans)
    assert final_points(otlp_http) == big.metrics


# --- changed inputs: detected and explained --------------------------------------------------------

def interrupted(tmp_path: Path, receiver: OtlpHttpReceiver, files: list[Path], *extra: str) -> tuple[
        list[str], dict[str, str], Path]:
    """A run of ``files`` stopped by a deadline after its first checkpoints; returns its command,
    environment and state file."""
    state = tmp_path / "backfill.json"
    env = clean_env(XDG_STATE_HOME=str(tmp_path))
    cmd = [sys.executable, "-m", "maillog2otel", "backfill", "--endpoint", receiver.endpoint, "--timezone",
           "UTC", "--retry-for", "0", "--state", str(state), *extra, *map(str, files)]

    def down() -> None:
        receiver.fail_until = time.monotonic() + 3600

    when_requests(receiver, 40, down)
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=120)
    assert proc.returncode == 1 and state.exists(), proc.stderr.decode()
    receiver.fail_until = 0
    return cmd, env, state


@pytest.fixture
def rotated_set(big: Truth, tmp_path: Path) -> list[Path]:
    """The big log as a rotated set: mail.log.1 (older half) and mail.log."""
    lines = big.log.read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    (tmp_path / "mail.log.1").write_bytes(b"".join(lines[:half]))
    (tmp_path / "mail.log").write_bytes(b"".join(lines[half:]))
    return [tmp_path / "mail.log", tmp_path / "mail.log.1"]


@pytest.mark.slow
def test_changed_inputs_are_refused_with_the_reason(rotated_set: list[Path], otlp_http: OtlpHttpReceiver,
                                                    tmp_path: Path, big: Truth) -> None:
    cmd, env, state = interrupted(tmp_path, otlp_http, rotated_set)
    newest, older = rotated_set
    saved = state.read_bytes()

    def rerun(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(args or cmd, env=env, capture_output=True, check=False, timeout=120)

    # other files
    proc = rerun(*cmd[:-2], str(newest))
    assert proc.returncode == 2 and b"other files" in proc.stderr and b"mail.log.1" in proc.stderr
    # other options
    proc = rerun(*cmd[:-2], "--mta", "postfix", *cmd[-2:])
    assert proc.returncode == 2 and b"other options" in proc.stderr and b"mta" in proc.stderr
    # rotated meanwhile: mail.log's lines moved into mail.log.1, mail.log starts afresh
    older_bytes, newest_bytes = older.read_bytes(), newest.read_bytes()
    older.write_bytes(newest_bytes)
    newest.write_bytes(b"")
    proc = rerun()
    assert proc.returncode == 2 and b"first bytes differ" in proc.stderr, proc.stderr
    # an older file of the set that grew
    older.write_bytes(older_bytes + b"Jan  1 01:00:00 mx postfix/qmgr[1]: 0000AAAA: removed\n")
    newest.write_bytes(newest_bytes)
    proc = rerun()
    assert proc.returncode == 2 and b"not the newest plain file" in proc.stderr, proc.stderr
    assert state.read_bytes() == saved  # a refused run leaves the state as it was
    # the newest file grew (a live log): documented, its new lines are read too
    older.write_bytes(older_bytes)
    extra = "".join(shifted_copies(1))
    newest.write_bytes(newest_bytes + extra.encode())
    proc = rerun()
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"grew by" in proc.stderr and not state.exists()
    grown = clean_run(_joined(tmp_path, [older, newest]))
    assert set(span_ids(otlp_http)) == set(grown.spans)


def _joined(tmp: Path, files: list[Path]) -> Path:
    out = tmp / "joined.log"
    out.write_bytes(b"".join(f.read_bytes() for f in files))
    return out


def test_stdin_cannot_keep_a_state(tmp_path: Path, otlp_http: OtlpHttpReceiver) -> None:
    proc = run_cli("backfill", "--endpoint", otlp_http.endpoint, "--state", str(tmp_path / "s.json"), "-",
                   stdin=b"", env=clean_env(XDG_STATE_HOME=str(tmp_path)))
    assert proc.returncode == 2 and b"stdin cannot be read again" in proc.stderr


def test_a_state_of_the_other_command_is_refused(tmp_path: Path, otlp_http: OtlpHttpReceiver,
                                                 real: Truth) -> None:
    state = tmp_path / "tail.json"
    state.write_text('{"format": "maillog2otel-tail-state", "version": 1}')
    proc = run_cli("backfill", "--endpoint", otlp_http.endpoint, "--state", str(state), str(real.log),
                   env=clean_env(XDG_STATE_HOME=str(tmp_path)))
    assert proc.returncode == 2 and b"it is tail's" in proc.stderr, proc.stderr
    assert os.path.exists(state)
