"""The long tail of real log lines (issue 14): every line an MTA writes is understood (it feeds
telemetry), known (recognised, counted, nothing to export) or unparsed; other programs' lines are
foreign. One test per family, on lines written here in the form the MTAs' sources print them
(postfix: smtpd.c, cleanup_message.c, cleanup_milter.c, tls_*.c, smtp_proto.c, postsuper.c; exim:
smtp_in.c, transports/smtp.c, sa-exim's local_scan) with invented hosts and addresses."""

from __future__ import annotations

from pathlib import Path

import pytest
from maillog2otel.grammars import exim, postfix

from maillog2otel.correlate import exim as exim_corr
from maillog2otel.correlate import postfix as postfix_corr
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.parse import Grammar
from maillog2otel.records import Record
from maillog2otel.testing import Result, run_pipeline

PF = Grammar([postfix], fast=True)
PF_SLOW = Grammar([postfix], fast=False)
EX = Grammar([exim], fast=True)
EX_SLOW = Grammar([exim], fast=False)


def classify(grammar: Grammar, program: str, message: str) -> tuple[str, bool] | None:
    ev = grammar.parse(Record(0, "mx", program, 1, message, "exim" if grammar.mta == "exim" else None))
    return (ev.rule, ev.known) if ev else None


def both(grammar: Grammar, slow: Grammar, program: str, message: str) -> tuple[str, bool] | None:
    fast = classify(grammar, program, message)
    assert fast == classify(slow, program, message)  # pyparsing and the compiled path agree
    return fast


def run(tmp_path: Path, text: str) -> Result:
    log = tmp_path / "mail.log"
    log.write_text(text)
    return run_pipeline([str(log)], timezone="UTC", year=2026)


# --- the classes ---------------------------------------------------------------------------------

MIXED = """\
Mar 7 02:09:30 mx postfix/smtpd[40]: connect from c.example[192.0.2.10]:41000
Mar 7 02:09:30 mx postfix/smtpd[40]: discarding EHLO keywords: CHUNKING
Mar 7 02:09:31 mx postfix/smtpd[40]: improper command pipelining after EHLO from c.example[192.0.2.10]:4100: \
MAIL FROM:<a@c.example>\\r\\n
Mar 7 02:09:32 mx postfix/smtpd[40]: disconnect from c.example[192.0.2.10]:41000 ehlo=1 quit=1 \
commands=2
Mar 7 02:10:00 mx postfix/anvil[41]: statistics: max connection rate 1/60s for (smtp:192.0.2.10) at \
Mar  7 02:09:30
Mar 7 02:10:01 mx postfix/smtpd[40]: this is nothing postfix writes
Mar 7 02:10:02 mx dovecot[42]: imap-login: Login: user=<u>
not a log line at all
Mar 7 02:10:03 mx postfix/postsuper[43]: Placed on hold: 2 messages
Mar 7 02:10:04 mx postfix/qmgr[44]: warning: connect to transport private/nosuch: No such file or directory
"""


def test_every_line_is_counted_once_in_one_class(tmp_path: Path) -> None:
    r = run(tmp_path, MIXED)
    c = r.counters
    assert c.lines == len(MIXED.splitlines()) == c.parsed + c.known + c.foreign + c.unparsed
    assert (c.parsed, c.known, c.foreign, c.unparsed, c.unframed) == (2, 5, 1, 2, 1)
    rows = c.by_program
    assert sum(sum(row) for row in rows.values()) == c.lines - c.foreign
    assert rows[("postfix", "postfix/smtpd")] == [2, 2, 1]  # understood, known, unparsed
    assert rows[("postfix", "postfix/anvil")] == [0, 1, 0]
    assert rows[("?", "(no envelope)")] == [0, 0, 1]
    # known lines change nothing: the connection is the one smtpd logged, as without them
    assert len(r.connections()) == 1 and not r.connections()[0].status_error


