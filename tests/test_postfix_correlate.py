"""Reconstructed Postfix sessions against what the clients really did (fixtures' truth files), and
metric totals against pflogsumm's grand totals on the same logs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from maillog2otel.records import SpanData
from maillog2otel.testing import Result, run_pipeline

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "postfix"
SETS = sorted(p.stem for p in FIX.glob("*.log"))
NS = 1_000_000_000


def load(name: str) -> tuple[Result, dict]:
    result = run_pipeline([str(FIX / f"{name}.log")], timezone="UTC")
    return result, json.loads((FIX / f"{name}.truth.json").read_text())


def pair(result: Result, truth: dict) -> list[tuple[dict, SpanData]]:
    """Truth connections and spans in time order, one to one."""
    spans = sorted(result.connections(), key=lambda s: s.start_ns)
    conns = sorted(truth["connections"], key=lambda c: c["start_unix"])
    assert len(spans) == len(conns)
    return list(zip(conns, spans, strict=True))


def events(span: SpanData, name: str) -> list[dict]:
    return [e.attrs for e in span.events if e.name == name]


@pytest.mark.parametrize("name", SETS)
def test_every_connection_matches_the_client(name: str) -> None:
    check_connections(*load(name))


def check_connections(result: Result, truth: dict) -> None:
    port_logging = truth["settings"].get("smtpd_client_port_logging", "yes") == "yes"
    for conn, span in pair(result, truth):
        label = conn["name"]
        assert span.attrs["client.address"] == conn["client_address"], label
        if port_logging:
            assert span.attrs["client.port"] == conn["client_port"], label
        else:
            assert "client.port" not in span.attrs, label
        # 1 s log resolution: the span lies within the second the client saw (the client's time is
        # rounded to the millisecond, so 992.9996 is written 993.000); the client's end is after
        # it read the last reply and closed, so up to a second and the round trip later
        assert abs(span.start_ns / NS - conn["start_unix"]) <= 1.0005, label
        assert -0.5 < conn["end_unix"] - span.end_ns / NS < 1.5, label
        # the client dropped, or stalled until the server timed it out
        assert (span.status_error is not None) == (conn["end"] in ("drop", "timeout")), label
        assert bool(span.attrs.get("smtp.tls")) == conn["tls"], label
        if "smtp.helo_host" in span.attrs:
            assert span.attrs["smtp.helo_host"] == conn["helo"], label
        txns = conn["transactions"]
        queued = [t["queue_id"] for t in txns if t["data_code"] == 250]
        assert [e["smtp.queue_id"] for e in events(span, "smtp.queue_ok")] == queued, label
        assert len(events(span, "smtp.mail")) == sum(1 for t in txns if t["mail_code"] == 250), label
        accepted = [r["to"] for t in txns for r in t["rcpts"] if r["code"] < 300]
        rejected = sorted(r["code"] for t in txns for r in t["rcpts"] if r["code"] >= 400)
        rcpt_events = events(span, "smtp.rcpt")
        assert sum(1 for e in rcpt_events if e["smtp.rcpt.accepted"]) == len(accepted), label
        assert sorted(e["smtp.response.code"] for e in rcpt_events if not e["smtp.rcpt.accepted"]) == rejected
        named = [e["smtp.rcpt_to"] for e in rcpt_events if e["smtp.rcpt.accepted"] and "smtp.rcpt_to" in e]
        assert set(named) <= set(accepted), label
        for t in txns:
            if t["data_code"] == 250:
                froms = [e.get("smtp.mail_from") for e in events(span, "smtp.mail")]
                assert t["mail_from"] in froms, label


@pytest.mark.parametrize("name", SETS)
def test_every_proven_outcome_is_a_delivery_span_in_the_connections_trace(name: str) -> None:
    check_outcomes(*load(name))


def check_outcomes(result: Result, truth: dict) -> None:
    by_qid = {}
    for span in result.connections():
        for e in events(span, "smtp.queue_ok"):
            by_qid[e["smtp.queue_id"]] = span
    deliveries: dict[tuple[str, str], list[SpanData]] = {}
    for d in result.deliveries():
        deliveries.setdefault((d.attrs["smtp.queue_id"], d.attrs["smtp.rcpt_to"]), []).append(d)
    for qid, outcomes in truth["outcomes"].items():
        for o in outcomes:
            attempts = sorted(deliveries[(qid, o["to"])], key=lambda d: d.end_ns)
            # the truth files know delivered/deferred/bounced; an expired message was bounced to its sender
            final = attempts[-1].attrs["smtp.result"]
            assert {"expired": "bounced"}.get(final, final) == o["result"], (qid, o)
            conn = by_qid.get(qid)
            for d in attempts:  # retries hours later stay in the same trace, children of the connection
                parent_qid = d.attrs.get("smtp.parent_queue_id")
                if conn is not None:
                    assert (d.trace_id, d.parent_span_id) == (conn.trace_id, conn.span_id)
                elif parent_qid in by_qid:  # a bounce or delay notice: in its parent message's trace
                    parent = by_qid[parent_qid]
                    assert (d.trace_id, d.parent_span_id) == (parent.trace_id, parent.span_id)
                else:  # local submission: a root span of the message's own trace
                    assert d.parent_span_id is None and d.trace_id == attempts[0].trace_id
            assert (attempts[-1].status_error is not None) == (o["result"] in ("bounced", "expired"))


def test_non_delivery_notice_joins_its_parents_trace() -> None:
    result, _ = load("port-logging")
    bounced = next(d for d in result.deliveries() if d.attrs["smtp.result"] == "bounced")
    notice = [d for d in result.deliveries()
              if d.attrs.get("smtp.parent_queue_id") == bounced.attrs["smtp.queue_id"]]
    assert notice and all(d.trace_id == bounced.trace_id for d in notice)
    assert notice[0].attrs["smtp.message.origin"] == "bounce" and notice[0].attrs["smtp.mail_from"] == ""


def test_expired_message_ends_its_deferred_recipient() -> None:
    result, _ = load("expiry")
    results = [d.attrs["smtp.result"] for d in sorted(result.deliveries(), key=lambda d: d.end_ns)
               if d.attrs["smtp.rcpt_to"] == "mona@defer.test"]
    assert results == ["deferred"] * 4 + ["expired"]


def test_long_queue_ids_correlate() -> None:
    result, truth = load("long-queue-ids")
    assert {d.attrs["smtp.queue_id"] for d in result.deliveries()} == set(truth["outcomes"])


def pflogsumm_totals(text: str) -> dict[str, int]:
    grab = {k: int(re.search(rf"^\s*(\d+)\s+{k}", text, re.M)[1])
            for k in ("delivered", "bounced", "rejected")}
    deferrals = re.search(r"deferred\s+\((\d+)\s+deferrals\)", text)
    grab["deferred"] = int(deferrals[1]) if deferrals else 0
    return grab


@pytest.mark.parametrize("name", SETS)
def test_metric_totals_reconcile_with_pflogsumm(name: str) -> None:
    """delivered and bounced per recipient, deferred per attempt, rejected per rejection, as pflogsumm."""
    result, _ = load(name)
    check_pflogsumm(result, (FIX / f"{name}.pflogsumm.txt").read_text())


def check_pflogsumm(result: Result, pflogsumm_text: str) -> None:
    ours = {k: result.metric_total("postfix.messages", {"smtp.result": k}) for k in
            ("delivered", "bounced", "rejected", "deferred")}
    assert ours == pflogsumm_totals(pflogsumm_text)


@pytest.mark.parametrize("name", SETS)
def test_connections_and_sizes(name: str) -> None:
    result, truth = load(name)
    assert result.metric_total("postfix.connections") == len(truth["connections"])
    queued = result.metric_total("postfix.messages", {"smtp.result": "queued"})
    assert result.metric_total("postfix.message.size") == queued
    ehlo = sum(1 for c in truth["connections"] if c["helo_verb"] == "EHLO")
    assert result.metric_total("postfix.hook.total", {"postfix.hook": "connect"}) == len(truth["connections"])
    assert result.metric_total("postfix.hook.total", {"postfix.hook": "ehlo"}) >= ehlo


def test_ids_are_a_function_of_the_log() -> None:
    a, _ = load("port-logging")
    b, _ = load("port-logging")
    assert [(s.trace_id, s.span_id) for s in a.spans] == [(s.trace_id, s.span_id) for s in b.spans]
    assert len({s.span_id for s in a.spans}) == len(a.spans)


def test_open_sessions_at_the_end_are_errors(tmp_path: Path) -> None:
    """A log cut mid-session: the connection is still emitted, as ERROR "log ended"."""
    lines = (FIX / "port-logging.log").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "connect from unknown[127.0.0.4]" in line) + 2
    (tmp_path / "cut.log").write_text("\n".join(lines[:cut]) + "\n")
    result = run_pipeline([str(tmp_path / "cut.log")], timezone="UTC")
    last = [s for s in result.connections() if s.attrs["client.address"] == "127.0.0.4"]
    assert len(last) == 1 and last[0].status_error == "log ended"


def test_rotation_order_and_straddling_mail(tmp_path: Path) -> None:
    """A rotated set given in any order is one stream: a message split across files stays whole."""
    import gzip

    lines = (FIX / "port-logging.log").read_text().splitlines(keepends=True)
    thirds = [lines[:40], lines[40:75], lines[75:]]
    with gzip.open(tmp_path / "mail.log.2.gz", "wt") as fh:
        fh.writelines(thirds[0])
    (tmp_path / "mail.log.1").write_text("".join(thirds[1]))
    (tmp_path / "mail.log").write_text("".join(thirds[2]))
    whole = run_pipeline([str(FIX / "port-logging.log")], timezone="UTC")
    split = run_pipeline([str(tmp_path / n) for n in ("mail.log", "mail.log.2.gz", "mail.log.1")],
                         timezone="UTC")
    assert [(s.span_id, s.end_ns, s.attrs) for s in split.spans] == \
        [(s.span_id, s.end_ns, s.attrs) for s in whole.spans]


def test_a_backfill_expires_state_in_log_time(tmp_path: Path) -> None:
    """A backfill never ticks, so the correlator expires by the lines' own time: a session with no
    disconnect ends as "session idle" once an hour of log passes (not at the end of the log), and a
    message never removed leaves the state after the retention; both are counted."""
    log = tmp_path / "idle.log"
    lines = ["Nov 20 01:00:00 mx postfix/smtpd[10]: connect from a.example[192.0.2.1]:4000",
             "Nov 20 01:00:01 mx postfix/smtpd[10]: 4F9D195432: client=a.example[192.0.2.1]:4000",
             "Nov 20 01:00:01 mx postfix/cleanup[11]: 4F9D195432: message-id=<x@a.example>"]
    # a busy day after: other sessions come and go every 30 min, for 8 days
    for i in range(8 * 48):
        t = 3 * 3600 + i * 1800
        day, rest = 20 + t // 86400, t % 86400
        stamp = f"Nov {day} {rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
        lines += [f"{stamp} mx postfix/smtpd[{20 + i}]: connect from b.example[192.0.2.2]:{5000 + i}",
                  f"{stamp} mx postfix/smtpd[{20 + i}]: disconnect from b.example[192.0.2.2]:{5000 + i} "
                  "ehlo=1 quit=1 commands=2"]
    log.write_text("\n".join(lines) + "\n")
    result = run_pipeline([str(log)], timezone="UTC", year=2026)
    idle = [s for s in result.connections() if s.attrs["client.address"] == "192.0.2.1"]
    assert len(idle) == 1 and idle[0].status_error == "session idle: no disconnect logged"
    assert idle[0].end_ns == idle[0].start_ns + 1 * NS  # its last line, not the end of the log
    assert result.stats["postfix"]["session_idle"] == 1
    assert result.stats["postfix"]["message_expired_from_state"] == 1
    assert len(result.connections()) == 1 + 8 * 48


# --- postscreen and SASL AUTH (fixtures/postfix/postscreen.*: real postscreen, real Dovecot SASL) ---------

def by_client(result: Result) -> dict[tuple[str, int], SpanData]:
    spans: dict[tuple[str, int], SpanData] = {}
    for s in result.connections():
        key = (s.attrs["client.address"], s.attrs["client.port"])
        assert key not in spans, f"two spans for one TCP connection {key}"
        spans[key] = s
    return spans


def check_postscreen(result: Result, truth: dict) -> None:
    """Every TCP connection the clients made is one span, found by address and port, with the
    verdict postscreen had to reach; postscreen-only connections included."""
    spans = by_client(result)
    conns = {(c["client_address"], c["client_port"]): c for c in truth["connections"]}
    assert set(spans) == set(conns)
    for key, conn in conns.items():
        span = spans[key]
        verdict = conn.get("postscreen")
        assert span.attrs.get("postfix.postscreen.verdict") == verdict, conn["name"]
        # handed to smtpd: smtpd's session is the same span, its messages queued in it
        passed_to_smtpd = verdict in ("ALLOWLISTED", "PASS OLD")
        assert (span.attrs["smtp.service"] == "postscreen") == (verdict is not None and not passed_to_smtpd)
        if verdict is not None:
            shown = [e.attrs.get("postfix.postscreen.verdict") or e.attrs.get("postfix.postscreen.test")
                     for e in span.events if e.name in ("postfix.postscreen", "postfix.postscreen.test")]
            assert shown[:1] == [verdict], conn["name"]
        # postscreen logs the server end (smtpd does not): only its connections know the port
        assert span.attrs.get("server.port") == (truth["server"]["port"] if verdict else None), conn["name"]
    assert result.metric_total("postfix.connections") == len(truth["connections"])
    assert result.metric_total("postfix.connection.duration") == len(truth["connections"])


def check_auth(result: Result, truth: dict) -> None:
    """Every AUTH attempt is one smtp.auth event, in order, with the client's result."""
    spans = by_client(result)
    for conn in truth["connections"]:
        got = events(spans[(conn["client_address"], conn["client_port"])], "smtp.auth")
        want = conn.get("auth", [])
        assert [e["smtp.auth.accepted"] for e in got] == [a["accepted"] for a in want], conn["name"]
        for e, a in zip(got, want, strict=True):
            if "smtp.auth.method" in e:
                assert e["smtp.auth.method"] == a["method"], conn["name"]
            if "smtp.auth.user" in e:
                assert e["smtp.auth.user"] == a["user"], conn["name"]
            if "smtp.response.code" in e:
                assert e["smtp.response.code"] == a["code"], conn["name"]
            if not a["accepted"]:
                assert e.get("smtp.auth.reason"), conn["name"]
    attempts = [a for c in truth["connections"] for a in c.get("auth", [])]
    for result_name, accepted in (("accepted", True), ("failed", False)):
        assert result.metric_total("postfix.auth.attempts", {"smtp.auth.result": result_name}) == \
            sum(1 for a in attempts if a["accepted"] == accepted)


