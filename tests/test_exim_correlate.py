"""Reconstructed Exim sessions and deliveries against what the clients really did (the fixtures'
truth files), and metric totals against eximstats' grand totals on the same logs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maillog2otel.grammars import exim as exim_grammar

from maillog2otel.correlate.base import CorrelateSettings
from maillog2otel.correlate.exim import EximCorrelator
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.parse import Grammar
from maillog2otel.records import Connection, Count, Delivery, MessageDone, SpanData
from maillog2otel.testing import Result, run_pipeline

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "exim"
SETS = ["default", "rich", "ids-4.97"]
NS = 1_000_000_000
_OLD_ID = re.compile(r"\b([0-9A-Za-z]{6})-([0-9A-Za-z]{6})-([0-9A-Za-z]{2})\b")


def load(name: str, *extra: str) -> tuple[Result, dict]:
    paths = [str(FIX / f"{name}.mainlog"), *(str(FIX / e) for e in extra)]
    return run_pipeline(paths, timezone="UTC"), json.loads((FIX / f"{name}.truth.json").read_text())


def has_connection_lines(truth: dict) -> bool:
    return "+smtp_connection" in truth["settings"]["log_selector"]


def events(span: SpanData, name: str) -> list[dict]:
    return [e.attrs for e in span.events if e.name == name]


def visible(truth: dict, txn: dict) -> bool:
    """Whether Exim's default log_selector writes any line for a transaction: an accepted message
    (<=), a rejection (RCPT or after DATA). A MAIL that is followed by nothing leaves no line."""
    return txn["data_code"] is not None or any(r["code"] >= 400 for r in txn["rcpts"]) or \
        has_connection_lines(truth)


def pair(result: Result, truth: dict) -> list[tuple[dict, SpanData | None]]:
    """Truth connections and their spans: by client ip:port when logged, else by queue ID, else by
    address among the spans that queued nothing."""
    spans = [s for s in result.connections() if s.attrs.get("network.transport") == "tcp"]
    if has_connection_lines(truth):
        by_port = {(s.attrs["client.address"], s.attrs["client.port"]): s for s in spans}
        return [(c, by_port.get((c["client_address"], c["client_port"]))) for c in truth["connections"]]
    by_qid = {e["smtp.queue_id"]: s for s in spans for e in events(s, "smtp.queue_ok")}
    rest = [s for s in spans if not events(s, "smtp.queue_ok")]
    out = []
    for c in truth["connections"]:
        qids = [t["queue_id"] for t in c["transactions"] if t["queue_id"]]
        if qids:
            out.append((c, by_qid.get(qids[0])))
        else:
            out.append((c, next((s for s in rest if s.attrs["client.address"] == c["client_address"]), None)))
    return out


@pytest.mark.parametrize("name", SETS)
def test_every_connection_matches_the_client(name: str) -> None:
    result, truth = load(name)
    rich = has_connection_lines(truth)
    paired = pair(result, truth)
    assert len({id(s) for _, s in paired if s is not None}) == sum(1 for _, s in paired if s is not None)
    for conn, span in paired:
        label = conn["name"]
        txns = [t for t in conn["transactions"] if visible(truth, t)]
        if span is None:  # the default selector logs nothing for a session without a transaction
            assert not rich and not txns and conn["end"] != "drop", label
            continue
        a = span.attrs
        assert a["client.address"] == conn["client_address"], label
        assert a.get("client.port") == (conn["client_port"] if rich else None), label
        assert a["smtp.helo_host"] == conn["helo"], label
        assert bool(a.get("smtp.tls")) == conn["tls"], label
        if conn["tls"]:
            assert a["tls.protocol.version"] == conn["tls_version"], label
        assert (span.status_error is not None) == (conn["end"] == "drop"), label
        if rich:  # millisecond stamps: the open line is the client's connect
            assert abs(span.start_ns / NS - conn["start_unix"]) < 0.01, label
            assert span.start_ns <= span.end_ns <= conn["end_unix"] * NS + 0.01 * NS, label
            assert (a["server.address"], a["server.port"]) == tuple(truth["server"].values())
            assert "exim.reconstructed" not in a, label
        else:  # whole seconds, and only what lines prove
            assert conn["start_unix"] - 1 <= span.start_ns / NS <= span.end_ns / NS <= conn["end_unix"], label
            assert a["exim.reconstructed"] == "partial" and a["smtp.connection.inferred"] is True, label
        queued = [t["queue_id"] for t in txns if t["data_code"] == 250]
        assert [e["smtp.queue_id"] for e in events(span, "smtp.queue_ok")] == queued, label
        mails = events(span, "smtp.mail")
        assert len(mails) == sum(1 for t in txns if t["mail_code"] == 250), label
        assert sorted(t["mail_from"] for t in txns) == sorted(m["smtp.mail_from"] for m in mails), label
        rcpts = events(span, "smtp.rcpt")
        accepted = [r["to"] for t in txns for r in t["rcpts"] if r["code"] < 300]
        rejected = sorted((r["to"], r["code"]) for t in txns for r in t["rcpts"] if r["code"] >= 400)
        assert sorted((e["smtp.rcpt_to"], e["smtp.response.code"]) for e in rcpts
                      if not e["smtp.rcpt.accepted"]) == rejected, label
        assert sum(1 for e in rcpts if e["smtp.rcpt.accepted"]) == len(accepted), label
        named = {e["smtp.rcpt_to"] for e in rcpts if e["smtp.rcpt.accepted"] and "smtp.rcpt_to" in e}
        assert named <= set(accepted), label
        data_rejected = [t for t in txns if t["data_code"] and t["data_code"] >= 400]
        stages = [e["smtp.reject.stage"] for e in events(span, "smtp.reject")]
        assert stages.count("END-OF-MESSAGE") == len(data_rejected), label
        verbs = [e.name for e in span.events if e.name in ("smtp.helo", "smtp.ehlo")]
        assert set(verbs) == {f"smtp.{conn['helo_verb'].lower()}"}, label
        assert a["smtp.command.connect"] == 1
        if rich and conn["end"] == "quit":
            assert a["exim.close_reason"] == "quit" and a["smtp.command.quit"] == 1, label


@pytest.mark.parametrize("name", SETS)
def test_every_proven_outcome_is_a_delivery_span_in_the_right_trace(name: str) -> None:
    result, truth = load(name)
    by_qid = {e["smtp.queue_id"]: s for s in result.connections() for e in events(s, "smtp.queue_ok")}
    deliveries: dict[tuple[str, str], list[SpanData]] = {}
    for d in result.deliveries():
        deliveries.setdefault((d.attrs["smtp.queue_id"], d.attrs["smtp.rcpt_to"]), []).append(d)
    assert sum(map(len, deliveries.values())) == len(result.deliveries())
    bounce = {g["queue_id"]: g["bounce_of"] for g in truth["generated"]}
    local_t = {t["queue_id"] for s in truth["local_submissions"] if s["method"] == "-t"
               for t in s["transactions"]}
    for qid, outcomes in truth["outcomes"].items():
        for o in outcomes:
            attempts = sorted(deliveries[(qid, o["to"])], key=lambda d: d.end_ns)
            assert attempts[-1].attrs["smtp.result"] == o["result"], (qid, o)
            assert (attempts[-1].status_error is not None) == (o["result"] == "bounced")
            for d in attempts:  # retries stay in the same trace, children of the connection
                if qid in by_qid:
                    assert (d.trace_id, d.parent_span_id) == (by_qid[qid].trace_id, by_qid[qid].span_id)
                elif qid in bounce:  # the bounce joins its parent's trace, under the parent's connection
                    parent = by_qid[bounce[qid]]
                    assert (d.trace_id, d.parent_span_id) == (parent.trace_id, parent.span_id)
                    assert d.attrs["smtp.parent_queue_id"] == bounce[qid] and d.attrs["smtp.mail_from"] == ""
                    assert d.attrs["smtp.message.origin"] == "bounce"
                else:  # exim -t: no connection, a root span of the message's own trace
                    assert qid in local_t and d.parent_span_id is None
                    assert d.attrs["smtp.message.origin"] == "local"


@pytest.mark.parametrize("name", SETS)
def test_deferred_retries_are_attempts_and_retry_notices_are_not(name: str) -> None:
    """Each real == line is one deferred span in the message's trace; a queue run's "retry time
    not reached" == line is not an attempt."""
    result, _ = load(name)
    text = (FIX / f"{name}.mainlog").read_text()
    real: dict[str, int] = {}
    for m in re.finditer(r" (\S+) == .*", text):
        if "retry time not reached" not in m[0]:
            real[m[1]] = real.get(m[1], 0) + 1
    assert real and "retry time not reached" in text
    deferred: dict[str, list[Delivery | SpanData]] = {}
    for d in result.deliveries():
        if d.attrs["smtp.result"] == "deferred":
            deferred.setdefault(d.attrs["smtp.queue_id"], []).append(d)
    assert {q: len(v) for q, v in deferred.items()} == real
    for spans in deferred.values():
        assert len({(d.trace_id, d.parent_span_id) for d in spans}) == 1
        assert len({d.span_id for d in spans}) == len(spans)


