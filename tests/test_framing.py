"""Envelopes -> Record: every shape, year inference and time zones."""

from __future__ import annotations

import calendar

import pytest

from maillog2otel.framing import Framer, LocalClock, YearGuess


def framer(year: int = 2026, ref_month: int = 12, zone: str = "UTC") -> Framer:
    return Framer(stream=0, clock=LocalClock(zone), year=YearGuess(year, ref_month=ref_month),
                  default_host="me")


def utc_ns(*parts: int, frac_ns: int = 0) -> int:
    return calendar.timegm((*parts,)) * 1_000_000_000 + frac_ns


class TestSyslog:
    def test_rfc3164_space_padded_day(self) -> None:
        """Classic syslog pads single-digit days with a space."""
        rec = framer().frame("Nov  2 01:02:03 mx postfix/smtpd[123]: connect from a[1.2.3.4]", 7)
        assert rec is not None
        assert (rec.ts_ns, rec.host, rec.program, rec.pid, rec.message, rec.offset) == (
            utc_ns(2026, 11, 2, 1, 2, 3), "mx", "postfix/smtpd", 123, "connect from a[1.2.3.4]", 7)

    def test_maillog_file_zero_padded_day(self) -> None:
        """Postfix's own maillog_file and journalctl short pad with a zero."""
        rec = framer().frame("Nov 02 01:02:03 mx postfix/qmgr[9]: ABC123: removed", 0)
        assert rec is not None
        assert rec.ts_ns == utc_ns(2026, 11, 2, 1, 2, 3) and rec.message == "ABC123: removed"

    def test_short_precise_fraction(self) -> None:
        rec = framer().frame("Nov 22 01:52:30.333725 vm postfix/submission/smtpd[11424]: x", 0)
        assert rec is not None and rec.ts_ns == utc_ns(2026, 11, 22, 1, 52, 30, frac_ns=333725000)
        assert rec.program == "postfix/submission/smtpd"

    def test_rfc3339_with_offset(self) -> None:
        """rsyslog's RFC3339: microseconds and an offset with a colon."""
        rec = framer().frame("2026-11-22T01:52:46.661933+01:00 vm postfix/smtpd[4242]: x", 0)
        assert rec is not None and rec.ts_ns == utc_ns(2026, 11, 22, 0, 52, 46, frac_ns=661933000)

    def test_short_iso_offset_without_colon(self) -> None:
        """journalctl -o short-iso writes +0000 (no colon)."""
        rec = framer().frame("2026-11-22T01:52:30-0200 vm postfix/smtpd[1]: x", 0)
        assert rec is not None and rec.ts_ns == utc_ns(2026, 11, 22, 3, 52, 30)

    def test_solaris_tag_and_facility(self) -> None:
        rec = framer().frame("Jul  1 20:08:06 <mail.info> host postfix/cleanup[14194]: [ID 197553 mail.info] "
                             "EC2B339E5: message-id=<x@y>", 0)
        assert rec is not None and rec.message == "EC2B339E5: message-id=<x@y>"

    def test_program_without_pid(self) -> None:
        rec = framer().frame("Nov 22 01:00:00 mx postfix/postfix-script: starting the Postfix mail system", 0)
        assert rec is not None and rec.pid is None and rec.program == "postfix/postfix-script"

    def test_impossible_date_is_not_framed(self) -> None:
        assert framer().frame("Feb 30 01:00:00 mx postfix/smtpd[1]: x", 0) is None

    def test_garbage_is_not_framed(self) -> None:
        f = framer()
        for text in ("", "garbage", "\x00\x01", "Nov", "2026-13-45T99:99:99Z x y: z", "{not json"):
            assert f.frame(text, 0) is None


