"""The tail state file, and the follower that the state describes, on real files: rotations,
truncations and restarts in every order, in-process and fast."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OtlpHttpReceiver

from maillog2otel import state as statefile
from maillog2otel.config import ExportTarget
from maillog2otel.export.base import OtlpSink
from maillog2otel.export.encode import Resources
from maillog2otel.records import SpanData
from maillog2otel.sources import MAX_LINE_BYTES
from maillog2otel.tail import BufferedSink, Follower, FollowStats, LogClock, _ExportGuard, _Lines

# --- the state file --------------------------------------------------------------------------------


def test_save_and_load_round_trip_atomically(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    assert statefile.load(str(path)) is None
    statefile.save(str(path), {"files": {"/var/log/mail.log": {"gens": []}}, "pipeline": {"version": 1}})
    doc = statefile.load(str(path))
    assert doc is not None and doc["format"] == statefile.FORMAT and doc["version"] == statefile.VERSION
    assert doc["files"] == {"/var/log/mail.log": {"gens": []}}
    statefile.save(str(path), {"files": {}, "pipeline": {"version": 1}})
    assert statefile.load(str(path))["files"] == {}  # type: ignore[index]
    assert sorted(os.listdir(tmp_path)) == ["s.json"]  # no temporary file left behind
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot be read"),
    ('{"format": "something else"}', "not a maillog2otel tail state"),
    ('{"format": "maillog2otel-tail-state", "version": 99}', "version 99"),
])
def test_unusable_state_files_say_what_to_do(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(statefile.StateError, match=message):
        statefile.load(str(path))


def test_one_tail_per_state_file(tmp_path: Path) -> None:
    a, b = statefile.StateLock(str(tmp_path / "s.json")), statefile.StateLock(str(tmp_path / "s.json"))
    a.acquire()
    with pytest.raises(statefile.StateError, match="another maillog2otel tail"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()


def test_default_state_path(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    p1 = statefile.default_state_path(["/var/log/mail.log", "/var/log/exim4/mainlog"], env)
    p2 = statefile.default_state_path(["/var/log/exim4/mainlog", "/var/log/mail.log"], env)
    assert p1 == p2 and p1.startswith(str(tmp_path / "maillog2otel" / "tail-"))
    assert statefile.default_state_path(["/var/log/mail.log"], env) != p1
    assert "tail-stdin-" in statefile.default_state_path(["-"], env)
    home = statefile.default_state_path(["-"], {})
    assert home.startswith(os.path.join(os.path.expanduser("~"), ".local", "state", "maillog2otel"))


# --- the follower ------------------------------------------------------------------------------------


def lines_of(f: Follower, hup: bool = False) -> list[str]:
    return [text for text, _ in f.poll(hup)]


def restart(f: Follower) -> Follower:
    """What a new process does with the saved state (through JSON, as on disk)."""
    saved = json.loads(json.dumps(f.save()))
    f.close()
    g = Follower(f.path, 0)
    g.start(saved, from_beginning=False)
    return g


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def test_partial_lines_wait_for_their_newline(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(str(log), 0)
    f.start(None, from_beginning=False)
    append(log, "one\ntw")
    assert lines_of(f) == ["one"]
    append(log, "o\r\nthree\n")
    assert [(t, o) for t, o in f.poll()] == [("two", 4), ("three", 9)]
    assert f.save()["gens"][0]["offset"] == 15


def test_first_start_at_the_end_or_the_beginning(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("old 1\nold 2\nhalf")
    end = Follower(str(log), 0)
    end.start(None, from_beginning=False)
    begin = Follower(str(log), 0)
    begin.start(None, from_beginning=True)
    append(log, " line\nnew\n")
    assert lines_of(end) == ["half line", "new"]  # from the end of the last complete line
    assert lines_of(begin) == ["old 1", "old 2", "half line", "new"]


def test_oversized_lines_are_cut_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(str(log), 0)
    f.start(None, from_beginning=False)
    append(log, "a" * (MAX_LINE_BYTES + 5000) + "\nnext\n")
    out = lines_of(f)
    assert [len(x) for x in out] == [MAX_LINE_BYTES, 4] and f.stats.oversized == 1
    assert f.save()["gens"][0]["offset"] == MAX_LINE_BYTES + 5000 + 1 + 5


def test_lines_from_a_pipe_in_pieces() -> None:
    stats = FollowStats()
    lines = _Lines(stats)
    out = [*lines.feed(b"a\r\nb"), *lines.feed(b"b\n" + b"x" * MAX_LINE_BYTES), *lines.feed(b"yyy\nlast")]
    out += lines.end()
    assert out == [("a", 0), ("bb", 3), ("x" * MAX_LINE_BYTES, 6), ("last", 6 + MAX_LINE_BYTES + 4)]
    assert stats.oversized == 1 and stats.lines == 4


def test_rename_rotation_finishes_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(str(log), 0, rotate_wait=60)
    f.start(None, from_beginning=False)
    append(log, "a1\n")
    assert lines_of(f) == ["a1"]
    append(log, "a2\n")
    os.rename(log, tmp_path / "mail.log.1")
    append(tmp_path / "mail.log.1", "a3 late\nno newline")  # the writer has not reopened yet
    append(log, "b1\n")
    assert lines_of(f) == ["a2", "a3 late", "b1"]
    append(tmp_path / "mail.log.1", " at the end")
    assert lines_of(f, hup=True) == ["no newline at the end"]  # SIGHUP closes renamed files
    assert f.stats.rotations == 1 and len(f.gens) == 1


def test_several_rotations_between_two_reads(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(str(log), 0)
    f.start(None, from_beginning=False)
    append(log, "a1\n")
    assert lines_of(f) == ["a1"]
    append(log, "a2\n")
    os.rename(log, tmp_path / "mail.log.1")
    append(log, "b1\n")
    time.sleep(0.01)
    os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")
    os.rename(log, tmp_path / "mail.log.1")
    append(log, "c1\n")
    assert lines_of(f) == ["a2", "b1", "c1"]
    assert f.stats.intermediates == 1


def test_rotated_files_present_at_start_are_never_read(tmp_path: Path) -> None:
    (tmp_path / "mail.log.2.gz").write_bytes(gzip.compress(b"older\n"))
    (tmp_path / "mail.log.1").write_text("old\n")
    log = tmp_path / "mail.log"
    log.write_text("a1\n")
    f = Follower(str(log), 0)
    f.start(None, from_beginning=False)
    append(log, "a2\n")
    assert lines_of(f) == ["a2"]
    os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.3")  # as logrotate shifts them
    os.rename(log, tmp_path / "mail.log.1")
    append(log, "b1\n")
    assert lines_of(f) == ["b1"]


def test_copytruncate_recovers_the_unread_end_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(str(log), 0)
    f.start(None, from_beginning=False)
    append(log, "a1\n")
    assert lines_of(f) == ["a1"]
    append(log, "a2\na3\n")
    shutil.copyfile(log, tmp_path / "mail.log.1")
    os.truncate(log, 0)
    append(log, "b1\n")
    assert lines_of(f) == ["a2", "a3", "b1"]
    assert f.stats.truncations == 1 and f.stats.recovered == 1


def test_a_file_replaced_by_one_as_long_is_read_again(tmp_path: Path) -> None:
    """Same size, other first bytes: truncation and regrowth between two reads."""
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(str(log), 0)
    f.start(None, from_beginning=False)
    append(log, "aaaa\n")
    assert lines_of(f) == ["aaaa"]
    with open(log, "r+") as fh:
        fh.write("bbbb\ncc\n")
    assert lines_of(f) == ["bbbb", "cc"]


@pytest.mark.parametrize("while_stopped", ["nothing", "rename", "rename+gzip", "copytruncate", "delete",
                                           "two rotations"])
def test_restart_continues_after_the_last_checkpointed_line(tmp_path: Path, while_stopped: str) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(str(log), 0)
    f.start(None, from_beginning=False)
    append(log, "a1\na2\n")
    assert lines_of(f) == ["a1", "a2"]
    append(log, "a3\n")  # written before the stop, never read
    g = None
    if while_stopped == "nothing":
        expected = ["a3"]
    elif while_stopped == "rename":
        os.rename(log, tmp_path / "mail.log.1")
        append(log, "b1\n")
        expected = ["a3", "b1"]
    elif while_stopped == "rename+gzip":
        os.rename(log, tmp_path / "mail.log.1")
        with open(tmp_path / "mail.log.1", "rb") as src, gzip.open(tmp_path / "mail.log.1.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.unlink(tmp_path / "mail.log.1")
        append(log, "b1\n")
        expected = ["a3", "b1"]
    elif while_stopped == "copytruncate":
        shutil.copyfile(log, tmp_path / "mail.log.1")
        os.truncate(log, 0)
        append(log, "b1\n")
        expected = ["a3", "b1"]
    elif while_stopped == "delete":
        os.unlink(log)
        append(log, "b1\n")
        expected = ["b1"]  # a3 went with the deleted file
    else:
        os.rename(log, tmp_path / "mail.log.1")
        append(log, "b1\n")
        time.sleep(0.01)
        os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")
        os.rename(log, tmp_path / "mail.log.1")
        append(log, "c1\n")
        expected = ["a3", "b1", "c1"]
    g = restart(f)
    assert lines_of(g, hup=True) == expected
    assert g.stats.lost == (1 if while_stopped == "delete" else 0)
    append(log, "z\n")
    assert lines_of(g) == ["z"]


def test_log_clock_moves_only_when_lines_are_quiet() -> None:
    clock = LogClock(skew_ns=50_000_000)
    base = 1_800_000_000 * 10**9
    clock.seen(base)
    assert clock.now() == base
    time.sleep(0.15)
    assert base + 80_000_000 <= clock.now() <= base + 400_000_000  # wall time since the line, less skew
    clock.seen(base - 10**9)  # an older line: log time does not go back, but it is activity
    assert clock.now() == base


# --- buffering sinks ----------------------------------------------------------------------------------


_RES = Resources(service_name=None, service_version=None, extra={})


def _span(i: int) -> SpanData:
    return SpanData("smtp.connection", 2, b"\x01" * 16, i.to_bytes(8, "big"), None, 10**18, 10**18 + 1,
                    {}, [], None, ("mx", "postfix"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lossy_buffer_drops_the_oldest_and_counts_them() -> None:
    import threading

    target = ExportTarget("otlp", endpoint=f"http://127.0.0.1:{_free_port()}/v1/traces", timeout_s=2)
    inner = OtlpSink(target, "traces", _RES, budget_s=0)
    sink = BufferedSink(inner, "spans", _ExportGuard(threading.Event()), lossy=True, cap=100)
    for i in range(5):
        sink.spans([_span(i * 50 + k) for k in range(50)])
    assert sink.n == 100 and sink.dropped == 150
    sink.flush()  # connection refused: kept, backing off
    assert sink.n == 100 and sink.pending()
    assert sink.q[0][1][0].span_id == (150).to_bytes(8, "big")  # the newest were kept


def test_rejected_batches_are_counted_not_retried() -> None:
    import threading

    receiver = OtlpHttpReceiver()
    try:
        target = ExportTarget("otlp", endpoint=receiver.endpoint + "/no/such/path", timeout_s=2)
        inner = OtlpSink(target, "traces", _RES, budget_s=-1)
        sink = BufferedSink(inner, "spans", _ExportGuard(threading.Event()))
        sink.spans([_span(1), _span(2)])
        sink.flush()  # 404: final, counted, the loop goes on
        assert sink.rejected == 2 and not sink.pending()
        ok = BufferedSink(OtlpSink(ExportTarget("otlp", endpoint=receiver.endpoint + "/v1/traces"), "traces",
                                   _RES, budget_s=-1), "spans", _ExportGuard(threading.Event()))
        ok.spans([_span(3)])
        ok.flush()
        assert len(receiver.received.spans()) == 1 and not ok.pending()
    finally:
        receiver.close()


def test_remove_takes_a_killed_runs_half_written_copy_too(tmp_path: Path) -> None:
    """A run killed while saving leaves ``.<state>.<pid>.tmp``: the finished run that removes the
    state removes it too, but not the copy a live process is still writing."""
    from maillog2otel import state as statefile

    path = tmp_path / "backfill.json"
    statefile.save(str(path), {"x": 1}, kind="backfill")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".backfill.json.{dead.pid}.tmp"
    live = tmp_path / f".backfill.json.{os.getppid()}.tmp"
    other = tmp_path / f".other.json.{dead.pid}.tmp"
    for p in (stale, live, other):
        p.write_text("{")
    statefile.remove(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