def _normalised(result: Result) -> list[tuple]:
    """Spans with message IDs in the 4.97 form and without the IDs that hash them."""
    def new_ids(value: object) -> object:
        if isinstance(value, str):
            return _OLD_ID.sub(lambda m: f"{m[1]}-{m[2].rjust(11, '0')}-{m[3].rjust(4, '0')}", value)
        return value

    def attrs(d: dict) -> tuple:
        return tuple(sorted((k, new_ids(v)) for k, v in d.items()))
    return sorted((s.name, s.start_ns, s.end_ns, s.status_error or "", attrs(s.attrs),
                   tuple((e.name, e.ts_ns, attrs(e.attrs)) for e in s.events)) for s in result.spans)


def test_4_97_ids_give_the_same_telemetry_as_the_4_96_log() -> None:
    rich, _ = load("rich")
    new, _ = load("ids-4.97")
    assert _normalised(new) == _normalised(rich)
    # connection spans are named by the session, not by message IDs: the same trace IDs
    assert {s.trace_id for s in new.connections()} == {s.trace_id for s in rich.connections()}
    assert any("-000000002" in d.attrs["smtp.queue_id"] for d in new.deliveries())


def _eximstats(name: str) -> dict[str, int]:
    text = (FIX / f"{name}.eximstats.txt").read_text()
    received = re.search(r"^\s*Received\s+\S+\s+(\d+)\s+\d+\s+(\d+)\s+\S+\s+(\d+)", text, re.M)
    delivered = re.search(r"^\s*Delivered\s+\S+\s+(\d+)\s+(\d+)", text, re.M)
    rejects = re.search(r"^\s*Rejects\s+(\d+)", text, re.M)
    assert received and delivered and rejects
    return {"received": int(received[1]), "delayed": int(received[2]), "failed": int(received[3]),
            "delivered_addresses": int(delivered[2]), "rejects": int(rejects[1])}


