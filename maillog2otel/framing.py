"""Envelopes -> ``Record``: time, host, program, pid and message from every log shape we read.

Shapes (detected per line, so a file may mix them):

    Nov  2 01:02:03 mx postfix/smtpd[123]: connect from …          RFC3164, journalctl short
    Nov 2 01:02:03 mx postfix/smtpd[123]: connect from …           the same, day not padded
    Nov 22 01:52:30.333725 mx postfix/smtpd[123]: …                journalctl short-precise
    2026-11-22T01:52:46.661933+00:00 mx postfix/smtpd[123]: …      rsyslog RFC3339, short-iso
    2026-11-22 01:52:46.661 +0100 [123] 1rABCD-0001Ab-XY <= …      Exim's own main log
    2026-11-22T01:53:59.097Z [NOTICE] [UUID] [core] connect …      Haraka stdout, timestamps=true
    [NOTICE] [UUID] [core] connect …                               Haraka stdout, no timestamps
    2026-07-23 20:55:28.029305500  [NOTICE] …                      tai64nlocal-stamped Haraka
    {"MESSAGE": …, "__REALTIME_TIMESTAMP": …}                      journalctl -o json

Year-less stamps get their year from a deterministic guess (``YearGuess``); zone-less stamps are
read in the configured time zone.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from maillog2otel.records import Record

_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}

_BSD = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]?\d) (?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?:\.(?P<frac>\d{1,9}))?"
    r" (?:<[\w.]+> )?(?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?:\[ID \d+ [\w.]+\] )?"
)
# the rest of a classic syslog line after a stamp already seen (see Framer.frame)
_BSD_REST = re.compile(
    r" (?:<[\w.]+> )?(?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?:\[ID \d+ [\w.]+\] )?"
)
_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)T(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?:[.,](?P<frac>\d{1,9}))?"
    r"(?P<tz>Z|[+-]\d\d:?\d\d)? (?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: "
)
_ISO_REST = re.compile(  # the rest of an _ISO line after its first 19 characters (see Framer.frame)
    r"(?:[.,](?P<frac>\d{1,9}))?(?P<tz>Z|[+-]\d\d:?\d\d)? "
    r"(?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: "
)
_EXIM = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d) (?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?:\.(?P<frac>\d{3}))?"
    r"(?: (?P<tz>[+-]\d{4}))? (?:\[(?P<pid>\d+)\] )?"
)
# the rest of an _EXIM stamp after its minute (17 characters): the seconds, …
_EXIM_REST = re.compile(r"(?P<s>\d\d)(?:\.(?P<frac>\d{3}))?(?: (?P<tz>[+-]\d{4}))? (?:\[(?P<pid>\d+)\] )?")
_HARAKA_TS = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)[T ](?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>Z|[+-]\d\d:?\d\d)? {1,2}"
)
_HARAKA_BODY = re.compile(r"\[[A-Z]+\] \[|\{\"level\"|level=[A-Z]+ ")
# the rest of a _HARAKA_TS stamp after its minute (17 characters): the seconds, …
_HARAKA_REST = re.compile(r"(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)? {1,2}")
# … and, in the same call, the start of a record's body (the backtracking it allows finds no other
# match: a body starts with no digit, space or zone)
_HARAKA_NEXT = re.compile(_HARAKA_REST.pattern + f"(?={_HARAKA_BODY.pattern})")
# Haraka's own untagged start-up lines (logger.js), which come before its first tagged line
_HARAKA_START = re.compile(r"loglevel: [A-Z]+$|log format: [A-Z]+$|Starting up Haraka version ")


def _haraka_after(text: str, m: re.Match[str]) -> bool:
    """Whether a Haraka record follows a stamp ``_EXIM_REST`` read without zone or pid, judged as
    ``Framer.frame``'s full path judges it: after the stamp and one or two spaces (``_HARAKA_TS``)."""
    at = 20 + (4 if m["frac"] else 0)
    if text[at:at + 1] == " ":
        at += 1
    return bool(_HARAKA_BODY.match(text, at) or _HARAKA_START.match(text, at))


def _frac_ns(frac: str | None) -> int:
    return int(frac.ljust(9, "0")) if frac else 0


_SCALE = [10 ** (9 - n) for n in range(10)]  # a fraction of n digits -> ns: int(frac) * _SCALE[n]


