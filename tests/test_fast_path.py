"""The shortcuts of the fast path (issue 6) change cost, never results.

- With no span exported (``--no-traces``, ``--exporter none``) the correlators skip building span
  events; the metrics must be the very points a full run makes, on every fixture of every MTA.
- The generated per-rule parsers (``grammars.common._fast_parser``) must give the dict the generic
  ``groupdict`` path gave, key order included.
- The pipeline's per-(host, program) routing cache must count and route like ``mtas.detect``.
- Converters specialised for one rule (Postfix's delivery key=value list) or remembered (its
  disconnect counts) return what the general ones return.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maillog2otel.grammars import exim, haraka, postfix
from maillog2otel.grammars.common import kv_commas, kv_spaces

from maillog2otel.config import build_settings
from maillog2otel.export.base import NullSink
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.parse import Grammar
from maillog2otel.pipeline import Pipeline, backfill_records
from maillog2otel.sources import SourceStats
from maillog2otel.testing import CollectingSink, run_pipeline

FIX = Path(__file__).resolve().parent.parent / "fixtures"
LOGS = sorted([*FIX.glob("postfix/*.log"), *FIX.glob("exim/*.mainlog"), *FIX.glob("haraka/*.log"),
               *FIX.glob("chain/*.log"), *FIX.glob("chain/*.mainlog")])


class _DropSpans(NullSink):
    """A span sink that is not a collecting one: the pipeline sees traces switched off."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list = []

    def spans(self, spans: list) -> None:
        self.got.extend(spans)

    def metrics(self, data: list) -> None:
        raise AssertionError("not a metric sink")


def _points(metrics: list) -> list[tuple]:
    return [(m.resource, m.name, tuple(sorted(p.attrs.items())), p.start_ns, p.time_ns, p.value,
             tuple(p.counts or ()), p.total, p.count, p.minimum, p.maximum)
            for m in metrics for p in m.points]


@pytest.mark.parametrize("log", LOGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_metrics_without_traces_equal_a_full_runs(log: Path) -> None:
    assert LOGS, "no fixture logs found"
    full = run_pipeline([str(log)], timezone="UTC", year=2026)
    settings = build_settings(env={}, exporter="none", timezone="UTC", year=2026)
    spans, metrics = _DropSpans(), CollectingSink()
    pipeline = Pipeline(settings, spans, metrics)
    assert not pipeline.traces_on
    for rec in backfill_records([str(log)], settings, pipeline, SourceStats()):
        pipeline.feed(rec)
    pipeline.finish()
    assert spans.got == []
    assert _points(metrics.metric_list) == _points(full.metrics)
    assert len(_points(full.metrics)) > 0
    c, f = pipeline.counters, full.counters
    names = ("lines", "parsed", "foreign", "unparsed", "connections", "messages", "deliveries", "rejected")
    assert [getattr(c, n) for n in names] == [getattr(f, n) for n in names]
    assert c.by_program == f.by_program
    assert pipeline.correlator_stats() == full.stats


def _generic(rule, text: str) -> dict | None:
    m = rule.regex.fullmatch(text)
    if m is None:
        return None
    out = {rule.group_names[g]: v for g, v in m.groupdict().items() if v is not None}
    for name, conv in rule.converters.items():
        if out.get(name) is not None:
            out[name] = conv(out[name])
    return out


def _messages(grammar: Grammar) -> Iterator[str]:
    """Every fixture line of the grammar's MTA, framed and rewritten: what its rules read."""
    pattern = {"postfix": "postfix/*.log", "exim": "exim/*.mainlog", "haraka": "haraka/*.log"}[grammar.mta]
    for path in FIX.glob(pattern):
        framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="mx")
        for line in path.read_text(errors="replace").splitlines():
            rec = framer.frame(line, 0)
            if rec is not None:
                yield rec.message if grammar.rewrite is None else grammar.rewrite(rec.message, True)


@pytest.mark.parametrize("module", [postfix, exim, haraka], ids=lambda m: m.MTA)
def test_generated_parsers_equal_the_generic_match(module) -> None:
    grammar = Grammar([module])
    bodies: set[str] = set()
    for message in _messages(grammar):
        m = grammar._prefix_re.match(message) if grammar.prefix is not None else None
        bodies.add(message[m.end():] if m else message)
    compared = matched = 0
    for rule in module.RULES:
        if rule.pattern is None:
            continue
        rule.compile()
        for body in bodies:
            want, got = _generic(rule, body), rule.fast(body)
            assert got == want, (rule.name, body)
            if got is not None:
                assert list(got) == list(want), (rule.name, body)  # key order too
                matched += 1
            compared += 1
    assert matched > 50, f"only {matched} of {compared} comparisons matched a rule"


