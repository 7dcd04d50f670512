"""AUTH on Exim and Haraka against what the clients really did (the AUTH fixture sets, recorded
from a real Exim with plaintext authenticators and a real Haraka with auth/flat_file): every
attempt the log proves is one ``smtp.auth`` event with the right result, method and user,
``Connection.auth`` counts it with span events on or off, ``<mta>.auth.attempts`` adds up, and
``--redact hash`` hides the attempted user in the events and on the span."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import OtlpHttpReceiver, clean_env, run_cli

from maillog2otel import mtas
from maillog2otel.config import build_settings
from maillog2otel.correlate.base import CorrelateSettings
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.records import Connection, SpanData
from maillog2otel.runner import run_backfill
from maillog2otel.testing import Result, run_pipeline

FIX = Path(__file__).resolve().parent.parent / "fixtures"
# Exim names the authenticator (record.py: fixed_plain is PLAIN, fixed_login LOGIN); a mechanism
# it refuses before any authenticator runs is named as the client sent it
EXIM_NAMES = {"PLAIN": "fixed_plain", "LOGIN": "fixed_login"}
SETS = {  # set -> (files, mta)
    "exim/auth": (["auth.mainlog", "auth.rejectlog"], "exim"),
    "exim/auth-default": (["auth-default.mainlog", "auth-default.rejectlog"], "exim"),
    "haraka/auth-info": (["auth-info.log"], "haraka"),
    "haraka/auth-protocol": (["auth-protocol.log"], "haraka"),
}
_CACHE: dict[tuple[str, str], Result] = {}


def _run(name: str, redact: str = "none") -> Result:
    if (name, redact) not in _CACHE:
        mta_dir = FIX / name.split("/", maxsplit=1)[0]
        settings = build_settings(env={"MAILLOG2OTEL_REDACT_KEY": "test-key"}, exporter="none",
                                  timezone="UTC", redact=redact)
        _CACHE[name, redact] = run_pipeline([str(mta_dir / f) for f in SETS[name][0]], settings=settings)
    return _CACHE[name, redact]


def _truth(name: str) -> dict[str, Any]:
    mta_dir, stem = name.split("/")
    return json.loads((FIX / mta_dir / f"{stem}.truth.json").read_text())


def _span_of(result: Result, conn: dict[str, Any]) -> SpanData | None:
    """The client's connection: by address and port where the log has the port, else by address
    (every AUTH scenario uses its own client address); None when the log has no line of it."""
    spans = [s for s in result.connections() if s.attrs.get("client.address") == conn["client_address"]]
    by_port = [s for s in spans if s.attrs.get("client.port") == conn["client_port"]]
    assert len(by_port or spans) <= 1, conn["name"]
    return (by_port or spans or [None])[0]


def _proved(name: str, conn: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts the log can show. Exim writes no line for a successful AUTH: A= on a later
    line proves it (an arrival, a RCPT rejection, `no MAIL` with +smtp_no_mail) or the refusal of
    a second AUTH ("already authenticated"); with the default selectors a login followed by QUIT
    leaves no line at all."""
    attempts = conn["auth"]
    if name != "exim/auth-default":
        return attempts
    later_line = any(t["mail_code"] == 250 for t in conn["transactions"])
    return [a for a in attempts if a["result"] == "failed" or later_line]


def _expected_event(name: str, attempt: dict[str, Any], level: str) -> dict[str, Any]:
    ok = attempt["result"] == "accepted"
    exp: dict[str, Any] = {"smtp.auth.accepted": ok, "smtp.response.code": attempt["code"]}
    method = attempt["method"]
    if name.startswith("exim/"):
        exp["smtp.auth.method"] = EXIM_NAMES[method] if attempt["code"] in (235, 535) else method
        if attempt["code"] in (235, 535):  # server_set_id names the user in both
            exp["smtp.auth.user"] = attempt["user"]
    else:
        exp["smtp.auth.method"] = method
        # INFO logs LOGIN's first answer (the user); a PLAIN initial response only as params=AUTH
        if level == "protocol" or method == "LOGIN":
            exp["smtp.auth.user"] = attempt["user"]
    return exp