@pytest.mark.parametrize("name", ["default", "rich"])
def test_metric_totals_reconcile_with_eximstats(name: str) -> None:
    """exim.messages against eximstats' grand totals on the same log, with its two systematic
    differences explained:

    - eximstats' "Rejects" counts every unflagged line that says rejected, refused or dropped; the
      transport's per-host note "H=127.0.0.1 [127.0.0.1] Connection refused" (written before each real
      == attempt to a closed port) is one. Those are delivery failures, not rejections: ours leaves
      them out, so ours = eximstats minus those lines.
    - eximstats counts "Delayed" and "Failed" once per message; ours counts deferred per recipient and
      attempt, bounced per recipient. The distinct messages behind our spans are eximstats' numbers.
    Received counts every <= (bounces and local submissions included) in both, delivered every
    recipient of a => or -> line."""
    result, _ = load(name)
    stats = _eximstats(name)

    def total(result_: str) -> float:
        return result.metric_total("exim.messages", {"smtp.result": result_})
    assert total("queued") == stats["received"]
    assert result.metric_total("exim.message.size") == stats["received"]
    assert total("delivered") == stats["delivered_addresses"]
    grammar = Grammar([exim_grammar])
    framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
    host_notes = 0
    for line in (FIX / f"{name}.mainlog").read_text().splitlines():
        ev = grammar.parse(framer.frame(line, 0))  # type: ignore[arg-type]
        if ev.rule == "host_error" and re.search(r"rejected|refused|dropped", ev.fields["error"]):  # type: ignore[union-attr]
            host_notes += 1
    assert host_notes > 0
    assert total("rejected") == stats["rejects"] - host_notes
    by_result: dict[str, set[str]] = {}
    for d in result.deliveries():
        by_result.setdefault(d.attrs["smtp.result"], set()).add(d.attrs["smtp.queue_id"])
    assert len(by_result["deferred"]) == stats["delayed"]
    assert len(by_result["bounced"]) == stats["failed"] == total("bounced")
    assert total("deferred") == sum(1 for d in result.deliveries() if d.attrs["smtp.result"] == "deferred")


