"""Exim rules: real lines from fixtures/exim/ (Exim 4.96 wrote them), near-misses, a sweep over
every fixture line, and the fast ``re`` path against pyparsing itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maillog2otel.grammars import exim

from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.parse import Grammar
from maillog2otel.records import Record

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "exim"
FAST = Grammar([exim], fast=True)
SLOW = Grammar([exim], fast=False)
LOGS = sorted(FIX.glob("*log"))


def parse(message: str, grammar: Grammar = FAST, program: str = "exim") -> tuple[str, dict] | None:
    ev = grammar.parse(Record(0, "mx", program, None, message, "exim"))
    return (ev.rule, ev.fields) if ev else None


def fixture_records() -> list[Record]:
    out = []
    for path in LOGS:
        f = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
        for line in path.read_text().splitlines():
            rec = f.frame(line, 0)
            assert rec is not None, line
            out.append(rec)
    return out


def fixture_line(needle: str, log: str = "rich.mainlog") -> str:
    """The body of the first line of a fixture log containing ``needle`` (as framing gives it)."""
    f = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
    for line in (FIX / log).read_text().splitlines():
        if needle in line:
            return f.frame(line, 0).message  # type: ignore[union-attr]
    raise AssertionError(f"{needle!r} not in {log}")


class TestPrefix:
    def test_old_message_id(self) -> None:
        rule, f = parse(fixture_line("Completed"))
        assert rule == "completed" and f["msgid"] == "1xUxoP-0002fx-0t"

    def test_new_message_id(self) -> None:
        """ids-4.97.mainlog: the 23-character IDs of Exim 4.97 and later."""
        rule, f = parse(fixture_line("Completed", "ids-4.97.mainlog"))
        assert rule == "completed" and f["msgid"] == "1xUxoP-000000002fx-000t"

    def test_syslog_wrapped_line_keeps_exims_own_stamp_and_pid(self) -> None:
        """syslog_timestamp and syslog_pid (the defaults) leave Exim's prefix inside the message."""
        rule, f = parse("2026-11-22 03:00:17.312 +0000 [10290] 1xUxoP-0002fx-0t Completed")
        assert (rule, f["exim_pid"], f["msgid"]) == ("completed", "10290", "1xUxoP-0002fx-0t")
        assert f["exim_stamp"].startswith("2026-11-22 03:00:17.312 +0000")

    def test_syslog_wrapped_without_stamp(self) -> None:
        rule, f = parse("[8001] SMTP connection from [194.33.191.29]:20042 I=[65.109.230.99]:25 Ci=8001 "
                        "(TCP/IP connection count = 1)")
        assert rule == "connection_open" and f["exim_pid"] == "8001" and f["tags"]["Ci"] == "8001"

    def test_a_word_like_an_id_is_not_one(self) -> None:
        assert "msgid" not in parse("SMTP connection from root")[1]


class TestArrival:
    def test_rich_arrival_with_recipients(self) -> None:
        rule, f = parse(fixture_line("id=multi-recipient.1@client.test"))
        assert rule == "arrival" and f["flag"] == "<=" and f["sender"] == "alice@local.test"
        assert f["rcpts"] == ["bob@local.test", "dave@relay.test"]
        t = f["tags"]
        assert t["H"] == {"raw": "(trusted.client.test) [127.0.0.1]:35897", "address": "127.0.0.1",
                          "helo": "trusted.client.test", "port": 35897}
        assert t["I"] == {"address": "127.0.0.1", "port": 3525}
        assert (t["P"], t["S"], t["RT"], t["id"]) == ("esmtp", 605, 0.005, "multi-recipient.1@client.test")

    def test_default_arrival(self) -> None:
        rule, f = parse(fixture_line("id=clean-local.1@client.test", "default.mainlog"))
        assert rule == "arrival" and "rcpts" not in f and f["tags"]["H"]["address"] == "127.0.0.2"
        assert "port" not in f["tags"]["H"]

    def test_tls_arrival(self) -> None:
        t = parse(fixture_line("P=esmtps"))[1]["tags"]
        assert t["X"] == "TLS1.3:ECDHE_X25519__RSA_PSS_RSAE_SHA256__AES_256_GCM:256" and t["CV"] == "no"

    def test_bounce_arrival(self) -> None:
        rule, f = parse(fixture_line("<= <> R="))
        assert rule == "arrival" and f["sender"] == "" and f["tags"]["R"] == "1xUxoU-0002iJ-2t"
        assert "H" not in f["tags"] and f["tags"]["U"] == "Debian-exim"

    def test_verified_name_quoted_subject_raw_sender(self) -> None:
        """The spec's field order with a verified host name, T="…" escapes and +received_sender."""
        _, f = parse('1fxSM4-0005jX-DL <= wee@fun.com H=darth.vader.net (helo.x) [1.2.3.4]:61774 '
                     'I=[4.5.6.7]:25 P=esmtpsa A=plain:joe S=42149 T="say \\"hi\\" for me" '
                     'from <wee@fun.com> for a@b c@d')
        t = f["tags"]
        assert t["H"]["name"] == "darth.vader.net" and t["H"]["helo"] == "helo.x"
        assert t["T"] == 'say "hi" for me' and t["A"] == "plain:joe"
        assert f["raw_sender"] == "wee@fun.com" and f["rcpts"] == ["a@b", "c@d"]

    def test_fake_reject(self) -> None:
        assert parse("1fxSM4-0005jX-DL (= a@b H=[1.2.3.4] P=esmtp S=10")[1]["flag"] == "(="

    @pytest.mark.parametrize("line", [
        "1fxSM4-0005jX-DL <=a@b H=[1.2.3.4] P=esmtp S=10",  # no space after the flag
        "1fxSM4-0005jX-DL <= a@b H=[1.2.3.4] P=esmtp S=10 junk",  # an untagged word among the tags
    ])
    def test_near_misses(self, line: str) -> None:
        assert parse(line) is None


