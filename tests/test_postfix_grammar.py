"""Postfix rules: real lines from fixtures/postfix/, near-misses, a sweep over every fixture line,
and the fast ``re`` path against pyparsing itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maillog2otel.grammars import postfix

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


class TestPostscreen:
    """Lines of fixtures/postfix/postscreen.log, and the formats of postscreen/*.c it has none of."""

    @pytest.mark.parametrize(("line", "test", "detail", "rest"), [
        ("PREGREET 20 after 0 from [127.0.0.10]:48415: EHLO bot10.example\\r\\n", "PREGREET",
         " 20 after 0 from ",
         ": EHLO bot10.example\\r\\n"),
        ("COMMAND PIPELINING from [127.0.0.12]:50037 after EHLO: MAIL FROM:<bot@bot12.example>\\r\\n",
         "COMMAND PIPELINING", " from ", " after EHLO: MAIL FROM:<bot@bot12.example>\\r\\n"),
        ("NON-SMTP COMMAND from [127.0.0.13]:57361 after CONNECT: GET / HTTP/1.0", "NON-SMTP COMMAND",
         " from ",
         " after CONNECT: GET / HTTP/1.0"),
        ("BARE NEWLINE from [127.0.0.14]:38193 after MAIL FROM:<bot@bot14.example>", "BARE NEWLINE", " from ",
         " after MAIL FROM:<bot@bot14.example>"),
        ("DNSBL rank 3 for [192.0.2.9]:36942", "DNSBL rank", " 3 for ", ""),
        ("COMMAND COUNT LIMIT from [192.0.2.9]:36942 after NOOP", "COMMAND COUNT LIMIT", " from ",
         " after NOOP"),
        ("COMMAND LENGTH LIMIT from [192.0.2.9]:36942 after DATA", "COMMAND LENGTH LIMIT", " from ",
         " after DATA"),
    ])
    def test_each_test_is_named_whole(self, line: str, test: str, detail: str, rest: str) -> None:
        rule, f = parse("postfix/postscreen", line)
        assert (rule, f["test"], f["detail"], f["rest"]) == ("postscreen_test", test, detail, rest)
        assert f["client_port"] > 0

    @pytest.mark.parametrize("verdict", ["PASS NEW", "PASS OLD", "DENYLISTED", "BLACKLISTED", "ALLOWLISTED",
                                         "WHITELISTED", "ALLOWLIST VETO", "WHITELIST VETO", "DISCONNECT"])
    def test_verdicts(self, verdict: str) -> None:
        assert parse("postfix/postscreen", f"{verdict} [2001:db8::9]:36942") == ("postscreen_verdict", {
            "verdict": verdict, "client_address": "2001:db8::9", "client_port": 36942, "instance": "postfix",
            "service": "postscreen"})


class TestSasl:
    def test_failure_with_username(self) -> None:
        """Postfix 3.7.11 (Debian) already writes ", sasl_username=" (postscreen.log)."""
        rule, f = parse("postfix/submission/smtpd", "warning: unknown[127.0.0.22]:57453: SASL PLAIN "
                        "authentication failed: (reason unavailable), sasl_username=sam@local.test")
        assert rule == "smtpd_sasl_failed"
        assert (f["sasl_method"], f["sasl_result"], f["reason"], f["sasl_username"], f["client_port"]) == (
            "PLAIN", "failed", "(reason unavailable)", "sam@local.test", 57453)

    def test_failure_without_username_and_base64_reason(self) -> None:
        _, f = parse("postfix/smtpd", "warning: mail.example[203.0.113.9]: SASL LOGIN authentication failed: "
                     "UGFzc3dvcmQ6")
        assert (f["client_name"], f["reason"]) == ("mail.example", "UGFzc3dvcmQ6")
        assert "sasl_username" not in f

    def test_generic_failure_reason_with_a_comma(self) -> None:
        _, f = parse("postfix/smtpd", "warning: x[192.0.2.1]: SASL PLAIN authentication failed: "
                     "generic failure, try again, sasl_username=(unavailable)")
        assert (f["reason"], f["sasl_username"]) == ("generic failure, try again", "(unavailable)")

    def test_aborted(self) -> None:
        _, f = parse("postfix/smtpd", "warning: unknown[127.0.0.23]:58929: SASL LOGIN authentication aborted")
        assert (f["sasl_result"], "reason" in f) == ("aborted", False)


class TestSmtpd:
    def test_connect_with_port(self) -> None:
        """port-logging.log line 3."""
        assert parse("postfix/smtpd", "connect from unknown[127.0.0.2]:55627") == ("smtpd_connect", {
            "client_name": "unknown", "client_address": "127.0.0.2", "client_port": 55627,
            "instance": "postfix", "service": "smtpd"})

    def test_connect_without_port_and_ipv6(self) -> None:
        _rule, f = parse("postfix/smtpd", "connect from mail.example[2001:db8::1]")
        assert f["client_address"] == "2001:db8::1"

    def test_disconnect_summary_with_failures(self) -> None:
        """port-logging.log: rcpt=1/3 means one of three RCPTs accepted."""
        rule, f = parse("postfix/smtpd", "disconnect from unknown[127.0.0.4]:42755 ehlo=1 mail=2 rcpt=1/3 "
                                         "data=1 rset=1 quit=1 commands=7/9")
        assert rule == "smtpd_disconnect"
        assert f["counts"] == {"ehlo": "1", "mail": "2", "rcpt": "1/3", "data": "1", "rset": "1", "quit": "1",
                               "commands": "7/9"}

    def test_client_with_sasl(self) -> None:
        rule, f = parse("postfix/submission/smtpd",
                        "4F9D195432: client=host.example[192.0.2.1]:587, sasl_method=PLAIN, "
                        "sasl_username=u@d")
        assert rule == "smtpd_client" and f["queue_id"] == "4F9D195432" and f["service"] == "submission"
        assert f["extra"] == {"sasl_method": "PLAIN", "sasl_username": "u@d"}

    def test_reject_rcpt(self) -> None:
        """port-logging.log: relay denied; the reply runs up to the from=/to= tail."""
        rule, f = parse("postfix/smtpd", "NOQUEUE: reject: RCPT from unknown[127.0.0.5]:56209: 554 5.7.1 "
                        "<victim@elsewhere.example>: Relay access denied; from=<spammer@client5.example> "
                        "to=<victim@elsewhere.example> proto=SMTP helo=<client5.example>")
        assert rule == "smtpd_reject"
        assert (f["action"], f["stage"], f["reply_code"], f["reply_enhanced"]) == \
            ("reject", "RCPT", 554, "5.7.1")
        assert f["reply_text"] == "<victim@elsewhere.example>: Relay access denied"
        assert f["tail"] == {"from": "spammer@client5.example", "to": "victim@elsewhere.example",
                             "proto": "SMTP", "helo": "client5.example"}

    def test_reject_connect_with_semicolon_in_reply(self) -> None:
        _rule, f = parse("postfix/smtpd", "NOQUEUE: reject: CONNECT from unknown[192.0.2.9]: 554 5.7.1 "
                         "Service unavailable; client [192.0.2.9] blocked using zen.example; proto=SMTP")
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
        rule, f = parse("postfix/smtpd", "Anonymous TLS connection established from unknown[127.0.0.7]:51447"
                        ": TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
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
        assert parse("postfix/qmgr", "8451B160032: from=<bob@local.test>, size=482, nrcpt=4 "
                     "(queue active)") == (
            "qmgr_active", {"mail_from": "bob@local.test", "size": 482, "nrcpt": 4, "queue_id": "8451B160032",
                            "instance": "postfix", "service": "qmgr"})

    def test_qmgr_active_null_sender(self) -> None:
        _rule, f = parse("postfix/qmgr", "ABC123: from=<>, size=2492, nrcpt=1 (queue active)")
        assert f["mail_from"] == ""

    def test_long_queue_id(self) -> None:
        """long-queue-ids.log: base-52 IDs with a z before the inode part."""
        rule, f = parse("postfix/qmgr", "4hQbyq2w8CzJ1Sj: removed")
        assert rule == "qmgr_removed" and f["queue_id"] == "4hQbyq2w8CzJ1Sj"

    def test_cleanup_header_reject(self) -> None:
        rule, f = parse("postfix/cleanup", "6F231160042: reject: header Subject: Offer REJECTME now from "
                        "unknown[127.0.0.6]:56373; from=<gina@client6.example> to=<alice@local.test> "
                        "proto=ESMTP helo=<client6.example>: 5.7.1 Message content rejected by fixture "
                        "header_checks")
        assert rule == "cleanup_action"
        assert (f["what"], f["content"], f["mail_from"], f["helo"]) == (
            "header", "Subject: Offer REJECTME now", "gina@client6.example", "client6.example")
        assert f["reason"] == "5.7.1 Message content rejected by fixture header_checks"

    def test_bounce_notification(self) -> None:
        assert parse("postfix/bounce", "5C695160045: sender non-delivery notification: 6A0C6160049")[1][
            "new_queue_id"] == "6A0C6160049"

    def test_expired(self) -> None:
        rule, _f = parse("postfix/qmgr", "ABC123: from=<a@b>, status=expired, returned to sender")
        assert rule == "qmgr_expired"


class TestDelivery:
    def test_delivery_sent_with_next_hop_id(self) -> None:
        rule, f = parse("postfix/smtp", "8451B160032: to=<dave@relay.test>, relay=127.0.0.1[127.0.0.1]:2526, "
                        "delay=0.02, delays=0/0.01/0/0, dsn=2.0.0, "
                        "status=sent (250 2.0.0 Ok: queued as SINK1000)")
        assert rule == "delivery_status" and f["status"] == "sent" and f["rcpt_to"] == "dave@relay.test"
        assert f["kv"] == {"relay": "127.0.0.1[127.0.0.1]:2526", "delay": "0.02", "delays": "0/0.01/0/0",
                           "dsn": "2.0.0"}
        assert f["status_text"] == "(250 2.0.0 Ok: queued as SINK1000)"

    def test_unknown_key_does_not_break_it(self) -> None:
        """Postfix 3.11 added tls= between delays and dsn; any new key must pass."""
        _rule, f = parse("postfix/relay/smtp", "ABC123: to=<a@b.example>, orig_to=<x@y>, "
                         "relay=mx[192.0.2.3]:25, conn_use=2, delay=1.2, delays=0.1/0/0.5/0.6, tls=may:none, "
                         "newkey=1, dsn=2.0.0, status=sent (250 ok)")
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


_ATOMS = ["connect from ", "disconnect from ", "unknown", "[", "]", ":", "127.0.0.1", "2525", " ", "=", "<",
          ">", "ABC123: ", "NOQUEUE: ", "reject: ", "RCPT", " from ", "550 5.1.1 ", "; from=<a@b> to=<c@d>",
          "to=<", ", relay=", "status=sent", " (", ")", "removed", "client=", "x", "é", "\t",
          "lost connection after ", "warning: ", "size=", ", nrcpt=", "1", "/"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["postfix/smtpd", "postfix/qmgr", "postfix/smtp", "postfix/cleanup",
                        "postfix/postscreen", "postfix/bounce", "postfix/master"]),
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


# One real-shaped example per rule (fixture lines where the fixtures have them, else written from
# Postfix's format strings): every rule is exercised, and a rule without an example fails the test.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "smtpd_connect": [("postfix/smtpd", "connect from unknown[127.0.0.2]:55627")],
    "smtpd_disconnect": [("postfix/smtpd", "disconnect from unknown[127.0.0.9]:56843 ehlo=1 quit=1 "
                          "commands=2"),
                         ("postfix/smtpd", "disconnect from x[192.0.2.1] ehlo=1 unknown=0/1 commands=1/2 "
                          "notes=bare_lf")],
    "smtpd_client": [("postfix/smtpd", "97F0E160023: client=unknown[127.0.0.2]:55627"),
                     ("postfix/10025/smtpd", "5A1B2C3D: client=localhost[127.0.0.1], "
                      "orig_queue_id=4F9D195432, orig_client=a[1.2.3.4]")],
    "smtpd_reject": [("postfix/smtpd", "CF2AB160032: reject: RCPT from unknown[127.0.0.4]:42755: 550 5.1.1 "
                      "<nobody-here@local.test>: Recipient address rejected: User unknown in local recipient "
                      "table; from=<frank@client4.example> to=<nobody-here@local.test> proto=ESMTP "
                      "helo=<client4.example>"),
                     ("postfix/cleanup", "4F9D195432: milter-reject: END-OF-MESSAGE from x[1.2.3.4]: "
                      "5.7.1 spam; from=<a@b> to=<c@d> proto=ESMTP helo=<h>"),
                     ("postfix/postscreen", "NOQUEUE: reject: RCPT from [192.0.2.9]:36942: 550 5.7.1 Service "
                      "unavailable; client [192.0.2.9] blocked using zen.example; from=<a@x>, to=<b@y>, "
                      "proto=ESMTP, helo=<h>")],
    "smtpd_abort": [("postfix/smtpd", "lost connection after MAIL from unknown[127.0.0.8]:44789")],
    "tls_established": [("postfix/smtp", "Trusted TLS connection established to "
                         "mx4.example.com[192.0.2.136]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-SHA384 "
                         "(256/256 bits)")],
    "smtpd_pipelining": [("postfix/smtpd", "improper command pipelining after EHLO from x[192.0.2.1]: "
                          "QUIT\\r\\n")],
    "smtpd_ssl_error": [("postfix/smtpd", "SSL_accept error from x[192.0.2.1]: lost connection")],
    "smtpd_table_changed": [("postfix/smtpd", "table hash:/etc/postfix/access has changed -- restarting")],
    "smtpd_starttls_fail": [("postfix/smtpd", "STARTTLS failed from x[192.0.2.1]")],
    "smtpd_sasl_failed": [("postfix/submission/smtpd", "warning: unknown[127.0.0.21]:59503: SASL LOGIN "
                           "authentication failed: (reason unavailable), sasl_username=tina@local.test"),
                          ("postfix/smtpd", "warning: unknown[192.0.2.9]: SASL LOGIN authentication failed: "
                           "UGFzc3dvcmQ6"),
                          ("postfix/submission/smtpd", "warning: unknown[127.0.0.23]:58929: SASL LOGIN "
                           "authentication aborted")],
    "smtpd_sasl_library": [("postfix/smtpd", "warning: SASL authentication failure: Password verification "
                            "failed")],
    "cleanup_message_id": [("postfix/cleanup", "97F0E160023: message-id=<>"),
                           ("postfix/cleanup", "4F9D195432: resent-message-id=<r@x>")],
    "cleanup_action": [("postfix/cleanup", "4F9D195432: warning: header Subject: hi from local; "
                        "from=<root> to=<a@b>")],
    "cleanup_removed": [("postfix/cleanup", "4F9D195432: removed (canceled)")],
    "qmgr_active": [("postfix/qmgr", "97F0E160023: from=<carol@client2.example>, size=378, nrcpt=1 "
                     "(queue active)")],
    "qmgr_expired": [("postfix/qmgr", "A381C160054: from=<alice@local.test>, status=expired, "
                      "returned to sender")],
    "qmgr_removed": [("postfix/qmgr", "97F0E160023: removed"), ("postfix/postsuper", "4F9D195432: removed")],
    "qmgr_skipped": [("postfix/qmgr", "4F9D195432: skipped, still being delivered")],
    "postsuper_action": [("postfix/postsuper", "4F9D195432: placed on hold")],
    "postsuper_summary": [("postfix/postsuper", "Deleted: 3 messages")],
    "pickup_uid": [("postfix/pickup", "02445160049: uid=1002 from=<bob>")],
    "delivery_status": [("postfix/local", "97F0E160023: to=<alice@local.test>, relay=local, delay=0.03, "
                         "delays=0.02/0.01/0/0, dsn=2.0.0, status=sent (delivered to mailbox)")],
    "delivery_connect_fail": [("postfix/smtp", "connect to 127.0.0.1[127.0.0.1]:2599: Connection refused")],
    "delivery_host_said": [("postfix/smtp", "4F9D195432: host mx[192.0.2.3] said: 451 4.7.1 try later "
                            "(in reply to RCPT TO command)")],
    "delivery_refused_talk": [("postfix/smtp", "4F9D195432: host mx[192.0.2.3] refused to talk to me: "
                               "554 go away")],
    "delivery_lost": [("postfix/smtp", "4F9D195432: lost connection with mx[192.0.2.3] while sending "
                       "MAIL FROM")],
    "delivery_starttls_offer": [("postfix/smtp", "Host offered STARTTLS: [mx.example]")],
    "delivery_passing": [("postfix/local", "4F9D195432: passing <a@b> to transport=local")],
    "bounce_notification": [("postfix/bounce", "A381C160054: sender delay notification: A9618160055")],
    "bounce_failed": [("postfix/bounce", "4F9D195432: sender notification failed to a@b: timeout")],
    "postscreen_connect": [("postfix/postscreen", "CONNECT from [192.0.2.9]:36942 to [192.0.2.1]:25")],
    "postscreen_verdict": [("postfix/postscreen", "PASS NEW [192.0.2.9]:36942")],
    "postscreen_test": [("postfix/postscreen", "PREGREET 14 after 0.08 from [192.0.2.9]:36942: "
                         "EHLO ylmf-pc\\r\\n"),
                        ("postfix/postscreen", "DNSBL rank 3 for [192.0.2.9]:36942"),
                        ("postfix/postscreen", "HANGUP after 0.3 from [127.0.0.15]:48581 in tests before "
                         "SMTP handshake"),
                        ("postfix/postscreen", "COMMAND TIME LIMIT from [192.0.2.9]:36942 after RCPT"),
                        ("postfix/postscreen", "DATA without valid RCPT from [192.0.2.9]:36942")],
    "postscreen_cache": [("postfix/postscreen", "cache btree:/var/lib/postfix/psc full cleanup: "
                          "retained=1 dropped=0")],
    "postscreen_busy": [("postfix/postscreen", "reject: connect from [192.0.2.9]:36942: all screening ports "
                         "busy")],
    "postscreen_compat_note": [("postfix/postscreen", "using backwards-compatible default setting "
                                "respectful_logging=no for client [192.0.2.9]:36942")],
    "dnsblog_listed": [("postfix/dnsblog", "addr 192.0.2.9 listed by domain zen.example as 127.0.0.4")],
    "master_started": [("postfix/master", "daemon started -- version 3.7.11, configuration /etc/postfix")],
    "master_terminating": [("postfix/master", "terminating on signal 15")],
    "master_process_exit": [("postfix/master", "warning: process /usr/lib/postfix/sbin/smtpd pid 7128 "
                             "killed by signal 9")],
    "statistics": [("postfix/anvil", "statistics: max connection rate 1/60s for (smtp:192.0.2.9) "
                    "at Feb 14 13:37:32")],
    "postfix_script": [("postfix/postfix-script", "stopping the Postfix mail system")],
    "tlsproxy_conn": [("postfix/tlsproxy", "CONNECT from [192.0.2.9]:36942")],
    "diagnostic": [("postfix/bounce", "warning: for instructions see the bounce(5) manual")],
    "tls_note": [("postfix/smtp", "certificate verification failed for mx.example.net[192.0.2.7]:25: "
                  "untrusted issuer /C=XX/O=Example CA"),
                 ("postfix/smtp", "SSL_connect error to mx.example.net[192.0.2.7]:25: -1")],
    "tls_peer_note": [("postfix/smtp", "mx.example.net[192.0.2.7]:25: depth=0 verify=1 subject=/CN=mx")],
    "smtp_pix_workaround": [("postfix/smtp", "enabling PIX workarounds: disable_esmtp delay_dotcrlf for "
                             "mx.example.net[192.0.2.7]:25")],
    "smtpd_ehlo_discard": [("postfix/smtpd", "discarding EHLO keywords: CHUNKING")],
    "verbose": [("postfix/qmgr", "input attribute name: status")],
    "verbose_function": [("postfix/qmgr", "qmgr_scan_start: start deferred queue scan")],
    "verbose_parameter": [("postfix/smtpd", "unknown_address_tempfail_action = defer_if_permit")],
}


def test_every_rule_has_examples() -> None:
    assert set(EXAMPLES) == {r.name for r in postfix.RULES}


@pytest.mark.parametrize(("rule", "program", "line"),
                         [(rule, p, line) for rule, items in EXAMPLES.items() for p, line in items])
def test_example_parses_by_its_rule_in_both_paths(rule: str, program: str, line: str) -> None:
    fast, slow = parse(program, line, FAST), parse(program, line, SLOW)
    assert fast is not None and fast[0] == rule and fast == slow
