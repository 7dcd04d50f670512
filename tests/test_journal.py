"""``journalctl … | maillog2otel tail -`` with a real journal: the Postfix fixture's lines turned into
Journal Export Format, written into a journal file by ``systemd-journal-remote`` (no running systemd
needed), and read back by the real ``journalctl`` in JSON and short formats. The spans must be
those of a ``maillog2otel backfill`` of the same lines; ``--after-cursor`` resumes without loss
or duplicates."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, OtlpHttpReceiver, clean_env, run_cli
from test_tail import shifted_copies

from maillog2otel.journal import already_seen, cursor_position, resume_command

JOURNAL_REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote",
                                   "/usr/lib/systemd/systemd-journal-remote") if os.path.exists(p)), None)
WHY = "needs journalctl and systemd-journal-remote (Debian: apt-get install systemd-journal-remote)"
needs_journal = pytest.mark.skipif(JOURNAL_REMOTE is None or shutil.which("journalctl") is None, reason=WHY)

_LINE = re.compile(r"(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) (?P<host>\S+) (?P<prog>[^\[:]+)\[(?P<pid>\d+)\]: "
                   r"(?P<msg>.*)")


def _field(key: str, value: bytes) -> bytes:
    try:
        value.decode()
        plain = b"\n" not in value
    except UnicodeDecodeError:
        plain = False
    if plain:
        return key.encode() + b"=" + value + b"\n"
    return key.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"


def build_journal(tmp: Path) -> tuple[Path, bytes]:
    """A journal of two shifted copies of the fixture plus foreign entries (non-UTF-8, two lines),
    and the same entries as syslog text for backfill."""
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    lines = shifted_copies(2, base)
    foreign = {40: ("dovecot", b"imap-login: Login: user=<\xfcml\xe4ut>"),
               150: ("amavis", b"first line\nsecond line")}
    return journal_of(lines, base, tmp, foreign)


def journal_of(lines: list[str], base: dt.datetime, tmp: Path,
               foreign: dict[int, tuple[str, bytes]] | None = None) -> tuple[Path, bytes]:
    """Syslog ``lines`` (year-less stamps in ``base``'s year, UTC) written into a real journal file
    by ``systemd-journal-remote``, with ``foreign`` entries after the given line numbers; and the
    same entries as syslog text for backfill."""
    foreign = foreign or {}
    stream, text = [], []
    for i, line in enumerate(lines):
        m = _LINE.match(line.rstrip("\n"))
        assert m, line
        when = dt.datetime.strptime(f"{base.year} {m['ts']}", "%Y %b %d %H:%M:%S").replace(tzinfo=dt.UTC)
        entries = [(m["prog"], m["pid"], m["msg"].encode())]
        if i in foreign:
            entries.append((foreign[i][0], "77", foreign[i][1]))
        for prog, pid, msg in entries:
            us = int(when.timestamp()) * 1_000_000
            fields = [("__REALTIME_TIMESTAMP", str(us)), ("__MONOTONIC_TIMESTAMP", str(len(stream) + 1000)),
                      ("_BOOT_ID", "0123456789abcdef0123456789abcdef"), ("_HOSTNAME", m["host"]),
                      ("_TRANSPORT", "syslog"), ("PRIORITY", "6"), ("SYSLOG_FACILITY", "2"),
                      ("SYSLOG_IDENTIFIER", prog), ("SYSLOG_PID", pid), ("_PID", pid)]
            entry = b"".join(_field(k, v.encode()) for k, v in fields) + _field("MESSAGE", msg) + b"\n"
            stream.append(entry)
            text.append(f"{m['ts']} {m['host']} {prog}[{pid}]: ".encode() + msg.split(b"\n")[0] + b"\n")
    export = tmp / "mail.export"
    export.write_bytes(b"".join(stream))
    journal = tmp / "mail.journal"
    proc = subprocess.run([JOURNAL_REMOTE, f"--output={journal}", str(export)], capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return journal, b"".join(text)


@pytest.fixture(scope="module")
def journal_and_truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[tuple[str, str]]]:
    if JOURNAL_REMOTE is None or shutil.which("journalctl") is None:
        pytest.skip(WHY)
    tmp = tmp_path_factory.mktemp("journal")
    journal, text = build_journal(tmp)
    plain = tmp / "mail.log"
    plain.write_bytes(text)
    receiver = OtlpHttpReceiver()
    try:
        proc = run_cli("backfill", "--endpoint", receiver.endpoint, "--timezone", "UTC", "-q", str(plain))
        assert proc.returncode == 0, proc.stderr.decode()
        truth = span_keys(receiver)
    finally:
        receiver.close()
    assert sum(1 for name, _ in truth if name == "smtp.connection") == 28
    return journal, truth


def span_keys(receiver: OtlpHttpReceiver) -> set[tuple[str, str]]:
    keys = [(s.name, s.span_id.hex()) for s in receiver.received.spans()]
    assert len(keys) == len(set(keys)), "a span exported twice"
    return set(keys)


def journalctl_into_tail(journal: Path, state: Path, endpoint: str, *jargs: str) -> str:
    """``journalctl --file J <jargs> | maillog2otel tail -``; returns tail's stderr."""
    env = clean_env(TZ="UTC")
    jc = subprocess.Popen(["journalctl", "--file", str(journal), *jargs], stdout=subprocess.PIPE, env=env)
    assert jc.stdout is not None
    tail = subprocess.run([sys.executable, "-m", "maillog2otel", "tail", "--endpoint", endpoint,
                           "--timezone", "UTC", "--state", str(state), "-"], stdin=jc.stdout,
                          capture_output=True, env=env, timeout=30, check=False)
    jc.stdout.close()
    assert jc.wait(10) == 0
    assert tail.returncode == 0, tail.stderr.decode()
    return tail.stderr.decode()


@needs_journal
@pytest.mark.parametrize("fmt", ["json", "short-iso", "short-precise"])
def test_journalctl_pipe_gives_the_spans_of_a_backfill(fmt: str, journal_and_truth, tmp_path: Path,
                                                        otlp_http: OtlpHttpReceiver) -> None:
    journal, truth = journal_and_truth
    args = ["-o", fmt] + (["--all"] if fmt == "json" else [])
    err = journalctl_into_tail(journal, tmp_path / "state.json", otlp_http.endpoint, *args)
    assert span_keys(otlp_http) == truth
    if fmt == "json":
        assert "--after-cursor=" in err
        assert "0 unparsed" in err
    else:
        assert "after-cursor" not in err


@needs_journal
def test_after_cursor_resumes_without_loss_or_duplicates(journal_and_truth, tmp_path: Path,
                                                         otlp_http: OtlpHttpReceiver) -> None:
    """Stop in the middle (open sessions), resume with the printed ``--after-cursor``, then feed
    everything again (as ``journalctl -f`` re-shows recent entries): nothing is lost, nothing is
    sent twice."""
    journal, truth = journal_and_truth
    env = clean_env(TZ="UTC")
    out = subprocess.run(["journalctl", "--file", str(journal), "-o", "json", "--all"], capture_output=True,
                         env=env, timeout=30, check=True).stdout.splitlines(keepends=True)
    state = tmp_path / "state.json"
    cut = len(out) // 2 + 5
    first = run_cli("tail", "--endpoint", otlp_http.endpoint, "--timezone", "UTC", "--state", str(state), "-",
                    stdin=b"".join(out[:cut]), env=env, timeout=30)
    assert first.returncode == 0, first.stderr.decode()
    assert re.search(r"kept      \d+ open sessions", first.stderr.decode()), first.stderr.decode()
    m = re.search(r"--after-cursor=([^'\s]+)", first.stderr.decode())
    assert m, first.stderr.decode()
    err = journalctl_into_tail(journal, state, otlp_http.endpoint, "-o", "json", "--all",
                               f"--after-cursor={m[1]}")
    assert span_keys(otlp_http) == truth, err
    again = run_cli("tail", "--endpoint", otlp_http.endpoint, "--timezone", "UTC", "--state", str(state), "-",
                    stdin=b"".join(out), env=env, timeout=30)
    assert again.returncode == 0, again.stderr.decode()
    assert f"{len(out):,} entries at or before the saved cursor skipped" in again.stderr.decode()
    assert span_keys(otlp_http) == truth


def test_cursor_helpers() -> None:
    c = "s=76e8730af2ff4becb2849a4ecb8b23e6;i=1f;b=0123;m=3e8;t=660d0dac3e800;x=a18e"
    assert cursor_position(c) == ("76e8730af2ff4becb2849a4ecb8b23e6", 31)
    assert cursor_position("opaque") is None
    last = cursor_position(c)
    assert already_seen(c, last)
    assert already_seen(c.replace("i=1f", "i=2"), last)
    assert not already_seen(c.replace("i=1f", "i=20"), last)
    assert not already_seen(c.replace("s=76", "s=99"), last)  # another journal: compare nothing
    assert not already_seen("opaque", last)
    cmd = resume_command(c, "/var/lib/m2o/state.json")
    assert "--after-cursor=" + c in cmd.replace("'", "") and "--state /var/lib/m2o/state.json -" in cmd


EOF_LOGS = [FIXTURES / "postfix" / "long-queue-ids.log", FIXTURES / "chain" / "postfix.log",
            FIXTURES / "postfix" / "port-logging.log"]


def span_multiset(receiver: OtlpHttpReceiver) -> Counter[tuple[str, int, int]]:
    return Counter((s.name, s.start_time_unix_nano, s.end_time_unix_nano) for s in receiver.received.spans())


@needs_journal
@pytest.mark.parametrize("fmt", ["json", "short-iso"])
@pytest.mark.parametrize("log", EOF_LOGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tail_stdin_at_eof_exports_what_a_backfill_exports(log: Path, fmt: str, tmp_path: Path,
                                                           otlp_http: OtlpHttpReceiver) -> None:
    """A one-shot ``journalctl | maillog2otel tail -`` of a real Postfix run: at EOF every span
    whose window closed in log time is exported (deliveries whose connection closed last too),
    the same (name, start, end) multiset as a backfill; nothing is left behind in the state."""
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    journal, text = journal_of(log.read_text().splitlines(keepends=True), base, tmp_path)
    plain = tmp_path / "mail.log"
    plain.write_bytes(text)
    truth = OtlpHttpReceiver()
    try:
        proc = run_cli("backfill", "--endpoint", truth.endpoint, "--timezone", "UTC", "--year", "2025", "-q",
                       str(plain))
        assert proc.returncode == 0, proc.stderr.decode()
        want = span_multiset(truth)
    finally:
        truth.close()
    assert sum(1 for name, _, _ in want.elements() if name == "smtp.delivery") >= 3
    args = ["-o", fmt] + (["--all"] if fmt == "json" else [])
    err = journalctl_into_tail(journal, tmp_path / "state.json", otlp_http.endpoint, *args)
    assert span_multiset(otlp_http) == want, err
    assert "spans waiting" not in err  # none held back at the end
