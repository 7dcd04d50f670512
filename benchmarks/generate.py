#!/usr/bin/env python3
"""Grow the recorded real MTA logs in fixtures/ into large, realistic benchmark logs.

Each fixture log (one real recording: many SMTP sessions, deliveries, retries, bounces) becomes an
*episode template*: its lines minus the daemon's own start/stop lines, with every timestamp,
queue ID / Exim message ID / Haraka UUID, process ID, client (ephemeral) port and Message-ID
turned into a slot. The generator then plays copies of the episodes, chosen by weight, starting
at exponentially spaced times (``--rate`` log lines per second of log time) and merged in time
order, so several copies overlap exactly as concurrent sessions do on a busy server. Every copy
gets fresh values for every slot:

- Postfix: fresh short (``97F0E160023``: 5 hex digits of µs + inode in hex) or long
  (``4jXDMZ0qgjzBrKB``) queue IDs, a fresh pid for every process but ``qmgr``/``master``
  (one pid for the whole file, as on a real server), fresh client ports.
- Exim: fresh message IDs in the file's own format (4.96 ``1xUxoO-0002fg-0q`` or 4.97+
  ``1xUxoO-000000002fg-000q``) whose time and pid parts agree with the copy's times and the fresh
  pid of the process that received the message; fresh ``[pid]`` fields and queue-runner pids; the
  daemon keeps one pid; fresh client ports.
- Haraka: fresh UUIDs (session, transaction ``.N``, outbound ``.N.M`` and ``Created transaction``
  ones, and the 6-character banner prefix), outbound queue file names with shifted times, fresh
  client ports.
- All: Message-IDs get a per-copy suffix (``<two-1.3f@client3.example>``), times advance.

IDs never collide within a file (they are drawn from per-file counters); time never goes back
except by the real sub-second jitter that the recording itself has between processes. The output
is deterministic for a given (fixtures, --seed, --sets, --rate, --start, --lines).

Usage::

    python benchmarks/generate.py --mta postfix --lines 1000000        # -> benchmarks/data/…
    python benchmarks/generate.py --mta exim --lines 100000 --sets default
    python benchmarks/generate.py --mta haraka --lines 100000 --sets info-json

Streaming: memory is bounded by the lines of the episodes in flight (a few thousand), and
10M Postfix lines take well under a minute on this machine.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
DATA = Path(__file__).resolve().parent / "data"

# Which fixture files feed each MTA, and the default weights. A real server logs with one
# configuration, so the defaults do not mix (for example) Postfix with and without
# smtpd_client_port_logging, or Exim's two log selectors; --sets chooses others.
SOURCES = {
    "postfix": ("postfix", "*.log"),
    "exim": ("exim", "*.mainlog"),
    "haraka": ("haraka", "*.log"),
}
DEFAULT_SETS = {
    "postfix": {"port-logging": 8, "expiry": 1},
    "exim": {"rich": 1},
    "haraka": {"info-default": 1},
}
DEFAULT_START = "2026-01-01T00:00:00"
DEFAULT_RATE = 20.0  # log lines per second of log time (a busy server: 1M lines ≈ 14 h)
DEFAULT_SEED = 6
# A recording ends with some messages still deferred (the recorder stopped Postfix/Exim while they
# waited for a retry). Copied as they are, every copy would leave them in flight forever, which no
# real server does and which would inflate any correlator's state. So each such message gets a
# later successful retry, FINISH seconds after the recording's end, built from its own lines:
# Postfix "(queue active)" again, a "status=sent" delivery to the relay the recording's other
# deliveries used, "removed"; Exim "=>" and "Completed". 0 turns this off.
DEFAULT_FINISH = 600.0
GENERATOR_VERSION = 2  # bump when the output for the same parameters changes (invalidates the cache)

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MON = {m: i + 1 for i, m in enumerate(MONTHS)}
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # Exim's base 62
B51 = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxy"  # Postfix long queue IDs (no vowels, no z)
EPHEMERAL = 32768  # Linux ip_local_port_range starts here; lower ports are servers' (2525, 3526 …)


def _enc(n: int, alphabet: str, width: int) -> str:
    base = len(alphabet)
    out = []
    while n:
        n, r = divmod(n, base)
        out.append(alphabet[r])
    s = "".join(reversed(out))
    return s.rjust(width, alphabet[0])


def _dec(s: str, alphabet: str) -> int:
    n = 0
    base = len(alphabet)
    for ch in s:
        n = n * base + alphabet.index(ch)
    return n


# ----------------------------------------------------------------------------------------------
# Templates


@dataclass
class Slot:
    kind: str  # pid | gpid | port | qid | lqid | eximid | uuid | uuid6 | hfile | mid | rand6
    orig: str
    first_offset: float = 0.0
    ref: int = -1  # index of the slot this one depends on (eximid -> pid, uuid6 -> uuid, hfile -> rand6)
    extra: tuple = ()


@dataclass
class Episode:
    name: str
    lines: list[tuple[float, str]]  # (offset in seconds from the episode's first line, format string)
    slots: list[Slot]
    duration: float
    ts_format: str  # syslog | exim | exim-ms | exim-tz | exim-ms-tz | haraka | none
    origin_ms: int = 0  # epoch ms of the recording's first line (Haraka queue file names)

    def __len__(self) -> int:
        return len(self.lines)


class _Builder:
    """Turns one recorded line at a time into a format string with numbered slots."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self.index: dict[tuple[str, str], int] = {}

    def slot(self, kind: str, orig: str, offset: float, **kw) -> int:
        key = (kind, orig)
        i = self.index.get(key)
        if i is None:
            i = len(self.slots)
            self.slots.append(Slot(kind, orig, offset, **kw))
            self.index[key] = i
        return i