@pytest.mark.parametrize("name", SETS)
def test_every_attempt_is_one_auth_event_with_its_result(name: str) -> None:
    result, truth = _run(name), _truth(name)
    level = truth["settings"].get("log.level", "")
    checked = 0
    for conn in truth["connections"]:
        span = _span_of(result, conn)
        want = _proved(name, conn)
        if span is None:  # Exim's default selectors: a login, then QUIT, writes nothing
            assert name == "exim/auth-default" and not want, conn["name"]
            continue
        got = [e.attrs for e in span.events if e.name == "smtp.auth"]
        assert len(got) == len(want), conn["name"]
        # Exim proves a login by a later line, so its event may come after a later failure:
        # compare as multisets of the attributes the truth settles
        keys = ("smtp.auth.accepted", "smtp.response.code", "smtp.auth.method", "smtp.auth.user")
        rows = sorted(json.dumps({k: e.get(k) for k in keys}, sort_keys=True) for e in got)
        exp = sorted(json.dumps({k: _expected_event(name, a, level).get(k) for k in keys}, sort_keys=True)
                     for a in want)
        assert rows == exp, conn["name"]
        for e in got:
            if not e["smtp.auth.accepted"] and name != "haraka/auth-info":  # INFO: only lr= has a text
                assert e["smtp.auth.reason"], conn["name"]
            assert "set_id" not in e.get("smtp.auth.reason", "")  # the user is not repeated in free text
        checked += len(got)
        accepted = [a for a in want if a["result"] == "accepted"]
        if accepted:  # a successful login stays on the span
            first = _expected_event(name, accepted[0], level)
            assert span.attrs["smtp.auth.method"] == first["smtp.auth.method"]
            if "smtp.auth.user" in first:
                assert span.attrs["smtp.auth.user"] == accepted[0]["user"]
        else:
            assert "smtp.auth.user" not in span.attrs and "smtp.auth.method" not in span.attrs
    assert checked >= 8


@pytest.mark.parametrize("name", SETS)
def test_auth_attempts_counter_adds_up_with_and_without_span_events(name: str) -> None:
    truth, mta = _truth(name), SETS[name][1]
    want = {"accepted": 0, "failed": 0}
    for conn in truth["connections"]:
        for a in _proved(name, conn):
            want[a["result"]] += 1
    assert want["accepted"] >= 3 and want["failed"] >= 5
    result = _run(name)
    got = {r: result.metric_total(f"{mta}.auth.attempts", {"smtp.auth.result": r}) for r in want}
    assert got == want
    # no span exported: the correlator builds no events, and Connection.auth must not change
    main = FIX / name.split("/", maxsplit=1)[0] / SETS[name][0][0]
    for span_events in (True, False):
        grammar, corr = mtas.load(mta, CorrelateSettings(span_events=span_events))
        framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
        out: list[Any] = []
        for line in main.read_text().splitlines():
            rec = framer.frame(line, 0)
            ev = grammar.parse(rec) if rec is not None else None
            if ev is not None:
                out += corr.feed(ev)
        conns = [o for o in out + corr.finish() if isinstance(o, Connection)]
        counted = {r: sum(c.auth.get(r, 0) for c in conns) for r in want}
        assert counted == want, span_events
        assert span_events or all(c.events == [] for c in conns)


@pytest.mark.parametrize("name", SETS)
def test_redact_hash_hides_the_attempted_user(name: str) -> None:
    plain, hashed = _run(name), _run(name, "hash")
    users = {e.attrs["smtp.auth.user"] for s in plain.connections() for e in s.events
             if e.name == "smtp.auth" and "smtp.auth.user" in e.attrs}
    assert users  # the control: without redaction the users are there
    seen = 0
    for s in hashed.connections():
        for value in [s.attrs.get("smtp.auth.user")] + [e.attrs.get("smtp.auth.user") for e in s.events]:
            if value is not None:
                assert value.startswith("h:") and value not in users
                seen += 1
        assert not any(u in json.dumps(e.attrs) for e in s.events for u in users)
    assert seen >= len(users)


def test_exim_never_exports_the_credentials_of_a_refused_auth_command() -> None:
    """Exim quotes a refused AUTH command whole (`SMTP protocol error in "AUTH PLAIN <base64>"`)."""
    raw = (FIX / "exim/auth.mainlog").read_text()
    secret = next(w.rstrip('"') for w in raw.split() if w.startswith("AGFsaWNl"))  # \0alice@…\0password
    for name in ("exim/auth", "exim/auth-default"):
        for s in _run(name).connections():
            text = json.dumps([s.attrs, [e.attrs for e in s.events], s.status_error], default=str)
            assert secret not in text
            assert "AUTH PLAIN" not in text or '"exim.command": "AUTH PLAIN"' in text