def test_postscreen_connections_are_spans_with_their_verdicts() -> None:
    check_postscreen(*load("postscreen"))


def test_every_auth_attempt_is_one_event() -> None:
    result, truth = load("postscreen")
    check_auth(result, truth)
    logins = {(c["client_address"], c["client_port"]): a for c in truth["connections"]
              for a in c.get("auth", []) if a["accepted"]}
    spans = by_client(result)
    named = [spans[k] for k in logins if "smtp.auth.user" in spans[k].attrs]
    assert named and all(
        s.attrs["smtp.auth.user"] == logins[(s.attrs["client.address"], s.attrs["client.port"])]["user"]
        for s in named)


def test_auth_attempts_are_counted_without_span_events() -> None:
    """No trace exported: the events are not built, the counter is the same."""
    full, truth = load("postscreen")
    lean = run_pipeline([str(FIX / "postscreen.log")], timezone="UTC", traces=False)
    for k in ("accepted", "failed"):
        assert lean.metric_total("postfix.auth.attempts", {"smtp.auth.result": k}) == \
            full.metric_total("postfix.auth.attempts", {"smtp.auth.result": k}) > 0
    assert lean.metric_total("postfix.connections") == len(truth["connections"])


def _run_lines(tmp_path: Path, lines: list[str]) -> Result:
    log = tmp_path / "mail.log"
    log.write_text("".join(f"Mar  7 02:09:{i:02d} mx {line}\n" for i, line in enumerate(lines)))
    return run_pipeline([str(log)], timezone="UTC", year=2026)