# ---- Postfix

_PF_LINE = re.compile(r"^(\w{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\S+) ([\w/.-]+)\[(\d+)\]: (.*)$")
_PF_QID_HEAD = re.compile(
    r"^([0-9A-F]{6,12}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{10}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+): "
)
_PF_QID_CHILD = re.compile(r"notification: ([0-9A-Za-z]{6,})")
_PF_LIFECYCLE = ("postfix-script", "master")
_PF_GLOBAL = ("qmgr", "master", "postfix-script", "anvil", "scache", "tlsmgr")
_PORT_AFTER_BRACKET = re.compile(r"\]:(\d{4,5})\b")
_PF_MID = re.compile(r"message-id=<([^@>\s]+)@")
_PF_MID_TIME = re.compile(r"message-id=<(\d{14})\.")


_PF_ACTIVE = re.compile(r"^.{15} \S+ [\w/.-]+\[\d+\]: (\S+): from=<.*\(queue active\)$")
_PF_DEFERRED = re.compile(
    r"^.{15} (?P<host>\S+) (?P<prog>[\w/.-]+)\[(?P<pid>\d+)\]: (?P<q>\S+): to=<(?P<rcpt>[^>]*)>, "
    r"(?:orig_to=<[^>]*>, )?relay=\S+, delay=[\d.]+, .*status=deferred "
)
_PF_SENT_RELAY = re.compile(r"postfix/smtp\[\d+\]: \S+: to=<[^>]*>, .*?relay=(\S+\]:\d+), .*status=sent ")
_PF_QMGR = re.compile(r"^.{15} \S+ postfix/qmgr\[(\d+)\]: ")


def _pf_time(m: re.Match, year: int) -> float:
    """Epoch seconds of a ``_PF_LINE`` match's year-less stamp."""
    return datetime(year, _MON[m.group(1)], int(m.group(2)), int(m.group(3)), int(m.group(4)),
                    int(m.group(5)), tzinfo=UTC).timestamp()


def _syslog_stamp(t: float) -> str:
    d = datetime.fromtimestamp(int(t), UTC)
    return f"{MONTHS[d.month - 1]} {d.day:2d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def _postfix_finish(raw: list[str], year: int, after: float) -> list[str]:
    """Lines that deliver the messages a Postfix recording leaves deferred (see DEFAULT_FINISH)."""
    if after <= 0:
        return []

    def t_of(line: str) -> float | None:
        m = _PF_LINE.match(line)
        return _pf_time(m, year) if m else None

    first: dict[str, float] = {}
    active: dict[str, str] = {}
    deferred: dict[str, dict[str, re.Match]] = {}
    done: set[str] = set()
    relay = None
    qmgr = None
    end = 0.0
    for line in raw:
        t = t_of(line)
        if t is None:
            continue
        end = max(end, t)
        h = _PF_QID_HEAD.match(line.split("]: ", 1)[-1])
        if h:
            first.setdefault(h.group(1), t)
            if line.endswith(": removed") or "status=expired" in line:
                done.add(h.group(1))
        if (a := _PF_ACTIVE.match(line)) is not None:
            active[a.group(1)] = line
        if (d := _PF_DEFERRED.match(line)) is not None:
            deferred.setdefault(d.group("q"), {})[d.group("rcpt")] = d
        if relay is None and (r := _PF_SENT_RELAY.search(line)) is not None:
            relay = r.group(1)
        if qmgr is None and (g := _PF_QMGR.match(line)) is not None:
            qmgr = g.group(1)
    out = []
    n = 0
    for q, rcpts in deferred.items():
        if q in done or q not in active:
            continue
        t = end + after + n  # one message per second, after everything recorded
        n += 1
        ts = _syslog_stamp(t)
        total = t - first.get(q, t)
        delay = f"{total:.0f}" if total >= 10 else f"{total:.2g}"
        act = active[q]
        out.append(ts + act[15:])
        host = ""
        for rcpt, d in rcpts.items():
            host = d.group("host")
            out.append(
                f"{ts} {host} {d.group('prog')}[{d.group('pid')}]: {q}: to=<{rcpt}>, "
                f"relay={relay or d.group('host') + '[127.0.0.1]:25'}, delay={delay}, "
                f"delays={delay}/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as RETRY{n})"
            )
        if qmgr:
            out.append(f"{ts} {host} postfix/qmgr[{qmgr}]: {q}: removed")
    return out