def _offset_s(tz: str) -> int:
    if tz == "Z":
        return 0
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)


class LocalClock:
    """Wall-clock fields in one time zone -> epoch ns, cached per local hour."""

    def __init__(self, zone: str | None) -> None:
        self.tz: dt.tzinfo = ZoneInfo(zone) if zone else _machine_zone()
        self._hours: dict[tuple[int, int, int, int], int] = {}

    def to_ns(self, y: int, mo: int, d: int, h: int, mi: int, s: int, frac_ns: int) -> int:
        key = (y, mo, d, h)
        base = self._hours.get(key)
        if base is None:
            base = int(dt.datetime(y, mo, d, h, tzinfo=self.tz).timestamp())
            if len(self._hours) > 4096:
                self._hours.clear()
            self._hours[key] = base
        return (base + mi * 60 + s) * 1_000_000_000 + frac_ns


def _machine_zone() -> dt.tzinfo:
    try:
        return ZoneInfo("localtime")
    except Exception:  # noqa: BLE001 - no /etc/localtime: the offset of now is the best guess
        return dt.datetime.now().astimezone().tzinfo or dt.UTC


_DAYS: dict[tuple[int, int, int], int] = {}


def _utc_ns(y: int, mo: int, d: int, h: int, mi: int, s: int, frac_ns: int, off_s: int) -> int:
    day = _DAYS.get((y, mo, d))
    if day is None:
        day = calendar.timegm((y, mo, d, 0, 0, 0))
        if len(_DAYS) > 100_000:
            _DAYS.clear()
        _DAYS[(y, mo, d)] = day
    return (day + h * 3600 + mi * 60 + s - off_s) * 1_000_000_000 + frac_ns


@dataclass(slots=True)
class YearGuess:
    """The year of year-less stamps, deterministic for a given stream.

    Starts at ``year`` for a stream whose first line is in ``first_month`` or earlier (the year of
    the first file's modification time, or ``--year``); a month far below the last one (Dec ->
    Jan) moves to the next year; a stray line from the month before a turn stays in the old year."""

    year: int
    last_month: int = 0
    ref_month: int = 12  # month of the reference time: a first line later in the year is last year's

    def resolve(self, month: int) -> int:
        if self.last_month == 0:
            if month > self.ref_month:
                self.year -= 1
            self.last_month = month
            return self.year
        if month < self.last_month - 6:
            self.year += 1
            self.last_month = month
        elif month > self.last_month + 6:
            return self.year - 1
        else:
            self.last_month = month
        return self.year


