"""Postfix rules: real lines from fixtures/postfix/, near-misses, a sweep over every fixture line,
and the fast ``re`` path against pyparsing itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maillog2otel.grammars.postfix as postfix
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.parse import Grammar
from maillog2otel.records import Record

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "postfix"
FAST = Grammar([postfix], fast=True)
SLOW = Grammar([postfix], fast=False)


def parse(program: str, message: str, grammar: Grammar = FAST) -> tuple[str, dict] | None:
    ev = grammar.parse(Record(0, "mx", program, 1, message))
    return (ev.rule, ev.fields) if ev else None


def fixture_records() -> list[Record]:
    out = []
    for path in sorted(FIX.glob("*.log")):
        f = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
        for line in path.read_text().splitlines():
            rec = f.frame(line, 0)
            assert rec is not None, line
            out.append(rec)
    return out


class TestSmtpd:
    def test_connect_with_port(self) -> None:
        """port-logging.log line 3."""
        assert parse("postfix/smtpd", "connect from unknown[127.0.0.2]:55627") == ("smtpd_connect", {
            "client_name": "unknown", "client_address": "127.0.0.2", "client_port": 55627,
            "instance": "postfix", "service": "smtpd"})

    def test_connect_without_port_and_ipv6(self) -> None:
        assert parse("postfix/smtpd", "connect from mail.example[2001:db8::1]")[1]["client_address"] == "2001:db8::1"

    def test_disconnect_summary_with_failures(self) -> None:
        """port-logging.log: rcpt=1/3 means one of three RCPTs accepted."""
        rule, f = parse("postfix/smtpd", "disconnect from unknown[127.0.0.4]:42755 ehlo=1 mail=2 rcpt=1/3 data=1 "
                                         "rset=1 quit=1 commands=7/9")
        assert rule == "smtpd_disconnect"
        assert f["counts"] == {"ehlo": "1", "mail": "2", "rcpt": "1/3", "data": "1", "rset": "1", "quit": "1",
                               "commands": "7/9"}

    def test_client_with_sasl(self) -> None:
        rule, f = parse("postfix/submission/smtpd",
                        "4F9D195432: client=host.example[192.0.2.1]:587, sasl_method=PLAIN, sasl_username=u@d")
        assert rule == "smtpd_client" and f["queue_id"] == "4F9D195432" and f["service"] == "submission"
        assert f["extra"] == {"sasl_method": "PLAIN", "sasl_username": "u@d"}

    def test_reject_rcpt(self) -> None:
        """port-logging.log: relay denied; the reply runs up to the from=/to= tail."""
        rule, f = parse("postfix/smtpd", "NOQUEUE: reject: RCPT from unknown[127.0.0.5]:56209: 554 5.7.1 "
                        "<victim@elsewhere.example>: Relay access denied; from=<spammer@client5.example> "
                        "to=<victim@elsewhere.example> proto=SMTP helo=<client5.example>")
        assert rule == "smtpd_reject"
        assert (f["action"], f["stage"], f["reply_code"], f["reply_enhanced"]) == ("reject", "RCPT", 554, "5.7.1")
        assert f["reply_text"] == "<victim@elsewhere.example>: Relay access denied"
        assert f["tail"] == {"from": "spammer@client5.example", "to": "victim@elsewhere.example",
                             "proto": "SMTP", "helo": "client5.example"}

    def test_reject_connect_with_semicolon_in_reply(self) -> None:
        rule, f = parse("postfix/smtpd", "NOQUEUE: reject: CONNECT from unknown[192.0.2.9]: 554 5.7.1 Service "
                        "unavailable; client [192.0.2.9] blocked using zen.example; proto=SMTP")
        assert f["reply_text"] == "Service unavailable; client [192.0.2.9] blocked using zen.example"
        assert f["tail"] == {"proto": "SMTP"}

    @pytest.mark.parametrize("line", [
        "lost connection after MAIL from unknown[127.0.0.8]:44789",
        "NOQUEUE: lost connection after EHLO from unknown[192.0.2.1]",  # Postfix 3.10 form
        "timeout after DATA (7774180 bytes) from unknown[192.0.2.1]",
        "too many errors after RCPT from unknown[192.0.2.1]",
    ])
    def test_abnormal_end(self, line: str) -> None:
        assert parse("postfix/smtpd", line)[0] == "smtpd_abort"

    def test_tls_established(self) -> None:
        rule, f = parse("postfix/smtpd", "Anonymous TLS connection established from unknown[127.0.0.7]:51447: "
                        "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
                        "server-signature RSA-PSS (2048 bits) server-digest SHA256")
        assert rule == "tls_established" and f["tls_version"] == "TLSv1.3" and f["direction"] == "from"

    @pytest.mark.parametrize("line", [
        "connect from",  # no client
        "connect from unknown[127.0.0.2]:port",  # port not numeric
        "disconnect unknown[127.0.0.2]",
        "NOQUEUE: reject: rcpt from x[1.2.3.4]: 554 no",  # lower-case stage
    ])
    def test_near_misses(self, line: str) -> None:
        assert parse("postfix/smtpd", line) is None


class TestQueue:
    def test_qmgr_active(self) -> None:
        assert parse("postfix/qmgr", "8451B160032: from=<bob@local.test>, size=482, nrcpt=4 (queue active)") == (
            "qmgr_active", {"mail_from": "bob@local.test", "size": 482, "nrcpt": 4, "queue_id": "8451B160032",
                            "instance": "postfix", "service": "qmgr"})

    def test_qmgr_active_null_sender(self) -> None:
        assert parse("postfix/qmgr", "ABC123: from=<>, size=2492, nrcpt=1 (queue active)")[1]["mail_from"] == ""

    def test_long_queue_id(self) -> None:
        """long-queue-ids.log: base-52 IDs with a z before the inode part."""
        rule, f = parse("postfix/qmgr", "4hQbyq2w8CzJ1Sj: removed")
        assert rule == "qmgr_removed" and f["queue_id"] == "4hQbyq2w8CzJ1Sj"

    def test_cleanup_header_reject(self) -> None:
        rule, f = parse("postfix/cleanup", "6F231160042: reject: header Subject: Offer REJECTME now from "
                        "unknown[127.0.0.6]:56373; from=<gina@client6.example> to=<alice@local.test> "
                        "proto=ESMTP helo=<client6.example>: 5.7.1 Message content rejected by fixture header_checks")
        assert rule == "cleanup_action"
        assert (f["what"], f["content"], f["mail_from"], f["helo"]) == (
            "header", "Subject: Offer REJECTME now", "gina@client6.example", "client6.example")
        assert f["reason"] == "5.7.1 Message content rejected by fixture header_checks"

    def test_bounce_notification(self) -> None:
        assert parse("postfix/bounce", "5C695160045: sender non-delivery notification: 6A0C6160049")[1][
            "new_queue_id"] == "6A0C6160049"

    def test_expired(self) -> None:
        assert parse("postfix/qmgr", "ABC123: from=<a@b>, status=expired, returned to sender")[0] == "qmgr_expired"


class TestDelivery:
    def test_delivery_sent_with_next_hop_id(self) -> None:
        rule, f = parse("postfix/smtp", "8451B160032: to=<dave@relay.test>, relay=127.0.0.1[127.0.0.1]:2526, "
                        "delay=0.02, delays=0/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as SINK1000)")
        assert rule == "delivery_status" and f["status"] == "sent" and f["rcpt_to"] == "dave@relay.test"
        assert f["kv"] == {"relay": "127.0.0.1[127.0.0.1]:2526", "delay": "0.02", "delays": "0/0.01/0/0",
                           "dsn": "2.0.0"}
        assert f["status_text"] == "(250 2.0.0 Ok: queued as SINK1000)"

    def test_unknown_key_does_not_break_it(self) -> None:
        """Postfix 3.11 added tls= between delays and dsn; any new key must pass."""
        rule, f = parse("postfix/relay/smtp", "ABC123: to=<a@b.example>, orig_to=<x@y>, relay=mx[192.0.2.3]:25, "
                        "conn_use=2, delay=1.2, delays=0.1/0/0.5/0.6, tls=may:none, newkey=1, dsn=2.0.0, "
                        "status=sent (250 ok)")
        assert f["kv"]["tls"] == "may:none" and f["kv"]["newkey"] == "1" and f["kv"]["orig_to"] == "x@y"

    @pytest.mark.parametrize("daemon", postfix.DELIVERY_AGENTS)
    def test_every_delivery_agent(self, daemon: str) -> None:
        assert parse(f"postfix/{daemon}", "ABC123: to=<a@b>, relay=none, delay=0, delays=0/0/0/0, dsn=5.0.0, "
                     "status=bounced (x)")[0] == "delivery_status"

    def test_delivery_line_from_smtpd_is_not_a_delivery(self) -> None:
        assert parse("postfix/smtpd", "ABC123: to=<a@b>, relay=none, dsn=5.0.0, status=bounced (x)") is None


def test_every_fixture_line_is_parsed() -> None:
    """A sweep: the real Postfix wrote nothing we do not understand."""
    unparsed = [f"{r.program}: {r.message}" for r in fixture_records() if FAST.parse(r) is None]
    assert unparsed == []


def test_fast_path_agrees_with_pyparsing_on_every_fixture_line() -> None:
    for rec in fixture_records():
        fast, slow = FAST.parse(rec), SLOW.parse(rec)
        assert (fast.rule, fast.fields) == (slow.rule, slow.fields), rec.message  # type: ignore[union-attr]


_ATOMS = ["connect from ", "disconnect from ", "unknown", "[", "]", ":", "127.0.0.1", "2525", " ", "=", "<", ">",
          "ABC123: ", "NOQUEUE: ", "reject: ", "RCPT", " from ", "550 5.1.1 ", "; from=<a@b> to=<c@d>", "to=<",
          ", relay=", "status=sent", " (", ")", "removed", "client=", "x", "é", "\t", "lost connection after ",
          "warning: ", "size=", ", nrcpt=", "1", "/"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["postfix/smtpd", "postfix/qmgr", "postfix/smtp", "postfix/cleanup", "postfix/postscreen",
                        "postfix/bounce", "postfix/master"]),
       st.lists(st.sampled_from(_ATOMS), max_size=14).map("".join))
def test_fast_path_agrees_on_generated_lines(program: str, message: str) -> None:
    assert parse(program, message, FAST) == parse(program, message, SLOW)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([r.message for r in fixture_records()]), st.integers(0, 300), st.text(max_size=3))
def test_fast_path_agrees_on_mutated_fixture_lines(message: str, at: int, insert: str) -> None:
    """Real lines with a few characters inserted: near-misses of every rule."""
    at = min(at, len(message))
    mutated = message[:at] + insert + message[at:]
    for program in ("postfix/smtpd", "postfix/qmgr", "postfix/smtp", "postfix/cleanup", "postfix/local"):
        assert parse(program, mutated, FAST) == parse(program, mutated, SLOW)