def test_routing_cache_counts_programs_like_detect(tmp_path: Path) -> None:
    log = tmp_path / "mixed.log"
    log.write_text(
        "Nov 22 01:00:00 mx postfix/smtpd[10]: connect from a.example[192.0.2.1]:4000\n"
        "Nov 22 01:00:00 mx dovecot[11]: imap-login: Login: user=<u>\n"
        "Nov 22 01:00:01 mx2 postfix/smtpd[10]: connect from b.example[192.0.2.2]:4001\n"
        "Nov 22 01:00:01 mx postfix/smtpd[10]: something postfix never says\n"
        "Nov 22 01:00:02 mx node[12]: [INFO] [-] [core] not a haraka line? it is one\n"
        "Nov 22 01:00:02 mx node[12]: plain node output\n"
        "Nov 22 01:00:03 mx postfix/smtpd[10]: disconnect from a.example[192.0.2.1]:4000 ehlo=1 quit=1 "
        "commands=2\n"
    )
    r = run_pipeline([str(log)], timezone="UTC", year=2026)
    c = r.counters
    assert (c.lines, c.foreign) == (7, 2)
    assert c.by_program[("postfix", "postfix/smtpd")] == [3, 0, 1]  # understood, known, unparsed
    assert ("haraka", "node") in c.by_program
    assert c.connections == 2


_KEYS = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
_VALUES = st.one_of(st.from_regex(r"<[^>]{0,20}>", fullmatch=True),
                    st.from_regex(r"[^, ]{0,20}", fullmatch=True))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=8), st.text(max_size=30))
def test_delivery_kv_equals_kv_commas_on_what_the_rule_matches(pairs, noise) -> None:
    text = "".join(f", {k}={v}" for k, v in pairs)
    for candidate in (text, noise, text + noise, noise + text):
        if re.fullmatch(postfix.DELIVERY_KV, candidate):
            assert postfix.delivery_kv(candidate) == kv_commas(candidate), candidate


def test_memo_gives_each_caller_its_own_equal_dict() -> None:
    counts = postfix.COUNTS
    first = counts("ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4")
    first["ehlo"] = "changed"
    again = counts("ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4")
    assert again == kv_spaces("ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4") and again["ehlo"] == "1"
    many = [counts(f"ehlo=1 rcpt={i}") for i in range(10_000)]  # past its bound: cleared, still right
    assert [m["rcpt"] for m in many] == [str(i) for i in range(10_000)]


def test_disconnect_counts_that_are_no_numbers_are_dropped_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "bad.log"
    log.write_text(
        "Nov 22 01:00:00 mx postfix/smtpd[10]: connect from a.example[192.0.2.1]:4000\n"
        "Nov 22 01:00:03 mx postfix/smtpd[10]: disconnect from a.example[192.0.2.1]:4000 ehlo=abc "
        "mail=1/x rcpt=2/3 quit=1 commands=3/4\n"
    )
    r = run_pipeline([str(log)], timezone="UTC", year=2026)
    (conn,) = r.connections()
    assert conn.attrs["smtp.command.rcpt"] == 3 and conn.attrs["smtp.command.rcpt.ok"] == 2
    assert "smtp.command.ehlo" not in conn.attrs and "smtp.command.mail" not in conn.attrs
    assert r.counters.parsed == 2


@pytest.mark.parametrize("module", [postfix, exim, haraka], ids=lambda m: m.MTA)
def test_prefix_reader_equals_match_slice_and_first_word(module) -> None:
    from maillog2otel.parse import _FIRST_WORD

    grammar = Grammar([module])
    assert grammar._read_prefix is not None
    seen = 0
    for body in [*_messages(grammar), *_HARAKA_HEADS]:
        for text in (body, body[1:], "x" + body, ""):
            m = grammar._prefix_re.match(text)
            want_fields = None
            rest = text
            if m is not None:
                names = grammar.prefix.group_names
                want_fields = {names.get(g, g): v for g, v in m.groupdict().items() if v is not None}
                rest = text[m.end():]
            got = grammar._read_prefix(text)
            assert got == (want_fields, rest, _FIRST_WORD.match(rest)[0]), text
            assert list((got[0] or {}).items()) == list((want_fields or {}).items()), text  # key order too
            seen += 1
    assert seen > 400


# Heads at the edges of Haraka's PREFIX_SHORTCUT (the reader's first try): each must read as PREFIX does.
_U = "8270FD71-1B4A-4D2C-9C1E-CCC4DAE82BB0"
_HARAKA_HEADS = [
    f"[INFO] [{_U}] [core] connect ip=1", f"[INFO] [{_U.lower()}.12.3] [outbound]  delivered a=1",
    f"[INFO] [{_U}.1.2.3] [core] x", f"[INFO] [{_U}.] [core] x", f"[INFO] [{_U}.\u0663] [core] x",
    f"[INFO] [{_U[:-1]}] [core] x", f"[INFO] [{_U}x] [core] x", "[INFO] [-] [core] [smtp_client] uuid=1",
    f"[INFO] [{_U}] [core]  [x] y", f"[INFO] [{_U}] [core]   x", f"[INFO] [{_U}] [core] ",
    f"[INFO] [{_U}] [core]", f"[INFO] [{_U}] [{_U}] x", f"[INFO] [{_U}] [8270FD71-x] y",
    "[INFO] [core] [plugin] x", "[INFO] [core] x", "[INFO] [-] [-] x", "[INFO] [-] [] x",
    "[INFO] [-] [a]b] x", "[INFO] [-] [a [b] x", "[INFO] [--] [core] x", "[INFOX] [-] [core] x",
    "[info] [-] [core] x", "[INFO]  [-] [core] x", "[INFO] [-] [core] key=v:w", "[INFO] [-] [core] C: a:b",
    "[INFO] [-] [core] \u00e9t\u00e9 x", "[INFO] [-] [core] a\nb c", "[INFO] [-] [co re] x",
]