class TestDeliveries:
    def test_local_delivery(self) -> None:
        rule, f = parse(fixture_line("=> alice <alice@local.test>"))
        assert (rule, f["flag"], f["address"]) == ("delivery", "=>", "alice")
        assert f["original"] == "alice@local.test"
        assert f["tags"] == {"R": "local_user", "T": "local_mbox", "S": 755, "QT": 0.027, "DT": 0.008}

    def test_remote_delivery_with_confirmation(self) -> None:
        t = parse(fixture_line("=> dave@relay.test"))[1]["tags"]
        assert t["C"] == "250 2.0.0 Ok: queued as SINK1000" and t["H"]["name"] == "127.0.0.1"
        assert t["I"] == {"address": "127.0.0.1"}

    def test_reused_connection_and_pipe(self) -> None:
        assert parse("1a-000000-00 -> c@d R=r T=t H=mx [1.2.3.4]* K") is None  # not an ID: no flag after it
        t = parse("1abcde-000000-00 -> c@d R=r T=t H=mx [1.2.3.4]:25* K")[1]["tags"]
        assert t["H"]["reused"] and t["H"]["port"] == 25 and t["K"] is True
        f = parse("1abcde-000000-00 => |/usr/bin/procmail -a x <bob@x> R=r T=address_pipe")[1]
        assert f["address"] == "|/usr/bin/procmail -a x" and f["original"] == "bob@x"

    def test_bounce_with_message_and_dt(self) -> None:
        rule, f = parse(fixture_line("** bad-gina@bounce.test"))
        assert rule == "failure" and f["DT"] == 0.0 and f["tags"]["I"] == {"address": "127.0.0.1"}
        assert f["message"].startswith("SMTP error from remote mail server after RCPT TO:<bad-gina@")

    def test_bounce_4_99_separator_and_routing_failure(self) -> None:
        f = parse("1abcde-000000-00 ** a@b R=r T=t H=mx [1.2.3.4] : SMTP error: 550 no DT=1.2s")[1]
        assert (f["separator"], f["message"], f["DT"]) == (" : ", "SMTP error: 550 no", 1.2)
        f = parse("1abcde-000000-00 ** jim@trek99.example <jim@trek99.example>: unknown mail domain")[1]
        assert f["address"] == "jim@trek99.example" and f["message"] == "unknown mail domain"

    def test_deferral_connection_refused(self) -> None:
        rule, f = parse(fixture_line("defer (111): Connection refused DT="))
        assert (rule, f["errno"], f["strerror"]) == ("deferral", 111, "Connection refused")
        assert f["tags2"] == {"DT": 0.0}

    def test_deferral_smtp_error_dt_before_message(self) -> None:
        f = parse(fixture_line("defer (-44)"))[1]
        assert f["tags2"]["H"]["address"] == "127.0.0.1" and f["tags2"]["DT"] == 0.0
        assert f["message"].endswith("Recipient address rejected: try again later")

    def test_retry_not_reached(self) -> None:
        f = parse(fixture_line("routing defer (-52)"))[1]
        assert f["routing"] == " routing" and f["message"] == "retry time not reached"
        f = parse(fixture_line("defer (-54)"))[1]
        assert f["message"] == "retry time not reached for any host for 'defer.test'"

    def test_host_note(self) -> None:
        assert parse(fixture_line("[127.0.0.1] Connection refused")) == ("host_error", {
            "relay_name": "127.0.0.1", "relay_address": "127.0.0.1", "error": "Connection refused",
            "msgid": "1xUxoO-0002fg-0q"})

    def test_completed(self) -> None:
        assert parse("1abcde-000000-00 Completed QT=1m2s")[1]["QT"] == 62.0