@pytest.mark.parametrize("name", ["default", "rich"])
def test_reject_log_is_not_counted_twice(name: str) -> None:
    """The reject log repeats each rejection of the main log (then Envelope- and header lines):
    read together, every line is understood and each rejection counts once."""
    alone, _ = load(name)
    both, _ = load(name, f"{name}.rejectlog")
    rejectlog_first = run_pipeline([str(FIX / f"{name}.rejectlog"), str(FIX / f"{name}.mainlog")],
                                   timezone="UTC")
    assert both.counters.unparsed == 0 and both.counters.lines == alone.counters.lines + 18
    for r in (both, rejectlog_first):
        assert r.metric_total("exim.messages", {"smtp.result": "rejected"}) == \
            alone.metric_total("exim.messages", {"smtp.result": "rejected"}) == 3
        assert len(r.connections()) == len(alone.connections())
        assert r.stats["exim"]["rejectlog_duplicate"] == 3
    # the Envelope-to: line names the recipient the client had accepted before DATA was refused
    spam = next(s for s in both.connections() if s.attrs.get("client.address") == "127.0.0.7")
    assert [e["smtp.rcpt_to"] for e in events(spam, "smtp.rcpt")] == ["bob@local.test"]
    only = run_pipeline([str(FIX / f"{name}.rejectlog")], timezone="UTC")
    assert only.counters.unparsed == 0
    assert only.metric_total("exim.messages", {"smtp.result": "rejected"}) == 3


@pytest.mark.parametrize("name", SETS)
def test_local_submissions(name: str) -> None:
    """exim -bs is an SMTP session over a pipe (a span of its own); exim -t is not a session."""
    result, truth = load(name)
    bs = next(s for s in truth["local_submissions"] if s["method"] == "-bs")
    span = next(s for s in result.connections() if s.attrs["network.transport"] == "pipe")
    assert span.attrs["exim.local_user"] == bs["user"] and "client.address" not in span.attrs
    assert [e["smtp.queue_id"] for e in events(span, "smtp.queue_ok")] == [bs["transactions"][0]["queue_id"]]
    assert result.metric_total("exim.connections") == len(result.connections())