def test_known_lines_leave_the_telemetry_as_without_them(tmp_path: Path) -> None:
    lines = MIXED.splitlines(keepends=True)
    without = "".join(x for x in lines if "discarding" not in x and "pipelining" not in x
                      and "anvil" not in x and "postsuper" not in x and "warning" not in x)
    a, b = run(tmp_path, MIXED), run(tmp_path, without)
    assert [(s.name, s.attrs, [e.name for e in s.events]) for s in a.spans] == \
        [(s.name, s.attrs, [e.name for e in s.events]) for s in b.spans]


def test_check_counts_known_lines_and_strict_fails_only_on_unparsed(tmp_path: Path) -> None:
    from maillog2otel.config import build_settings
    from maillog2otel.runner import run_check

    only_known = "".join(x for x in MIXED.splitlines(keepends=True) if "nothing postfix" not in x
                         and "not a log line" not in x)
    (tmp_path / "k.log").write_text(only_known)
    settings = build_settings(env={}, exporter="none", timezone="UTC", year=2026)
    assert run_check([str(tmp_path / "k.log")], settings, strict=True, grammars_dir=None) == 0
    (tmp_path / "u.log").write_text(MIXED)
    assert run_check([str(tmp_path / "u.log")], settings, strict=True, grammars_dir=None) == 1


def _handled(correlator: object) -> set[str]:
    return set(correlator._handlers)  # type: ignore[attr-defined]


def test_a_rule_that_is_not_known_feeds_its_correlator() -> None:
    """"Understood" must mean something: each rule either is known or has a handler (the Exim
    reject-log dedupe reads its rules too)."""
    pc, ec = postfix_corr.PostfixCorrelator(), exim_corr.EximCorrelator()
    assert {r.name for r in postfix.RULES if not r.known} - _handled(pc) == set()
    assert {r.name for r in exim.RULES if not r.known} - _handled(ec) - exim_corr._REJECTLOG_RULES == set()


# --- syslog stamps with an unpadded day -------------------------------------------------------------

def test_unpadded_day_frames_like_the_padded_one() -> None:
    def frame(lines: list[str]) -> list[Record | None]:
        f = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="h")
        return [f.frame(x, 0) for x in lines]

    padded = frame(["Mar  7 02:09:33 mx postfix/smtpd[1]: connect from a[192.0.2.1]"])[0]
    got = frame(["Mar 7 02:09:33 mx postfix/smtpd[1]: connect from a[192.0.2.1]",
                 "Mar 7 02:09:33 mx postfix/smtpd[1]: disconnect from a[192.0.2.1]",  # the cached stamp
                 "Mar 17 02:09:33 mx postfix/smtpd[1]: connect from b[192.0.2.2]",
                 "Mar 7 02:09:33.25 mx postfix/smtpd[1]: x"])
    assert padded is not None and all(r is not None for r in got)
    assert got[0].ts_ns == got[1].ts_ns == padded.ts_ns  # type: ignore[union-attr]
    first = got[0]
    assert (first.host, first.program, first.message) == (  # type: ignore[union-attr]
        "mx", "postfix/smtpd", "connect from a[192.0.2.1]")
    assert got[1].message == "disconnect from a[192.0.2.1]"  # type: ignore[union-attr]
    assert got[2].ts_ns - got[0].ts_ns == 10 * 86400 * 10**9  # type: ignore[union-attr]
    assert got[3].ts_ns - got[0].ts_ns == 250_000_000  # type: ignore[union-attr]


# --- Postfix families -------------------------------------------------------------------------------