class TestSessions:
    def test_open_with_daemon_pid(self) -> None:
        rule, f = parse(fixture_line("(TCP/IP connection count = 1)"))
        assert rule == "connection_open" and f["host"]["port"] == 34367 and f["count"] == 1

    def test_close_4_96_and_4_97(self) -> None:
        rule, f = parse(fixture_line("closed by QUIT"))
        assert rule == "connection_closed" and f["reason"] == "by QUIT"
        assert f["host"]["helo"] == "trusted.client.test"
        f = parse("SMTP connection Ci=8001 from (User) [194.33.191.29]:20042 I=[65.109.230.99]:25 D=0.149s "
                  "closed by QUIT")[1]
        assert f["Ci"] == "8001" and f["tags"]["D"] == 0.149

    def test_local_session(self) -> None:
        assert parse(fixture_line("SMTP connection from root")) == ("connection_open", {"user": "root"})
        assert parse(fixture_line("from root closed by QUIT"))[1]["user"] == "root"

    def test_no_mail(self) -> None:
        rule, f = parse(fixture_line("no MAIL in SMTP connection"))
        assert rule == "no_mail" and f["tags"]["C"] == "EHLO,QUIT" and f["tags"]["D"] == 0.2

    def test_unexpected_disconnection_both_selectors(self) -> None:
        f = parse(fixture_line("unexpected disconnection"))[1]
        assert f["tags"]["D"] == 0.2 and f["host"]["port"] == 43543
        f = parse(fixture_line("unexpected disconnection", "default.mainlog"))[1]
        assert f["tags"]["D"] == 0.0 and "port" not in f["host"]
        f = parse("unexpected disconnection while reading SMTP command from (x) [1.2.3.4]:5 I=[1.1.1.1]:25 "
                  "(error: Connection reset by peer) D=1s")[1]
        assert f["detail"] == " (error: Connection reset by peer)" and f["tags2"]["D"] == 1.0

    @pytest.mark.parametrize(("line", "rule"), [
        ("SMTP connection from [127.0.0.1]:57766 lost D=3s", "connection_lost"),
        ("SMTP connection from (h) [127.0.0.1]:57766 I=[1.1.1.1]:25 lost while reading message data",
         "connection_lost"),
        ("SMTP command timeout on TLS connection from (x) [1.2.3.4]:5 D=5m", "command_timeout"),
        ("SMTP data timeout (message abandoned) on connection from (x) [1.2.3.4]:5 F=<a@b> D=5m1s",
         "data_timeout"),
        ('SMTP call from m.example (c.local) [69.24.118.229]:4511 dropped: too many nonmail commands '
         '(last was "RSET")', "call_dropped"),
        ('SMTP protocol error in "AUTH LOGIN" H=(User) [194.33.191.29]:20042 I=[65.109.230.99]:25 Ci=8001 '
         "LOGIN authentication mechanism not supported", "protocol_error"),
        ("SMTP protocol synchronization error (input sent without waiting for greeting): rejected "
         'connection from H=[1.2.3.4]:5 I=[9.9.9.9]:25 input="EHLO x"', "synchronization_error"),
        ("Connection from [213.246.33.217]:39456 refused: too many connections from that IP address",
         "connection_refused"),
        ("TLS error on SMTP connection from (x) [1.2.3.4]:5 (SSL_accept): timed out", "tls_error"),
    ])
    def test_session_ends_and_errors(self, line: str, rule: str) -> None:
        assert parse(line)[0] == rule


