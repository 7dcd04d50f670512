"""``tail``: follow live logs through rotation, feed the pipeline, checkpoint after each export.

Files. The parent directory of each followed file is watched with watchfiles; its events are only
wake-ups (a watch on the file itself goes blind after a rename). On every wake, and at least every
half second, each file is read from its stored offset to EOF and then ``stat``-ed:

* a new ``(st_dev, st_ino)`` at the path is a rotation (logrotate ``create``, ``postfix
  logrotate``, delete and re-create): the old file is read to its end once more, kept open for
  ``rotate_wait`` seconds for writers that have not reopened yet, then closed (its last line is
  emitted even without a newline); rotated generations we never opened (several rotations between
  two wakes) are found among the siblings by modification time and read whole; then the new file
  is read from 0;
* a size below our offset, or first bytes that no longer match our fingerprint, is a truncation
  (``copytruncate``): the part we had not read yet is recovered from the sibling whose first bytes
  match our fingerprint (the copy), from our old offset to its end, then the file is read from 0;
* a missing path keeps the open file and waits for the name to come back.

A file is identified by ``(st_dev, st_ino)`` and a fingerprint, the SHA-256 of its first ≤ 1 KiB
(grown while the file is smaller), as the OpenTelemetry Collector's filelog receiver does.

stdin. Read until EOF: syslog text, ``journalctl -o short|short-iso|short-precise`` or ``-o json``
(framed by ``Framer``, which keeps each entry's ``__CURSOR``).

Time. Connection spans are built when a session closes and its grace (2 s of log time) has passed.
When lines are quiet, log time must still advance: ``LogClock`` moves it with the wall clock from
the last line read (less a small skew), so it follows the log's own clock even when the log's
zone or host clock is off, and never runs ahead while a backlog is being read.

Export and checkpoint. Sinks are wrapped in ``BufferedSink``; every half second (or when a buffer
fills) the pipeline state is taken, the buffers are exported (blocking while the collector is
down: the OTLP sink retries forever, so reading pauses and nothing is lost; with ``--lossy`` the
oldest data are dropped and counted instead), and only then is the state file replaced. A restart
(after SIGTERM, a crash or a reboot) loads that state and continues after the last checkpointed
line; at most the spans of an export that was accepted in the instant before a ``kill -9`` are
sent again, with the same deterministic IDs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import logging
import os
import re
import select
import signal
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from maillog2otel import journal
from maillog2otel import state as statefile
from maillog2otel.config import Settings
from maillog2otel.export.base import ExportError, Sink
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.pipeline import Pipeline, default_host
from maillog2otel.records import MessageDone
from maillog2otel.sources import MAX_LINE_BYTES

log = logging.getLogger("maillog2otel.tail")

FP_MAX = 1024  # bytes hashed for a file's fingerprint
CHUNK = 256 * 1024
ROTATE_WAIT_S = 5.0  # a renamed file stays open this long for writers that have not reopened yet
CYCLE_S = 0.25  # export + checkpoint period (and log-time tick period) while lines flow
SKEW_NS = 200_000_000  # log time trails the wall clock by this much after the last line
FLUSH_AT = 1024  # spans or points buffered before an export + checkpoint is forced
MAX_DONE = 64  # fingerprints of finished generations remembered (never read them again)
NS = 1_000_000_000
STOP_GRACE_S = 3.0  # after SIGTERM, how long a blocked export may still try


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_gz(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _head(path: str, n: int = FP_MAX) -> bytes | None:
    """The first ``n`` bytes of a file's content (decompressed for gzip), None if unreadable."""
    try:
        if _is_gz(path):
            with gzip.open(path, "rb") as gz:
                return gz.read(n)
        with open(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError, zlib.error):
        return None


def _decode(raw: bytes | bytearray, stats: FollowStats) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        stats.invalid_utf8 += 1
        text = raw.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text


class _Lines:
    """Bytes from a pipe -> (text, offset) of complete lines; a line over ``MAX_LINE_BYTES`` keeps
    its head, the rest up to its newline is skipped (and counted). A chunk's complete lines are
    split off at once (one ``split``, not a search and a copy per line); offsets still advance line
    by line as each is handed out, and lines not taken yet stay for the next call."""

    def __init__(self, stats: FollowStats, offset: int = 0) -> None:
        self.stats = stats
        self.buf = bytearray()
        self.offset = offset
        self.head: bytes | None = None
        self.skipped = 0
        # complete lines not handed out yet; a (head, bytes it took) pair for a cut oversized line
        self.ready: deque[bytearray | tuple[bytes, int]] = deque()

    def feed(self, chunk: bytes) -> Iterator[tuple[str, int]]:
        ready = self.ready
        if chunk:
            buf = self.buf
            buf += chunk
            end = buf.rfind(b"\n")
            if end >= 0:
                lines = buf[:end].split(b"\n")
                del buf[:end + 1]
                if self.head is not None:
                    ready.append((self.head, len(self.head) + self.skipped + len(lines[0]) + 1))
                    self.head, self.skipped = None, 0
                    ready.extend(lines[1:])
                else:
                    ready.extend(lines)
            if len(buf) >= MAX_LINE_BYTES:
                if self.head is None:
                    self.head = bytes(buf[:MAX_LINE_BYTES])
                    self.skipped = len(buf) - MAX_LINE_BYTES
                    self.stats.oversized += 1
                else:
                    self.skipped += len(buf)
                buf.clear()
        stats = self.stats
        while ready:
            raw = ready.popleft()
            start = self.offset
            if type(raw) is tuple:
                raw, n = raw
                self.offset += n
            else:
                self.offset += len(raw) + 1
            stats.lines += 1
            yield _decode(raw, stats), start

    def end(self) -> Iterator[tuple[str, int]]:
        """The input ended: a last line without its newline."""
        yield from self.feed(b"")
        if self.buf or self.head is not None:
            raw = self.head if self.head is not None else bytes(self.buf)
            start = self.offset
            self.offset += len(self.head or b"") + self.skipped + len(self.buf)
            self.buf.clear()
            self.head, self.skipped = None, 0
            self.stats.lines += 1
            yield _decode(raw, self.stats), start