class Framer:
    """Frames one stream's lines. Keeps the little state a stream needs: the year guess, the last
    time seen (for time-less lines) and whether the stream is a native Exim or Haraka log."""

    def __init__(
        self, *, stream: int, clock: LocalClock, year: YearGuess, default_host: str,
        now_ns: int | None = None,
    ) -> None:
        self.stream, self.clock, self.year, self.default_host = stream, clock, year, default_host
        self.last_ns = now_ns or 0
        self.now_ns = now_ns  # tail mode: time-less lines take the reading time
        self.native: str | None = None
        # Busy logs write many lines per second: the stamp of the line before, and its time, let
        # the next line with the same 15 characters skip the date arithmetic.
        self._bsd_head: str | None = None  # equal to no slice of a line
        self._bsd_len = 0
        self._bsd_ts = 0
        # and most lines of a busy log come from few processes: " host prog[pid]: " after the stamp
        # -> (host, prog, pid), read once by _BSD_REST. A hit gives what the regex would: without a
        # leading "<…> " every path of the regex stays inside that text up to its first ": " (the
        # host is followed by a space, program and pid hold no colon), so only what follows can
        # differ: the optional Solaris "[ID …] ", which sends a line to the regex again.
        self._envelopes: dict[str, tuple[str, str, int | None]] = {}
        # the same for RFC 3339 stamps (rsyslog's default on Debian 12): the first 19 characters
        # and the zone; the fraction differs line by line and is added
        self._iso_head = ""
        # and for Exim's own stamps (its main log) and Haraka's (timestamps=true), while the stream
        # is such a log, by the minute: a log of a few lines a second changes its second nearly every
        # line. The seconds are added: no stamp path checks them, so a minute's times are linear in them
        self._exim_head = ""  # 17 characters
        self._exim_tz: str | None = None
        self._exim_ts = 0  # the time of the minute's second 0
        self._haraka_head = ""
        self._haraka_tz: str | None = None
        self._haraka_ts = 0
        self._iso_tz: str | None = None
        self._iso_ts = 0

    def frame(self, text: str, offset: int) -> Record | None:
        # A native log's own stamp first: no other shortcut below takes a line these take (a syslog
        # stamp starts with a letter; an RFC 3339 one is followed by one space and a host that starts
        # with none of a Haraka body's first characters), so the order changes no result
        native = self.native
        if native is not None:  # one test for the syslog lines
            if native == "haraka":
                head = self._haraka_head
                if head and text[:17] == head:
                    m = _HARAKA_NEXT.match(text, 17)
                    if m is None:
                        m = _HARAKA_REST.match(text, 17)
                        # only a record's own body is sure to be Haraka's: other text may read as syslog
                        if m is None or not _HARAKA_START.match(text, m.end()):
                            m = None
                    if m is not None:
                        s, frac, tz = m.groups()
                        if tz == self._haraka_tz:
                            self.last_ns = ts = (self._haraka_ts + int(s) * 1_000_000_000
                                                 + (int(frac) * _SCALE[len(frac)] if frac else 0))
                            return Record(ts, self.default_host, "haraka", None, text[m.end():], "haraka",
                                          self.stream, offset)
            elif native == "exim":
                head = self._exim_head
                if head and text[:17] == head:
                    m = _EXIM_REST.match(text, 17)
                    if m is not None:
                        s, frac, tz, pid = m.groups()
                        if tz == self._exim_tz and (tz is not None or pid is not None
                                                    or not _haraka_after(text, m)):
                            self.last_ns = ts = (self._exim_ts + int(s) * 1_000_000_000
                                                 + (int(frac) * 1_000_000 if frac else 0))
                            return Record(ts, self.default_host, "exim", int(pid) if pid else None,
                                          text[m.end():], "exim", self.stream, offset)
        head = self._bsd_head
        at = self._bsd_len
        if text[:at] == head:  # a slice and == cost less than str.startswith's argument parsing
            end = text.find(": ", at) + 2
            env = self._envelopes.get(text[at:end]) if end > 1 else None
            if env is not None:
                msg = text[end:]
                if msg[:1] != "[" or not msg.startswith("[ID "):  # a one-character slice is not copied
                    self.last_ns = ts = self._bsd_ts
                    return Record(ts, env[0], env[1], env[2], msg, None, self.stream, offset)
            m = _BSD_REST.match(text, at)
            if m is not None:
                host, prog, pid = m.groups()
                self.last_ns = ts = self._bsd_ts
                env = (host, prog, int(pid) if pid else None)
                # kept when the match ends at the first ": " (no Solaris "[ID …] ") and the line has no
                # "<facility.level> ": with one, the regex may read past that ": " before it settles
                if m.end() == end and text[at + 1] != "<":
                    envelopes = self._envelopes
                    if len(envelopes) >= 4096:
                        envelopes.clear()
                    envelopes[text[at:end]] = env
                return Record(ts, host, prog, env[2], text[m.end():], None, self.stream, offset)
        head = self._iso_head
        if head and text[:19] == head:
            m = _ISO_REST.match(text, 19)
            # a Haraka record's body starts with one of these: the full path below tells them apart
            if m is not None and m["host"][0] not in "[{lS":
                frac, tz, host, prog, pid = m.groups()
                if tz == self._iso_tz:
                    self.last_ns = ts = self._iso_ts + (int(frac) * _SCALE[len(frac)] if frac else 0)
                    return Record(ts, host, prog, int(pid) if pid else None, text[m.end():], None,
                                  self.stream, offset)
        c = text[:1]
        if c.isalpha() and (m := _BSD.match(text)):
            mo = _MONTHS.get(m["mon"])
            if mo is None:
                return None
            y = self.year.resolve(mo)
            try:
                ts = self.clock.to_ns(y, mo, int(m["day"]), int(m["h"]), int(m["mi"]), int(m["s"]),
                                      _frac_ns(m["frac"]))
            except ValueError:
                return None
            if m["frac"] is None:  # 15 characters, or 14 with an unpadded day ("Mar 7 02:09:33")
                self._bsd_head, self._bsd_ts = text[:m.end("s")], ts
                self._bsd_len = len(self._bsd_head)
            return self._syslog(ts, m["host"], m["prog"], m["pid"], text[m.end():], offset)
        if c.isdigit():
            # a stamped Haraka record can look like syslog: 'Z {"level":…"message":"bouncing mail: …'
            h = _HARAKA_TS.match(text)
            haraka = h is not None and bool(_HARAKA_BODY.match(text, h.end())
                                            or _HARAKA_START.match(text, h.end()))
            if not haraka and (m := _ISO.match(text)):
                ts = self._iso_ns(m)
                if ts is None:
                    return None
                self._iso_head, self._iso_tz = text[:19], m["tz"]
                self._iso_ts = ts - _frac_ns(m["frac"])
                return self._syslog(ts, m["host"], m["prog"], m["pid"], text[m.end():], offset)
            if (m := h) and (haraka or m["tz"] or len(m["frac"] or "") > 3 or self.native == "haraka"):
                ts = self._iso_ns(m)
                if ts is None:
                    return None
                self.native = "haraka"
                self._haraka_head, self._haraka_tz = text[:17], m["tz"]
                self._haraka_ts = ts - _frac_ns(m["frac"]) - int(m["s"]) * 1_000_000_000
                return self._native("haraka", ts, None, text[m.end():], offset)
            if m := _EXIM.match(text):
                ts = self._iso_ns(m)
                if ts is None:
                    return None
                self.native = "exim"
                self._exim_head, self._exim_tz = text[:17], m["tz"]
                self._exim_ts = ts - _frac_ns(m["frac"]) - int(m["s"]) * 1_000_000_000
                pid = int(m["pid"]) if m["pid"] else None
                return self._native("exim", ts, pid, text[m.end():], offset)
        if c == "{" and text.startswith('{"') and ('"__REALTIME_TIMESTAMP"' in text or '"MESSAGE"' in text):
            return self._journal_json(text, offset)
        if c in "[{lS" and (_HARAKA_BODY.match(text) or _HARAKA_START.match(text)):
            self.native = "haraka"
            return self._native("haraka", self._timeless_ns(), None, text, offset, inferred=True)
        if self.native == "haraka" and text:
            # Haraka's untagged start-up lines ("loaded TLD files: …") carry no envelope.
            return self._native("haraka", self._timeless_ns(), None, text, offset, inferred=True)
        if self.native == "exim" and text:
            # In an Exim log a line without a stamp continues the entry before it (the reject
            # log's Envelope- and header lines): the grammar decides what it is.
            return self._native("exim", self._timeless_ns(), None, text, offset, inferred=True)
        return None

    def _iso_ns(self, m: re.Match[str]) -> int | None:
        try:
            y, mo, d = int(m["y"]), int(m["mo"]), int(m["d"])
            h, mi, s = int(m["h"]), int(m["mi"]), int(m["s"])
            frac = _frac_ns(m["frac"])
            tz = m["tz"]
            if tz:
                return _utc_ns(y, mo, d, h, mi, s, frac, _offset_s(tz))
            return self.clock.to_ns(y, mo, d, h, mi, s, frac)
        except (ValueError, OverflowError):
            return None

    def _timeless_ns(self) -> int:
        return self.now_ns if self.now_ns is not None else self.last_ns

    def _syslog(self, ts: int, host: str, prog: str, pid: str | None, msg: str, offset: int) -> Record:
        self.last_ns = ts
        return Record(ts, host, prog, int(pid) if pid else None, msg, None, self.stream, offset)

    def _native(self, mta: str, ts: int, pid: int | None, msg: str, offset: int,
                inferred: bool = False) -> Record:
        if not inferred:
            self.last_ns = ts
        return Record(ts, self.default_host, mta, pid, msg, mta, self.stream, offset, inferred)

    def _journal_json(self, text: str, offset: int) -> Record | None:
        try:
            entry = json.loads(text)
        except ValueError:
            return None
        if not isinstance(entry, dict):
            return None
        msg = _journal_value(entry.get("MESSAGE"))
        if msg is None:
            return None
        raw_ts = entry.get("_SOURCE_REALTIME_TIMESTAMP") or entry.get("__REALTIME_TIMESTAMP")
        try:
            ts = int(raw_ts) * 1000
        except (TypeError, ValueError):
            return None
        prog = _journal_value(entry.get("SYSLOG_IDENTIFIER")) or _journal_value(entry.get("_COMM")) or ""
        pid_s = _journal_value(entry.get("SYSLOG_PID")) or _journal_value(entry.get("_PID"))
        host = _journal_value(entry.get("_HOSTNAME")) or self.default_host
        self.last_ns = ts
        rec = Record(ts, host, prog, int(pid_s) if pid_s and pid_s.isdecimal() else None, msg, None,
                     self.stream, offset)
        cursor = entry.get("__CURSOR")
        if isinstance(cursor, str):
            rec.cursor = cursor
        return rec