class TestRejections:
    def test_rejected_rcpt(self) -> None:
        rule, f = parse(fixture_line("rejected RCPT <carol@local.test>"))
        assert (rule, f["stage"], f["argument"], f["reason"]) == ("rejected", "RCPT", "<carol@local.test>",
                                                                  "Unrouteable address")
        assert f["tags"]["F"] == "walt@outside.test" and f["tags"]["H"]["port"] == 48155

    def test_rejected_after_data_carries_the_id(self) -> None:
        rule, f = parse(fixture_line("rejected after DATA"))
        assert (rule, f["stage"], f["msgid"]) == ("rejected", "after DATA", "1xUxoS-0002i1-1K")
        assert f["reason"] == "message rejected: subject contains REJECTME" and "argument" not in f

    def test_temporarily_and_connect_acl(self) -> None:
        assert parse("H=(x) [1.2.3.4]:5 temporarily rejected RCPT <a@b>: greylisted")[1]["temporarily"]
        f = parse('H=[1.2.3.4] rejected connection in "connect" ACL: blocked')[1]
        assert f["stage"] == 'connection in "connect" ACL' and f["reason"] == "blocked"

    def test_incomplete_transaction(self) -> None:
        rule, f = parse(fixture_line("incomplete transaction (connection lost)"))
        assert (rule, f["what"]) == ("incomplete_transaction", "connection lost")
        assert f["sender"] == "quinn@outside.test"

    @pytest.mark.parametrize(("line", "rule"), [
        ("rejected EHLO from [1.2.3.4]:2320 I=[1.2.3.4]:25: syntactically invalid argument(s): zomg",
         "rejected_helo"),
        ("dovecot_login authenticator failed for (localhost) [46.148.40.183]:62882: 535 Incorrect "
         "authentication data (set_id=rita)", "auth_failed"),
        ("dovecot_login authenticator failed for H=(localhost) [46.148.40.183]:62882 I=[1.2.3.4]:25 U=x: 535 "
         "Incorrect authentication data", "auth_failed"),  # 4.99
        ("H=(x) [1.2.3.4] sender verify fail for <a@b>: no such", "sender_verify"),
        ("H=(x) [1.2.3.4] Warning: something", "acl_warning"),
        ("rejected MAIL from (x) [1.2.3.4]: no HELO/EHLO given", "rejected_mail"),
    ])
    def test_other_forms(self, line: str, rule: str) -> None:
        assert parse(line)[0] == rule

    @pytest.mark.parametrize("line", [
        "H=(x) [1.2.3.4] F=<a@b> rejected",  # nothing rejected
        "H=(x) 1.2.3.4 F=<a@b> rejected RCPT <c@d>: no",  # no brackets round the address
        "rejected RCPT <c@d>: no",  # no host
    ])
    def test_near_misses(self, line: str) -> None:
        assert parse(line) is None


class TestRejectLog:
    def test_envelope_and_headers(self) -> None:
        assert parse("Envelope-to: <bob@local.test>") == ("rejectlog_envelope", {"which": "to",
                                                                                 "value": "<bob@local.test>"})
        assert parse("P Received: from [127.0.0.7] (helo=spam.client.test)")[0] == "rejectlog_header"
        # a known rule: the grammar only recognises it; its own reader still takes the line apart
        assert parse("  Subject: please REJECTME now") == ("rejectlog_header", {})
        header = next(r for r in exim.RULES if r.name == "rejectlog_header")
        assert header.known and header.parse_fast("  Subject: please REJECTME now")["header_type"] == " "
        assert parse("\tby mx.exim.test with esmtp (Exim 4.96)")[0] == "rejectlog_continuation"
        assert parse("    ...")[0] == "rejectlog_continuation"  # more than five recipients

    def test_header_flag_must_be_one_exim_writes(self) -> None:
        assert parse("X Something: else") is None


class TestDaemon:
    def test_daemon_and_queue_runs(self) -> None:
        # known lines: recognised and counted, no fields; the rule's own reader still reads them
        assert parse(fixture_line("daemon started")) == ("daemon_started", {})
        assert _fields("daemon_started", fixture_line("daemon started"))["daemon_pid"] == 10266
        assert _fields("queue_run", fixture_line("Start queue run"))["runner_pid"] == 10268
        assert _fields("queue_run", "2026-11-22 03:00:17 End 'slow' queue run: pid=4242")["queue"] == "slow"
        assert parse("2026-11-22 03:00:17 Start ODMR queue run: pid=4242 -qq -Rr @(c.test)")[0] == "queue_run"
        assert parse("cwd=/var/spool/exim 2 args: /usr/sbin/exim -q")[0] == "arguments"


def _fields(rule: str, line: str) -> dict:
    """A known rule's fields, read by the rule itself (the grammar reads none for it)."""
    got = next(r for r in exim.RULES if r.name == rule).parse_fast(_bare(Record(0, "mx", "exim", None, line)))
    assert got is not None
    return got