def test_haraka_auth_data_lines_are_not_commands() -> None:
    """At PROTOCOL the client's answers to 334 (base64 user and password) are AUTH data."""
    for s in _run("haraka/auth-protocol").connections():
        verbs = {k for k in s.attrs if k.startswith("smtp.command.") and not k.endswith(".ok")}
        assert verbs <= {f"smtp.command.{v}" for v in ("ehlo", "auth", "mail", "rcpt", "data", "quit")}


_B64 = r"[A-Za-z0-9+/]{6,}={0,2}"
_CLIENT_DATA = re.compile(rf'"AUTH \S+ ({_B64})"|\bAUTH PLAIN ({_B64})|params="?({_B64})"?(?=[\s,}}]|$)'
                          rf"|\bC: ({_B64})(?: state=|$)", re.MULTILINE)


@pytest.mark.parametrize("name", SETS)
def test_logs_never_export_the_clients_auth_data(name: str, otlp_http: OtlpHttpReceiver) -> None:
    """--logs sends every line as a log record; the base64 the clients sent in AUTH exchanges
    (PLAIN responses, LOGIN users and passwords), which Exim and Haraka write into their logs,
    is replaced, at every --redact setting."""
    files = [FIX / name.split("/", maxsplit=1)[0] / f for f in SETS[name][0]]
    text = "\n".join(p.read_text() for p in files)
    secrets = {v for m in _CLIENT_DATA.finditer(text) for v in m.groups() if v and v != "AUTH"}
    assert len(secrets) >= (1 if name.startswith("exim/") else 4), secrets
    for redact in ("none", "hash"):
        settings = build_settings(env={"MAILLOG2OTEL_REDACT_KEY": "k"}, endpoint=otlp_http.endpoint,
                                  timezone="UTC", hostname="mx", quiet=True, logs=True, redact=redact)
        assert run_backfill([str(p) for p in files], settings) == 0
        with otlp_http.received.lock:
            data = b"\n".join(otlp_http.received.raw)
            otlp_http.received.raw.clear()
        assert b"[credentials]" in data and (b"authenticator failed" in data or b"delaying for" in data)
        leaked = sorted(s for s in secrets if s.encode() in data)
        assert not leaked, (redact, leaked)


PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMETHEUS is None, reason="the Debian package prometheus is not installed "
                    "(tests/run.sh installs it when run as root on Debian)")
