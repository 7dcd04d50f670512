"""Redaction: no address of any fixture's truth file survives into the exported OTLP bytes, in any
mode, for spans, events, metrics and log records; clients and HELO names have their own switch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import FIXTURES, OtlpHttpReceiver, clean_env, run_cli

from maillog2otel import mtas
from maillog2otel.config import ConfigError, build_settings
from maillog2otel.records import CLIENT, SERVER, SpanData, SpanEvent
from maillog2otel.runner import run_backfill
from maillog2otel.telemetry.redact import RedactError, Redactor

KEY = "test-key-not-secret"
_ADDR = re.compile(r"[^\s<>@\"]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_LOG_SUFFIXES = (".log", ".mainlog", ".rejectlog")


def _truth_addresses(doc: object) -> set[str]:
    """Every address the clients really used (mail_from, rcpts, local submissions …)."""
    found: set[str] = set()
    if isinstance(doc, dict):
        for v in doc.values():
            found |= _truth_addresses(v)
    elif isinstance(doc, list):
        for v in doc:
            found |= _truth_addresses(v)
    elif isinstance(doc, str) and _ADDR.fullmatch(doc):
        found.add(doc.lower())
    return found


def _fixture_sets() -> list[tuple[str, str, list[Path]]]:
    out = []
    for truth in sorted(FIXTURES.glob("*/*.truth.json")):
        stem = truth.name[: -len(".truth.json")]
        files = json.loads(truth.read_text()).get("files")
        if isinstance(files, dict):  # a multi-MTA chain names its logs
            logs = sorted(truth.parent / f for f in files.values())
        else:
            logs = sorted(p for p in truth.parent.glob(f"{stem}.*") if p.suffix in _LOG_SUFFIXES)
        if logs:
            out.append((truth.parent.name, stem, logs))
    return out


FIXTURE_SETS = _fixture_sets()


def _run(logs: list[Path], receiver: OtlpHttpReceiver, **options: str) -> bytes:
    settings = build_settings(env={"MAILLOG2OTEL_REDACT_KEY": KEY}, endpoint=receiver.endpoint,
                              timezone="UTC", hostname="mx", quiet=True, logs=True, **options)
    assert run_backfill([str(p) for p in logs], settings) == 0
    with receiver.received.lock:
        data = b"\n".join(receiver.received.raw)
        receiver.received.raw.clear()
    return data.lower()


def test_fixture_sets_cover_every_mta() -> None:
    assert {mta for mta, _, _ in FIXTURE_SETS} >= {"postfix", "exim", "haraka"}


@pytest.mark.parametrize(("mta", "stem", "logs"), FIXTURE_SETS, ids=[f"{m}-{s}" for m, s, _ in FIXTURE_SETS])
def test_no_truth_address_leaks_in_any_mode(mta: str, stem: str, logs: list[Path],
                                            otlp_http: OtlpHttpReceiver) -> None:
    if mta in mtas.REGISTRY and mta not in mtas.available():
        pytest.skip(f"{mta}: no correlator installed yet, its lines are foreign and nothing is exported")
    addresses = _truth_addresses(json.loads((logs[0].parent / f"{stem}.truth.json").read_text()))
    assert addresses, stem
    plain = _run(logs, otlp_http)
    shown = {a for a in addresses if a.encode() in plain}
    assert shown, "the control run (no redaction) must export the addresses, or this test proves nothing"
    for mode in ("hash", "domain", "drop"):
        data = _run(logs, otlp_http, redact=mode, redact_clients="hash" if mode != "drop" else "drop")
        assert len(data) > 1000, mode
        leaked = sorted(a for a in addresses if a.encode() in data)
        assert not leaked, f"{mode}: {leaked}"
        if mode == "domain":
            assert b"*@" in data
        if mode == "hash":
            assert b"h:" in data


def test_hash_is_keyed_stable_and_case_blind() -> None:
    a, b = Redactor("hash", key=b"k-one"), Redactor("hash", key=b"k-two")
    assert a.address("bob@local.test") == a.address("Bob@Local.TEST") \
        == Redactor("hash", key=b"k-one").address("bob@local.test")
    assert a.address("bob@local.test") != b.address("bob@local.test")
    assert re.fullmatch(r"h:[0-9a-f]{16}", a.address("bob@local.test"))
    assert a.address("<bob@local.test>") == f"<{a.address('bob@local.test')}>"
    # the same address inside text gets the same value: a trace still correlates
    assert a.address("bob@local.test") in a.text("554 5.7.1 <bob@local.test>: Recipient address rejected")
    assert "k-one" not in repr(a)


def test_domain_drop_and_free_text() -> None:
    text = ('554 5.7.1 <x@relay.test>: Relay access denied; from=<"j doe"@client.example> '
            "to=<x@[127.0.0.1]> id <20261122015126.4F9D195432@mx.test>")
    assert Redactor("domain").text(text) == ("554 5.7.1 <*@relay.test>: Relay access denied; "
                                             "from=<*@client.example> to=<*@[127.0.0.1]> id <*@mx.test>")
    dropped = Redactor("drop").text(text)
    assert "@" not in dropped and dropped.count("[redacted]") == 4
    assert Redactor("domain").address("alice") == "*" and Redactor("drop").address("alice") is None
    assert Redactor("domain").address("") == ""  # the null sender stays what it is


def test_spans_events_and_clients() -> None:
    r = Redactor("drop", "hash", b"k")
    span = SpanData("smtp.connection", SERVER, b"t" * 16, b"s" * 8, None, 0, 1,
                    {"client.address": "192.0.2.7", "net.peer.name": "host.example",
                     "smtp.helo_host": "helo.example", "smtp.auth.user": "bob@local.test",
                     "mta.name": "postfix"},
                    [SpanEvent("smtp.reject", 0, {"smtp.reject.reason": "<a@b.test>: Helo command rejected: "
                                                  "helo.example from host.example[192.0.2.7]",
                                                  "smtp.helo_host": "helo.example"}),
                     SpanEvent("smtp.data", 0, {"smtp.message_id": "<m@host.example>"})],
                    None, ("mx", "postfix"))
    out = r.span(span)
    blob = repr(out)
    for secret in ("192.0.2.7", "host.example", "helo.example", "bob@", "a@b.test"):
        assert secret not in blob, secret
    assert "smtp.auth.user" not in out.attrs and out.attrs["client.address"] == r.hash("192.0.2.7")
    assert "smtp.message_id" not in out.events[1].attrs  # an attribute that is only an address
    # a delivery's relay is not a client
    d = SpanData("smtp.delivery", CLIENT, b"t" * 16, b"d" * 8, None, 0, 1, {"net.peer.name": "relay.example",
                 "smtp.rcpt_to": "x@y.test"}, [], "550 <x@y.test>: unknown", ("mx", "postfix"))
    out = r.span(d)
    assert out.attrs == {"net.peer.name": "relay.example"} and "x@y.test" not in out.status_error
    line = ("NOQUEUE: reject: RCPT from unknown[127.0.0.2]:40312: 554 5.7.1 <x@relay.test>: "
            "Relay access denied; from=<a@client.example> to=<x@relay.test> proto=ESMTP "
            "helo=<client.example>")
    out_line = Redactor("domain", "drop").log_line(line)
    assert "127.0.0.2" not in out_line and "helo=<client.example>" not in out_line and "40312" in out_line


def test_settings_need_a_key_for_hash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a key"):
        build_settings(env={}, redact="hash")
    with pytest.raises(ConfigError, match="unknown redaction mode"):
        build_settings(env={}, redact="rot13")
    key = tmp_path / "key"
    key.write_text("s3cret-key-material\n")
    s = build_settings(env={}, redact_key_file=str(key), redact="hash")
    assert s.redact_key == b"s3cret-key-material" and "s3cret" not in repr(s)
    ini = tmp_path / "m.ini"
    ini.write_text(f"[main]\nredact = domain\nredact_clients = hash\nredact_key_file = {key}\n")
    s = build_settings(env={}, config_path=str(ini))
    assert (s.redact, s.redact_clients) == ("domain", "hash")
    assert build_settings(env={}, config_path=str(ini), redact="none").redact == "none"  # the CLI wins
    with pytest.raises(RedactError):
        Redactor("hash")


def test_cli_console_output_is_redacted_too() -> None:
    log = FIXTURES / "postfix" / "port-logging.log"
    proc = run_cli("backfill", "--timezone", "UTC", "--redact", "hash", str(log),
                   env=clean_env(MAILLOG2OTEL_REDACT_KEY=KEY))
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "alice@local.test" not in out and "-> h:" in out
    proc = run_cli("backfill", "--timezone", "UTC", "--redact", "hash", str(log), env=clean_env())
    assert proc.returncode == 2 and "needs a key" in proc.stderr.decode()


def test_postscreen_and_auth_identities_are_redacted(otlp_http: OtlpHttpReceiver) -> None:
    """fixtures/postfix/postscreen: the SASL users of smtp.auth events (accepted and failed), the
    addresses of postscreen-only connections and the HELO names in postscreen's test details go
    through --redact / --redact-clients like every other identity."""
    truth = json.loads((FIXTURES / "postfix" / "postscreen.truth.json").read_text())
    users = {a["user"].lower() for c in truth["connections"] for a in c.get("auth", []) if a["user"]}
    screened = [c for c in truth["connections"] if c.get("postscreen") and c["helo_verb"]]
    clients = {c["client_address"] for c in screened} | {c["helo"].lower() for c in screened}
    logs = [FIXTURES / "postfix" / "postscreen.log"]
    plain = _run(logs, otlp_http)
    assert all(u.encode() in plain for u in users)
    clients = {c for c in clients if c.encode() in plain}  # a client that never said EHLO in a line
    # the pregreet text and a postscreen-only client at least
    assert "bot10.example" in clients and "127.0.0.10" in clients
    data = _run(logs, otlp_http, redact="hash", redact_clients="hash")
    assert b"smtp.auth.user" in data and b"postfix.postscreen.detail" in data
    assert [u for u in users if u.encode() in data] == []
    # every name and address, as a whole token (127.0.0.1 is the server, logged by postscreen)
    whole = {c: re.compile(rb"(?<![\w.])" + re.escape(c.encode()) + rb"(?![\w.])") for c in clients}
    assert [c for c, token in whole.items() if token.search(data)] == []