# One or more lines per rule: from fixtures/exim/ where the real Exim 4.96 wrote the shape, else
# in the form of Exim's source (smtp_in.c, deliver.c, receive.c, daemon.c, log.c) and of the
# public samples the reference cites (spec, fail2ban, exim_exporter, mtail tests).
EXAMPLES: dict[str, list[str]] = {
    "arrival": [
        "1xUxoQ-0002gI-0z <= alice@local.test H=(trusted.client.test) [127.0.0.1]:35897 "
        "I=[127.0.0.1]:3525 P=esmtp S=605 RT=0.005s id=multi-recipient.1@client.test for "
        "bob@local.test dave@relay.test",
        "1xUxoU-0002iN-2z <= <> R=1xUxoU-0002iJ-2t U=Debian-exim P=local S=2157 RT=0.000s for "
        "alice@local.test",
        "16ZCW1-0005MB-00 <= kryten@dwarf.fict.example H=mailer.fict.example [192.168.123.123] U=exim "
        "P=smtp S=5678 id=incoming.id@example",
    ],
    "delivery": [
        "1xUxoP-0002fx-0t => alice <alice@local.test> R=local_user T=local_mbox S=755 QT=0.027s "
        "DT=0.008s",
        "1eACwY-0004ON-3Z => foobar@wikimedia.org R=otrs T=remote_smtp S=1789 "
        'H=mendelevium.eqiad.wmnet [10.64.32.174] C="250 OK id=1eACwa-0001jO-8e" DT=0s',
    ],
    "failure": [
        "1xUxnn-0002VO-1I ** bad-gina@bounce.test R=sink_route T=remote_smtp H=127.0.0.1 [127.0.0.1]: "
        "SMTP error from remote mail server after RCPT TO:<bad-gina@bounce.test>: 550 5.1.1 "
        "<bad-gina@bounce.test>: Recipient address rejected: User unknown",
    ],
    "deferral": [
        "16aiQz-0002Q5-00 == marvin@endrest.example R=dnslookup T=smtp defer (146): Connection refused",
        "1xUxoO-0002fk-2T == tmp-harry@relay.test routing defer (-52) DT=0.000s: retry time not reached",
    ],
    "completed": [
        "1xUxoP-0002fx-0t Completed",
        "1xUxoP-0002fx-0t Completed QT=1m3s",
    ],
    "message_state": [
        "1jmFYj-00039V-QX Frozen (delivery error message)",
        "1jmFYj-00039V-QX Unfrozen by forced delivery",
        "1jmFYj-00039V-QX spool file is locked (another process is handling this message)",
    ],
    "no_immediate_delivery": [
        "1jmFYj-00039V-QX no immediate delivery: load average 3.00",
    ],
    "error_ignored": [
        "1jmFYj-00039V-QX postmaster@example.com: error ignored",
    ],
    "host_error": [
        "1xUxoO-0002fg-0q H=127.0.0.1 [127.0.0.1] Connection refused",
        "1xUxoO-0002fg-0q H=mx.example [192.0.2.1]: SMTP error from remote mail server after RCPT "
        "TO:<a@b>: 450 try later",
    ],
    "dkim": [
        "1jdghf-00034W-No DKIM: d=example.com s=sel c=relaxed/relaxed a=rsa-sha256 [verification "
        "succeeded]",
    ],
    "connection_open": [
        "SMTP connection from [127.0.0.1]:34367 I=[127.0.0.1]:3525 (TCP/IP connection count = 1)",
        "SMTP connection from root",
    ],
    "connection_closed": [
        "SMTP connection from (trusted.client.test) [127.0.0.1]:34367 I=[127.0.0.1]:3525 closed by QUIT",
        "SMTP connection from (x) [1.2.3.4]:5 D=2s closed by DROP in ACL",
    ],
    "connection_lost": [
        "SMTP connection from [127.0.0.1]:57766 lost D=3s",
    ],
    "no_mail": [
        "no MAIL in SMTP connection from (noop.client.test) [127.0.0.2]:39505 I=[127.0.0.1]:3525 "
        "D=0.200s C=EHLO,QUIT",
    ],
    "unexpected_disconnection": [
        "unexpected disconnection while reading SMTP command from (drop.client.test) [127.0.0.9] D=0s",
    ],
    "command_timeout": [
        "SMTP command timeout on connection from (x) [1.2.3.4]:5 D=5m",
    ],
    "data_timeout": [
        "SMTP data timeout (message abandoned) on connection from (x) [1.2.3.4] F=<a@b> D=5m",
    ],
    "call_dropped": [
        'SMTP call from (x) [1.2.3.4]:5 dropped: too many nonmail commands (last was "RSET")',
    ],
    "protocol_error": [
        'SMTP protocol error in "AUTH LOGIN" H=(User) [194.33.191.29]:20042 I=[65.109.230.99]:25 '
        "Ci=8001 LOGIN authentication mechanism not supported",
        'SMTP syntax error in "FOO" H=(x) [1.2.3.4]:5 unrecognized command',
    ],
    "synchronization_error": [
        "SMTP protocol synchronization error (next input sent too soon: pipelining was not "
        'advertised): rejected "EHLO x" H=[1.2.3.4]:5 next input="MAIL FROM:<a@b>"',
    ],
    "tls_error": [
        "TLS error on SMTP connection from (x) [1.2.3.4]:5 (SSL_accept): timed out",
    ],
    "rejected": [
        "H=(relay.client.test) [127.0.0.6]:57449 I=[127.0.0.1]:3525 F=<mallory@outside.test> rejected "
        "RCPT <victim@relay.test>: relay not permitted",
        "1xUxnk-0002VB-38 H=(spam.client.test) [127.0.0.7] F=<spammer@outside.test> rejected after "
        "DATA: message rejected: subject contains REJECTME",
    ],
    "dropped_by_acl": [
        "H=(x) [1.2.3.4] dropped by 'connect' ACL: too many",
    ],
    "incomplete_transaction": [
        "H=(relay.client.test) [127.0.0.6]:57449 I=[127.0.0.1]:3525 incomplete transaction (QUIT) from "
        "<mallory@outside.test>",
    ],
    "sender_verify": [
        "H=(x) [1.2.3.4] sender verify fail for <a@b>: Unrouteable address",
    ],
    "acl_warning": [
        "H=(x) [1.2.3.4] Warning: listed at dnsbl",
    ],
    "rcpt_discarded": [
        "H=(x) [1.2.3.4] F=<a@b> RCPT <c@d>: discarded by RCPT ACL: no",
    ],
    "rejected_helo": [
        "rejected EHLO from [1.2.3.4]:2320 I=[1.2.3.4]:25: syntactically invalid argument(s): zomg",
    ],
    "rejected_helo_verify": [
        'rejected "EHLO x.example" from (x.example) [1.2.3.4]',
    ],
    "rejected_mail": [
        "rejected MAIL from (x) [1.2.3.4]: no HELO/EHLO given",
        "rejected MAIL FROM:<a@b> H=(x) [1.2.3.4]: message too big: size=99 max=10",
    ],
    "unqualified_rejected": [
        "unqualified sender rejected: <a> H=(x) [1.2.3.4]",
    ],
    "too_many_recipients": [
        "too many recipients: message rejected: sender=<a@b> H=(x) [1.2.3.4]",
    ],
    "auth_failed": [
        "dovecot_login authenticator failed for (localhost) [46.148.40.183]:62882: 535 Incorrect "
        "authentication data (set_id=rita)",
    ],
    "connection_refused": [
        "Connection from [213.246.33.217]:39456 refused: too many connections from that IP address",
    ],
    "refused_connection": [
        "refused connection from [1.2.3.4] (host_reject_connection)",
        "temporarily refused connection from [1.2.3.4]: not in reserve list: connected=1 max=1 "
        "reserve=0",
    ],
    "eof_on_input": [
        "Error or EOF on input from H=(x) [1.2.3.4]:5",
    ],
    "lookup_failed": [
        "no host name found for IP address 192.0.2.7",
    ],
    "ignoring_auth": [
        "ignoring AUTH=a@b from H=(x) [1.2.3.4] (client not authenticated)",
    ],
    "vrfy_etrn": [
        "ETRN #example.com received from (x) [1.2.3.4]",
    ],
    "daemon_started": [
        "exim 4.96 daemon started: pid=10266, -q10s, listening for SMTP on [127.0.0.1]:3525",
    ],
    "daemon_signal": [
        "pid 27421: SIGHUP received: re-exec daemon",
    ],
    "queue_run": [
        "Start queue run: pid=10268",
        "End queue run: pid=10268",
    ],
    "arguments": [
        "cwd=/var/spool/exim 2 args: /usr/sbin/exim -q",
    ],
    "listen_backlog": [
        "listen backlog 20 I=[192.0.2.1]:25",
    ],
    "lost_privilege": [
        "exim user lost privilege for using -C option",
    ],
    "rejectlog_envelope": [
        "Envelope-from: <spammer@outside.test>",
        "Envelope-to: <bob@local.test>",
    ],
    "rejectlog_header": [
        "P Received: from [127.0.0.7] (port=54217 helo=spam.client.test)",
        "  Subject: x",
    ],
    "rejectlog_continuation": [
        "\tby mx.exim.test with esmtp (Exim 4.96)",
        "    ...",
        "*** truncated ***",
    ],
    "sa_exim": [
        "2026-11-22 03:00:17 1xUxoP-0002fy-0t SA: Action: scanned but message isn't spam: score=1.2 "
        "required=5.0 (scanned in 2/2 secs | Message-Id: m1@client.test). From <a@client.test> "
        "(host=client.test [192.0.2.5]) for bob@local.test",
        "2026-11-22 03:00:17 1xUxoP-0002fy-0t SA: Debug: check succeeded, running spamc",
    ],
    "host_note": ["2026-11-22 03:00:17 1xUxoP-0002fy-0t mx.remote.test [192.0.2.44] Connection refused"],
    "admin_removed": ["2026-11-22 03:00:17 1xUxoP-0002fy-0t removed by root"],
    "tls_verify_error": ["2026-11-22 03:00:17 1xUxoP-0002fy-0t [192.0.2.44] SSL verify error: depth=0 "
                         "error=unable to get local issuer certificate cert=/CN=mx.remote.test"],
    "message_note": ["2026-11-22 03:00:17 Spool file for 1xUxoP-0002fy-0t is locked (another process is "
                     "handling this message)"],
}