class TestYear:
    def test_december_to_january_rolls_over(self) -> None:
        f = framer(2025, ref_month=12)
        a = f.frame("Dec 31 23:59:59 mx postfix/smtpd[1]: a", 0)
        b = f.frame("Jan  1 00:00:01 mx postfix/smtpd[1]: b", 0)
        assert a is not None and b is not None
        assert a.ts_ns == utc_ns(2025, 12, 31, 23, 59, 59) and b.ts_ns == utc_ns(2026, 1, 1, 0, 0, 1)

    def test_first_line_after_reference_month_is_last_year(self) -> None:
        """A file modified in January whose first line is from December started last year."""
        rec = framer(2026, ref_month=1).frame("Dec 30 10:00:00 mx postfix/smtpd[1]: a", 0)
        assert rec is not None and rec.ts_ns == utc_ns(2025, 12, 30, 10, 0, 0)

    def test_stray_older_line_does_not_move_the_year(self) -> None:
        f = framer(2026, ref_month=12)
        f.frame("Jan  1 00:00:01 mx postfix/smtpd[1]: a", 0)
        stray = f.frame("Dec 31 23:59:59 mx postfix/smtpd[1]: late", 0)
        after = f.frame("Jan  1 00:00:02 mx postfix/smtpd[1]: b", 0)
        assert stray is not None and after is not None
        assert stray.ts_ns == utc_ns(2025, 12, 31, 23, 59, 59) and after.ts_ns == utc_ns(2026, 1, 1, 0, 0, 2)

    def test_same_input_same_years(self) -> None:
        """Deterministic: two framers given the same lines agree."""
        lines = ["Nov 30 00:00:00 h p[1]: a", "Dec 31 00:00:00 h p[1]: b", "Jan  2 00:00:00 h p[1]: c",
                 "Feb  2 00:00:00 h p[1]: d"]
        one = [r.ts_ns for r in map(lambda t: framer(2024, 11).frame(t, 0), lines) if r]
        f = framer(2024, 11)
        two = [r.ts_ns for t in lines if (r := f.frame(t, 0))]
        assert one[0] == two[0] and two[-1] == utc_ns(2025, 2, 2, 0, 0, 0)


class TestZones:
    @pytest.mark.parametrize(("zone", "hours"), [("UTC", 0), ("Europe/Berlin", 1), ("America/New_York", -5)])
    def test_zone_less_stamps_use_the_zone(self, zone: str, hours: int) -> None:
        rec = framer(zone=zone).frame("Jan 15 12:00:00 mx postfix/smtpd[1]: x", 0)
        assert rec is not None and rec.ts_ns == utc_ns(2026, 1, 15, 12 - hours, 0, 0)

    def test_summer_time(self) -> None:
        rec = framer(zone="Europe/Berlin").frame("Jul 15 12:00:00 mx postfix/smtpd[1]: x", 0)
        assert rec is not None and rec.ts_ns == utc_ns(2026, 7, 15, 10, 0, 0)

    def test_explicit_offset_ignores_the_zone(self) -> None:
        rec = framer(zone="Asia/Tokyo").frame("2026-01-15T12:00:00Z mx postfix/smtpd[1]: x", 0)
        assert rec is not None and rec.ts_ns == utc_ns(2026, 1, 15, 12, 0, 0)


class TestNative:
    def test_exim_main_log_with_millis_zone_and_pid(self) -> None:
        rec = framer().frame("2026-11-22 01:52:46.661 +0100 [123] 1rABCD-0001Ab-XY <= a@b.example", 0)
        assert rec is not None and rec.mta == "exim" and rec.pid == 123
        assert rec.ts_ns == utc_ns(2026, 11, 22, 0, 52, 46, frac_ns=661000000)
        assert rec.message == "1rABCD-0001Ab-XY <= a@b.example" and rec.host == "me"

    def test_exim_default_prefix(self) -> None:
        rec = framer().frame("2026-11-22 01:52:46 1rABCD-0001Ab-XY Completed", 0)
        assert rec is not None and rec.mta == "exim" and rec.pid is None and rec.message.endswith("Completed")

    def test_haraka_iso_timestamp(self) -> None:
        rec = framer().frame("2026-11-22T01:53:59.097Z [NOTICE] [B9A0-1] [core] connect ip=127.0.0.1", 0)
        assert rec is not None and rec.mta == "haraka" and rec.message.startswith("[NOTICE]")
        assert rec.ts_ns == utc_ns(2026, 11, 22, 1, 53, 59, frac_ns=97000000)

    def test_haraka_without_timestamp_takes_the_last_time(self) -> None:
        f = framer()
        f.frame("2026-11-22T01:53:59.097Z [NOTICE] [-] [core] x", 0)
        rec = f.frame("[NOTICE] [-] [core] y", 0)
        assert rec is not None and rec.ts_inferred
        assert rec.ts_ns == utc_ns(2026, 11, 22, 1, 53, 59, frac_ns=97000000)

    def test_haraka_tai64nlocal(self) -> None:
        rec = framer().frame("2026-07-23 20:55:28.029305500  [NOTICE] [X.1.1] [outbound]  delivered", 0)
        assert rec is not None and rec.mta == "haraka"
        assert rec.message == "[NOTICE] [X.1.1] [outbound]  delivered"