@dataclass(slots=True)
class FollowStats:
    lines: int = 0
    bytes: int = 0
    oversized: int = 0
    invalid_utf8: int = 0
    rotations: int = 0
    truncations: int = 0
    recovered: int = 0  # copytruncate tails read from the copy
    intermediates: int = 0  # rotated generations read whole
    lost: int = 0  # generations from the state that could not be found again


class Gen:
    """One open generation of a followed file."""

    __slots__ = ("deadline", "dev", "fh", "fp", "fp_len", "gz", "ino", "lines", "live", "name", "pos")

    def __init__(self, fh: Any, name: str, st: os.stat_result, head: bytes, offset: int, *, live: bool,
                 gz: bool, stats: FollowStats, deadline: float | None = None) -> None:
        self.fh, self.name, self.dev, self.ino = fh, name, st.st_dev, st.st_ino  # name: where it was opened
        self.fp, self.fp_len = _sha(head), len(head)
        self.pos = offset  # bytes read from the file
        self.live = live  # the file now at the followed path
        self.gz = gz
        self.deadline = deadline  # not live: close at EOF once the monotonic clock passes this
        self.lines = _Lines(stats, offset)

    @property
    def offset(self) -> int:
        """Bytes consumed: the end of the last complete line handed out (the resume point)."""
        return self.lines.offset

    def rewind(self, stats: FollowStats) -> None:
        self.fh.seek(0)
        self.pos = 0
        self.lines = _Lines(stats, 0)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "dev": self.dev, "ino": self.ino, "fp": self.fp, "fp_len": self.fp_len,
                "offset": self.offset, "live": self.live, "gz": self.gz}

    def matches(self, head: bytes | None) -> bool:
        return head is not None and self.fp_len > 0 and len(head) >= self.fp_len \
            and _sha(head[:self.fp_len]) == self.fp