def test_dnsbl_rejection_on_an_mx(tmp_path: Path) -> None:
    """The issue's client, in Postfix's formats (postscreen_early.c, postscreen_smtpd.c, dnsblog.c):
    one span, its DNSBL listing and rank, the rejected recipient, counted once as rejected."""
    ip, ps = "198.51.100.7", "postfix/postscreen[900]:"
    result = _run_lines(tmp_path, [
        f"{ps} CONNECT from [{ip}]:51234 to [192.0.2.1]:25",
        f"postfix/dnsblog[901]: addr {ip} listed by domain zen.spamhaus.org as 127.0.0.4",
        f"{ps} PREGREET 14 after 0.08 from [{ip}]:51234: EHLO ylmf-pc\\r\\n",
        f"{ps} DNSBL rank 3 for [{ip}]:51234",
        f"{ps} NOQUEUE: reject: RCPT from [{ip}]:51234: 550 5.7.1 Service unavailable; client [{ip}] blocked "
        f"using zen.spamhaus.org; from=<spam@bot.example>, to=<a@example.org>, proto=ESMTP, helo=<ylmf-pc>",
        f"{ps} DISCONNECT [{ip}]:51234",
    ])
    [span] = result.connections()
    assert (span.attrs["client.port"], span.attrs["postfix.postscreen.verdict"]) == (51234, "PREGREET")
    assert span.attrs["postfix.postscreen.dnsbl.rank"] == 3 and span.status_error is None
    assert events(span, "postfix.dnsbl.listed") == [{"postfix.dnsbl.domain": "zen.spamhaus.org",
                                                     "postfix.dnsbl.result": "127.0.0.4"}]
    tests = [e["postfix.postscreen.test"] for e in events(span, "postfix.postscreen.test")]
    assert tests == ["PREGREET", "DNSBL"]
    [rcpt] = events(span, "smtp.rcpt")
    assert (rcpt["smtp.rcpt_to"], rcpt["smtp.rcpt.accepted"], rcpt["smtp.response.code"]) == (
        "a@example.org", False, 550)
    assert events(span, "smtp.reject")[0]["smtp.response.enhanced_code"] == "5.7.1"
    assert span.attrs["smtp.helo_host"] == "ylmf-pc"
    assert (span.end_ns - span.start_ns) == 5 * NS
    assert result.metric_total("postfix.connections") == 1
    assert result.metric_total("postfix.messages", {"smtp.result": "rejected"}) == 1