def _postfix_episode(path: Path, year: int = 2026, finish: float = DEFAULT_FINISH) -> Episode:
    raw = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    raw += _postfix_finish(raw, year, finish)
    parsed = []
    qids: set[str] = set()
    for line in raw:
        m = _PF_LINE.match(line)
        if not m:
            continue
        prog = m.group(7).rsplit("/", 1)[-1]
        if prog in _PF_LIFECYCLE:
            continue
        parsed.append((m, prog, line))
        msg = m.group(9)
        h = _PF_QID_HEAD.match(msg)
        if h:
            qids.add(h.group(1))
        for c in _PF_QID_CHILD.finditer(msg):
            qids.add(c.group(1))
    if not parsed:
        raise ValueError(f"{path}: no Postfix lines")
    qid_re = (
        re.compile(
            r"(?<![0-9A-Za-z])("
            + "|".join(sorted(map(re.escape, qids), key=len, reverse=True))
            + r")(?![0-9A-Za-z])"
        )
        if qids
        else None
    )

    def stamp(m) -> float:
        return _pf_time(m, year)

    t0 = stamp(parsed[0][0])
    b = _Builder()
    lines = []
    for m, prog, line in parsed:
        off = stamp(m) - t0
        spans = [(m.start(1), m.end(5), -1)]  # the timestamp: {0}
        kind = "gpid" if prog in _PF_GLOBAL else "pid"
        spans.append((m.start(8), m.end(8), b.slot(kind, prog if kind == "gpid" else m.group(8), off)))
        base = m.start(9)
        msg = m.group(9)
        if qid_re is not None:
            for q in qid_re.finditer(msg):
                kind = "qid" if re.fullmatch(r"[0-9A-F]+", q.group(1)) else "lqid"
                spans.append((base + q.start(1), base + q.end(1), b.slot(kind, q.group(1), off)))
        for p in _PORT_AFTER_BRACKET.finditer(msg):
            if int(p.group(1)) >= EPHEMERAL:
                spans.append((base + p.start(1), base + p.end(1), b.slot("port", p.group(1), off)))
        for mm in _PF_MID_TIME.finditer(msg):
            spans.append(
                (base + mm.start(1), base + mm.end(1), b.slot("ymdhms", f"{mm.group(1)}@{off}", off))
            )
        for mm in _PF_MID.finditer(msg):
            spans.append((base + mm.start(1), base + mm.end(1), 10**6 + b.slot("mid", mm.group(1), off)))
        lines.append((off, _fmt(line, spans)))
    return Episode(path.stem, lines, b.slots, lines[-1][0], "syslog")


def _fmt(line: str, spans: list[tuple[int, int, int]]) -> str:
    """Format string for ``line`` with each span (start, end, slot) replaced by ``{slot+1}``.

    Slot -1 is the timestamp (``{0}``). ``10**6 + i`` marks a low-priority span (Message-IDs): it is
    dropped when it overlaps a normal one (a Postfix-made Message-ID carries the queue ID itself).
    """
    chosen: list[tuple[int, int, int]] = []
    for low in (False, True):
        for start, end, idx in spans:
            if (idx >= 10**6) != low:
                continue
            if any(start < e and s < end for s, e, _ in chosen):
                continue
            chosen.append((start, end, idx - 10**6 if low else idx))
    chosen.sort()
    out, pos = [], 0
    for start, end, idx in chosen:
        out.append(line[pos:start].replace("{", "{{").replace("}", "}}"))
        out.append(f"{{{idx + 1}}}")
        pos = end
    out.append(line[pos:].replace("{", "{{").replace("}", "}}"))
    return "".join(out)


# ---- Exim

_EX_LINE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(\.\d{3})?( [+-]\d{4})? (?:\[(\d+)\] )?(.*)$"
)
_EX_ID = re.compile(
    r"(?<![0-9A-Za-z-])([0-9A-Za-z]{6})-([0-9A-Za-z]{6}|[0-9A-Za-z]{11})-([0-9A-Za-z]{2}|[0-9A-Za-z]{4})"
    r"(?![0-9A-Za-z-])"
)
_EX_PIDEQ = re.compile(r"\bpid=(\d+)")
_EX_MID = re.compile(r"(?<= )id=([^@\s]+)@")
_EX_DAEMON = re.compile(r"daemon started: pid=(\d+)")