@pytest.mark.parametrize(("program", "message", "rule"), [
    # header_checks / body_checks actions (cleanup_message.c cleanup_act_log)
    ("postfix/cleanup", "4F9D195432: prepend: header Subject: offer from c.example[192.0.2.10]; "
     "from=<a@c.example> to=<b@mx.example> proto=ESMTP helo=<c.example>: X-Flag: yes", "cleanup_action"),
    ("postfix/cleanup", "4F9D195432: replace: header Received: from relay (relay [10.1.2.3]) from "
     "local; from=<a@mx.example> to=<b@mx.example>: Received: from relay", "cleanup_action"),
    ("postfix/cleanup", "4F9D195432: info: body a line with a word from unknown; from=<a@x.example>",
     "cleanup_action"),
    ("postfix/cleanup", "4F9D195432: warning: header X-Mailer: Bulk 1.0 from c.example[192.0.2.10]; "
     "from=<a@c.example> to=<b@mx.example> proto=ESMTP helo=<c.example>", "cleanup_action"),
    # milter_header_checks (cleanup_milter.c cleanup_milter_hbc_log)
    ("postfix/cleanup", "4F9D195432: milter-header-discard: header X-Spam-Flag: YES from "
     "c.example[192.0.2.10]; from=<a@c.example> to=<b@mx.example> proto=ESMTP "
     "helo=<c.example>", "cleanup_action"),
    # a before-queue content filter's verdict (smtpd.c), without the client
    ("postfix/smtpd", "4F9D195432: proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as 5A1B2C3D4E; "
     "from=<a@c.example> to=<b@mx.example> proto=ESMTP helo=<c.example>", "smtpd_reject"),
    ("postfix/smtpd", "NOQUEUE: proxy-reject: END-OF-MESSAGE: 554 5.7.1 spam; from=<a@c.example> "
     "to=<b@mx.example> proto=SMTP helo=<c.example>", "smtpd_reject"),
    # smtpd before 2.9 (smtpd.c): "(approximately N bytes)"
    ("postfix/smtpd", "lost connection after DATA (approximately 812 bytes) from c.example[192.0.2.10]",
     "smtpd_abort"),
])
def test_postfix_understood(program: str, message: str, rule: str) -> None:
    assert both(PF, PF_SLOW, program, message) == (rule, False)


@pytest.mark.parametrize(("program", "message", "rule"), [
    ("postfix/smtp", "certificate verification failed for mx.example.net[192.0.2.7]:25: untrusted issuer "
     "/C=XX/O=Example CA", "tls_note"),
    ("postfix/smtp", "server certificate verification failed for mx.example.net[192.0.2.7]:25: num=10:"
     "certificate has expired", "tls_note"),
    ("postfix/smtp", "SSL_connect error to mx.example.net[192.0.2.7]:25: -1", "tls_note"),
    ("postfix/smtp", "4F9D195432: Cannot start TLS: handshake failure", "tls_note"),
    ("postfix/tlsproxy", "TLS handshake failed for service=smtpd peer=[192.0.2.10]:41000", "tls_note"),
    ("postfix/smtpd", "setting up TLS connection from c.example[192.0.2.10]", "tls_note"),
    ("postfix/smtpd", "c.example[192.0.2.10]: TLS cipher list \"aNULL:-aNULL:HIGH\"", "tls_peer_note"),
    ("postfix/smtpd", "SSL_accept error from c.example[192.0.2.10]: lost connection", "smtpd_ssl_error"),
    ("postfix/smtpd", "warning: TLS library problem: error:0A000126:SSL routines::unexpected eof while "
     "reading:ssl/record/rec_layer_s3.c:317:", "diagnostic"),
    ("postfix/smtpd", "warning: hostname bogus.example does not resolve to address 192.0.2.10: Name or "
     "service not known", "diagnostic"),
    ("postfix/smtpd", "warning: Connection rate limit exceeded: 31 from c.example[192.0.2.10] for "
     "service smtp", "diagnostic"),
    ("postfix/smtpd", "improper command pipelining after CONNECT from c.example[192.0.2.10]: EHLO x\\r\\n",
     "smtpd_pipelining"),
    ("postfix/smtpd", "discarding EHLO keywords: CHUNKING SMTPUTF8", "smtpd_ehlo_discard"),
    ("postfix/smtp", "4F9D195432: enabling PIX workarounds: disable_esmtp delay_dotcrlf for "
     "mx.example.net[192.0.2.7]:25", "smtp_pix_workaround"),
    ("postfix/smtp", "connect to mx.example.net[192.0.2.7]:25: Connection refused", "delivery_connect_fail"),
    ("postfix/postsuper", "Placed on hold: 3 messages", "postsuper_summary"),
    ("postfix/postsuper", "Released from hold: 1 message", "postsuper_summary"),
    ("postfix/postsuper", "Deleted: 12 messages", "postsuper_summary"),
    ("postfix/postsuper", "4F9D195432: placed on hold", "postsuper_action"),
    ("postfix/postqueue", "warning: Mail system is down -- accessing queue directly", "diagnostic"),
    ("postfix/anvil", "statistics: max cache size 3 at Mar  7 02:09:30", "statistics"),
    ("postfix/scache", "statistics: domain lookup hits=0 miss=2 success=0%", "statistics"),
    ("postfix/master", "daemon started -- version 3.7.11, configuration /etc/postfix", "master_started"),
    ("postfix/postfix-script", "starting the Postfix mail system", "postfix_script"),
    ("postfix/qmgr", "qmgr_active_feed: queue deferred", "verbose_function"),
    ("postfix/qmgr", "private/smtp socket: wanted attribute: status", "verbose_function"),
    ("postfix/smtpd", ">>> START Recipient address RESTRICTIONS <<<", "verbose"),
])
def test_postfix_known(program: str, message: str, rule: str) -> None:
    assert both(PF, PF_SLOW, program, message) == (rule, True)