def test_the_open_lines_daemon_pid_is_not_the_session() -> None:
    """Before 4.97 the daemon writes "SMTP connection from": every session gets the child's pid
    from its later lines, none the daemon's."""
    result, _ = load("rich")
    daemon = int(re.search(r"daemon started: pid=(\d+)", (FIX / "rich.mainlog").read_text())[1])  # type: ignore[index]
    tcp = [s for s in result.connections() if s.attrs["network.transport"] == "tcp"]
    pids = [s.attrs["process.pid"] for s in tcp]
    assert daemon not in pids and len(set(pids)) == len(pids) == 14


def test_4_97_connection_id_and_duration(tmp_path: Path) -> None:
    """Exim 4.97+ with +pid +connection_id (the shape of the reference's fail2ban #3060 lines,
    written here by hand): Ci= names the session, D= is on the close line, no MAIL comes after it."""
    log = tmp_path / "mainlog"
    log.write_text(
        "2024-03-24 02:04:32.263 +0000 [8001] SMTP connection from [194.33.191.29]:20042 "
        "I=[65.109.230.99]:25 Ci=8001 (TCP/IP connection count = 1)\n"
        '2024-03-24 02:04:32.300 +0000 [8001] SMTP protocol error in "AUTH LOGIN" H=(User) '
        "[194.33.191.29]:20042 I=[65.109.230.99]:25 Ci=8001 LOGIN authentication mechanism not supported\n"
        "2024-03-24 02:04:32.412 +0000 [8001] SMTP connection Ci=8001 from (User) [194.33.191.29]:20042 "
        "I=[65.109.230.99]:25 D=0.149s closed by QUIT\n"
        "2024-03-24 02:04:32.612 +0000 [8001] no MAIL in SMTP connection from (User) [194.33.191.29]:20042 "
        "I=[65.109.230.99]:25 Ci=8001 D=0.349s C=EHLO,AUTH,QUIT\n")
    result = run_pipeline([str(log)], timezone="UTC")
    (span,) = result.connections()
    assert span.attrs["exim.connection_id"] == "8001" and span.attrs["process.pid"] == 8001
    assert span.attrs["exim.commands"] == "EHLO,AUTH,QUIT" and span.status_error is None
    assert (span.end_ns - span.start_ns) / NS == pytest.approx(0.349)
    assert [e.name for e in span.events].count("smtp.protocol_error") == 1
    assert result.metric_total("exim.hook.total", {"exim.hook": "auth"}) == 1


def _sessions(r: Result) -> list:
    """Connections as (client, port, pid, queue IDs): what the syslog variants must reproduce."""
    return sorted((s.attrs.get("client.address", ""), s.attrs.get("client.port", 0),
                   s.attrs["process.pid"], tuple(e["smtp.queue_id"] for e in events(s, "smtp.queue_ok")))
                  for s in r.connections())


def _outcomes(r: Result) -> list:
    return sorted((d.attrs["smtp.queue_id"], d.attrs["smtp.rcpt_to"], d.attrs["smtp.result"])
                  for d in r.deliveries())


def test_syslog_wrapped_lines_correlate_like_the_native_log(tmp_path: Path) -> None:
    """The same Exim lines through syslog (exim[pid]: <Exim's own stamp> [pid] …): the same
    sessions, messages and outcomes."""
    native, _ = load("rich")
    lines = []
    for line in (FIX / "rich.mainlog").read_text().splitlines():
        pid = re.search(r"\[(\d+)\]", line)[1]  # type: ignore[index]
        lines.append(f"Nov 22 {line[11:19]} mx exim4[{pid}]: {line}")
    (tmp_path / "mail.log").write_text("\n".join(lines) + "\n")
    wrapped = run_pipeline([str(tmp_path / "mail.log")], timezone="UTC", year=2026)
    assert wrapped.counters.unparsed == 0
    assert _sessions(wrapped) == _sessions(native)
    assert _outcomes(wrapped) == _outcomes(native)