class Follower:
    """One followed path and the generations of it still being read, oldest first."""

    def __init__(self, path: str, index: int, *, rotate_wait: float = ROTATE_WAIT_S) -> None:
        self.path = os.path.abspath(path)
        self.dir, self.base = os.path.split(self.path)
        self.index = index
        self.rotate_wait = rotate_wait
        self.gens: list[Gen] = []
        self.done: deque[tuple[str, int]] = deque(maxlen=MAX_DONE)
        self.stats = FollowStats()
        self._warned: set[str] = set()

    # --- lines -------------------------------------------------------------------------------

    def poll(self, hup: bool = False) -> Iterator[tuple[str, int]]:
        """Every complete line that is available now, as (text, offset of the line), in order.
        Offsets advance before each line is handed out, so a checkpoint taken after feeding a
        line covers it."""
        now = time.monotonic()
        live = self._live()
        if live is not None and not live.gz and self._truncated(live):
            yield from self._truncation(live)
        for g in list(self.gens):
            yield from self._read(g)
            if not g.live and (hup or g.deadline is None or now >= g.deadline):
                yield from self._finish(g)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._warn_once(f"stat:{exc.errno}", "%s: %s; retrying", self.path, exc.strerror)
            return
        live = self._live()
        if live is not None and (st.st_dev, st.st_ino) == (live.dev, live.ino):
            if hup:
                self._reopen(live)
            return
        if live is not None:
            # rotated (or deleted and re-created): what was written before the new file appeared
            yield from self._read(live)
            live.live = False
            live.deadline = now + self.rotate_wait
            self.stats.rotations += 1
            log.info("%s: rotated; finishing the old file", self.path)
            for g in self._intermediates(live):
                self.gens.append(g)
                self.stats.intermediates += 1
                yield from self._read(g)
                yield from self._finish(g)
        new = self._open(self.path, 0, live=True)
        if new is not None:
            self.gens.append(new)
            yield from self._read(new)

    def _live(self) -> Gen | None:
        for g in reversed(self.gens):
            if g.live:
                return g
        return None

    def _read(self, g: Gen) -> Iterator[tuple[str, int]]:
        yield from g.lines.feed(b"")  # lines left over when a reader stopped half-way
        while True:
            try:
                chunk = g.fh.read(CHUNK)
            except (OSError, EOFError, zlib.error) as exc:
                self._warn_once(f"read:{g.name}", "%s: read error after %d bytes: %s", g.name, g.pos, exc)
                g.deadline = 0.0
                g.live = False
                return
            if not chunk:
                break
            g.pos += len(chunk)
            self.stats.bytes += len(chunk)
            yield from g.lines.feed(chunk)
        if g.live and not g.gz and g.fp_len < FP_MAX and g.pos > g.fp_len:
            with contextlib.suppress(OSError):
                head = os.pread(g.fh.fileno(), FP_MAX, 0)
                g.fp, g.fp_len = _sha(head), len(head)

    def _finish(self, g: Gen) -> Iterator[tuple[str, int]]:
        """Close a generation nobody writes to any more; its last line may lack a newline."""
        yield from g.lines.end()
        with contextlib.suppress(OSError):
            g.fh.close()
        if g in self.gens:
            self.gens.remove(g)
        if g.fp_len:
            self.done.append((g.fp, g.fp_len))

    def _reopen(self, g: Gen) -> None:
        """SIGHUP: the same file under the same name, opened afresh at our position."""
        try:
            fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open while followed
        except OSError:
            return
        st = os.fstat(fh.fileno())
        if (st.st_dev, st.st_ino) != (g.dev, g.ino):
            fh.close()
            return
        fh.seek(g.pos)
        with contextlib.suppress(OSError):
            g.fh.close()
        g.fh = fh

    # --- opening and finding generations ------------------------------------------------------

    def _open(self, path: str, offset: int, *, live: bool, deadline: float | None = None) -> Gen | None:
        try:
            gz = _is_gz(path)
            if gz:
                st = os.stat(path)
                fh = gzip.open(path, "rb")  # noqa: SIM115 - kept open while followed
                head = fh.read(FP_MAX)
                fh.seek(offset)
            else:
                fh = open(path, "rb", buffering=0)  # noqa: SIM115 - kept open while followed
                st = os.fstat(fh.fileno())
                head = os.pread(fh.fileno(), FP_MAX, 0)
                if offset > st.st_size:
                    offset = 0
                fh.seek(offset)
        except FileNotFoundError:
            return None
        except (OSError, EOFError, zlib.error) as exc:
            self._warn_once(f"open:{path}", "%s: cannot open: %s", path, exc)
            return None
        self._warned.discard(f"open:{path}")
        return Gen(fh, path, st, head, offset, live=live, gz=gz, stats=self.stats, deadline=deadline)

    def _siblings(self) -> list[tuple[str, os.stat_result]]:
        """Rotated generations beside the followed file (``mail.log.1``, ``mail.log-20260101.gz``,
        ``maillog.20260101-120000``), newest first."""
        out = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for name in names:
            if name == self.base or not name.startswith((self.base + ".", self.base + "-")):
                continue
            full = os.path.join(self.dir, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if st.st_size and (st.st_mode & 0o170000) == 0o100000:
                out.append((full, st))
        out.sort(key=lambda x: (x[1].st_mtime_ns, x[0]), reverse=True)
        return out

    def _known(self, head: bytes | None) -> bool:
        """Content we have read (or decided not to read) before."""
        if head is None:
            return True
        for fp, n in [*self.done, *((g.fp, g.fp_len) for g in self.gens)]:
            if n and len(head) >= n and _sha(head[:n]) == fp:
                return True
        return False

    def _intermediates(self, old: Gen) -> list[Gen]:
        """Generations rotated after ``old`` that we never opened (several rotations between two
        reads): the siblings written after it, oldest first, whose content is new to us."""
        mtime = None
        for _name, st in self._siblings():
            if (st.st_dev, st.st_ino) == (old.dev, old.ino):
                mtime = st.st_mtime_ns
                break
        if mtime is None:  # deleted, or already compressed: nothing to place it among
            return []
        out = []
        for name, st in reversed(self._siblings()):
            if st.st_mtime_ns <= mtime or (st.st_dev, st.st_ino) == (old.dev, old.ino):
                continue
            if self._known(_head(name)):
                continue
            g = self._open(name, 0, live=False)
            if g is not None:
                log.warning("%s: reading rotated generation %s that was never followed", self.path, name)
                out.append(g)
        return out

    def _truncated(self, g: Gen) -> bool:
        try:
            st = os.fstat(g.fh.fileno())
            if st.st_size < g.pos:
                return True
            if g.fp_len and g.pos:
                return _sha(os.pread(g.fh.fileno(), g.fp_len, 0)) != g.fp
        except OSError:
            return False
        return False

    def _truncation(self, live: Gen) -> Iterator[tuple[str, int]]:
        """copytruncate: read what we had not read yet from the copy, then start again at 0."""
        self.stats.truncations += 1
        copy = None
        if live.offset:
            for name, st in self._siblings():
                if (st.st_dev, st.st_ino) == (live.dev, live.ino):
                    continue
                if live.matches(_head(name, live.fp_len)):
                    copy = self._open(name, live.offset, live=False)
                    break
        if copy is not None:
            log.info("%s: truncated; reading its end from the copy %s", self.path, copy.name)
            self.stats.recovered += 1
            self.gens.insert(self.gens.index(live), copy)
            yield from self._read(copy)
            yield from self._finish(copy)
        elif live.offset:
            log.warning("%s was truncated and no copy of it was found: lines written between our last read "
                        "and the truncation may be missing (prefer logrotate's create over copytruncate)",
                        self.path)
        if live.fp_len:
            self.done.append((live.fp, live.fp_len))
        live.rewind(self.stats)
        head = os.pread(live.fh.fileno(), FP_MAX, 0)
        live.fp, live.fp_len = _sha(head), len(head)

    # --- state ----------------------------------------------------------------------------------

    def save(self) -> dict[str, Any]:
        return {"gens": [g.identity() for g in self.gens], "done": [list(x) for x in self.done]}

    def start(self, saved: dict[str, Any] | None, from_beginning: bool) -> None:
        """Open the generations a state names, at their offsets; with no state, the live file at its
        end (or its beginning). Generations rotated while we were stopped are read whole."""
        now = time.monotonic()
        if saved is None:
            g = self._open(self.path, 0, live=True)
            if g is not None:
                if not from_beginning:
                    self._seek_end(g)
                self.gens.append(g)
            self._forget_siblings()
            return
        self.done.extend((fp, n) for fp, n in saved.get("done", []))
        last_path: str | None = None
        for sg in saved.get("gens", []):
            found = self._locate(sg, {(g.dev, g.ino) for g in self.gens})
            if found is None:
                self.stats.lost += 1
                log.warning("%s: the generation being read at the last checkpoint (%s, offset %d) is gone; "
                            "its unread end is lost", self.path, sg.get("name"), sg.get("offset", 0))
                continue
            live = found == self.path
            g = self._open(found, int(sg.get("offset", 0)), live=live,
                           deadline=None if live else now + self.rotate_wait)
            if g is None:
                self.stats.lost += 1
                continue
            if not live and g.fp_len < int(sg.get("fp_len", 0)):
                g.fp, g.fp_len = sg["fp"], int(sg["fp_len"])
            self.gens.append(g)
            last_path = found
        if self._live() is None:
            if last_path is not None and self.gens:
                for g in self._intermediates(self.gens[-1]):
                    self.gens.append(g)
                    g.deadline = None
                    self.stats.intermediates += 1
            g = self._open(self.path, 0, live=True)
            if g is not None and not self._known_gen(g):
                self.gens.append(g)
            elif g is not None:
                g.fh.close()
        self._forget_siblings()

    def _known_gen(self, g: Gen) -> bool:
        return any((o.dev, o.ino) == (g.dev, g.ino) for o in self.gens)

    def _forget_siblings(self) -> None:
        """Rotated files present now were read before, or predate us: never read them later."""
        for name, _ in self._siblings():
            head = _head(name)
            if head and not self._known(head):
                self.done.append((_sha(head), len(head)))

    def _locate(self, sg: dict[str, Any], used: set[tuple[int, int]]) -> str | None:
        dev, ino = sg.get("dev"), sg.get("ino")
        fp, fp_len, offset = sg.get("fp", ""), int(sg.get("fp_len", 0)), int(sg.get("offset", 0))
        candidates = [self.path] + [name for name, _ in self._siblings()]

        def content_ok(name: str) -> bool:
            if fp_len == 0:
                return True
            head = _head(name, fp_len)
            return head is not None and len(head) >= fp_len and _sha(head[:fp_len]) == fp

        for name in candidates:  # same inode, same first bytes, long enough
            try:
                st = os.stat(name)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino) and (st.st_dev, st.st_ino) not in used \
                    and st.st_size >= offset and content_ok(name):
                return name
        if fp_len:
            for name in candidates:  # moved to another inode: a copytruncate copy, or compressed
                try:
                    st = os.stat(name)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (dev, ino) or (st.st_dev, st.st_ino) in used:
                    continue
                if (_is_gz(name) or st.st_size >= offset) and content_ok(name):
                    return name
        return None

    def _seek_end(self, g: Gen) -> None:
        """Start at the end, after the last complete line."""
        fd = g.fh.fileno()
        end = os.fstat(fd).st_size
        pos = end
        if end:
            tail = os.pread(fd, min(end, MAX_LINE_BYTES), end - min(end, MAX_LINE_BYTES))
            nl = tail.rfind(b"\n")
            pos = end - len(tail) + nl + 1 if nl >= 0 else end
        g.fh.seek(pos)
        g.pos = pos
        g.lines = _Lines(self.stats, pos)

    def close(self) -> None:
        for g in self.gens:
            with contextlib.suppress(OSError):
                g.fh.close()

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)


