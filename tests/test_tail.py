"""``maillog2otel tail`` as a user runs it: a subprocess follows a real file that this test writes,
rotates, truncates, deletes and re-creates, and that gets killed (-9) and restarted, while it exports
over OTLP/HTTP to a receiver in this process. Whatever happened, the set of exported
``smtp.connection`` span IDs must equal that of a ``maillog2otel backfill`` of the same lines.

Lines come from the real Postfix fixture, written several times with the timestamps shifted so
every copy's connections are distinct."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import FIXTURES, OtlpHttpReceiver, clean_env, run_cli

SOURCE = FIXTURES / "postfix" / "port-logging.log"
COPY_GAP_S = 40  # log-time distance between copies (the fixture spans 21 s)


def shifted_copies(copies: int, base: dt.datetime | None = None) -> list[str]:
    """The fixture's lines ``copies`` times, each copy ``COPY_GAP_S`` later, starting two hours ago
    (UTC, whole seconds); each line ends with a newline."""
    raw = SOURCE.read_text().splitlines()
    base = base or (dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2))
    first = dt.datetime.strptime(raw[0][:15], "%b %d %H:%M:%S")
    out = []
    for c in range(copies):
        for line in raw:
            rel = dt.datetime.strptime(line[:15], "%b %d %H:%M:%S") - first
            t = base + rel + dt.timedelta(seconds=c * COPY_GAP_S)
            out.append(f"{t:%b} {t.day:2d} {t:%H:%M:%S}{line[15:]}\n")
    return out


def connection_ids(receiver: OtlpHttpReceiver) -> list[str]:
    return [s.span_id.hex() for s in receiver.received.spans() if s.name == "smtp.connection"]


_POOL = ThreadPoolExecutor(4)


def backfill_ids(lines: list[str], tmp: Path) -> Future[set[str]]:
    """The connection span IDs of ``maillog2otel backfill`` of ``lines``, computed in the
    background while the test writes (``.result()`` to get them)."""
    return _POOL.submit(_backfill_ids, list(lines), tmp)


def _backfill_ids(lines: list[str], tmp: Path) -> set[str]:
    path = tmp / f"all-lines-{time.monotonic_ns()}.log"
    path.write_text("".join(lines))
    receiver = OtlpHttpReceiver()
    try:
        proc = run_cli("backfill", "--endpoint", receiver.endpoint, "--timezone", "UTC", "-q", str(path),
                       timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        ids = connection_ids(receiver)
    finally:
        receiver.close()
    assert len(ids) == len(set(ids))
    return set(ids)


class Tail:
    """``maillog2otel tail`` as a subprocess; stderr goes to a file (read with ``.err``)."""

    def __init__(self, tmp: Path, endpoint: str, paths: list[Path], *extra: str) -> None:
        self.tmp, self.endpoint, self.paths, self.extra = tmp, endpoint, paths, extra
        self.state = tmp / "state" / "tail.json"
        self.log = tmp / "tail.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as err:
            err.write(f"--- start {self.starts}\n".encode())
            err.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "maillog2otel", "tail", "--endpoint", self.endpoint,
                 "--timezone", "UTC", "--state", str(self.state), "-v", *self.extra, *map(str, self.paths)],
                env=clean_env(), stdout=subprocess.DEVNULL, stderr=err)
        wait_for(self.state.exists, 10, "the state file to be written at start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self, max_s: float = 5.0) -> float:
        """SIGTERM; the process must exit 0 within ``max_s``; returns how long it took."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(max_s + 5)
        took = time.monotonic() - t0
        self.proc = None
        assert rc == 0, self.err()
        assert took < max_s, f"took {took:.1f}s to stop"
        return took

    def err(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def tail_factory(tmp_path: Path):
    made: list[Tail] = []

    def make(endpoint: str, paths: list[Path], *extra: str) -> Tail:
        t = Tail(tmp_path, endpoint, paths, *extra)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def write(path: Path, lines: list[str], rate: float = 800.0) -> None:
    """Append ``lines`` at about ``rate`` lines per second, a few at a time, as a logger does."""
    with open(path, "a") as fh:
        for i in range(0, len(lines), 4):
            fh.write("".join(lines[i:i + 4]))
            fh.flush()
            time.sleep(4 / rate)


def wait_for_ids(receiver: OtlpHttpReceiver, expected: set[str], tail: Tail, timeout: float = 10) -> None:
    try:
        wait_for(lambda: set(connection_ids(receiver)) >= expected, timeout, "every connection span")
    except AssertionError:
        got = set(connection_ids(receiver))
        raise AssertionError(f"missing {len(expected - got)} of {len(expected)} connections; "
                             f"unexpected {len(got - expected)}\n{tail.err()[-3000:]}") from None


def check_same(receiver: OtlpHttpReceiver, expected: set[str], tail: Tail, *, exact: bool = True) -> None:
    ids = connection_ids(receiver)
    assert set(ids) == expected, tail.err()[-3000:]
    if exact:
        assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} connections exported twice"