class TestJournalJson:
    def test_fields(self) -> None:
        rec = framer().frame('{"__CURSOR":"s=1","__REALTIME_TIMESTAMP":"1700000000123456","_HOSTNAME":"mx1",'
                             '"SYSLOG_IDENTIFIER":"postfix/smtpd","SYSLOG_PID":"77","_PID":"78",'
                             '"MESSAGE":"connect from a[1.2.3.4]"}', 0)
        assert rec is not None
        assert (rec.ts_ns, rec.host, rec.program, rec.pid, rec.cursor) == (
            1700000000123456000, "mx1", "postfix/smtpd", 77, "s=1")

    def test_message_as_byte_array(self) -> None:
        """Non-UTF-8 MESSAGE comes as a list of byte values."""
        data = [*b"Subject: caf", 0xE9]
        rec = framer().frame('{"__REALTIME_TIMESTAMP":"1700000000000000","MESSAGE":' + str(data) +
                             ',"SYSLOG_IDENTIFIER":"postfix/cleanup"}', 0)
        assert rec is not None and rec.message == "Subject: caf\ufffd"

    def test_null_message_is_not_framed(self) -> None:
        """Fields over 4096 bytes come as null without --all: nothing to parse."""
        assert framer().frame('{"__REALTIME_TIMESTAMP":"1700000000000000","MESSAGE":null}', 0) is None