class LogClock:
    """Log time for ``Pipeline.tick``: the newest line time, advanced by the wall time elapsed
    since the last line was read, less ``skew``. It follows the log's own clock (so a log in another
    zone or from a host whose clock is off works) and does not move while lines keep coming."""

    def __init__(self, skew_ns: int = SKEW_NS) -> None:
        self.skew_ns = skew_ns
        self.log_ns = 0
        self.anchor_log = 0
        self.anchor_wall = time.monotonic_ns()

    def seen(self, ts_ns: int) -> None:
        self.log_ns = max(self.log_ns, ts_ns)
        self.anchor_log = self.log_ns
        self.anchor_wall = time.monotonic_ns()

    def now(self) -> int:
        return max(self.log_ns, self.anchor_log + time.monotonic_ns() - self.anchor_wall - self.skew_ns)


class TailError(statefile.StateError):
    """A reason ``tail`` cannot start (the runner reports it as it reports state errors)."""


class _Abort(BaseException):
    """Raised from a signal handler to leave an export that cannot finish at shutdown."""


class BufferedSink:
    """Holds what the pipeline emits until ``flush`` exports it (once per checkpoint).

    Default: ``flush`` blocks until the wrapped sink accepted everything (an OTLP sink with a
    negative budget retries forever); ``full`` asks the loop for a checkpoint, so memory stays
    bounded and reading pauses while the collector is down. ``lossy``: ``flush`` tries once and
    backs off; past ``cap`` spans or points the oldest are dropped and counted."""

    def __init__(self, inner: Sink, name: str, guard: _ExportGuard, *, lossy: bool = False,
                 cap: int = 20_000, flush_at: int = FLUSH_AT) -> None:
        self.inner, self.name, self.guard, self.lossy, self.cap = inner, name, guard, lossy, cap
        self.flush_at = flush_at
        self.stats = inner.stats
        self.q: deque[tuple[str, Any, int]] = deque()
        self.n = 0
        self.dropped = 0
        self.rejected = 0
        self._retry_at = 0.0
        self._backoff = 1.0
        self._down = False
        self._rejections: set[str] = set()

    # Sink interface, for the pipeline
    def spans(self, spans: list) -> None:
        if spans:
            self.q.append(("spans", list(spans), len(spans)))
            self.n += len(spans)
            self._bound()

    def metrics(self, data: list) -> None:
        if data:
            n = sum(len(m.points) for m in data)
            self.q.append(("metrics", list(data), n))
            self.n += n
            self._bound()

    def hint(self, done: MessageDone) -> None:
        self.q.append(("hint", done, 0))

    def close(self) -> None:
        self.inner.close()

    @property
    def full(self) -> bool:
        return self.n >= self.flush_at and (not self.lossy or time.monotonic() >= self._retry_at)

    def pending(self) -> bool:
        return bool(self.q)

    def _bound(self) -> None:
        if not self.lossy:
            return
        while self.n > self.cap and self.q:
            _, _, n = self.q.popleft()
            self.n -= n
            self.dropped += n
            if not self._down:  # once per outage: the export failure or this, whichever comes first
                self._down = True
                log.warning("%s buffer full (%d) while the collector is unavailable: dropping the oldest "
                            "(--lossy); counting", self.name, self.cap)

    def flush(self) -> None:
        if self.lossy and time.monotonic() < self._retry_at:
            return
        q = self.q
        while q:
            kind = q[0][0]
            if kind == "hint":
                self.inner.hint(q.popleft()[1])
                continue
            # one request for up to ``limit`` items; hints met on the way (console grouping) are
            # delivered after the batch, which holds every span they refer to
            batch: list = []
            hints: list = []
            n = taken = 0
            limit = 512 if kind == "spans" else 4096
            for item in q:
                if item[0] == "hint":
                    hints.append(item[1])
                elif item[0] != kind or (batch and n + item[2] > limit):
                    break
                else:
                    batch.extend(item[1])
                    n += item[2]
                taken += 1
            try:
                with self.guard:
                    if kind == "spans":
                        self.inner.spans(batch)
                    else:
                        self.inner.metrics(batch)
                    self.inner.flush()
            except ExportError as exc:
                text = str(exc)
                if self._final(text):
                    self.rejected += n
                    key = re.sub(r"\d+ (spans|metric points)", "", text)
                    if key not in self._rejections:
                        self._rejections.add(key)
                        log.warning("%s rejected by the collector, not retried: %s", self.name, text)
                elif self.lossy:
                    if not self._down:
                        log.warning("%s export failing (%s); buffering up to %d, then dropping the oldest "
                                    "(--lossy)", self.name, text, self.cap)
                        self._down = True
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, 30.0)
                    return
                else:
                    raise
            for _ in range(taken):
                q.popleft()
            self.n -= n
            for done in hints:
                self.inner.hint(done)
            if self._down:
                log.warning("%s export recovered%s", self.name,
                            f"; {self.dropped:,} dropped meanwhile (--lossy)" if self.dropped else "")
                self._down = False
                self._backoff = 1.0

    def drop_pending(self) -> int:
        """At exit in lossy mode: what could not be exported is counted as dropped."""
        n, self.n = self.n, 0
        self.q.clear()
        self.dropped += n
        return n

    @staticmethod
    def _final(text: str) -> bool:
        """A response no retry will change (HTTP 4xx other than 429, gRPC INVALID_ARGUMENT …)."""
        m = re.search(r"HTTP (\d{3})", text)
        if m:
            code = int(m[1])
            return 400 <= code < 500 and code != 429
        return "gRPC " in text and not any(c in text for c in (
            "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED", "OUT_OF_RANGE",
            "DATA_LOSS"))