_EX_DEFER = re.compile(
    r" (?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) == (?P<rcpt>\S+) "
    r"R=(?P<r>\S+) T=(?P<t>\S+) "
)


def _exim_finish(raw: list[str], after: float) -> list[str]:
    """Lines that deliver the messages an Exim recording leaves deferred (see DEFAULT_FINISH)."""
    if after <= 0:
        return []
    last: dict[str, dict[str, tuple[re.Match, re.Match]]] = {}
    done: set[str] = set()
    end = None
    for line in raw:
        m = _EX_LINE.match(line)
        if not m:
            continue
        end = m
        if line.endswith(" Completed"):
            x = _EX_ID.search(m.group(10))
            if x:
                done.add(x.group(0))
        if (d := _EX_DEFER.search(line)) is not None:
            last.setdefault(d.group("id"), {})[d.group("rcpt")] = (m, d)
    if end is None:
        return []
    t_end = datetime(*(int(end.group(i)) for i in range(1, 7)), tzinfo=UTC).timestamp()
    out = []
    for n, (mid, rcpts) in enumerate(x for x in last.items() if x[0] not in done):
        t = t_end + after + n
        d0 = datetime.fromtimestamp(int(t), UTC)
        for m, d in rcpts.values():
            ts = f"{d0:%Y-%m-%d %H:%M:%S}" + (".000" if m.group(7) else "") + (m.group(8) or "")
            pid = f"[{m.group(9)}] " if m.group(9) else ""
            out.append(
                f"{ts} {pid}{mid} => {d.group('rcpt')} R={d.group('r')} T={d.group('t')} "
                f'H=127.0.0.1 [127.0.0.1] C="250 2.0.0 Ok: queued as RETRY{n}"'
            )
        out.append(out[-1].split(f"{mid} => ")[0] + f"{mid} Completed")
    return out


def _exim_episode(path: Path, finish: float = DEFAULT_FINISH) -> Episode:
    raw = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    raw += _exim_finish(raw, finish)
    daemon_pids = {m.group(1) for line in raw for m in [_EX_DAEMON.search(line)] if m}
    parsed = []
    fmt = None
    for line in raw:
        m = _EX_LINE.match(line)
        if not m or _EX_DAEMON.search(line):
            continue
        parsed.append((m, line))
        if fmt is None:
            fmt = "exim" + ("-ms" if m.group(7) else "") + ("-tz" if m.group(8) else "")
    if not parsed:
        raise ValueError(f"{path}: no Exim lines")

    def stamp(m) -> float:
        t = datetime(
            int(m.group(1)),
            int(m.group(2)),
            int(m.group(3)),
            int(m.group(4)),
            int(m.group(5)),
            int(m.group(6)),
            tzinfo=UTC,
        ).timestamp()
        if m.group(7):
            t += int(m.group(7)[1:]) / 1000
        if m.group(8):
            sign = 1 if m.group(8)[1] == "+" else -1
            t -= sign * (int(m.group(8)[2:4]) * 3600 + int(m.group(8)[4:6]) * 60)
        return t

    t0 = stamp(parsed[0][0])
    b = _Builder()
    lines = []

    def pid_slot(pid: str, off: float) -> int:
        return b.slot("gpid", "exim-daemon", off) if pid in daemon_pids else b.slot("pid", pid, off)

    for m, line in parsed:
        off = stamp(m) - t0
        spans = [(m.start(1), m.end(8) if m.group(8) else (m.end(7) if m.group(7) else m.end(6)), -1)]
        if m.group(9):
            spans.append((m.start(9), m.end(9), pid_slot(m.group(9), off)))
        base = m.start(10)
        msg = m.group(10)
        for x in _EX_ID.finditer(msg):
            pid = str(_dec(x.group(2), B62))
            ps = pid_slot(pid, off)
            idx = b.slot("eximid", x.group(0), off, ref=ps, extra=(len(x.group(2)), x.group(3)))
            spans.append((base + x.start(0), base + x.end(0), idx))
        for p in _EX_PIDEQ.finditer(msg):
            spans.append((base + p.start(1), base + p.end(1), pid_slot(p.group(1), off)))
        for p in _PORT_AFTER_BRACKET.finditer(msg):
            if int(p.group(1)) >= EPHEMERAL:
                spans.append((base + p.start(1), base + p.end(1), b.slot("port", p.group(1), off)))
        for mm in _EX_MID.finditer(msg):
            spans.append((base + mm.start(1), base + mm.end(1), 10**6 + b.slot("mid", mm.group(1), off)))
        lines.append((off, _fmt(line, spans)))
    return Episode(path.stem, lines, b.slots, lines[-1][0], fmt or "exim")


# ---- Haraka