def test_a_proxy_reject_is_a_rejection_of_the_session(tmp_path: Path) -> None:
    r = run(tmp_path, """\
Mar 7 02:09:30 mx postfix/smtpd[40]: connect from c.example[192.0.2.10]:41000
Mar 7 02:09:31 mx postfix/smtpd[40]: NOQUEUE: proxy-reject: END-OF-MESSAGE: 554 5.7.1 spam; \
from=<a@c.example> to=<b@mx.example> proto=ESMTP helo=<c.example>
Mar 7 02:09:32 mx postfix/smtpd[40]: disconnect from c.example[192.0.2.10]:41000 ehlo=1 mail=1 rcpt=1 \
data=0/1 quit=1 commands=4/5
""")
    assert r.counters.unparsed == 0 and r.counters.rejected == 1
    (conn,) = r.connections()
    (reject,) = [e.attrs for e in conn.events if e.name == "smtp.reject"]
    assert reject["smtp.reject.action"] == "proxy-reject" and reject["smtp.response.code"] == 554
    assert reject["smtp.reject.stage"] == "END-OF-MESSAGE"
    assert reject["smtp.response.enhanced_code"] == "5.7.1"


def test_header_checks_prepend_is_a_content_action_on_the_connection(tmp_path: Path) -> None:
    r = run(tmp_path, """\
Mar 7 02:09:30 mx postfix/smtpd[40]: connect from c.example[192.0.2.10]:41000
Mar 7 02:09:31 mx postfix/smtpd[40]: 4F9D195432: client=c.example[192.0.2.10]:41000
Mar 7 02:09:31 mx postfix/cleanup[45]: 4F9D195432: prepend: header Subject: offer from \
c.example[192.0.2.10]:41000; from=<a@c.example> to=<b@mx.example> proto=ESMTP \
helo=<c.example>: X-Flag: yes
Mar 7 02:09:31 mx postfix/cleanup[45]: 4F9D195432: message-id=<m1@c.example>
Mar 7 02:09:32 mx postfix/smtpd[40]: lost connection after DATA (approximately 812 bytes) from \
c.example[192.0.2.10]:41000
Mar 7 02:09:32 mx postfix/smtpd[40]: disconnect from c.example[192.0.2.10]:41000 ehlo=1 mail=1 rcpt=1 \
data=0/1 commands=3/4
""")
    assert r.counters.unparsed == 0
    (conn,) = r.connections()
    actions = [e.attrs for e in conn.events if e.name == "smtp.content_action"]
    assert actions and actions[0]["smtp.reject.action"] == "prepend"
    assert actions[0]["smtp.reject.reason"].startswith("header Subject: offer")
    aborts = [e.attrs for e in conn.events if e.name == "smtp.abort"]
    assert aborts == [{"smtp.abort": "lost connection", "smtp.stage": "DATA", "smtp.bytes_received": 812}]
    assert conn.status_error == "lost connection after DATA"