def _outputs(lines: list[str], split: int | None) -> list[tuple]:
    """Feed a log through grammar and correlator; with ``split``, restart from saved state there."""
    grammar = Grammar([exim_grammar])
    framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
    corr = EximCorrelator()
    out = []
    for i, line in enumerate(lines):
        if i == split:
            state = json.loads(json.dumps(corr.save_state()))
            corr = EximCorrelator()
            corr.load_state(state)
        ev = grammar.parse(framer.frame(line, 0))  # type: ignore[arg-type]
        if ev is not None:
            out.extend(corr.feed(ev))
    out.extend(corr.finish())
    return [(type(o).__name__, o.trace_id, getattr(o, "span_id", None), getattr(o, "start_ns", None),
             getattr(o, "attrs", None), [(e.name, e.ts_ns, e.attrs) for e in getattr(o, "events", [])],
             getattr(o, "auth", None))
            for o in out if isinstance(o, (Connection, Delivery))]


@pytest.mark.parametrize("name", ["default", "rich", "auth", "auth-default"])
def test_restart_from_saved_state_changes_nothing(name: str) -> None:
    lines = (FIX / f"{name}.mainlog").read_text().splitlines()
    whole = _outputs(lines, None)
    for split in range(3, len(lines), 7):
        assert _outputs(lines, split) == whole, split


def test_ids_are_a_function_of_the_log() -> None:
    a, _ = load("rich")
    b, _ = load("rich")
    assert [(s.trace_id, s.span_id) for s in a.spans] == [(s.trace_id, s.span_id) for s in b.spans]
    assert len({s.span_id for s in a.spans}) == len(a.spans)


def test_a_session_open_at_the_end_is_an_error(tmp_path: Path) -> None:
    lines = (FIX / "rich.mainlog").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "[127.0.0.4]:38721 I=" in line) + 2
    (tmp_path / "mainlog").write_text("\n".join(lines[:cut]) + "\n")
    result = run_pipeline([str(tmp_path / "mainlog")], timezone="UTC")
    last = [s for s in result.connections() if s.attrs.get("client.address") == "127.0.0.4"]
    assert len(last) == 1 and last[0].status_error == "log ended"


def test_garbage_never_crashes_and_is_counted(tmp_path: Path) -> None:
    lines = (FIX / "rich.mainlog").read_text().splitlines()
    junk = ["2026-11-22 03:00:16.300 +0000 [1] <=broken", "\x00\x01binary",
            "2026-11-22 03:00:17 H=(x) [1.2.3.4",
            "2026-11-22 03:00:18 1xUxoO-0002fg-0q == x defer (", "2026-11-22 03:00:19 SMTP connection from"]
    mixed = [x for two in zip(lines, junk + [None] * len(lines), strict=False) for x in two if x is not None]
    (tmp_path / "mainlog").write_bytes(("\n".join(mixed) + "\n").encode() + b"\xff\xfe bad utf-8\n")
    result = run_pipeline([str(tmp_path / "mainlog")], timezone="UTC")
    clean, _ = load("rich")
    assert result.counters.unparsed == len(junk) + 1
    assert len(result.connections()) == len(clean.connections())
    assert len(result.deliveries()) == len(clean.deliveries())


_ALL_LINES = [line for p in sorted(FIX.glob("*log")) for line in p.read_text().splitlines()]
_NOISE = [" ", ":", ": ", "=", "<", ">", "[", "]", "(", ")", '"', "H=", " D=1s", " DT=0.1s", " rejected ",
          "\t", " for ", "*", "é", " Ci=7", " U=root", " R=1xUxoU-0002iJ-2t", " P=esmtps", " X=TLS1.2:A:1",
          "x"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_ALL_LINES), st.integers(0, 300), st.sampled_from(_NOISE),
                          st.integers(0, 3), st.booleans()), min_size=1, max_size=80),
       st.integers(0, 80))