_HK_TS = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z ")
_UUID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
_HK_BANNER = re.compile(r"ready \(([0-9A-F]{6})\)")
_HK_PORT = re.compile(r"\bport(?:=|\":)(\d{4,5})\b")
_HK_FILE = re.compile(r"\b(\d{13})_(\d{13})_(\d+)_(\d+)_([0-9A-Za-z]{6})_(\d+)_(\w+)\b")
_HK_MID = re.compile(r"\bmid(?:=|\":\")<([^@>\s]+)@")  # mid=<…@ and "mid":"<…@
_HK_END = re.compile(r"SIGINT received|Shutting down")


def _haraka_episode(path: Path, finish: float = DEFAULT_FINISH) -> Episode:
    # Haraka's outbound gives up by itself in the recordings (bounce after the last retry)
    raw = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    has_ts = sum(1 for line in raw if _HK_TS.match(line)) > len(raw) // 2
    start = next((i for i, line in enumerate(raw) if _UUID.search(line)), None)
    if start is None:
        raise ValueError(f"{path}: no Haraka sessions")
    body = []
    for line in raw[start:]:
        if _HK_END.search(line):
            break
        m = _HK_TS.match(line)
        if has_ts and not m:
            continue  # stray stdout of node modules ("Reloaded file: …")
        body.append((m, line))

    def stamp(m) -> float:
        return (
            datetime(*(int(m.group(i)) for i in range(1, 7)), tzinfo=UTC).timestamp() + int(m.group(7)) / 1000
        )

    t0 = stamp(body[0][0]) if has_ts else 0.0
    b = _Builder()
    lines = []
    for n, (m, line) in enumerate(body):
        off = (stamp(m) - t0) if has_ts else n * 0.005
        spans = [(0, m.end() - 1, -1)] if m else []
        for u in _UUID.finditer(line):
            spans.append((u.start(), u.end(), b.slot("uuid", u.group(0), off)))
        for bn in _HK_BANNER.finditer(line):
            ref = next(
                (i for i, s in enumerate(b.slots) if s.kind == "uuid" and s.orig.startswith(bn.group(1))), -1
            )
            spans.append((bn.start(1), bn.end(1), b.slot("uuid6", bn.group(1), off, ref=ref)))
        for p in _HK_PORT.finditer(line):
            if int(p.group(1)) >= EPHEMERAL:
                spans.append((p.start(1), p.end(1), b.slot("port", p.group(1), off)))
        for f in _HK_FILE.finditer(line):
            rnd = b.slot("rand6", f.group(5), off)
            gp = b.slot("gpid", "haraka", off)
            idx = b.slot(
                "hfile",
                f.group(0),
                off,
                ref=rnd,
                extra=(
                    int(f.group(1)) - int(t0 * 1000),
                    int(f.group(2)) - int(t0 * 1000),
                    f.group(3),
                    gp,
                    int(f.group(6)),
                    f.group(7),
                ),
            )
            spans.append((f.start(), f.end(), idx))
        for mm in _HK_MID.finditer(line):
            spans.append((mm.start(1), mm.end(1), 10**6 + b.slot("mid", mm.group(1), off)))
        lines.append((off, _fmt(line, spans) if m else "{0}" + _fmt(line, spans)))
    return Episode(path.stem, lines, b.slots, lines[-1][0], "haraka" if has_ts else "none", int(t0 * 1000))


LOADERS = {"postfix": _postfix_episode, "exim": _exim_episode, "haraka": _haraka_episode}


def available_sets(mta: str) -> dict[str, Path]:
    sub, pattern = SOURCES[mta]
    d = FIXTURES / sub
    return {p.stem: p for p in sorted(d.glob(pattern))} if d.is_dir() else {}


def parse_sets(mta: str, spec: str | None) -> dict[str, float]:
    if not spec:
        have = available_sets(mta)
        sets = {k: v for k, v in DEFAULT_SETS[mta].items() if k in have}
        if not sets and have:  # the defaults are missing (fixtures renamed): take everything there is
            sets = dict.fromkeys(have, 1.0)
        return sets
    out = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        out[name] = float(w) if w else 1.0
    return out


def load_episodes(
    mta: str, sets: dict[str, float], finish: float = DEFAULT_FINISH
) -> tuple[list[Episode], list[float]]:
    have = available_sets(mta)
    missing = [s for s in sets if s not in have]
    if missing:
        raise FileNotFoundError(
            f"no {mta} fixture log for set(s) {', '.join(missing)} under "
            f"{FIXTURES / SOURCES[mta][0]} (have: {', '.join(have) or 'none'})"
        )
    eps, weights = [], []
    for name, w in sets.items():
        if w <= 0:
            continue
        eps.append(LOADERS[mta](have[name], finish=finish))
        weights.append(w)
    if not eps:
        raise ValueError(f"no {mta} episodes selected")
    return eps, weights


# ----------------------------------------------------------------------------------------------
# Generation