def test_every_rule_has_examples() -> None:
    assert set(EXAMPLES) == {r.name for r in exim.RULES}


@pytest.mark.parametrize(("rule", "line"), [(r, line) for r, items in EXAMPLES.items() for line in items])
def test_example_parses_by_its_rule_and_no_other(rule: str, line: str) -> None:
    fast, slow = parse(line, FAST), parse(line, SLOW)
    assert fast is not None and fast[0] == rule and fast == slow
    body = _bare(Record(0, "mx", "exim", None, line))
    assert [r.name for r in exim.RULES if r.parse_fast(body) is not None] == [rule]


def _bare(rec: Record) -> str:
    m = FAST._prefix_re.match(rec.message)  # type: ignore[union-attr]
    return rec.message[m.end():] if m else rec.message


def test_every_fixture_line_is_parsed_by_exactly_one_rule() -> None:
    """A sweep: every line the real Exim wrote (main and reject logs) has one, and only one, meaning.
    The reject log's Envelope-/header lines are recognised (rejectlog_*) and counted as parsed; the
    correlator drops an entry's first line when the main log already gave it."""
    for rec in fixture_records():
        body = _bare(rec)
        matching = [r.name for r in exim.RULES if r.parse_fast(body) is not None]
        assert len(matching) == 1, (rec.message, matching)
        assert FAST.parse(rec).rule == matching[0]  # type: ignore[union-attr]