def test_stamp_cache_changes_nothing() -> None:
    """The same-second shortcut gives the records the full parse gives, on every fixture line."""
    from pathlib import Path

    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    lines = [line for p in sorted(fixtures.rglob("*.log"))
             for line in p.read_text(errors="replace").splitlines()]
    lines += ["Nov 22 02:59:16 mx postfix/smtpd[1]: a", "Nov 22 02:59:16 mx2 postfix/smtpd: b",
              "Nov 22 02:59:16 <mail.info> mx postfix/smtpd[1]: c", "Nov 22 02:59:16  weird",
              "Nov 22 02:59:16"]
    # the same lines with RFC 3339 stamps (rsyslog on Debian 12), fractions and zones varying
    # within a second, and Haraka records (which look like syslog after a stamp) in the same second
    iso = []
    for i, line in enumerate(lines):
        if line[:3] in ("Nov", "Dec") and line[15:16] == " ":
            head = f"2026-11-{int(line[4:6]):02d}T{line[7:15]}"
            frac = ("", ".5", f".{i % 1000:03d}", f",{i:06d}")[i % 4]
            zone = ("", "Z", "+01:00", "-0500", "Z")[i % 5]
            iso.append(f"{head}{frac}{zone}{line[15:]}")
            if i % 3 == 0:  # another second of the minute, and no second
                sec = ("59", "0x", "\u0663\u0663")[i % 9 // 3]
                iso.append(f"{head[:17]}{sec}{frac}{zone}{line[15:]}")
            if i % 7 == 0:
                iso += [f"{head}.1Z log format: DEFAULT", f"{head}.123Z [NOTICE] [-] [core] a: b",
                        f'{head}.2Z {{"level":"INFO","message":"bouncing mail: x"}}',
                        f"{head}.3Z level=INFO uuid=- x: y", f"{head}.4Z Starting up Haraka version 3",
                        f"{head}.5  [NOTICE] [-] [core] a: b"]
    assert len(iso) > 500
    # Exim's own stamps: every main and reject log line of the fixtures, then Haraka-looking
    # records (with one or two spaces) and stray shapes in the second an Exim line set
    exim = [line for p in sorted(fixtures.rglob("*.mainlog")) + sorted(fixtures.rglob("*.rejectlog"))
            for line in p.read_text(errors="replace").splitlines()]
    assert len(exim) > 300
    strays = []
    for i, line in enumerate(exim):
        if i % 9 == 0 and line[:2] == "20" and line[10:11] == " ":
            head = line[:19]
            for stray in (f"{head} [NOTICE] [-] [core] a: b", f"{head}  [NOTICE] [-] [core] a: b",
                          f"{head}.123  [INFO] [-] [core] a", f"{head}.5 x", f"{head}.12345 [1] x",
                          f"{head} log format: DEFAULT", f"{head}.001 Starting up Haraka version 3",
                          f"{head} +0100 [7] x", f"{head} [7] 1rABCD-0001Ab-XY <= a@b",
                          f"{head}  two spaces", f'{head} {{"level":"INFO"}}', f"{head}Z x"):
                strays.append([line, stray])  # the Exim line first: the stray meets its stamp cached
            # the cache holds the minute: the same shapes in other seconds of it, and no second
            for sec in (f"{(int(line[17:19]) + 7) % 60:02d}", "6x", "\u0661\u0662", "60", "99"):
                other = f"{line[:17]}{sec}{line[19:]}"
                strays += [[line, other], [line, other.replace(" [", "  [", 1)], [line, f"{other[:19]} x"]]
    # Haraka's stamps (timestamps=true): its fixture lines, then in the same second text that is
    # no Haraka record body (read as syslog by the full path), zones, spaces, long fractions
    haraka = [line for p in sorted(fixtures.glob("haraka/*.log")) for line in p.read_text().splitlines()]
    for i, line in enumerate(haraka):
        if i % 5 == 0 and line[:2] == "20" and line[10:11] == "T":
            head = line[:19]
            for stray in (f"{head}.5Z some text: more", f"{head}.123Z [NOTICE] [-] [core] a",
                          f"{head}.1  [INFO] [-] [core] a", f"{head}.1+01:00 [INFO] [-] [core] a",
                          f"{head}Z log format: DEFAULT", f"{head}.123456789Z Starting up Haraka version 3",
                          f"{head}.2Z mx postfix/smtpd[1]: connect from x[1.2.3.4]", f"{head}.3Z",
                          f'{head}.4Z {{"level":"INFO","message":"x: y"}}', f"{head}.5Z level=INFO uuid=- a"):
                strays.append([line, stray])
            for sec in (f"{(int(line[17:19]) + 7) % 60:02d}", "6x", "\u0661\u0662", "60", "99"):
                other = f"{line[:17]}{sec}{line[19:]}"
                strays += [[line, other], [line, other.replace("Z [", "Z  [", 1)],
                           [line, other.replace("Z [", "+01:00 [", 1)],
                           [line, f"{other[:19]}.5Z loglevel: INFO"],
                           [line, f"{other[:19]}.5Z x: y"], [line, f"{other[:19]}.12Z [INFO] [-] [core] a"]]
    assert len(strays) > 200
    # a stream that met a Haraka record stays Haraka: the Exim lines, and each stray after its
    # Exim or Haraka line, get streams of their own
    for stream in [lines + iso, exim, haraka, *strays]:
        cached, plain = framer(), framer()
        for line in stream:
            plain._bsd_head = plain._iso_head = plain._exim_head = plain._haraka_head = ""  # shortcuts off
            assert cached.frame(line, 0) == plain.frame(line, 0), line



def test_stream_framing_equals_line_by_line_framing() -> None:
    """A stream's framer remembers stamps and envelopes (" host prog[pid]: "); what it returns must
    be what a framer seeing each line first returns, for lines made to trip such caches: a
    "<facility.level> " after which the regex reads past the first ": ", Solaris "[ID …] ", a host
    ending in a colon, empty and colon-less messages, fractions and the other stamp shapes."""
    stamp = "Nov  2 01:02:03"
    bodies = [
        "mx postfix/smtpd[1]: a", "mx postfix/smtpd[1]: a: b", "mx postfix/smtpd[1]: [ID 123 mail.info] b",
        "mx postfix/smtpd[1]: [ID x", "mx postfix/smtpd[1]: [b]", "mx postfix/smtpd[1]: ",
        "mx postfix/smtpd[1]:x", "<x> P: hello world", "<x> P: hello: world", "<x> P: hello world",
        "<mail.info> mx postfix/qmgr[2]: c", "<mail.info> mx postfix/qmgr[2]: c",
        "mx: postfix/smtpd[1]: c", "mx: postfix/smtpd[1]: c: d",
        "mx postfix/postfix-script: starting", "mx postfix/postfix-script: starting",
        "mx postfix/smtpd[1]: a",
        "mx  postfix/smtpd[1]: two spaces", "mx postfix/smtpd[12345678901234567890]: big pid",
    ]
    lines = [f"{stamp} {b}" for b in bodies]
    lines += [f"Nov  2 01:02:03.5 {b}" for b in bodies[:3]] + [f"Nov  2 01:02:04 {b}" for b in bodies]
    lines += ["2026-11-02T01:02:03.25+00:00 mx postfix/smtpd[1]: iso",
              "2026-11-02T01:02:03.5+00:00 mx x: iso",
              f"{stamp} {bodies[0]}", "not a log line", f"{stamp} {bodies[2]}"]
    one = framer()
    for i, line in enumerate(lines):
        assert one.frame(line, i) == framer().frame(line, i), line