def test_any_order_and_damage_never_breaks_the_correlator(picks: list, restart_at: int) -> None:
    """Real lines in any order, some damaged, with a save/restore in the middle: every output is a
    record the pipeline knows, and nothing raises."""
    grammar = Grammar([exim_grammar])
    framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
    corr = EximCorrelator()
    outs = []
    for i, (line, at, noise, cut, damage) in enumerate(picks):
        if i == restart_at:
            state = json.loads(json.dumps(corr.save_state()))
            corr = EximCorrelator()
            corr.load_state(state)
        text = line[:at] + noise + line[at + cut:] if damage else line
        rec = framer.frame(text, 0)
        ev = grammar.parse(rec) if rec is not None else None
        if ev is not None:
            outs += corr.feed(ev)
    outs += corr.finish()
    assert all(type(o).__name__ in ("Connection", "Delivery", "Count", "MessageDone") for o in outs)
    assert corr.open_counts()["sessions"] == 0


def test_both_id_formats_in_one_log(tmp_path: Path) -> None:
    """A log spanning the upgrade to 4.97: messages received after it get 23-character IDs while the
    deferred ones from before keep theirs (their spool files stay valid); nothing else changes."""
    text = (FIX / "default.mainlog").read_text()
    later = {m[1] for m in re.finditer(r"^\S+ \S+ (\S+) <= ", text, re.M)}
    later -= {m[1] for m in re.finditer(r"^\S+ \S+ (\S+) == ", text, re.M)}  # deferred: old IDs stay
    mixed = _OLD_ID.sub(lambda m: f"{m[1]}-{m[2].rjust(11, '0')}-{m[3].rjust(4, '0')}" if m[0] in later
                        else m[0], text)
    assert "-000000002" in mixed and "1xUxng-0002TS-2f ==" in mixed
    (tmp_path / "mainlog").write_text(mixed)
    result = run_pipeline([str(tmp_path / "mainlog")], timezone="UTC")
    original, _ = load("default")
    assert result.counters.unparsed == 0
    assert _normalised(result) == _normalised(original)


def _fixture_outputs(name: str, settings: CorrelateSettings) -> list:
    grammar = Grammar([exim_grammar])
    framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
    corr = EximCorrelator(settings)
    out = []
    for line in (FIX / f"{name}.mainlog").read_text().splitlines():
        ev = grammar.parse(framer.frame(line, 0))  # type: ignore[arg-type]
        if ev is not None:
            out += corr.feed(ev)
    return out + corr.finish()


def _metric_facts(o: Any) -> tuple[Any, ...]:
    """What metrics read of an output (``Aggregator.connection``/``delivery``/``count``)."""
    if isinstance(o, Connection):
        return ("c", o.host, o.start_ns, o.end_ns, o.commands, o.auth, o.duration_known)
    if isinstance(o, Delivery):
        return ("d", o.host, o.end_ns, o.result, o.counted)
    assert isinstance(o, Count), o
    return ("n", o.host, o.ts_ns, o.result, o.size_bytes, o.reason)


@pytest.mark.parametrize("name", SETS)
def test_without_span_events_same_metric_facts(name: str) -> None:
    """No span exported (``span_events=False``): the same connections, deliveries and counts, with
    the same times, command and AUTH counts (what the metrics read) and IDs (--logs' records carry
    them); no events, no span attributes, no ``MessageDone`` (only the stitcher reads it)."""
    full = [o for o in _fixture_outputs(name, CorrelateSettings()) if not isinstance(o, MessageDone)]
    lean = _fixture_outputs(name, CorrelateSettings(span_events=False))
    assert any(isinstance(o, Connection) for o in full)
    assert [_metric_facts(o) for o in full] == [_metric_facts(o) for o in lean]
    for a, b in zip(full, lean, strict=True):
        if isinstance(a, Connection | Delivery):
            assert (b.trace_id, b.span_id) == (a.trace_id, a.span_id)
            assert b.parent_span_id == a.parent_span_id and b.error == a.error
        if isinstance(a, Connection):
            assert b.events == [] and not any(k.startswith("smtp.command.") for k in b.attrs)
        if isinstance(a, Delivery):
            assert b.attrs == {} and b.start_ns == b.end_ns