def test_fast_path_agrees_with_pyparsing_on_every_fixture_line() -> None:
    for rec in fixture_records():
        fast, slow = FAST.parse(rec), SLOW.parse(rec)
        assert (fast.rule, fast.fields) == (slow.rule, slow.fields), rec.message  # type: ignore[union-attr]


_ATOMS = ["<= ", "=> ", "== ", "** ", "-> ", "H=", "(x) ", "[1.2.3.4]", ":25", " I=[1.1.1.1]:25", " F=<a@b>",
          " rejected ", "RCPT ", "after DATA", ": ", " : ", "SMTP connection ", "from ", " closed by QUIT",
          " lost", " D=1s", " DT=0.1s", " defer (", "-52", ")", " routing", "x", " ", '"', "<", ">",
          "no MAIL in ", " C=EHLO", "1xUxoO-0002fg-0q ", "1r6Bwm-000000002h3-2n4V ", " for a@b", " T=t",
          "Completed", " QT=1s", "\t", "P ", "Envelope-to: ", "*", "é", " incomplete transaction (", "K",
          " X=TLS1.3:A:256"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_ATOMS), max_size=16).map("".join))
def test_fast_path_agrees_on_generated_lines(message: str) -> None:
    assert parse(message, FAST) == parse(message, SLOW)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([r.message for r in fixture_records()]), st.integers(0, 300), st.text(max_size=3),
       st.integers(0, 4))
def test_fast_path_agrees_on_mutated_fixture_lines(message: str, at: int, insert: str, cut: int) -> None:
    """Real lines with a few characters inserted or removed: near-misses of every rule."""
    at = min(at, len(message))
    mutated = message[:at] + insert + message[at + cut:]
    assert parse(mutated, FAST) == parse(mutated, SLOW)


@pytest.mark.parametrize("junk", ["", "\x00\xff", "<=", "== x defer (", "H=[", "SMTP connection from",
                                  "é" * 500, "1xUxoO-0002fg-0q", "1xUxoO-0002fg-0q => "])
def test_garbage_is_unparsed(junk: str) -> None:
    assert parse(junk) is None and parse(junk, SLOW) is None


# --- tag regions: the split-on-spaces reader against the one-regex-match-per-tag reader ----------

def _same(a: dict, b: dict) -> bool:
    """Equal, key order included (nested H/I dicts too)."""
    nested = all(list(v) == list(b[k]) for k, v in a.items() if isinstance(v, dict))
    return a == b and list(a) == list(b) and nested


_TAGS_RE = re.compile(exim.TAGS)
_LEAD_RE = re.compile(exim.LEAD_TAGS)