@dataclass
class _State:
    rng: random.Random
    pid_next: int = 3000
    inode_next: int = 0x100000
    hcounter: int = 0
    instance: int = 0
    gpids: dict[str, int] = field(default_factory=dict)

    def new_pid(self) -> int:
        p = self.pid_next
        self.pid_next += self.rng.randint(1, 7)  # other processes take pids too
        if self.pid_next >= 4_194_304:  # Linux pid_max: wrap, skipping the long-lived ones (< 3000)
            self.pid_next = 3000
        return p

    def gpid(self, key: str) -> int:
        p = self.gpids.get(key)
        if p is None:
            p = self.gpids[key] = 1000 + 37 * len(self.gpids)
        return p


def _instance_values(ep: Episode, st: _State, base: float) -> list[str]:
    rng = st.rng
    tag = _enc(st.instance, "0123456789abcdefghijklmnopqrstuvwxyz", 1)
    vals: list[str] = []
    for s in ep.slots:
        k = s.kind
        if k == "pid":
            v = str(st.new_pid())
        elif k == "gpid":
            v = str(st.gpid(s.orig))
        elif k == "port":
            v = str(rng.randint(EPHEMERAL, 60999))
        elif k == "qid":
            v = f"{rng.getrandbits(20):05X}{st.inode_next:X}"
            st.inode_next += 1
        elif k == "lqid":
            t = base + s.first_offset
            v = (
                _enc(int(t), B51, 6)
                + _enc(rng.randrange(1_000_000), B51, 4)
                + "z"
                + _enc(st.inode_next, B51, 4)
            )
            st.inode_next += 1
        elif k == "eximid":
            pid_width, frac = s.extra
            t = int(base + s.first_offset)
            v = f"{_enc(t, B62, 6)}-{_enc(int(vals[s.ref]), B62, pid_width)}-{frac}"
        elif k == "uuid":
            a, b, c = rng.getrandbits(32), rng.getrandbits(16), 0x4000 | rng.getrandbits(12)
            d, e = 0x8000 | rng.getrandbits(14), rng.getrandbits(48)
            v = f"{a:08X}-{b:04X}-{c:04X}-{d:04X}-{e:012X}"
        elif k == "uuid6":
            v = vals[s.ref][:6] if s.ref >= 0 else f"{rng.getrandbits(24):06X}"
        elif k == "rand6":
            v = "".join(rng.choices(B62, k=6))
        elif k == "hfile":
            ms1, ms2, attempt, gp, counter, host = s.extra
            b_ms = int(base * 1000)
            v = f"{b_ms + ms1}_{b_ms + ms2}_{attempt}_{vals[gp]}_{vals[s.ref]}_{counter + st.hcounter}_{host}"
        elif k == "ymdhms":
            d = datetime.fromtimestamp(int(base + s.first_offset), UTC)
            v = f"{d.year:04d}{d.month:02d}{d.day:02d}{d.hour:02d}{d.minute:02d}{d.second:02d}"
        elif k == "mid":
            v = f"{s.orig}.{tag}"
        else:  # pragma: no cover
            raise ValueError(k)
        vals.append(v)
    st.hcounter += 1000
    st.instance += 1
    return vals