def _journal_value(value: object) -> str | None:
    """journalctl -o json values: a string, a list of byte values (non-UTF-8 text), null (over
    4096 bytes without --all) or a list of values (a repeated field: the last one counts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(b, int) for b in value):
            return bytes(b & 0xFF for b in value).decode("utf-8", "replace")
        return _journal_value(value[-1])
    return None


# Exim through syslog: an entry over 870 characters, or with newlines, goes out as several messages
# "[i/n] piece" ('\' instead of '/' when the piece ended at a newline; Exim's log.c, write_syslog)
EXIM_FRAGMENT = re.compile(r"\[(\d{1,4})([/\\])(\d{1,4})\] ")


@dataclass(slots=True)
class _Pieces:
    n: int
    records: list[Record]
    texts: list[str]
    newline_after: list[bool]


class Fragments:
    """Puts Exim's syslog pieces back together before the grammar reads them.

    Pieces of one entry come from one process, in order: they are held per (host, program, pid)
    until the last one. Length pieces join end to end; a piece that ended at a newline ends a line
    and the next piece starts the entry's next line, as in Exim's own log file. Each line comes out
    as one record, with the first piece's time and place, and the number of log lines it took. A set
    that breaks off (a piece missing, the log ending) gives its pieces back as they were: they are
    then counted as unparsed, never dropped."""

    def __init__(self, max_open: int = 1000) -> None:
        self._open: dict[tuple[str, str, int | None], _Pieces] = {}
        self.max_open = max_open

    def __len__(self) -> int:
        return len(self._open)

    def add(self, rec: Record, m: re.Match[str]) -> list[tuple[Record, int]]:
        i, newline, n = int(m[1]), m[2] == "\\", int(m[3])
        key = (rec.host, rec.program, rec.pid)
        out: list[tuple[Record, int]] = []
        held = self._open.get(key)
        if held is not None and (i != len(held.records) + 1 or n != held.n):
            out += self._give_back(key)
            held = None
        if held is None:
            if i != 1 or n < 2:  # a piece without its first one, or no set at all: as it is
                return [*out, (rec, 1)]
            if len(self._open) >= self.max_open:
                out += self._give_back(next(iter(self._open)))
            held = self._open[key] = _Pieces(n, [], [], [])
        held.records.append(rec)
        held.texts.append(rec.message[m.end():])
        held.newline_after.append(newline)
        if i < n:
            return out
        del self._open[key]
        first, text, lines = held.records[0], "", 0
        for piece, ends_line in zip(held.texts, held.newline_after, strict=True):
            text += piece
            lines += 1
            if ends_line:
                out.append((_with_message(first, text), lines))
                text, lines = "", 0
        if lines:
            out.append((_with_message(first, text), lines))
        return out

    def drain(self) -> list[tuple[Record, int]]:
        """The pieces of every unfinished set, as they were (end of input)."""
        out: list[tuple[Record, int]] = []
        for key in list(self._open):
            out += self._give_back(key)
        return out

    def _give_back(self, key: tuple[str, str, int | None]) -> list[tuple[Record, int]]:
        return [(r, 1) for r in self._open.pop(key).records]


def _with_message(rec: Record, message: str) -> Record:
    return Record(rec.ts_ns, rec.host, rec.program, rec.pid, message, rec.mta, rec.stream, rec.offset,
                  rec.ts_inferred, rec.cursor)