def test_tag_readers_agree_on_every_fixture_region() -> None:
    seen = 0
    for rec in fixture_records():
        body = _bare(rec)
        for start in range(len(body)):
            for pattern in (_TAGS_RE, _LEAD_RE):
                m = pattern.match(body, start)
                if m is not None and m.end() > start:
                    region = m[0]
                    assert _same(exim.tags(region), exim._tags_by_regex(region)), region
                    seen += 1
    assert seen > 1000


_TAG_PIECES = ["H=", "(x y) ", "()", "DS ", "[1.2.3.4]", "[::1]", ":25", "*", "n.x ", " I=[1.1.1.1]:25",
               " F=<a@b>", " F=<a b>", " F=<a", ' C="250 \\" ok"', ' C="a b"', '"', "\\", "<", ">", " S=12",
               " S=x", " DT=0.1s", " D=1m2s", " QT=", ":", "::", ": ", " DS", " K", " L-", " PRDR", " TFO*",
               " X=TLS1.3:A:256", " id*=x", " A=login:u", "x", "=", " ", "\t", "é", "\u00a0", "a=b:c", " H=",
               " H=mx DS (h e) [1.2.3.4]:5*"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_TAG_PIECES), max_size=14).map("".join))
def test_tag_readers_agree_on_generated_regions(text: str) -> None:
    """Whatever ``TAGS``/``LEAD_TAGS`` accept (from the start of the text) reads the same both ways."""
    for pattern in (_TAGS_RE, _LEAD_RE):
        m = pattern.match(text)
        if m is not None:
            region = m[0]
            assert _same(exim.tags(region), exim._tags_by_regex(region)), region


# --- possessive spellings: the same matches as the backtracking ones they replaced -----------------

_OLD_HOSTV = r"(?>(?:[^\s\[\]()]+ )?(?:DS )?(?:\([^)]*\) )?\[[^\]\s]*\](?::\d+)?\*?)"
_OLD_VALUE = r'"[^"\\]*(?:\\.[^"\\]*)*"|<[^>]*>|[^\s:"]*(?::(?!\s|\Z)[^\s:"]*)*'
_OLD_TOKEN = rf"(?:H={_OLD_HOSTV}|(?!H=)[A-Za-z][A-Za-z0-9]*\*?=(?:{_OLD_VALUE})|{exim._BARE})"
_OLD_TAGS = rf"(?>(?: {_OLD_TOKEN})*)"
# each pair: (the spelling before, the one now), both as the grammar's leaves use them (atomic)
_SPELLINGS = [
    (_OLD_HOSTV, f"(?>{exim.HOSTV})"),
    (f"(?>{_OLD_VALUE})", f"(?>{exim._VALUE})"),
    (_OLD_TAGS, f"(?>{exim.TAGS})"),
    (rf"(?>(?:DS )?{_OLD_TOKEN}(?: {_OLD_TOKEN})*)", f"(?>{exim.LEAD_TAGS})"),
    (rf"(?>.*?(?={_OLD_TAGS}(?:: |\Z)))", rf"(?>.*?(?=[ :]|\Z)(?={exim.TAGS}(?:: |\Z)))"),
    (r"(?>.*?(?= DT=\d[\w.]*\Z)|.*)", r"(?>.*(?= DT=\d[\w.]*\Z)|.*)"),
    (r"(?>.*?(?= D=\d[\w.]*\Z)|.*)", r"(?>.*(?= D=\d[\w.]*\Z)|.*)"),
    (r"(?:(?P<name>[^\s\[\]()]+) )?(?:DS )?(?:\((?P<helo>[^)]*)\) )?\[(?P<address>[^\]\s]*)\]"
     r"(?::(?P<port>\d+))?(?P<reused>\*)?", exim._HOST_RE.pattern),
]
_COMPILED = [(re.compile(old), re.compile(new)) for old, new in _SPELLINGS]


def _agree(text: str, start: int = 0) -> None:
    for old, new in _COMPILED:
        for how in ("match", "fullmatch"):
            a, b = getattr(old, how)(text, start), getattr(new, how)(text, start)
            got = (a and (a.span(), a.groups())), (b and (b.span(), b.groups()))
            assert got[0] == got[1], (new.pattern, text, start)


def test_possessive_spellings_match_as_before_on_every_fixture_body() -> None:
    for rec in fixture_records():
        body = _bare(rec)
        for start in range(0, len(body), 3):
            _agree(body, start)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from([*_TAG_PIECES, " DT=1s", " D=0.2s", " DT=x", "refused", " defer (1)"]),
                max_size=14).map("".join))
def test_possessive_spellings_match_as_before_on_generated_text(text: str) -> None:
    _agree(text)
    _agree(" " + text)