def test_rename_rotations_delete_and_sighup_of_a_file_that_does_not_exist_yet(
        tmp_path: Path, otlp_http: OtlpHttpReceiver, tail_factory) -> None:
    """One follower through: the file appearing after the start; logrotate ``create`` with a
    writer that logs three more lines to the renamed file before it reopens; SIGHUP; delete and
    re-create; ``postfix logrotate`` (a dated name, compressed right away)."""
    log = tmp_path / "mail.log"
    lines = shifted_copies(4)
    expect = backfill_ids(lines, tmp_path)
    n = len(lines) // 4
    tail = tail_factory(otlp_http.endpoint, [log])
    tail.start()  # mail.log does not exist yet
    write(log, lines[:n - 3])
    with open(log, "a") as old:
        os.rename(log, tmp_path / "mail.log.1")
        old.write("".join(lines[n - 3:n]))  # the writer has not reopened yet
    write(log, lines[n:n + 50])
    assert tail.proc is not None
    tail.proc.send_signal(signal.SIGHUP)
    write(log, lines[n + 50:2 * n])
    log.unlink()
    time.sleep(0.3)
    write(log, lines[2 * n:3 * n])
    rotated = tmp_path / "mail.log.20261122-031500"
    os.rename(log, rotated)
    write(log, lines[3 * n:])
    with open(rotated, "rb") as src, gzip.open(str(rotated) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    rotated.unlink()
    expected = expect.result()
    assert len(expected) == 4 * 14
    wait_for_ids(otlp_http, expected, tail)
    tail.stop()
    check_same(otlp_http, expected, tail)
    err = tail.err()
    assert "rotations 3" in err and "SIGHUP" in err


def test_copytruncate(tmp_path: Path, otlp_http: OtlpHttpReceiver, tail_factory) -> None:
    """logrotate ``copytruncate`` right after a burst: the part the follower had not read yet is
    recovered from the copy (mail.log.1, shifted to mail.log.2 at the next rotation)."""
    log = tmp_path / "mail.log"
    lines = shifted_copies(3)
    expect = backfill_ids(lines, tmp_path)
    n = len(lines) // 3
    log.touch()
    tail = tail_factory(otlp_http.endpoint, [log])
    tail.start()
    for k in range(2):
        write(log, lines[k * n:(k + 1) * n - 20])
        with open(log, "a") as fh:  # a burst, then the rotation at once
            fh.write("".join(lines[(k + 1) * n - 20:(k + 1) * n]))
        if (tmp_path / "mail.log.1").exists():
            os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")
        shutil.copyfile(log, tmp_path / "mail.log.1")
        os.truncate(log, 0)
    write(log, lines[2 * n:])
    expected = expect.result()
    wait_for_ids(otlp_http, expected, tail)
    tail.stop()
    check_same(otlp_http, expected, tail)
    assert "truncations 2" in tail.err()


def test_kill_9_at_random_points_then_restart(tmp_path: Path, otlp_http: OtlpHttpReceiver,
                                              tail_factory) -> None:
    """Three crashes at random lines (one with a rotation while the process is down): after each
    restart the follower continues from its state. No connection is lost; any re-sent span (an
    export accepted in the instant before the kill) has the same ID."""
    seed = int(os.environ.get("MAILLOG2OTEL_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    log = tmp_path / "mail.log"
    lines = shifted_copies(4)
    expect = backfill_ids(lines, tmp_path)
    kills = sorted(rng.sample(range(30, len(lines) - 60), 3))
    log.touch()
    tail = tail_factory(otlp_http.endpoint, [log])
    tail.start()
    done = 0
    for i, kill_at in enumerate(kills):
        at = max(kill_at, done)  # kills closer than the lines written while down: never write a line twice
        write(log, lines[done:at])
        time.sleep(rng.uniform(0, 0.6))  # anywhere: reading, exporting, checkpointing or idle
        tail.kill()
        down = rng.randrange(5, 40)
        write(log, lines[at:at + down], rate=2000)
        if i == 1:
            os.rename(log, tmp_path / "mail.log.1")
        done = at + down
        tail.start()
    write(log, lines[done:])
    expected = expect.result()
    wait_for_ids(otlp_http, expected, tail)
    tail.stop()
    ids = connection_ids(otlp_http)
    assert set(ids) == expected, f"seed {seed}\n{tail.err()[-3000:]}"
    resent = len(ids) - len(set(ids))
    assert resent <= 3 * 32, f"seed {seed}: {resent} spans sent again"  # at most one batch per kill


def test_sigterm_mid_stream_saves_state_and_restart_continues(tmp_path: Path, otlp_http: OtlpHttpReceiver,
                                                             tail_factory) -> None:
    log = tmp_path / "mail.log"
    lines = shifted_copies(3)
    expect = backfill_ids(lines, tmp_path)
    cut = len(lines) // 2 + 7  # inside a copy: sessions and messages are open
    log.touch()
    tail = tail_factory(otlp_http.endpoint, [log])
    tail.start()
    write(log, lines[:cut])
    time.sleep(0.3)
    tail.stop(max_s=4)
    write(log, lines[cut:cut + 40])  # written while stopped
    tail.start()
    write(log, lines[cut + 40:])
    expected = expect.result()
    wait_for_ids(otlp_http, expected, tail)
    tail.stop()
    check_same(otlp_http, expected, tail)  # a clean stop sends nothing twice
    # bounded state: closed sessions left it; what remains are the two deferred queue IDs (kept for
    # their later deliveries, reused by every copy) and the metric series
    doc = json.loads(tail.state.read_text())
    pf = doc["pipeline"]["correlators"]["postfix"]
    assert pf["sessions"] == [] and pf["closing"] == []
    assert len(pf["messages"]) <= 2
    assert len(tail.state.read_bytes()) < 64 * 1024
    # cumulative metric series continue across the restart: one start time, totals never go back
    points = sorted(otlp_http.received.metric_points("postfix.connections"), key=lambda p: p.time_unix_nano)
    assert points and len({p.start_time_unix_nano for p in points}) == 1
    values = [p.as_int or p.as_double for p in points]
    assert values == sorted(values) and values[-1] <= len(expected)


def test_collector_down_for_a_while_loses_nothing(tmp_path: Path, otlp_http: OtlpHttpReceiver,
                                                   tail_factory) -> None:
    """The collector answers 503 to the first requests (about three seconds of retries): reading
    pauses, the condition is logged once, and everything arrives after it recovers."""
    log = tmp_path / "mail.log"
    lines = shifted_copies(2)
    expect = backfill_ids(lines, tmp_path)
    log.touch()
    tail = tail_factory(otlp_http.endpoint, [log])
    tail.start()
    otlp_http.fail_next = 2
    write(log, lines)
    expected = expect.result()
    wait_for_ids(otlp_http, expected, tail, timeout=15)
    tail.stop()
    check_same(otlp_http, expected, tail)
    err = tail.err()
    assert err.count("export failing") == 1, err
    assert "export recovered" in err


@pytest.mark.slow
def test_collector_down_for_a_minute_loses_nothing(tmp_path: Path, otlp_http: OtlpHttpReceiver,
                                                   tail_factory) -> None:
    """A collector that answers 503 for a whole minute while mail keeps flowing, then recovers:
    every connection arrives once (issue 5's outage)."""
    import time

    log = tmp_path / "mail.log"
    lines = shifted_copies(3)
    expect = backfill_ids(lines, tmp_path)
    log.touch()
    tail = tail_factory(otlp_http.endpoint, [log])
    tail.start()
    otlp_http.fail_until = time.monotonic() + 60
    third = len(lines) // 3
    write(log, lines[:third])
    time.sleep(20)
    write(log, lines[third:2 * third])
    time.sleep(20)
    write(log, lines[2 * third:])
    expected = expect.result()
    wait_for_ids(otlp_http, expected, tail, timeout=150)
    tail.stop()
    check_same(otlp_http, expected, tail)
    assert tail.err().count("export failing") == 1


def test_lossy_keeps_reading_and_counts_what_it_drops(tmp_path: Path, otlp_http: OtlpHttpReceiver,
                                                      tail_factory) -> None:
    log = tmp_path / "mail.log"
    log.touch()
    otlp_http.fail_next = 10**9  # down for good
    tail = tail_factory(otlp_http.endpoint, [log], "--lossy", "--buffer", "100")
    tail.start()
    write(log, shifted_copies(8), rate=2000)
    time.sleep(1.5)
    tail.stop(max_s=4)
    err = tail.err()
    warnings = [line for line in err.splitlines() if "(--lossy)" in line and " lost " not in line]
    assert 1 <= len(warnings) <= 2, err  # once per signal, not per line or batch
    assert len(set(warnings)) == len(warnings), err
    assert "spans: " in err and "dropped (--lossy)" in err


def test_stop_while_collector_down_exits_promptly_and_resends_later(tmp_path: Path,
                                                                    otlp_http: OtlpHttpReceiver,
                                                                    tail_factory) -> None:
    """Default mode, collector down: SIGTERM abandons the blocked export after a short grace, exits
    0 and keeps the last exported position, so the next run sends those connections."""
    log = tmp_path / "mail.log"
    lines = shifted_copies(1)
    expect = backfill_ids(lines, tmp_path)
    log.touch()
    tail = tail_factory(otlp_http.endpoint, [log])
    tail.start()
    otlp_http.fail_next = 10**9
    write(log, lines)
    time.sleep(0.5)
    tail.stop(max_s=6)
    assert "collector was unavailable" in tail.err()
    otlp_http.fail_next = 0
    tail.start()
    expected = expect.result()
    wait_for_ids(otlp_http, expected, tail)
    tail.stop()
    check_same(otlp_http, expected, tail)


def test_first_start_reads_from_the_end(tmp_path: Path, otlp_http: OtlpHttpReceiver, tail_factory) -> None:
    """Without a state, a file's existing content is history (backfill's job): ``tail`` starts at
    its end. (``--from-beginning`` is covered in test_state.py.)"""
    lines = shifted_copies(2)
    n = len(lines) // 2
    expect = backfill_ids(lines[n:], tmp_path)
    log = tmp_path / "mail.log"
    log.write_text("".join(lines[:n]))
    tail = tail_factory(otlp_http.endpoint, [log])
    tail.start()
    write(log, lines[n:])
    expected = expect.result()
    wait_for_ids(otlp_http, expected, tail)
    tail.stop()
    check_same(otlp_http, expected, tail)


def _postfix_recorder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("postfix_record", FIXTURES / "postfix" / "record.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.mta
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/postfix"),
                    reason="needs root and Postfix (fixtures/postfix/install.sh installs it)")
def test_real_postfix_logrotate_while_followed(tmp_path: Path, otlp_http: OtlpHttpReceiver,
                                               tail_factory) -> None:
    """A real Postfix writes its maillog_file while ``tail`` follows it; ``postfix logrotate``
    renames it (dated suffix), makes postlogd reopen and gzips the old file. The spans equal those
    of a backfill of the rotated and the new file."""
    rec = _postfix_recorder()
    if rec.postfix_running() is not None or rec.port_in_use(rec.SMTPD_PORT):
        pytest.skip("a Postfix is already running here (another test or recorder)")
    rec.ensure_users()
    rec.ensure_cert()
    rec.reset_state()
    rec.configure("tail-logrotate", {"smtpd_client_port_logging": "yes"})
    sink = rec.start_sink()
    tail = tail_factory(otlp_http.endpoint, [rec.MAILLOG])
    rotated: list[Path] = []
    try:
        tail.start()
        rec.start_postfix()
        before = set(rec.WORK.iterdir())
        for scenario in (rec.sc_clean_local, rec.sc_two_messages_rset, rec.sc_multi_rcpt):
            scenario()
        time.sleep(1)
        rec.sh(["postfix", "logrotate"])
        rotated = sorted(p for p in set(rec.WORK.iterdir()) - before if p.name.startswith("maillog."))
        for scenario in (rec.sc_clean_local, rec.sc_unknown_user, rec.sc_starttls):
            scenario()
        rec.wait_for_queue(30, until_empty=True)
    finally:
        rec.stop_postfix()
        rec.stop_sink(sink)
    assert [p.suffix for p in rotated] == [".gz"], rotated
    with gzip.open(rotated[0], "rt") as old:
        expected = _backfill_ids([old.read() + rec.MAILLOG.read_text()], tmp_path)
    assert len(expected) == 6
    wait_for_ids(otlp_http, expected, tail)
    tail.stop()
    check_same(otlp_http, expected, tail)
    assert "rotations 1" in tail.err()
    for p in rotated:
        p.unlink()


@pytest.mark.parametrize(("path", "message"), [("/nonexistent-dir/mail.log", "no such directory"),
                                                ("/tmp", "is a directory")])
def test_paths_that_cannot_be_followed_are_refused(tmp_path: Path, path: str, message: str) -> None:
    proc = run_cli("tail", "--state", str(tmp_path / "s.json"), "--exporter", "none", path, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr.decode(), proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