@pytest.mark.parametrize("name", SETS)
def test_without_ids_same_metric_facts(name: str) -> None:
    """Nothing reads an ID (no spans, no --logs, a backfill): none is hashed, the metrics are the same."""
    with_ids = _fixture_outputs(name, CorrelateSettings(span_events=False))
    without = _fixture_outputs(name, CorrelateSettings(span_events=False, span_ids=False))
    assert [_metric_facts(o) for o in without] == [_metric_facts(o) for o in with_ids]
    assert all(o.trace_id == b"" and not o.span_id for o in without if isinstance(o, Connection | Delivery))


def _pieces(message: str, size: int) -> list[str]:
    """What Exim's syslog writer (log.c) sends for a message longer than its limit: '[i/n] piece'."""
    chunks = [message[k:k + size] for k in range(0, len(message), size)]
    return [f"[{i}/{len(chunks)}] {c}" for i, c in enumerate(chunks, 1)] if len(chunks) > 1 else chunks


def test_syslog_pieces_of_long_entries_are_joined(tmp_path: Path) -> None:
    """Through syslog Exim splits long entries into '[i/n]' pieces (870 characters in Exim; 70 here,
    so most lines split): joined again, the log correlates like the native one, and every physical
    line is counted as parsed. A set cut short gives its pieces back, counted as unparsed."""
    native, _ = load("rich")
    lines = []
    for line in (FIX / "rich.mainlog").read_text().splitlines():
        pid = re.search(r"\[(\d+)\]", line)[1]  # type: ignore[index]
        lines += [f"Nov 22 {line[11:19]} mx exim4[{pid}]: {piece}" for piece in _pieces(line, 70)]
    # a newline-split entry: its second line is the entry's own next line, as in the file
    lines.append("Nov 22 03:10:00 mx exim4[999]: [1\\2] 2026-11-22 03:10:00.000 +0000 [999] "
                 "1xUxoP-0002fx-0t Completed")
    lines.append("Nov 22 03:10:00 mx exim4[999]: [2/2]   continuation text")
    # a set whose last piece never came, then the log ends
    lines.append("Nov 22 03:10:01 mx exim4[998]: [1/3] 2026-11-22 03:10:01.000 +0000 [998] 1xUxoP-0002f")
    lines.append("Nov 22 03:10:01 mx exim4[998]: [2/3] y-0t Completed")
    (tmp_path / "mail.log").write_text("\n".join(lines) + "\n")
    joined = run_pipeline([str(tmp_path / "mail.log")], timezone="UTC", year=2026)
    c = joined.counters
    assert sum(1 for x in lines if "]: [1/" in x) > 50  # many entries really were split
    assert c.lines == len(lines) and c.parsed + c.known + c.unparsed + c.foreign == c.lines
    assert c.unparsed == 2  # the two pieces of the broken set, counted, not dropped
    assert c.parsed + c.known == len(lines) - 2
    assert _sessions(joined) == _sessions(native)
    assert _outcomes(joined) == _outcomes(native)


def test_state_saved_with_extra_counts_in_attributes_loads() -> None:
    """Before ``Session.extra`` the commands only rejection lines prove were kept as ``exim.extra.*``
    attributes: such a saved session loads with them as counts, not as span attributes."""
    from maillog2otel.correlate.exim_span import Session, build_connection

    s = Session("k", "mx", b"t" * 16, b"s" * 8, NS, NS, attrs={"mta.name": "exim", "exim.extra.ehlo": 2})
    d = s.state()
    loaded = Session.from_state(d)
    assert loaded.extra == {"ehlo": 2} and loaded.attrs == {"mta.name": "exim"}
    assert d["attrs"] == {"mta.name": "exim", "exim.extra.ehlo": 2}  # the saved state is left as it was
    c = build_connection(loaded)
    assert c.commands["ehlo"] == 2 and "exim.extra.ehlo" not in c.attrs