def test_legacy_names_ipv6_and_a_veto(tmp_path: Path) -> None:
    """Postfix < 3.6 words (WHITELISTED, WHITELIST VETO, BLACKLISTED) on IPv6 clients: a veto is
    an event, not the verdict; the client that passes still reaches smtpd as the same span."""
    ps = "postfix/postscreen[900]:"
    result = _run_lines(tmp_path, [
        f"{ps} CONNECT from [2001:db8::5]:40000 to [2001:db8::1]:25",
        f"{ps} WHITELIST VETO [2001:db8::5]:40000",
        f"{ps} PASS NEW [2001:db8::5]:40000",
        "postfix/smtpd[902]: connect from mail.example[2001:db8::5]:40000",
        f"{ps} CONNECT from [2001:db8::6]:40001 to [2001:db8::1]:25",
        f"{ps} BLACKLISTED [2001:db8::6]:40001",
        f"{ps} DISCONNECT [2001:db8::6]:40001",
        "postfix/smtpd[902]: disconnect from mail.example[2001:db8::5]:40000 ehlo=1 quit=1 commands=2",
    ])
    passed, listed = sorted(result.connections(), key=lambda s: s.start_ns)
    assert (passed.attrs["postfix.postscreen.verdict"], passed.attrs["smtp.service"]) == ("PASS NEW", "smtpd")
    assert [e["postfix.postscreen.verdict"] for e in events(passed, "postfix.postscreen")] == [
        "WHITELIST VETO", "PASS NEW"]
    assert (listed.attrs["postfix.postscreen.verdict"], listed.attrs["server.address"]) == (
        "BLACKLISTED", "2001:db8::1")