def test_a_real_prometheus_scrapes_the_auth_attempts(tmp_path: Path) -> None:
    """--prometheus exposes N.auth.attempts as N_auth_attempts_total{smtp_auth_result}; a real
    Prometheus scrapes it and gives back the truth file's totals."""
    log = FIX / "exim" / "auth.mainlog"
    truth = _truth("exim/auth")
    want = {r: float(sum(a["result"] == r for c in truth["connections"] for a in c["auth"]))
            for r in ("accepted", "failed")}
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    ours = subprocess.Popen([sys.executable, "-m", "maillog2otel", "backfill", "--timezone", "UTC",
                             "--prometheus", f"127.0.0.1:{ports[0]}", "--exporter", "none", "--quiet",
                             "--linger", "60", str(log)], env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prom = None

    def get(url: str) -> str:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # loopback only
                return resp.read().decode()
        except OSError:
            return ""

    def wait(pred: Any, what: str) -> Any:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if got := pred():
                return got
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    try:
        lines = sum(1 for _ in log.open())
        def all_read() -> bool:
            counts = re.findall(r'^maillog2otel_lines_total\{result="\w+"\} (\d+)$',
                                get(f"http://127.0.0.1:{ports[0]}/metrics"), re.M)
            return sum(map(int, counts)) == lines  # parsed + known + foreign + unparsed

        wait(all_read, "the final values")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
            "scrape_configs:\n  - job_name: m2o\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{ports[0]}']}}]\n")
        prom = subprocess.Popen([str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{ports[1]}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        query = urllib.parse.urlencode({"query": 'exim_auth_attempts_total{job="m2o"}'})
        results = wait(lambda: json.loads(get(f"http://127.0.0.1:{ports[1]}/api/v1/query?{query}")
                                          or '{"data": {"result": []}}')["data"]["result"], "a scrape")
        got = {r["metric"]["smtp_auth_result"]: float(r["value"][1]) for r in results}
        assert got == want and want["accepted"] > 0 and want["failed"] > 0
    finally:
        for proc in (ours, prom):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def test_console_shows_every_attempt_and_the_counter() -> None:
    """The console exporter: one `auth` line per attempt under its connection, the counter in the
    metrics block; with --redact hash no attempted user is printed."""
    log = FIX / "haraka" / "auth-protocol.log"
    truth = _truth("haraka/auth-protocol")
    attempts = [a for c in truth["connections"] for a in c["auth"]]
    users = {a["user"] for a in attempts}
    proc = run_cli("backfill", "--timezone", "UTC", str(log))
    out = proc.stdout.decode()
    assert proc.returncode == 0
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("  auth     ")]
    assert sorted((ln[1], ln[2], int(ln[3]), ln[4]) for ln in lines) == sorted(
        (a["result"], a["method"], a["code"], a["user"]) for a in attempts)
    n_ok = sum(a["result"] == "accepted" for a in attempts)
    assert f"haraka.auth.attempts         accepted={n_ok} failed={len(attempts) - n_ok}" in out
    env = clean_env()
    env["MAILLOG2OTEL_REDACT_KEY"] = "k"
    hashed = run_cli("backfill", "--timezone", "UTC", "--redact", "hash", str(log), env=env).stdout.decode()
    assert hashed.count("  auth     ") == len(attempts) and not any(u in hashed for u in users)


@pytest.mark.parametrize("name", ["auth-info", "auth-protocol"])
def test_haraka_restart_mid_exchange_changes_nothing(name: str) -> None:
    """``tail`` saves the correlator's state and loads it on restart, also in the middle of an
    AUTH exchange: the same events and counts as one uninterrupted run."""
    lines = (FIX / "haraka" / f"{name}.log").read_text().splitlines()

    def run(cut: int | None) -> list[Any]:
        grammar, corr = mtas.load("haraka", CorrelateSettings())
        framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
        out: list[Any] = []
        for i, line in enumerate(lines):
            if i == cut:
                state = json.loads(json.dumps(corr.save_state()))
                grammar, corr = mtas.load("haraka", CorrelateSettings())
                corr.load_state(state)
            rec = framer.frame(line, 0)
            ev = grammar.parse(rec) if rec is not None else None
            if ev is not None:
                out += corr.feed(ev)
        return sorted((c.span_id, c.auth, [(e.name, e.ts_ns, sorted(e.attrs.items())) for e in c.events])
                      for c in out + corr.finish() if isinstance(c, Connection))

    whole = run(None)
    assert sum(sum(auth.values()) for _, auth, _ in whole) >= 9
    cuts = [i for i, line in enumerate(lines) if "auth" in line.lower() or "C: " in line]
    for cut in cuts[:: max(1, len(cuts) // 40)]:
        assert run(cut) == whole, cut


def test_haraka_info_without_disconnect_counts_only_what_is_proven(tmp_path: Path) -> None:
    """At INFO an accepted login is proven only by `disconnect relay=Y`: with the log cut before the
    disconnect the failures stay and the open attempt is left out, not guessed."""
    truth = _truth("haraka/auth-info")
    conn = next(c for c in truth["connections"] if c["name"] == "auth-several-failures")
    lines = (FIX / "haraka" / "auth-info.log").read_text().splitlines()
    mark = f"] [core] disconnect ip={conn['client_address']} "
    disconnect = next(i for i, ln in enumerate(lines) if mark in ln)
    (tmp_path / "cut.log").write_text("\n".join(lines[:disconnect]) + "\n")
    result = run_pipeline([str(tmp_path / "cut.log")], timezone="UTC")
    span = _span_of(result, conn)
    assert span is not None and span.status_error == "log ended"
    got = [e.attrs["smtp.auth.accepted"] for e in span.events if e.name == "smtp.auth"]
    assert got == [False] * sum(a["result"] == "failed" for a in conn["auth"])


@pytest.mark.parametrize("name", ["exim/auth", "exim/auth-default"])
def test_exim_auth_sets_reconcile_with_eximstats(name: str) -> None:
    """eximstats (4.96) on the same log: AUTH failures are not rejections there, nor here; the one
    RCPT rejection of an authenticated client is."""
    stem = name.split("/")[1]
    text = (FIX / "exim" / f"{stem}.eximstats.txt").read_text()
    received = re.search(r"^\s*Received\s+\S+\s+(\d+)", text, re.M)
    delivered = re.search(r"^\s*Delivered\s+\S+\s+(\d+)\s+(\d+)", text, re.M)
    rejects = re.search(r"^\s*Rejects\s+(\d+)", text, re.M)
    assert received and delivered and rejects
    result = _run(name)
    assert result.metric_total("exim.messages", {"smtp.result": "queued"}) == int(received[1])
    assert result.metric_total("exim.messages", {"smtp.result": "delivered"}) == int(delivered[2])
    assert result.metric_total("exim.messages", {"smtp.result": "rejected"}) == int(rejects[1]) == 1
