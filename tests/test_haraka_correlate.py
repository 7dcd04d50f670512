"""Reconstructed Haraka connections and deliveries against what the clients really did
(fixtures/haraka/*.truth.json), in every format and at INFO and PROTOCOL level; the telemetry of
the Haraka OpenTelemetry plugin, level by level; the same telemetry from the three formats."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from maillog2otel.grammars import haraka

from maillog2otel.correlate.base import CorrelateSettings
from maillog2otel.correlate.haraka import HarakaCorrelator
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.parse import Grammar
from maillog2otel.records import Connection, Count, Delivery, SpanData
from maillog2otel.testing import Result, run_pipeline

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "haraka"
SETS = sorted(p.stem for p in FIX.glob("*.log"))
STAMPED = [s for s in SETS if "notimestamps" not in s]
NS = 1_000_000_000
UUID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
_CACHE: dict[str, tuple[Result, dict]] = {}


def load(name: str) -> tuple[Result, dict]:
    if name not in _CACHE:
        _CACHE[name] = (run_pipeline([str(FIX / f"{name}.log")], timezone="UTC"),
                        json.loads((FIX / f"{name}.truth.json").read_text()))
    return _CACHE[name]


def events(span: SpanData, name: str) -> list[dict]:
    return [e.attrs for e in span.events if e.name == name]


def pair(result: Result, truth: dict) -> list[tuple[dict, SpanData]]:
    """Truth connections and spans, matched by the client's port (the ``connect`` line's)."""
    spans = {s.attrs["client.port"]: s for s in result.connections()}
    assert len(spans) == len(truth["connections"])
    return [(c, spans[c["client_port"]]) for c in truth["connections"]]


@pytest.mark.parametrize("name", SETS)
def test_every_connection_matches_the_client(name: str) -> None:
    result, truth = load(name)
    protocol = truth["settings"]["log.level"] == "protocol"
    for conn, span in pair(result, truth):
        label, a = conn["name"], span.attrs
        assert a["client.address"] == conn["client_address"], label
        assert (a["server.address"], a["server.port"]) == tuple(truth["server"].values())
        if name in STAMPED:  # millisecond stamps on both sides of the same loopback
            assert abs(span.start_ns / NS - conn["start_unix"]) < 0.05, label
            assert abs(span.end_ns / NS - conn["end_unix"]) < 0.05, label
        else:  # no times in the log: the span lasts what disconnect's time= says
            assert abs((span.end_ns - span.start_ns) / NS - (conn["end_unix"] - conn["start_unix"])) < 0.05
        assert (span.status_error is not None) == (conn["end"] == "drop"), label
        assert bool(a.get("smtp.tls")) == conn["tls"], label
        assert ("tls.protocol.version" in a) == conn["tls"], label
        assert a["smtp.helo_host"] == conn["helo"], label
        verbs = {e.name for e in span.events if e.name in ("smtp.helo", "smtp.ehlo")}
        assert verbs == {f"smtp.{conn['helo_verb'].lower()}"}, label
        txns = conn["transactions"]
        mails = events(span, "smtp.mail")
        assert [(m["smtp.mail_from"], m["smtp.response.code"]) for m in mails] == \
            [(t["mail_from"], t["mail_code"]) for t in txns], label
        rcpts = events(span, "smtp.rcpt")
        assert [(e["smtp.rcpt_to"], e["smtp.response.code"], e["smtp.rcpt.accepted"]) for e in rcpts] == \
            [(r["to"], r["code"], r["code"] < 300) for t in txns for r in t["rcpts"]], label
        refused = [(e["smtp.reject.stage"], e["smtp.response.code"]) for e in events(span, "smtp.reject")]
        want = [("RCPT", r["code"]) for t in txns for r in t["rcpts"] if r["code"] >= 400]
        if protocol:  # only the conversation shows a refused DATA command (INFO: errors=1 and lr=)
            want += [("DATA", t["data_code"]) for t in txns if t["data_code"] and t["data_code"] >= 400]
        assert sorted(refused) == sorted(want), label
        queued = [t for t in txns if t["data_code"] == 250]
        assert [e["smtp.queue_id"] for e in events(span, "smtp.queue_ok")] == [t["queue_id"] for t in queued]
        sizes = {e["smtp.queue_id"]: e["smtp.message.size_bytes"] for e in events(span, "smtp.data")}
        assert sizes == {t["queue_id"]: t["size_bytes"] for t in queued}, label  # size= less ".\r\n"
        assert a["smtp.transactions"] == sum(1 for t in txns if t["mail_code"] == 250), label
        assert a["smtp.messages_queued"] == len(queued), label
        if queued:
            assert a["smtp.message.size_bytes"] == queued[-1]["size_bytes"], label
        resets = events(span, "smtp.reset_transaction")
        assert len(resets) == len(txns), label  # Haraka resets each transaction exactly once
        assert all(e.get("smtp.event.inferred", False) is not protocol for e in resets), label


@pytest.mark.parametrize("name", SETS)
def test_every_outcome_is_a_delivery_span_in_the_connections_trace(name: str) -> None:
    result, truth = load(name)
    conn_of = {e["smtp.queue_id"]: s for s in result.connections() for e in events(s, "smtp.queue_ok")}
    by_rcpt: dict[tuple[str, str], list[SpanData]] = {}
    for d in result.deliveries():
        if d.attrs["smtp.message.origin"] == "smtpd":
            by_rcpt.setdefault((d.attrs["smtp.queue_id"], d.attrs["smtp.rcpt_to"]), []).append(d)
    relayed = {q for q, _ in by_rcpt}
    for qid, outcomes in truth["outcomes"].items():
        conn = conn_of[qid]
        for o in outcomes:
            attempts = sorted(by_rcpt.get((qid, o["to"]), []), key=lambda d: d.end_ns)
            if qid not in relayed:  # taken by a queue plugin: the queue_ok is the end of the story
                assert o["result"] == "delivered" and not attempts
                continue
            assert attempts[-1].attrs["smtp.result"] == o["result"], (qid, o)
            assert (attempts[-1].status_error is not None) == (o["result"] == "bounced")
            for d in attempts:  # retries, days later in real life, stay under the connection
                assert (d.trace_id, d.parent_span_id) == (conn.trace_id, conn.span_id)
                assert d.attrs["smtp.mail_from"] == events(conn, "smtp.mail")[0]["smtp.mail_from"]
            assert [d.attrs["haraka.outbound.attempt"] for d in attempts] == list(range(1, len(attempts) + 1))
            temp = o["to"].startswith("tmp") or o["to"].endswith("@defer.test")
            retries = len(truth["settings"]["outbound.temp_fail_intervals"].split(","))
            assert [d.attrs["smtp.result"] for d in attempts[:-1]] == ["deferred"] * (retries if temp else 0)
    assert len(relayed) == 2  # scenarios 4 and 5


@pytest.mark.parametrize("name", SETS)
def test_bounces_haraka_made_are_their_own_traces(name: str) -> None:
    """Haraka 3.3.4 logs ``Created transaction: X`` with uuid ``-``: nothing ties a DSN to the item
    that bounced but being logged after it, so it is a root span of its own trace, not a guess."""
    result, truth = load(name)
    bounced_items = {(q, o["to"].split("@")[1]) for q, os in truth["outcomes"].items() for o in os
                     if o["result"] == "bounced"}
    dsns = [d for d in result.deliveries() if d.attrs["smtp.message.origin"] != "smtpd"]
    assert len(dsns) == len(bounced_items)
    conn_traces = {s.trace_id for s in result.connections()}
    for d in dsns:
        assert d.parent_span_id is None and d.trace_id not in conn_traces
        assert "smtp.parent_queue_id" not in d.attrs and d.attrs["smtp.result"] == "delivered"
        if truth["settings"]["log.level"] == "protocol":  # the wire names sender and recipient
            assert d.attrs["smtp.mail_from"] == "" and d.attrs["smtp.rcpt_to"] == "sender@relay.test"
            assert d.attrs["smtp.message.origin"] == "bounce"  # Haraka's own mail from <>
        else:  # Haraka's own mail; nothing at INFO says to whom or that it is a bounce
            assert "smtp.rcpt_to" not in d.attrs and d.attrs["smtp.message.origin"] == "local"


@pytest.mark.parametrize("name", SETS)
def test_metric_totals(name: str) -> None:
    """``haraka.messages``: queued once per transaction, delivered/deferred/bounced once per
    verdict of a queue item (the plugin's delivered/deferred/bounce hooks), rejected per refusal."""
    result, truth = load(name)
    conns = truth["connections"]
    queued = [t for c in conns for t in c["transactions"] if t["data_code"] == 250]
    retries = len(truth["settings"]["outbound.temp_fail_intervals"].split(","))
    items: dict[tuple[str, str], set[str]] = {}
    for qid, outcomes in truth["outcomes"].items():
        for o in outcomes:
            items.setdefault((qid, o["to"].split("@")[1]), set()).add(o["to"])
    relayed = {d.attrs["smtp.queue_id"] for d in result.deliveries()}
    items = {k: v for k, v in items.items() if k[0] in relayed}
    temp = [k for k, v in items.items() if any(r.startswith("tmp") or r.endswith("@defer.test") for r in v)]
    refused = [k for k, v in items.items() if any(r.startswith("bad") for r in v)]
    first_ok = [k for k, v in items.items() if any(not r.startswith(("tmp", "bad", "d1")) for r in v)]
    dsns = len(temp) + len(refused)
    total = result.metric_total
    assert total("haraka.messages", {"smtp.result": "queued"}) == len(queued)
    assert total("haraka.messages", {"smtp.result": "delivered"}) == len(first_ok) + dsns
    assert total("haraka.messages", {"smtp.result": "deferred"}) == retries * len(temp)
    assert total("haraka.messages", {"smtp.result": "bounced"}) == dsns
    rejected = sum(1 for c in conns for t in c["transactions"] for r in t["rcpts"] if r["code"] >= 400)
    assert total("haraka.messages", {"smtp.result": "rejected"}) == rejected
    assert total("haraka.connections") == len(conns)
    assert total("haraka.connection.duration") == len(conns)
    assert total("haraka.message.size") == len(queued)
    sizes = [p for m in result.metrics if m.name == "haraka.message.size" for p in m.points]
    assert max(sizes, key=lambda p: p.time_ns).total == sum(t["size_bytes"] for t in queued)


def _truth_commands(conns: list[dict]) -> dict[str, int]:
    """How often each hook ran, from the client's side: one per command Haraka took up."""
    n: dict[str, int] = {}
    for c in conns:
        for r in c["replies"]:
            verb = r["cmd"].split(" ", 1)[0].lower()
            hooks = {"ehlo": ["ehlo"], "helo": ["helo"], "mail": ["mail"], "rcpt": ["rcpt"],
                     "quit": ["quit"], "rset": ["rset"], "<message>": ["data_post"],
                     # every AUTH step (the command, each answer to a 334) runs the hook auth/* answers
                     "auth": ["unrecognized_command"], "[user]": ["unrecognized_command"],
                     "[password]": ["unrecognized_command"]}.get(verb, [])
            if verb == "data" and r["code"] == 354:
                hooks = ["data"]
            if verb == "rcpt" and r["code"] < 300:
                hooks = ["rcpt", "rcpt_ok"]
            if verb == "<message>" and r["code"] == 250:
                hooks = ["data_post", "queue_ok"]
            for h in hooks:
                n[h] = n.get(h, 0) + 1
        n["connect_init"] = n.get("connect_init", 0) + 1
        n["disconnect"] = n.get("disconnect", 0) + 1
        n["reset_transaction"] = n.get("reset_transaction", 0) + len(c["transactions"])
    return n


def _hooks(result: Result) -> dict[str, float]:
    return {p.attrs["haraka.hook"]: p.value for m in result.metrics if m.name == "haraka.hook.total"
            for p in m.points}


@pytest.mark.parametrize("name", SETS)
def test_hook_totals_count_what_the_level_proves(name: str) -> None:
    """PROTOCOL (with DEBUG): every ``running X hooks`` line, so exactly what ran. INFO: only hooks
    its lines prove, never more than ran; EHLO once however often it was sent (STARTTLS)."""
    result, truth = load(name)
    hooks, ran = _hooks(result), _truth_commands(truth["connections"])
    if truth["settings"]["log.level"] == "protocol":
        for hook, n in ran.items():
            assert hooks[hook] == n, hook
        assert {"connect", "lookup_rdns", "capabilities"} <= set(hooks)
        return
    for hook, n in ran.items():
        if hook in ("quit", "rset"):  # INFO logs neither command
            assert hook not in hooks, hook
        elif hook == "ehlo":
            ehlo_connections = sum(1 for c in truth["connections"] if c["helo_verb"] == "EHLO")
            assert hooks[hook] == ehlo_connections
            # a second EHLO (after STARTTLS) is not visible
            starttls = any(c["tls"] for c in truth["connections"])
            assert ehlo_connections < n if starttls else ehlo_connections == n
        else:
            assert hooks[hook] == n, hook
    assert "capabilities" not in hooks


# The plugin's telemetry (README of haraka-plugin-opentelemetry) and where each item comes from at
# each level: "logged" = a line of that level proves it and dates it; "inferred" = the event is
# certain from Haraka's code and the lines around it, dated by the best line, marked inferred.
PLUGIN_EVENTS = {
    "info": {"smtp.helo": "inferred", "smtp.ehlo": "inferred", "smtp.mail": "logged", "smtp.rcpt": "logged",
             "smtp.data": "logged", "smtp.queue": "logged", "smtp.queue_ok": "logged",
             "smtp.reset_transaction": "inferred"},
    "protocol": {"smtp.helo": "logged", "smtp.ehlo": "logged", "smtp.mail": "logged", "smtp.rcpt": "logged",
                 "smtp.data": "logged", "smtp.queue": "logged", "smtp.queue_ok": "logged",
                 "smtp.reset_transaction": "logged"},
}
PLUGIN_ATTRS = ["client.address", "client.port", "server.address", "server.port", "smtp.message.size_bytes"]
PLUGIN_METRICS = {"haraka.connections": ("sum", "{connection}"), "haraka.hook.total": ("sum", "{call}"),
                  "haraka.connection.duration": ("histogram", "ms"),
                  "haraka.message.size": ("histogram", "By"), "haraka.messages": ("sum", "{message}"),
                  "haraka.up": ("gauge", "1")}


@pytest.mark.parametrize(("name", "event"), [(n, e) for n in SETS for e in PLUGIN_EVENTS["info"]])
def test_plugin_span_events(name: str, event: str) -> None:
    result, truth = load(name)
    how = PLUGIN_EVENTS[truth["settings"]["log.level"]][event]
    found = [e for s in result.connections() for e in s.events if e.name == event]
    if event == "smtp.helo" and not any(c["helo_verb"] == "HELO" for c in truth["connections"]):
        assert not found  # the AUTH set's clients all say EHLO
        return
    assert found, event
    assert all(e.attrs.get("smtp.event.inferred", False) == (how == "inferred") for e in found)


@pytest.mark.parametrize(("name", "attr"), [(n, a) for n in SETS for a in PLUGIN_ATTRS])
def test_plugin_span_attributes(name: str, attr: str) -> None:
    result, truth = load(name)
    for conn, span in pair(result, truth):
        queued = any(t["data_code"] == 250 for t in conn["transactions"])
        assert (attr in span.attrs) == (queued or attr != "smtp.message.size_bytes"), (conn["name"], attr)


@pytest.mark.parametrize(("name", "metric"), [(n, m) for n in SETS for m in PLUGIN_METRICS])
def test_plugin_metrics(name: str, metric: str) -> None:
    result, _ = load(name)
    kind, unit = PLUGIN_METRICS[metric]
    data = [m for m in result.metrics if m.name == metric]
    assert data and {(m.kind, m.unit) for m in data} == {(kind, unit)}
    points = [p for m in data for p in m.points]
    if metric == "haraka.up":
        assert {p.value for p in points} == {1}
    if metric == "haraka.hook.total":
        assert all(set(p.attrs) == {"haraka.hook"} for p in points)
    if metric == "haraka.messages":
        # the AUTH set queues two messages, both delivered, and refuses nothing but logins
        results = {"queued", "delivered"} if name.startswith("auth-") else {
            "queued", "delivered", "deferred", "bounced", "rejected"}
        assert {p.attrs["smtp.result"] for p in points} == results


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        value = UUID.sub("U", value)
        return re.sub(r"SINK\d+|\d{13}_\d{13}_\d+_\d+_\w+?_\d+_vm", "X", value)
    return value


def _telemetry(name: str) -> tuple[list, list, dict]:
    return _telemetry_of(load(name)[0])


def _telemetry_of(result: Result) -> tuple[list, list, dict]:
    """What a run sends, without IDs, times, client ports, timings and the run's UUIDs."""
    skip = {"client.port", "haraka.uuid", "smtp.delay_s", "haraka.queue_file", "haraka.duration_s"}
    conns = sorted((sorted((k, _masked(v)) for k, v in s.attrs.items() if k not in skip),
                    sorted((e.name, sorted((k, _masked(v)) for k, v in e.attrs.items())) for e in s.events),
                    s.status_error) for s in result.connections())
    dels = sorted([*sorted((k, _masked(v)) for k, v in d.attrs.items() if k not in skip),
                   ("error", d.status_error)] for d in result.deliveries())
    totals = {(m.name, json.dumps(p.attrs)): p.count if m.kind == "histogram" else p.value
              for m in result.metrics for p in m.points if m.name != "haraka.connection.duration"}
    return conns, dels, totals


@pytest.mark.parametrize("level", ["info", "protocol"])
def test_the_three_formats_give_the_same_telemetry(level: str) -> None:
    default = _telemetry(f"{level}-default")
    assert _telemetry(f"{level}-logfmt") == default
    assert _telemetry(f"{level}-json") == default


def test_a_log_without_times_gives_the_same_telemetry_but_no_times() -> None:
    stamped, bare = load("info-default")[0], load("info-default-notimestamps")[0]
    assert _telemetry("info-default-notimestamps")[1:] == _telemetry("info-default")[1:]
    assert all(s.start_ns == 0 for s in bare.connections())  # no time seen: none invented
    assert all(s.start_ns > 1.7e18 for s in stamped.connections())


def test_ids_are_a_function_of_the_log() -> None:
    one = run_pipeline([str(FIX / "protocol-json.log")], timezone="UTC")
    two = run_pipeline([str(FIX / "protocol-json.log")], timezone="Europe/Paris")  # stamps carry Z
    key = sorted((s.trace_id, s.span_id, s.parent_span_id, s.start_ns) for s in one.spans)
    assert key == sorted((s.trace_id, s.span_id, s.parent_span_id, s.start_ns) for s in two.spans)
    assert len({s.span_id for s in one.spans}) == len(one.spans)


# --- lines the fixtures cannot have: built from real fixture lines the way Haraka writes them --------

def _feed(lines: list[str], correlator: HarakaCorrelator | None = None) -> tuple[list[Any], HarakaCorrelator]:
    g, c = Grammar([haraka]), correlator or HarakaCorrelator()
    f = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
    out: list[Any] = []
    for text in lines:
        rec = f.frame(text, 0)
        ev = g.parse(rec) if rec is not None else None
        if ev is not None:
            out.extend(c.feed(ev))
    return out, c


def _connection(name: str, scenario: str) -> list[str]:
    """The lines of one scenario's connection, in log order."""
    truth = json.loads((FIX / f"{name}.truth.json").read_text())
    port = next(c["client_port"] for c in truth["connections"] if c["name"] == scenario)
    lines = (FIX / f"{name}.log").read_text().splitlines()
    uuid = next(UUID.search(ln)[0] for ln in lines if f"port={port} " in ln)  # type: ignore[index]
    return [ln for ln in lines if uuid in ln]


def test_multi_line_record_is_joined_before_it_is_used() -> None:
    """Haraka up to 3.1 wrote a line break inside ``lr=`` as it was (haraka.md §2.6): the disconnect
    record then ends in the middle of lr, and its last pairs are on an untagged line."""
    lines = _connection("info-default", "inbound-accept-and-reject")
    last = lines[-1]
    assert ' lr="550 I cannot' in last
    head, _, tail = last.partition(' lr="550 ')
    out, c = _feed([*lines[:-1], f'{head} lr="550', tail,
                    "2026-11-22T03:09:59.000Z [NOTICE] [-] [core] Shutting down."])
    span = next(o for o in out + c.finish() if isinstance(o, Connection))
    assert span.attrs["haraka.last_reject"] == "550\n" + tail.split('"')[0]
    assert span.attrs["haraka.txns"] == 1 and c.stats.counts["continuation_line"] == 1
    assert float(span.attrs["haraka.duration_s"]) == float(tail.rsplit("time=", 1)[1])


def test_haproxy_connect_ip_is_the_proxy() -> None:
    """connection.js: ``connect ip=`` names the proxy; the client is in the PROXY header (INFO
    ``HAProxy`` line) and in ``disconnect ip=``."""
    lines = _connection("info-default", "inbound-clean")
    connect = next(i for i, ln in enumerate(lines) if "] connect ip=" in ln)
    stamp, uuid = lines[connect][:24], UUID.search(lines[connect])[0]  # type: ignore[index]
    lines.insert(connect + 1, f"{stamp} [INFO] [{uuid}] [core] HAProxy proto=TCP4 src_ip=198.51.100.7:40123 "
                              "dst_ip=192.0.2.25:25")
    lines[-1] = lines[-1].replace("disconnect ip=127.0.0.2", "disconnect ip=198.51.100.7")
    out, c = _feed(lines)
    span = next(o for o in out + c.finish() if isinstance(o, Connection))
    assert (span.attrs["client.address"], span.attrs["client.port"]) == ("198.51.100.7", 40123)
    assert (span.attrs["server.address"], span.attrs["server.port"]) == ("192.0.2.25", 25)
    assert span.attrs["haraka.proxy.address"] == "127.0.0.2"


def test_a_bounce_is_linked_when_the_log_names_the_item_it_came_from() -> None:
    """Haraka meant ``Created transaction: X`` to carry the bouncing item's UUID (origin option,
    haraka/Haraka#2314); a version where that works lets us link X to it, and only then."""
    lines = (FIX / "info-default.log").read_text().splitlines()
    fixed, bouncing = [], None
    for ln in lines:
        if "bouncing mail:" in ln:
            bouncing = re.search(r"\[([0-9A-F-]{36}\.\d+\.\d+)\]", ln)[1]  # type: ignore[index]
        linked = bouncing and ("Created transaction" in ln or "Sending email via params" in ln)
        fixed.append(ln.replace("[-] [outbound]", f"[{bouncing}] [outbound]") if linked else ln)
    out, c = _feed(fixed)
    out += c.finish()
    conns = {o.attrs["haraka.uuid"]: o for o in out if isinstance(o, Connection)}
    dsns = [o for o in out if isinstance(o, Delivery) and o.attrs["smtp.message.origin"] == "bounce"]
    assert len(dsns) == 3
    for d in dsns:
        parent = conns[d.attrs["smtp.parent_queue_id"].split(".")[0]]
        assert (d.trace_id, d.parent_span_id) == (parent.trace_id, parent.span_id)


def test_state_survives_a_restart_mid_log() -> None:
    """``tail`` saves the correlator's state as JSON and loads it on restart: the same telemetry."""
    lines = (FIX / "protocol-default.log").read_text().splitlines()
    whole, c1 = _feed(lines)
    whole += c1.finish()
    cut = next(i for i, ln in enumerate(lines) if "Temp failing" in ln)  # mid-connection, mid-retry
    first, c2 = _feed(lines[:cut])
    restarted = HarakaCorrelator()
    restarted.load_state(json.loads(json.dumps(c2.save_state())))
    second, c3 = _feed(lines[cut:], restarted)
    second += c3.finish()

    def key(outs: list[Any]) -> list:
        return sorted((type(o).__name__, getattr(o, "span_id", b""), getattr(o, "end_ns", 0),
                       str(sorted(getattr(o, "attrs", {}).items()))) for o in outs)
    assert key(first + second) == key(whole)


def test_garbage_never_crashes_a_run(tmp_path: Path) -> None:
    lines = (FIX / "info-json.log").read_text().splitlines()
    junk = ["", "\x00\x01", "[NOTICE] [", '{"level":"NOTICE","uuid":',
            'level=INFO uuid=- origin=core message="',
            "[NOTICE] [A1627879-2DB5-4FCB-BB4C-AF7F04776A49.1.9] [outbound]  delivered rcpts=x/y",
            "[INFO] [A1627879-2DB5-4FCB-BB4C-AF7F04776A49.7] [core] queue code=OK msg=",
            "[NOTICE] [A1627879-2DB5-4FCB-BB4C-AF7F04776A49] [core] disconnect time=abc",
            "[NOTICE] [-] [outbound] Created transaction: 00000000-0000-0000-0000-000000000000"]
    mixed = [x for pair in zip(lines, junk * (len(lines) // len(junk) + 1), strict=False) for x in pair]
    path = tmp_path / "mixed.log"
    path.write_bytes("\n".join(mixed).encode() + b"\n\xff\xfe broken utf-8\n")
    result = run_pipeline([str(path)], timezone="UTC")
    assert len(result.connections()) == 8


def test_a_connection_without_disconnect_ends_with_the_log() -> None:
    lines = _connection("info-default", "inbound-clean")[:-1]
    out, c = _feed(lines)
    span = next(o for o in out + c.finish() if isinstance(o, Connection))
    assert span.error == "log ended"


def test_counters_settle_a_recipient_when_nothing_else_does() -> None:
    """No disconnect line (so no relay flag) and no hook=rcpt line for the refused recipient: the
    message line's rcpts=1/0/1 leaves one reading of its two ``code=OK`` recipients."""
    lines = _connection("info-default", "inbound-accept-and-reject")[:-1]
    out, c = _feed(lines)
    span = next(o for o in out + c.finish() if isinstance(o, Connection))
    rcpts = {e["smtp.rcpt_to"]: e for e in events(span, "smtp.rcpt")}  # type: ignore[arg-type]
    assert rcpts["user2@local.test"]["haraka.rcpt.evidence"] == "hook"
    refused = rcpts["someone@elsewhere.example"]
    assert (refused["smtp.rcpt.accepted"], refused["haraka.rcpt.evidence"]) == (False, "counters")
    assert refused["smtp.response.code"] == 550


def test_a_message_queued_but_never_acknowledged() -> None:
    """fixtures/chain halfclose: Exim half-closes after the final dot; Haraka has handed the message
    to outbound (``queue code=CONT``) but never says OK. It is queued and relayed all the same: not
    a refusal, no ``smtp.queue_ok`` (the client got no 250), its deliveries in its connection's
    trace, counted queued once (at its first queue item)."""
    chain = FIX.parent / "chain"
    truth = json.loads((chain / "halfclose.truth.json").read_text())
    result = run_pipeline([str(chain / "halfclose.haraka.log")], timezone="UTC")
    copies = [c["hops"][0] for m in truth["messages"] for c in m.get("unacknowledged_copies", [])]
    acked = [h for m in truth["messages"] for h in m["hops"] if h["mta"] == "haraka"]
    assert copies and acked
    spans = {s.attrs["client.port"]: s for s in result.connections()}
    for hop in copies:
        span = spans[hop["client_port"]]
        assert span.status_error == "client half closed connection"
        assert [e["smtp.queue_id"] for e in events(span, "haraka.queue.unacknowledged")] == [hop["queue_id"]]
        assert not events(span, "smtp.queue_ok") and not events(span, "smtp.reject")
        mine = [d for d in result.deliveries() if d.attrs["smtp.queue_id"] == hop["queue_id"]]
        assert {d.attrs["haraka.queue_item"] for d in mine} == set(hop["outbound_items"])
        assert {d.attrs["smtp.rcpt_to"] for d in mine} == set(hop["rcpts"])
        assert all((d.trace_id, d.parent_span_id) == (span.trace_id, span.span_id) for d in mine)
    for hop in acked:
        span = spans[hop["client_port"]]
        assert hop["queue_id"] in [e["smtp.queue_id"] for e in events(span, "smtp.queue_ok")]
    assert result.metric_total("haraka.messages", {"smtp.result": "queued"}) == len(copies) + len(acked)
    assert result.metric_total("haraka.messages", {"smtp.result": "rejected"}) == 0


def _copies(lines: list[str], n: int, every_s: int) -> Iterator[list[str]]:
    """``n`` copies of a log, each ``every_s`` later than the one before, every UUID fresh."""
    stamp = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z")
    for k in range(n):
        def later(m: re.Match[str], k: int = k) -> str:
            t = datetime.fromisoformat(m[1]) + timedelta(seconds=every_s * k)
            return t.isoformat(timespec="milliseconds") + "Z"
        yield [UUID.sub(lambda m, k=k: f"{m[0][:24]}{k:012X}", stamp.sub(later, ln)) for ln in lines]


def test_state_stays_bounded_when_every_transaction_completes() -> None:
    """Issue 6: a backfill never ticks, so finished queue items and messages went only at the end;
    and Haraka's own bounces, whose ``Transaction delivery for domain`` lines overlap, never know
    how many items they have, so they never became done. The same episode played again and again
    (one connection never logs its disconnect) must keep the state at a few episodes' worth."""
    lines = [ln for ln in (FIX / "info-default.log").read_text().splitlines() if ln[:4] == "2026"]
    lost = _connection("info-default", "inbound-clean")[-1]
    lines.remove(lost)
    c, idle, sizes = HarakaCorrelator(), 0, []
    for copy in _copies(lines, 40, 300):
        out, _ = _feed(copy, c)
        idle += sum(isinstance(o, Connection) and (o.error or "").startswith("session idle") for o in out)
        sizes.append((len(c.conns), len(c.outbound.messages), len(c.outbound.items)))
    one = sizes[0]
    assert all(conns <= 14 for conns, _, _ in sizes)  # an hour (session_idle) of episodes at most
    assert all(msgs <= 4 * one[1] and items <= 4 * one[2] for _, msgs, items in sizes), sizes
    assert idle >= 40 - 14 and c.stats.counts["session_idle"] == idle
    assert c.open_counts() == {"sessions": len(c.conns), "messages": 0, "queue_items": 0}


def _rewrapped(shape: str) -> list[str]:
    """info-default.log's records as syslog (haraka-plugin-syslog: ``haraka[pid]:``), journald
    (``journalctl -o json``) or tai64nlocal (``multilog``) would have written them."""
    out = []
    for ln in (FIX / "info-default.log").read_text().splitlines():
        m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d:\d\d:\d\d)\.(\d{3})Z (\[.*)", ln)
        if m is None:
            continue  # stdout writes that are not Haraka's logger: not in syslog or the journal
        y, mo, d, hms, ms, record = m.groups()
        if shape == "syslog":
            out.append(f"Nov {int(d):2d} {hms} mx haraka[4242]: {record}")
        elif shape == "journal":
            us = int(__import__("calendar").timegm((int(y), int(mo), int(d), *map(int, hms.split(":"))))) \
                * 1_000_000 + int(ms) * 1000
            out.append(json.dumps({"__REALTIME_TIMESTAMP": str(us), "_HOSTNAME": "mx",
                                   "SYSLOG_IDENTIFIER": "haraka", "_PID": "4242", "MESSAGE": record}))
        else:
            out.append(f"{y}-{mo}-{d} {hms}.{ms}000000  {record}")
    return out


@pytest.mark.parametrize("shape", ["syslog", "journal", "tai64nlocal"])
def test_wrapped_records_give_the_same_telemetry(tmp_path: Path, shape: str) -> None:
    path = tmp_path / f"haraka-{shape}.log"
    path.write_text("\n".join(_rewrapped(shape)) + "\n")
    result = run_pipeline([str(path)], timezone="UTC", year=2026)
    assert result.counters.unparsed == 0 and result.counters.foreign == 0
    want = _telemetry("info-default")
    got = _telemetry_of(result)
    assert got[0] == want[0] and got[1] == want[1]


def _at_level(level: str, tmp_path: Path) -> tuple[Result, dict]:
    """A log at ``level=debug`` or ``level=notice``: Haraka's logger filters by level alone, so it
    is the recorded PROTOCOL (resp. INFO) log without its PROTOCOL (resp. INFO) records; the
    untagged start-up lines stay, naming the level."""
    source = {"debug": "protocol-default", "notice": "info-default"}[level]
    drop = {"debug": " [PROTOCOL] [", "notice": " [INFO] ["}[level]
    lines = [ln.replace("loglevel: PROTOCOL", "loglevel: DEBUG").replace("loglevel: INFO", "loglevel: NOTICE")
             for ln in (FIX / f"{source}.log").read_text().splitlines() if drop not in ln]
    path = tmp_path / f"{level}.log"
    path.write_text("\n".join(lines) + "\n")
    return run_pipeline([str(path)], timezone="UTC"), json.loads((FIX / f"{source}.truth.json").read_text())


def test_debug_level_dates_every_hook_but_shows_no_replies(tmp_path: Path) -> None:
    result, truth = _at_level("debug", tmp_path)
    assert _hooks(result) == _hooks(load("protocol-default")[0])  # running X hooks: all of them
    for conn, span in pair(result, truth):
        helos = [(e.name, e.attrs["smtp.helo_host"]) for e in span.events
                 if e.name in ("smtp.helo", "smtp.ehlo")]
        assert helos == [(f"smtp.{r['cmd'].split()[0]}", r["cmd"].split()[1]) for r in conn["replies"]
                         if r["cmd"].split()[0] in ("ehlo", "helo")], conn["name"]
        assert not any(e.attrs.get("smtp.event.inferred") for e in span.events), conn["name"]
        rcpts = events(span, "smtp.rcpt")
        assert [(e["smtp.rcpt_to"], e["smtp.rcpt.accepted"]) for e in rcpts] == \
            [(r["to"], r["code"] < 300) for t in conn["transactions"] for r in t["rcpts"]], conn["name"]
        assert "smtp.command.ehlo" not in span.attrs  # commands are PROTOCOL lines


def test_notice_level_leaves_undecided_what_it_cannot_tell(tmp_path: Path) -> None:
    """At NOTICE no hook result shows, so ``code=OK`` without relaying proves nothing by itself:
    the last refusal (``lr=``) and the counters decide where they can, else the verdict is left
    open rather than guessed."""
    result, truth = _at_level("notice", tmp_path)
    decided = 0
    for conn, span in pair(result, truth):
        rcpts = events(span, "smtp.rcpt")
        want = [(r["to"], r["code"] < 300) for t in conn["transactions"] for r in t["rcpts"]]
        for e, (to, accepted) in zip(rcpts, want, strict=True):
            assert e["smtp.rcpt_to"] == to
            assert e.get("smtp.rcpt.accepted", accepted) == accepted, (conn["name"], to)
            decided += "smtp.rcpt.accepted" in e
        refused = {e["smtp.rcpt_to"]: e["haraka.rcpt.evidence"] for e in rcpts
                   if e.get("smtp.rcpt.accepted") is False}
        if conn["name"] == "inbound-accept-and-reject":
            assert refused == {"someone@elsewhere.example": "lr"}
    assert decided == sum(len(t["rcpts"]) for c in truth["connections"] for t in c["transactions"]) - 1
    hooks = _hooks(result)
    assert "unrecognized_command" not in hooks and hooks["mail"] == _hooks(load("info-default")[0])["mail"]
    spans = [d for d in result.deliveries() if d.attrs["smtp.message.origin"] == "smtpd"]
    # Temp failing and bouncing mail are INFO lines: at NOTICE only the deliveries show
    assert {d.attrs["smtp.rcpt_to"] for d in spans} == {"ok1@relay.test", "ok2@bounce.test", "ok3@relay.test"}


@pytest.mark.parametrize("refused", ["", "sender", "recipient", "message", "queue"])
def test_without_span_events_the_metrics_inputs_are_the_same(refused: str) -> None:
    """With no span exported the connection is built without its events and a delivery without its
    attributes; what metrics read (hook counts, times, results, and every count in the same order)
    and the IDs (--logs' records carry them) must not change, refusals included: each variant makes
    one kind of line of the fixture a refusal."""
    word = re.compile(rf"(\] {refused} .*code=)(?:CONT|OK)\b") if refused else None
    for name in SETS:
        lines = (FIX / f"{name}.log").read_text().splitlines()
        if word is not None:
            lines = [word.sub(r"\1DENY", ln) for ln in lines]
        full, fc = _feed(lines)
        lean, lc = _feed(lines, HarakaCorrelator(CorrelateSettings(span_events=False)))
        full += fc.finish()
        lean += lc.finish()

        def view(outs: list[Any]) -> list[Any]:
            return [(o.start_ns, o.end_ns, o.commands, o.auth, o.duration_known) if isinstance(o, Connection)
                    else (o.host, o.trace_id, o.span_id, o.parent_span_id, o.end_ns, o.result, o.error,
                          o.counted) if isinstance(o, Delivery) else o for o in outs]

        assert view(lean) == view(full), name
        assert lc.stats.counts == fc.stats.counts
        assert all(o.events == [] for o in lean if isinstance(o, Connection))
        assert all(o.attrs == {} for o in lean if isinstance(o, Delivery))
        # at PROTOCOL the S: reply decides, not the rewritten code; the AUTH set's other lines refuse nothing
        if refused and name != "auth-protocol":
            assert any(isinstance(o, Count) and o.result == "rejected" for o in full), name