class _ExportGuard:
    """Marks the time spent inside an export. Once a stop was requested, exports get
    ``STOP_GRACE_S`` in all: an export still blocked then (collector down) is abandoned by raising
    ``_Abort`` from SIGALRM, so a stop never hangs."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.active = False
        self.armed = False
        self.expired = False

    def arm(self) -> None:
        if not self.armed and threading.current_thread() is threading.main_thread():
            self.armed = True
            signal.setitimer(signal.ITIMER_REAL, STOP_GRACE_S)

    def __enter__(self) -> None:
        if self.stop.is_set():
            if self.expired:
                raise _Abort
            self.arm()
        self.active = True

    def __exit__(self, *exc: object) -> None:
        self.active = False


@dataclass
class TailOptions:
    state_path: str
    from_beginning: bool = False
    force_polling: bool | None = None
    lossy: bool = False
    buffer: int = 20_000
    rotate_wait: float = ROTATE_WAIT_S
    cycle_s: float = CYCLE_S
    skew_ns: int = SKEW_NS


class Tailer:
    """The tail loop: reads, feeds, ticks, exports and checkpoints until stopped (or stdin ends)."""

    def __init__(self, paths: list[str], settings: Settings, span_sink: Sink, metric_sink: Sink,
                 options: TailOptions, *, grammars_dir: str | None = None) -> None:
        self.settings, self.opts = settings, options
        self.stdin = paths == ["-"]
        self.stop = threading.Event()
        self.guard = _ExportGuard(self.stop)
        self.spans = BufferedSink(span_sink, "spans", self.guard, lossy=options.lossy, cap=options.buffer)
        self.metrics = BufferedSink(metric_sink, "metrics", self.guard, lossy=options.lossy,
                                    cap=options.buffer)
        self.pipeline = Pipeline(settings, self.spans, self.metrics, grammars_dir=grammars_dir,  # type: ignore[arg-type]
                                 live=True)
        self.clock = LogClock(options.skew_ns)
        self.followers: list[Follower] = []
        if "-" in paths and not self.stdin:
            raise TailError("tail reads either stdin (-) or files, not both")
        if not self.stdin:
            seen: set[str] = set()
            for p in paths:
                ap = os.path.abspath(p)
                if os.path.isdir(ap):
                    raise TailError(f"{p}: is a directory; give the log files in it")
                if not os.path.isdir(os.path.dirname(ap)):
                    raise TailError(f"{os.path.dirname(ap)}: no such directory (it must exist to follow {p})")
                if ap not in seen:
                    seen.add(ap)
                    self.followers.append(Follower(ap, len(self.followers), rotate_wait=options.rotate_wait))
        self.framers: dict[str, Framer] = {}
        self.cursor: str | None = None
        self.cursor_pos: tuple[str, int] | None = None
        self.hup = False
        self.aborted = False
        self.dirty = True
        self.lines = 0
        self.skipped_journal = 0
        self.input_stats = FollowStats()
        self.checkpoints = 0
        self.state_bytes = 0
        self.lock = statefile.StateLock(options.state_path)
        self._last_cycle = 0.0
        self._last_tick = 0.0
        self._next_cycle = 0.0
        self._old_handlers: dict[int, Any] = {}

    # --- setup -----------------------------------------------------------------------------

    def _framer(self, key: str, index: int) -> Framer:
        f = self.framers.get(key)
        if f is None:
            s = self.settings
            clock = LocalClock(s.timezone)
            if s.year is not None:
                year = YearGuess(s.year, ref_month=12)
            else:
                ref = dt.datetime.now(clock.tz)
                year = YearGuess(ref.year, ref_month=ref.month)
            f = self.framers[key] = Framer(stream=index, clock=clock, year=year,
                                           default_host=default_host(s), now_ns=time.time_ns())
        return f

    def _start(self) -> None:
        self.lock.acquire()
        saved = statefile.load(self.opts.state_path)
        files = (saved or {}).get("files", {})
        if saved is not None:
            self.pipeline.load_state(saved["pipeline"])
            self.clock.log_ns = self.clock.anchor_log = int(saved.get("clock_ns", 0))
            self.clock.anchor_wall = time.monotonic_ns()
            st = saved.get("stdin") or {}
            self.cursor = st.get("cursor")
            self.cursor_pos = journal.cursor_position(self.cursor)
        for key, fs in (saved or {}).get("framers", {}).items():
            index = next((f.index for f in self.followers if f.path == key), 0)
            statefile.restore_framer(self._framer(key, index), fs)
        for f in self.followers:
            entry = files.get(f.path)
            if entry is not None and self.opts.from_beginning:
                log.warning("%s: continuing from the saved position (--from-beginning applies to files the "
                            "state does not know; move %s away to read everything again)", f.path,
                            self.opts.state_path)
            f.start(entry, self.opts.from_beginning)
            self._framer(f.path, f.index)
        if saved is None:
            self._checkpoint()  # the starting positions (end of file) must survive a crash

    # --- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.hup = True
            return
        if signum == signal.SIGALRM:
            self.guard.expired = True
            if self.guard.active:
                raise _Abort
            return
        first = not self.stop.is_set()
        self.stop.set()
        if self.guard.active:
            if first:
                self.guard.arm()  # give a slow export a moment
            else:
                raise _Abort

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)

    # --- run -------------------------------------------------------------------------------

    def run(self) -> int:
        code = 0
        self._install_signals()
        try:
            self._start()
            if self.stdin:
                self._run_stdin()
            else:
                self._run_files()
            if not self.aborted:
                if self.clock.log_ns:
                    self.pipeline.tick(self.clock.now())
                self._checkpoint()
                for b in (self.spans, self.metrics):
                    if b.lossy:
                        b.drop_pending()  # counted in the summary
        except _Abort:
            self.aborted = True
        except ExportError as exc:
            log.error("%s; the state file keeps the last exported position", exc)
            code = 1
        finally:
            self._restore_signals()
            for f in self.followers:
                f.close()
            self.lock.release()
        if self.aborted:
            log.warning("stopped while the collector was unavailable: the state file keeps the last exported "
                        "position; what came after it will be read again at the next start")
        else:
            for sink in (self.spans, self.metrics):
                with contextlib.suppress(ExportError):
                    sink.close()
        if self.stdin and self.cursor:
            sys.stderr.write("maillog2otel: last journal entry exported: " + self.cursor + "\n"
                             "maillog2otel: resume with: " + journal.resume_command(self.cursor,
                                                                                    self.opts.state_path)
                             + "\n")
        return code

    def _run_files(self) -> None:
        import watchfiles

        dirs: dict[str, set[str]] = {}
        for f in self.followers:
            dirs.setdefault(f.dir, set()).add(f.base)

        def wanted(_change: object, path: str) -> bool:
            d, name = os.path.split(path)
            bases = dirs.get(d)
            return bases is not None and any(name.startswith(b) for b in bases)

        self._poll_files()
        self._maybe_cycle(force=True)
        if self.stop.is_set():
            return
        for _changes in watchfiles.watch(
                *dirs, watch_filter=wanted, debounce=100, step=20,
                rust_timeout=max(50, int(self.opts.cycle_s * 500)), yield_on_timeout=True,
                recursive=False, stop_event=self.stop, force_polling=self.opts.force_polling,
                raise_interrupt=False, poll_delay_ms=100 if self.opts.force_polling else 300):
            self._poll_files()
            if self.stop.is_set():
                break
            self._maybe_cycle()

    def _poll_files(self) -> None:
        hup, self.hup = self.hup, False
        if hup:
            log.warning("SIGHUP: reopening the followed files")
        wall = time.time_ns()
        n = 0
        for f in self.followers:
            framer = self.framers[f.path]
            framer.now_ns = wall
            for text, offset in f.poll(hup):
                self._line(framer, text, offset)
                if self.stop.is_set():
                    return
                n += 1
                if not n & 0xFF:
                    # a backlog (a burst, or lines written faster than one read keeps up with) is
                    # read to its end before the loop wakes again: export and checkpoint on time
                    # meanwhile, or every span of the burst waits for its end
                    self._maybe_cycle()

    def _line(self, framer: Framer, text: str, offset: int) -> None:
        self.lines += 1
        self.dirty = True
        rec = framer.frame(text, offset)
        if rec is None:
            self.pipeline.unframed(text)
        else:
            if rec.cursor is not None:
                if journal.already_seen(rec.cursor, self.cursor_pos):
                    self.skipped_journal += 1
                    return
                self.cursor = rec.cursor
            self.pipeline.feed(rec)
            self.clock.seen(rec.ts_ns)
        if self.spans.full or self.metrics.full:
            self._checkpoint()

    def _run_stdin(self) -> None:
        fd = sys.stdin.fileno()
        framer = self._framer("-", 0)
        lines = _Lines(self.input_stats)
        self._maybe_cycle(force=True)
        while not self.stop.is_set():
            ready, _, _ = select.select([fd], [], [], self.opts.cycle_s / 2)
            chunk = os.read(fd, CHUNK) if ready else None
            if chunk:
                framer.now_ns = time.time_ns()
                for text, offset in lines.feed(chunk):
                    self._line(framer, text, offset)
                    if self.stop.is_set():
                        return
            elif chunk == b"":  # EOF
                for text, offset in lines.end():
                    self._line(framer, text, offset)
                # the input ended: no line can come within a window any more, so every window
                # (a closed session's grace, a span's stitch window, each measured from the line
                # that started it) has closed. What is closed goes now; open sessions and the
                # deliveries waiting for them stay in the state for the run that continues after
                # the cursor.
                if self.clock.log_ns:
                    self.pipeline.tick(self.clock.log_ns + self._windows_ns())
                return
            self._maybe_cycle()

    def _windows_ns(self) -> int:
        """The longest window something closed waits in log time: the correlators' grace and the
        stitcher's windows (deliveries, hints). Log records need none: they leave at exit."""
        graces = [getattr(getattr(c, "s", None), "grace_ns", 0) for _, c in self.pipeline.stages.values()]
        stitcher = self.pipeline.stitcher
        return max(*graces, stitcher.window_ns, stitcher.server_window_ns)

    # --- export and checkpoint ---------------------------------------------------------------

    def _maybe_cycle(self, force: bool = False) -> None:
        """Every ``cycle_s``: advance log time, then export and checkpoint if anything changed."""
        mono = time.monotonic()
        if not force and (mono - self._last_tick < self.opts.cycle_s * 0.8 or mono < self._next_cycle):
            return
        self._last_tick = mono
        if self.clock.log_ns:  # no log time before the first line
            self.pipeline.tick(self.clock.now())
        # what the tick released (held spans whose window passed while lines are quiet) is pending
        # in the buffers; with nothing read and nothing pending the state is the one written last
        # (a held span alone made a checkpoint of the whole state four times a second)
        if force or self.dirty or self.spans.pending() or self.metrics.pending():
            self._checkpoint()

    def _checkpoint(self) -> None:
        # what the buffers hold leaves before the state is built (tens of ms at high rates), not
        # after: the state is written only once everything emitted before it was exported
        blocked = time.monotonic_ns()
        self.spans.flush()
        self.metrics.flush()
        exporting = time.monotonic_ns() - blocked
        started = time.monotonic()
        snapshot = self.pipeline.save_state()  # also hands pending spans to the buffers
        took = time.monotonic() - started
        blocked = time.monotonic_ns()
        self.spans.flush()
        self.metrics.flush()
        # reading was paused meanwhile (for as long as the collector refused): that wall time is
        # not log time, or an outage would expire open sessions and close windows that the lines
        # read after it still belong to
        self.clock.anchor_wall += time.monotonic_ns() - blocked + exporting
        doc: dict[str, Any] = {
            "paths": [f.path for f in self.followers] or ["-"],
            "files": {f.path: f.save() for f in self.followers},
            "framers": {k: statefile.framer_state(v) for k, v in self.framers.items()},
            "clock_ns": self.clock.log_ns,
            "pipeline": snapshot,
        }
        if self.stdin:
            doc["stdin"] = {"cursor": self.cursor}
        written = time.monotonic()
        self.state_bytes = statefile.save(self.opts.state_path, doc)
        self.checkpoints += 1
        self.dirty = False
        self._last_cycle = time.monotonic()
        # the state is built and written whole (and fsync'ed): when it has grown large (a high line
        # rate keeps many spans in the stitcher's tables), the next cycle waits so that writing it
        # takes at most a quarter of the time and reading keeps up (an export that waited for the
        # collector does not count: that wait is not ours to shorten)
        took += self._last_cycle - written
        self._next_cycle = self._last_cycle + min(3 * took, 2.0)

    # --- report ----------------------------------------------------------------------------------

    def _kept(self) -> dict[str, int]:
        """What the state holds back at exit: sessions still open, messages still queued, spans
        waiting for a window or for their connection."""
        opened = self.pipeline.open_counts().values()
        st = self.pipeline.stitcher
        held = sum(1 for _, item in st.hold if not isinstance(item, MessageDone)) \
            + sum(len(w) for w in st.children.values())
        kept = {"open sessions": sum(c.get("sessions", 0) for c in opened),
                "messages tracked": sum(c.get("messages", 0) for c in opened),
                "spans waiting for their connection or window": held}
        return kept if any(kept.values()) else {}

    def summary(self) -> list[str]:
        c = self.pipeline.counters
        out = [
            f"lines     {c.lines:,} read: {c.parsed:,} understood, {c.known:,} known, {c.foreign:,} foreign, "
            f"{c.unparsed:,} unparsed",
            f"mail      {c.connections:,} connections, {c.messages:,} messages queued, "
            f"{c.deliveries:,} delivery attempts, {c.rejected:,} rejections",
            f"exported  {self.spans.stats.spans:,} spans, {self.metrics.stats.points:,} metric points",
            f"state     {self.opts.state_path} ({self.checkpoints:,} checkpoints, "
            f"last {self.state_bytes:,} bytes)",
        ]
        kept = self._kept()
        if kept:
            out.append("kept      " + ", ".join(f"{n:,} {what}" for what, n in kept.items() if n)
                       + " in the state for the next run")
        rot = [f"{k} {getattr(s, k)}" for s in (f.stats for f in self.followers)
               for k in ("rotations", "truncations", "recovered", "intermediates", "lost", "oversized")
               if getattr(s, k)]
        if rot:
            out.append("files     " + ", ".join(rot))
        if self.skipped_journal:
            out.append(f"journal   {self.skipped_journal:,} entries at or before the saved cursor skipped")
        lost = [f"{b.name}: {b.dropped:,} dropped (--lossy)" for b in (self.spans, self.metrics) if b.dropped]
        lost += [f"{b.name}: {b.rejected:,} rejected by the collector" for b in (self.spans, self.metrics)
                 if b.rejected]
        if lost:
            out.append("lost      " + ", ".join(lost))
        return out