def test_refused_at_connect_count_as_pflogsumm_does(tmp_path: Path) -> None:
    """postscreen's two refusals before any test (postscreen.c): each ends its own span, and the
    rejections are counted as pflogsumm counts them."""
    ps = "postfix/postscreen[900]:"
    lines = [
        f"{ps} CONNECT from [192.0.2.9]:46157 to [192.0.2.1]:25",
        f"{ps} reject: connect from [192.0.2.9]:46157: all screening ports busy",
        f"{ps} DISCONNECT [192.0.2.9]:46157",
        f"{ps} CONNECT from [192.0.2.10]:46158 to [192.0.2.1]:25",
        f"{ps} NOQUEUE: reject: CONNECT from [192.0.2.10]:46158: too many connections",
        f"{ps} DISCONNECT [192.0.2.10]:46158",
    ]
    result = _run_lines(tmp_path, lines)
    busy, many = sorted(result.connections(), key=lambda s: s.start_ns)
    assert busy.attrs["postfix.postscreen.verdict"] == "BUSY"
    assert events(busy, "smtp.reject")[0]["smtp.response.code"] == 421
    assert events(many, "smtp.reject")[0]["smtp.reject.stage"] == "CONNECT"
    assert result.metric_total("postfix.connections") == 2
    if shutil.which("pflogsumm") is None:
        pytest.skip("pflogsumm is not installed (fixtures/postfix/install.sh installs it)")
    summary = subprocess.run(["pflogsumm", str(tmp_path / "mail.log")], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    check_pflogsumm(result, summary)


def test_handoff_without_port_logging_and_a_stalled_client(tmp_path: Path) -> None:
    """smtpd without smtpd_client_port_logging: the passed connection from that address continues;
    a client that stalls in postscreen ends in error."""
    ps = "postfix/postscreen[900]:"
    result = _run_lines(tmp_path, [
        f"{ps} CONNECT from [192.0.2.5]:40000 to [192.0.2.1]:25",
        f"{ps} PASS OLD [192.0.2.5]:40000",
        "postfix/smtpd[902]: connect from mail.example[192.0.2.5]",
        f"{ps} CONNECT from [192.0.2.6]:40001 to [192.0.2.1]:25",
        f"{ps} COMMAND TIME LIMIT from [192.0.2.6]:40001 after RCPT",
        f"{ps} DISCONNECT [192.0.2.6]:40001",
        "postfix/smtpd[902]: disconnect from mail.example[192.0.2.5] ehlo=1 quit=1 commands=2",
    ])
    passed, stalled = sorted(result.connections(), key=lambda s: s.start_ns)
    assert (passed.attrs["smtp.service"], passed.attrs["postfix.postscreen.verdict"]) == ("smtpd", "PASS OLD")
    assert passed.attrs["client.port"] == 40000 and passed.end_ns - passed.start_ns == 6 * NS
    assert stalled.attrs["postfix.postscreen.verdict"] == "COMMAND TIME LIMIT" and stalled.status_error
    assert result.metric_total("postfix.connections") == 2


def test_auth_summary_counts_attempts_no_line_names(tmp_path: Path) -> None:
    """auth=1/3 with one failure line: the summary rules the counter; the missing attempt is an
    inferred event, and the login's client= line gives its method and user."""
    sd = "postfix/submission/smtpd[77]:"
    result = _run_lines(tmp_path, [
        f"{sd} connect from x.example[203.0.113.9]:2000",
        f"{sd} warning: x.example[203.0.113.9]:2000: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
        f"{sd} 4F9D195432: client=x.example[203.0.113.9]:2000, sasl_method=PLAIN, "
        "sasl_username=u@example.org",
        f"{sd} disconnect from x.example[203.0.113.9]:2000 ehlo=1 auth=1/3 mail=1 rcpt=0/1 quit=1 "
        "commands=4/6",
    ])
    [span] = result.connections()
    got = events(span, "smtp.auth")
    assert sorted(e["smtp.auth.accepted"] for e in got) == [False, False, True]
    assert [e for e in got if e.get("smtp.auth.reason") == "UGFzc3dvcmQ6"]
    assert [e["smtp.auth.user"] for e in got if e["smtp.auth.accepted"]] == ["u@example.org"]
    assert span.attrs["smtp.command.auth"] == 3 and span.attrs["smtp.command.auth.ok"] == 1
    assert result.metric_total("postfix.auth.attempts", {"smtp.auth.result": "failed"}) == 2
    assert result.metric_total("postfix.auth.attempts", {"smtp.auth.result": "accepted"}) == 1


def test_inferred_login_follows_the_logged_failures(tmp_path: Path) -> None:
    """auth=1/2, one failure logged and no mail: the login no line names comes after the failure."""
    sd = "postfix/submission/smtpd[77]:"
    result = _run_lines(tmp_path, [
        f"{sd} connect from x.example[203.0.113.9]:2000",
        f"{sd} warning: x.example[203.0.113.9]:2000: SASL PLAIN authentication failed: "
        "authentication failure, sasl_username=u@example.org",
        f"{sd} disconnect from x.example[203.0.113.9]:2000 ehlo=1 auth=1/2 quit=1 commands=3/4",
    ])
    [span] = result.connections()
    got = [(e.ts_ns - span.start_ns, e.attrs["smtp.auth.accepted"]) for e in span.events
           if e.name == "smtp.auth"]
    assert got == [(1 * NS, False), (1 * NS, True)]
    assert "smtp.auth.user" not in span.attrs  # only a login keeps the user on the span


def test_postscreen_state_survives_a_restart(tmp_path: Path) -> None:
    """A tail restart between PASS and smtpd's connect: the saved state continues the span."""
    from maillog2otel.grammars import postfix as grammar

    from maillog2otel.correlate.postfix import PostfixCorrelator
    from maillog2otel.parse import Grammar
    from maillog2otel.records import Record

    g = Grammar([grammar])
    lines = [("postfix/postscreen", "CONNECT from [192.0.2.5]:40000 to [192.0.2.1]:25"),
             ("postfix/postscreen", "PASS NEW [192.0.2.5]:40000"),
             ("postfix/smtpd", "connect from unknown[192.0.2.5]:40000"),
             ("postfix/smtpd", "disconnect from unknown[192.0.2.5]:40000 ehlo=1 quit=1 commands=2")]
    events_ = [g.parse(Record((i + 1) * NS, "mx", p, 5, m)) for i, (p, m) in enumerate(lines)]
    first = PostfixCorrelator()
    for ev in events_[:2]:
        first.feed(ev)  # type: ignore[arg-type]
    second = PostfixCorrelator()
    second.load_state(json.loads(json.dumps(first.save_state())))
    out = [o for ev in events_[2:] for o in second.feed(ev)] + second.finish()  # type: ignore[arg-type]
    [conn] = [o for o in out if hasattr(o, "span_id") and getattr(o, "mta", "") == "postfix"]
    assert conn.start_ns == 1 * NS and conn.attrs["postfix.postscreen.verdict"] == "PASS NEW"



# smtpd serves client after client in one process, and Postfix logs no client port unless
# smtpd_client_port_logging = yes (default no): one client connecting twice to one smtpd in one
# second gives connect lines that differ in nothing but their place in the log (real Postfix 3.7,
# fixtures/postfix/no-port-logging.log lines 10-24, shortened).
D, C = "Nov 22 02:59:43 mx postfix/smtpd[9798]: ", "unknown[127.0.0.3]"
SAME_SECOND = [
    f"{D}connect from {C}",
    f"{D}7C9D2160026: client={C}",
    "Nov 22 02:59:43 mx postfix/cleanup[9803]: 7C9D2160026: message-id=<two-1@client3.example>",
    "Nov 22 02:59:43 mx postfix/qmgr[9735]: 7C9D2160026: from=<dave@client3.example>, size=402, "
    "nrcpt=1 (queue active)",
    f"{D}disconnect from {C} ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    "Nov 22 02:59:43 mx postfix/local[9804]: 7C9D2160026: to=<alice@local.test>, relay=local, "
    "delay=0.02, delays=0.02/0.01/0/0, dsn=2.0.0, status=sent (delivered to mailbox)",
    "Nov 22 02:59:43 mx postfix/qmgr[9735]: 7C9D2160026: removed",
    f"{D}connect from {C}",
    f"{D}C7756160026: client={C}",
    f"{D}disconnect from {C} ehlo=1 mail=1 rcpt=1 rset=1 quit=1 commands=5",
    f"{D}connect from {C}",
    f"{D}lost connection after EHLO from {C}",
    f"{D}disconnect from {C} ehlo=1 commands=1",
]


def test_one_client_twice_in_one_second_to_one_smtpd_is_two_connections(tmp_path: Path) -> None:
    from maillog2otel.telemetry.ids import ids_for

    (tmp_path / "mail.log").write_text("\n".join(SAME_SECOND) + "\n")
    runs = [run_pipeline([str(tmp_path / "mail.log")], timezone="UTC", year=2025) for _ in range(2)]
    conns = sorted(runs[0].connections(), key=lambda s: s.start_ns)
    assert len(conns) == 3
    assert len({s.span_id for s in runs[0].spans}) == len(runs[0].spans)
    assert len({s.trace_id for s in conns}) == 3  # each connection's message in its own trace
    # the first keeps the ID it always had; a second backfill sends the same IDs
    first = next(s for s in conns if "smtp.command.data" in s.attrs)
    key = f"mx|postfix|postfix|9798|{first.start_ns}|127.0.0.3:None"
    assert (first.trace_id, first.span_id) == ids_for(key)
    ids = [[(s.trace_id, s.span_id) for s in run.spans] for run in runs]
    assert ids[0] == ids[1]


def test_same_second_count_survives_a_restart() -> None:
    """The count that tells those connections apart is in the saved state: a restart between
    them still gives each its own ID, the same as one uninterrupted run."""
    from maillog2otel import mtas
    from maillog2otel.correlate.base import CorrelateSettings
    from maillog2otel.framing import Framer, LocalClock, YearGuess
    from maillog2otel.records import Connection

    def run(cut: int | None) -> list[tuple[bytes, bytes]]:
        grammar, corr = mtas.load("postfix", CorrelateSettings())
        framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2025), default_host="mx")
        out: list = []
        for i, line in enumerate(SAME_SECOND):
            if i == cut:
                state = json.loads(json.dumps(corr.save_state()))
                grammar, corr = mtas.load("postfix", CorrelateSettings())
                corr.load_state(state)
            rec = framer.frame(line, 0)
            ev = grammar.parse(rec) if rec is not None else None
            if ev is not None:
                out += corr.feed(ev)
        return sorted((c.trace_id, c.span_id) for c in out + corr.finish() if isinstance(c, Connection))

    whole = run(None)
    assert len(set(whole)) == 3
    for cut in range(1, len(SAME_SECOND)):
        assert run(cut) == whole, cut