class _Stamper:
    """Renders epoch seconds in the episode's own timestamp format, caching per second."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.cache: dict[int, str] = {}

    def __call__(self, t: float) -> str:
        sec = int(t)
        s = self.cache.get(sec)
        if s is None:
            if len(self.cache) > 4096:
                self.cache.clear()
            d = datetime.fromtimestamp(sec, UTC)
            k = self.kind
            if k == "syslog":
                s = f"{MONTHS[d.month - 1]} {d.day:2d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"
            elif k.startswith("exim"):
                s = f"{d.year:04d}-{d.month:02d}-{d.day:02d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"
            elif k == "haraka":
                s = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
            else:
                s = ""
            self.cache[sec] = s
        k = self.kind
        if k in {"syslog", "none"}:
            return s
        ms = int((t - sec) * 1000)
        if k == "haraka":
            return f"{s}.{ms:03d}Z"
        if k == "exim":
            return s
        if k == "exim-ms":
            return f"{s}.{ms:03d}"
        if k == "exim-tz":
            return f"{s} +0000"
        return f"{s}.{ms:03d} +0000"  # exim-ms-tz


def generate(
    mta: str,
    lines: int,
    out: Path,
    *,
    seed: int = DEFAULT_SEED,
    sets: dict[str, float] | None = None,
    rate: float = DEFAULT_RATE,
    start: str = DEFAULT_START,
    finish: float = DEFAULT_FINISH,
    quiet: bool = False,
) -> dict:
    """Write ``lines`` lines to ``out``; return a summary (also written as ``out`` + ``.json``)."""
    sets = sets if sets is not None else parse_sets(mta, None)
    eps, weights = load_episodes(mta, sets, finish)
    cum = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    rng = random.Random(seed)
    st = _State(rng)
    stampers = {ep.ts_format: _Stamper(ep.ts_format) for ep in eps}
    t_next = datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()
    heap: list[tuple[float, int, str]] = []
    seq = 0
    written = 0
    buf: list[str] = []
    counts = dict.fromkeys((ep.name for ep in eps), 0)
    t_begin = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    first_t = last_t = None
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as fh:
        while written < lines:
            ep = eps[bisect.bisect_right(cum, rng.random() * acc)] if len(eps) > 1 else eps[0]
            counts[ep.name] += 1
            base = t_next + rng.random() * 0.999  # the recording's sub-second phase is not kept
            if last_t is not None and base < last_t:
                base = last_t  # never start before a line already written
            vals = _instance_values(ep, st, base)
            stamp = stampers[ep.ts_format]
            # flush every line that is due before this episode starts
            while heap and heap[0][0] <= base and written < lines:
                t, _, text = heapq.heappop(heap)
                buf.append(text)
                written += 1
                last_t = t
                if len(buf) >= 8192:
                    fh.write("\n".join(buf))
                    fh.write("\n")
                    buf.clear()
            run_max = base
            for off, fmt in ep.lines:
                t = base + off
                run_max = t if t > run_max else run_max  # keep the recording's own line order
                heapq.heappush(heap, (run_max, seq, fmt.format(stamp(t), *vals)))
                seq += 1
            if first_t is None:
                first_t = base
            t_next += rng.expovariate(rate / len(ep))
        while heap and written < lines:
            t, _, text = heapq.heappop(heap)
            buf.append(text)
            written += 1
            last_t = t
        if buf:
            fh.write("\n".join(buf))
            fh.write("\n")
    os.replace(tmp, out)
    elapsed = time.perf_counter() - t_begin
    summary = {
        "generator": GENERATOR_VERSION,
        "mta": mta,
        "lines": written,
        "finish_deferred_s": finish,
        "seed": seed,
        "sets": sets,
        "rate": rate,
        "start": start,
        "episodes": counts,
        "first_time": datetime.fromtimestamp(first_t, UTC).isoformat(),
        "last_time": datetime.fromtimestamp(last_t, UTC).isoformat(),
        "bytes": out.stat().st_size,
        "seconds": round(elapsed, 2),
        "year": datetime.fromtimestamp(first_t, UTC).year,
        "fixtures": {ep.name: len(ep) for ep in eps},
    }
    Path(str(out) + ".json").write_text(json.dumps(summary, indent=1) + "\n")
    if not quiet:
        print(
            f"generate: {written:,} {mta} lines -> {out} ({summary['bytes'] / 1e6:.0f} MB, "
            f"{elapsed:.1f}s, {written / max(elapsed, 1e-9):,.0f} lines/s; log time "
            f"{summary['first_time'][:19]} .. {summary['last_time'][:19]})",
            file=sys.stderr,
        )
    return summary


def default_path(
    mta: str,
    lines: int,
    seed: int,
    sets: dict[str, float],
    *,
    rate: float = DEFAULT_RATE,
    finish: float = DEFAULT_FINISH,
) -> Path:
    tag = "+".join(f"{k}{'' if v == 1 else '.w' + format(v, 'g')}" for k, v in sets.items())
    extra = ("" if rate == DEFAULT_RATE else f"-r{rate:g}") + (
        "" if finish == DEFAULT_FINISH else f"-f{finish:g}"
    )
    return DATA / f"{mta}-{tag}-{lines}-s{seed}{extra}.log"


def ensure(
    mta: str,
    lines: int,
    *,
    seed: int = DEFAULT_SEED,
    sets: dict[str, float] | None = None,
    rate: float = DEFAULT_RATE,
    finish: float = DEFAULT_FINISH,
    force: bool = False,
    quiet: bool = False,
) -> tuple[Path, dict]:
    """The generated file for these parameters, made if it does not exist yet (it is cached)."""
    sets = sets if sets is not None else parse_sets(mta, None)
    path = default_path(mta, lines, seed, sets, rate=rate, finish=finish)
    meta = Path(str(path) + ".json")
    if not force and path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if (
            info.get("lines") == lines
            and info.get("bytes") == path.stat().st_size
            and info.get("generator") == GENERATOR_VERSION
        ):
            return path, info
    return path, generate(mta, lines, path, seed=seed, sets=sets, rate=rate, finish=finish, quiet=quiet)


_CHECK_ID = {
    "postfix": re.compile(r"\]: ([0-9A-F]{6,12}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{10}z[0-9A-Za-z]+): "),
    "exim": _EX_ID,
    "haraka": _UUID,
}


def _line_time(mta: str, line: str) -> float | None:
    if mta == "postfix":
        m = _PF_LINE.match(line)
        if not m:
            return None
        return (
            ((_MON[m.group(1)] * 31 + int(m.group(2))) * 24 + int(m.group(3))) * 3600
            + int(m.group(4)) * 60
            + int(m.group(5))
        )
    if mta == "exim":
        m = _EX_LINE.match(line)
        if not m:
            return None
        return datetime(
            int(m.group(1)),
            int(m.group(2)),
            int(m.group(3)),
            int(m.group(4)),
            int(m.group(5)),
            int(m.group(6)),
            tzinfo=UTC,
        ).timestamp() + (int(m.group(7)[1:]) / 1000 if m.group(7) else 0)
    m = _HK_TS.match(line)
    if not m:
        return None
    return datetime(*(int(m.group(i)) for i in range(1, 7)), tzinfo=UTC).timestamp() + int(m.group(7)) / 1000


def check(mta: str, path: Path, sets: dict[str, float] | None = None, finish: float = DEFAULT_FINISH) -> dict:
    """Verify a generated file: time never goes back by more than the recording's own jitter, and no
    queue ID / message ID / UUID lives longer than the longest recorded episode (so no copy reused
    another copy's ID)."""
    eps, _ = load_episodes(mta, sets if sets is not None else parse_sets(mta, None), finish)
    longest = max(ep.duration for ep in eps)
    rx = _CHECK_ID[mta]
    spans: dict[str, list[float]] = {}
    prev = None
    back = 0.0
    n = 0
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            n += 1
            t = _line_time(mta, line)
            if t is None:
                continue
            if prev is not None and t < prev:
                back = max(back, prev - t)
            prev = t if prev is None or t > prev else prev
            for m in rx.finditer(line):
                k = m.group(0) if mta != "postfix" else m.group(1)
                sp = spans.get(k)
                if sp is None:
                    spans[k] = [t, t]
                else:
                    sp[1] = t
    worst = max(((v[1] - v[0], k) for k, v in spans.items()), default=(0.0, ""))
    ok = back < 1.0 and worst[0] <= longest + 2
    return {
        "lines": n,
        "ids": len(spans),
        "longest_episode_s": longest,
        "longest_id_span_s": worst[0],
        "longest_id": worst[1],
        "max_time_step_back_s": round(back, 3),
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mta", choices=sorted(SOURCES), default="postfix")
    ap.add_argument(
        "--lines", type=lambda s: int(float(s)), default=1_000_000, help="lines to write (1e6 works)"
    )
    ap.add_argument(
        "--sets",
        help="fixture sets and weights, e.g. port-logging:8,expiry:1 (default: {})".format(
            "; ".join(f"{m}: {','.join(f'{k}:{v}' for k, v in d.items())}" for m, d in DEFAULT_SETS.items())
        ),
    )
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE, help="log lines per second of log time")
    ap.add_argument("--start", default=DEFAULT_START, help="log time of the first line (UTC)")
    ap.add_argument(
        "--finish",
        type=float,
        default=DEFAULT_FINISH,
        help="deliver the messages a recording leaves deferred this many seconds after it (0: leave them)",
    )
    ap.add_argument(
        "--out", type=Path, help="output file (default: benchmarks/data/<mta>-<sets>-<lines>-s<seed>.log)"
    )
    ap.add_argument("--force", action="store_true", help="regenerate even when the file exists")
    ap.add_argument("--list", action="store_true", help="list the fixture sets found and exit")
    ap.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="verify a generated FILE (time order, no ID reused across copies) and exit",
    )
    a = ap.parse_args(argv)
    if a.check:
        res = check(a.mta, a.check, parse_sets(a.mta, a.sets), a.finish)
        print(json.dumps(res))
        return 0 if res["ok"] else 1
    if a.list:
        for mta in SOURCES:
            have = available_sets(mta)
            print(
                f"{mta}: "
                + (
                    ", ".join(
                        f"{k} ({len(v.read_text(errors='replace').splitlines())} lines)"
                        for k, v in have.items()
                    )
                    or "no fixtures"
                )
            )
        return 0
    if not available_sets(a.mta):
        print(
            f"generate: no {a.mta} fixture logs under {FIXTURES / SOURCES[a.mta][0]} (not recorded yet?)",
            file=sys.stderr,
        )
        return 2
    sets = parse_sets(a.mta, a.sets)
    try:
        if a.out:
            generate(
                a.mta, a.lines, a.out, seed=a.seed, sets=sets, rate=a.rate, start=a.start, finish=a.finish
            )
            print(a.out)
        elif a.start != DEFAULT_START:
            ap.error("--start needs --out (cached files use the default start)")
        else:
            path, _ = ensure(
                a.mta, a.lines, seed=a.seed, sets=sets, rate=a.rate, finish=a.finish, force=a.force
            )
            print(path)
    except (FileNotFoundError, ValueError) as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