# --- Exim families ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "rule", "known"), [
    ("2026-03-07 02:09:33 1vXyZa-000Abc-Q1 SA: Action: permanently rejected message: score=18.1 required=5.0 "
     "trigger=9.0 (scanned in 3/3 secs | Message-Id: m2@spam.example). From <s@spam.example> "
     "(host=spam.example [198.51.100.4]) for b@mx.example", "sa_exim", True),
    ("2026-03-07 02:09:33 1vXyZa-000Abc-Q1 SA: Action: Not running SA because SAEximRunCond expanded to "
     "false (Message-Id: 1vXyZa-000Abc-Q1). From <> (local) for b@mx.example", "sa_exim", True),
    ("2026-03-07 02:09:33 1vXyZa-000Abc-Q1 mx.r.example [192.0.2.44] Network is unreachable", "host_note",
     True),
    ("2026-03-07 02:09:33 no host name found for IP address 198.51.100.4", "lookup_failed", True),
    ("2026-03-07 02:09:33 Start queue run: pid=4242", "queue_run", True),
    ("2026-03-07 02:09:33 1vXyZa-000Abc-Q1 Frozen (delivery error message)", "message_state", True),
    ("2026-03-07 02:09:33 SMTP protocol error in \"AUTH LOGIN\" H=(user) [198.51.100.4]:5111 "
     "I=[192.0.2.1]:25 AUTH command used when not advertised", "protocol_error", False),
    ("2026-03-07 02:09:33 SMTP protocol synchronization error (input sent without waiting for greeting): "
     "rejected connection from H=[198.51.100.4]:5111 I=[192.0.2.1]:25 input=\"EHLO x\"",
     "synchronization_error", False),
    ("2026-03-07 02:09:33 no MAIL in SMTP connection from (x) [198.51.100.4]:5111 I=[192.0.2.1]:25 D=0.2s "
     "C=EHLO,QUIT", "no_mail", False),
    ("2026-03-07 02:09:33 SMTP command timeout on connection from (x) [198.51.100.4]:5111 I=[192.0.2.1]:25",
     "command_timeout", False),
    ("2026-03-07 02:09:33 unexpected disconnection while reading SMTP command from (x) [198.51.100.4]:5111 "
     "I=[192.0.2.1]:25 D=1s", "unexpected_disconnection", False),
    ("2026-03-07 02:09:33 Connection from [198.51.100.4]:5111 refused: too many connections from that IP "
     "address", "connection_refused", False),
    ("2026-03-07 02:09:33 SMTP call from (x) [198.51.100.4]:5111 I=[192.0.2.1]:25 dropped: too many "
     "syntax or protocol errors (last command was \"RCPT TO:<\")", "call_dropped", False),
    ("2026-03-07 02:09:33 TLS error on connection from (x) [198.51.100.4]:5111 I=[192.0.2.1]:25 "
     "(SSL_accept): error:0A000126:SSL routines::unexpected eof while reading", "tls_error", False),
    ("2026-03-07 02:09:33 1vXyZa-000Abc-Q1 Completed", "completed", False),
])
def test_exim_families(message: str, rule: str, known: bool) -> None:
    assert both(EX, EX_SLOW, "exim", message) == (rule, known)


def test_exim_spamassassin_lines_are_known_and_the_session_is_unchanged(tmp_path: Path) -> None:
    body = """\
2026-03-07 02:09:30 SMTP connection from (x) [198.51.100.4]:511 I=[192.0.2.1]:25 (TCP/IP connection count = 1)
2026-03-07 02:09:31 SMTP protocol error in "AUTH LOGIN" H=(x) [198.51.100.4]:511 I=[192.0.2.1]:25 AUTH \
command used when not advertised
2026-03-07 02:09:32 1vXyZa-000Abc-Q1 SA: Debug: check succeeded, running spamc
2026-03-07 02:09:33 SMTP connection from (x) [198.51.100.4]:511 I=[192.0.2.1]:25 closed by QUIT
"""
    r = run(tmp_path, body)
    c = r.counters
    assert (c.parsed, c.known, c.unparsed) == (3, 1, 0)
    (conn,) = r.connections()
    assert [e.name for e in conn.events if e.name == "smtp.protocol_error"] == ["smtp.protocol_error"]
