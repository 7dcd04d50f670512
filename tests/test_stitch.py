"""One trace across hops, on a central syslog file written by hand from two Postfix hosts: mx1
relays to mx2, whose reply names its queue ID. (fixtures/chain/ has real Postfix, Exim and Haraka
chains; this file pins the mechanism, including every order the two hops can be read in.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from maillog2otel.testing import run_pipeline

MX1 = """\
Nov 22 10:00:00 mx1 postfix/smtpd[100]: connect from client.example[192.0.2.10]:40000
Nov 22 10:00:00 mx1 postfix/smtpd[100]: 1A2B3C4D5E: client=client.example[192.0.2.10]:40000
Nov 22 10:00:00 mx1 postfix/cleanup[101]: 1A2B3C4D5E: message-id=<m1@client.example>
Nov 22 10:00:00 mx1 postfix/qmgr[50]: 1A2B3C4D5E: from=<a@client.example>, size=500, nrcpt=1 (queue active)
Nov 22 10:00:00 mx1 postfix/smtpd[100]: disconnect from client.example[192.0.2.10]:40000 ehlo=1 mail=1 \
rcpt=1 data=1 quit=1 commands=5
Nov 22 10:00:01 mx1 postfix/smtp[102]: 1A2B3C4D5E: to=<b@far.example>, relay=mx2.example[192.0.2.2]:25, \
delay=1, delays=0.5/0/0.2/0.3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9F8E7D6C5B)
Nov 22 10:00:01 mx1 postfix/qmgr[50]: 1A2B3C4D5E: removed
"""
MX2 = """\
Nov 22 10:00:01 mx2 postfix/smtpd[200]: connect from mx1.example[192.0.2.1]:50000
Nov 22 10:00:01 mx2 postfix/smtpd[200]: 9F8E7D6C5B: client=mx1.example[192.0.2.1]:50000
Nov 22 10:00:01 mx2 postfix/cleanup[201]: 9F8E7D6C5B: message-id=<m1@client.example>
Nov 22 10:00:01 mx2 postfix/qmgr[60]: 9F8E7D6C5B: from=<a@client.example>, size=800, nrcpt=1 (queue active)
Nov 22 10:00:01 mx2 postfix/local[202]: 9F8E7D6C5B: to=<b@far.example>, relay=local, delay=0.1, \
delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)
Nov 22 10:00:02 mx2 postfix/smtpd[200]: disconnect from mx1.example[192.0.2.1]:50000 ehlo=1 mail=1 \
rcpt=1 data=1 quit=1 commands=5
Nov 22 10:00:02 mx2 postfix/qmgr[60]: 9F8E7D6C5B: removed
"""


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _check(result) -> None:  # testing.Result
    spans = {(s.resource[0], s.name): s for s in result.spans}
    c1, d1 = spans[("mx1", "smtp.connection")], spans[("mx1", "smtp.delivery")]
    c2, d2 = spans[("mx2", "smtp.connection")], spans[("mx2", "smtp.delivery")]
    assert d1.attrs["smtp.next_hop.queue_id"] == "9F8E7D6C5B"
    assert c1.trace_id == d1.trace_id == c2.trace_id == d2.trace_id  # one trace across both hops
    assert c2.parent_span_id == d1.span_id and d1.parent_span_id == c1.span_id
    assert d2.parent_span_id == c2.span_id


@pytest.mark.parametrize("order", ["mx1-first", "interleaved", "mx2-first"])
def test_central_syslog_in_any_order(tmp_path: Path, order: str) -> None:
    a, b = _lines(MX1), _lines(MX2)
    lines = {"mx1-first": a + b, "mx2-first": b + a,
             "interleaved": sorted(a + b, key=lambda line: line[:15])}[order]
    (tmp_path / "syslog").write_text("".join(lines))
    _check(run_pipeline([str(tmp_path / "syslog")], timezone="UTC", year=2026))


def test_two_files_given_together(tmp_path: Path) -> None:
    (tmp_path / "mx2.log").write_text(MX2)
    (tmp_path / "mx1.log").write_text(MX1)
    _check(run_pipeline([str(tmp_path / "mx2.log"), str(tmp_path / "mx1.log")], timezone="UTC", year=2026))


def test_each_hop_alone_keeps_the_join_attributes(tmp_path: Path) -> None:
    """One maillog2otel per host: no shared trace, but a backend can join on the queue ID."""
    (tmp_path / "mx1.log").write_text(MX1)
    (tmp_path / "mx2.log").write_text(MX2)
    one = run_pipeline([str(tmp_path / "mx1.log")], timezone="UTC", year=2026)
    two = run_pipeline([str(tmp_path / "mx2.log")], timezone="UTC", year=2026)
    d1 = one.deliveries()[0]
    c2 = two.connections()[0]
    assert d1.attrs["smtp.next_hop.queue_id"] == "9F8E7D6C5B"
    assert [e.attrs["smtp.queue_id"] for e in c2.events if e.name == "smtp.queue_ok"] == ["9F8E7D6C5B"]
    assert c2.parent_span_id is None and c2.trace_id != d1.trace_id


def test_ids_stay_deterministic(tmp_path: Path) -> None:
    (tmp_path / "syslog").write_text(MX1 + MX2)
    a = run_pipeline([str(tmp_path / "syslog")], timezone="UTC", year=2026)
    b = run_pipeline([str(tmp_path / "syslog")], timezone="UTC", year=2026)
    assert [(s.trace_id, s.span_id, s.parent_span_id) for s in a.spans] == \
        [(s.trace_id, s.span_id, s.parent_span_id) for s in b.spans]


def test_stitching_survives_a_restart(tmp_path: Path) -> None:
    """tail saves held spans and link tables in its state: a restart between the hops' lines still
    gives one trace, identical to a backfill."""
    import json

    from maillog2otel.config import build_settings
    from maillog2otel.pipeline import Pipeline, backfill_records
    from maillog2otel.sources import SourceStats
    from maillog2otel.testing import CollectingSink

    lines = sorted(_lines(MX1) + _lines(MX2), key=lambda line: line[:15])
    (tmp_path / "syslog").write_text("".join(lines))
    settings = build_settings(env={}, exporter="none", timezone="UTC", year=2026)
    whole = run_pipeline([str(tmp_path / "syslog")], settings=settings)
    spans = CollectingSink()
    first = Pipeline(settings, spans, CollectingSink())
    records = list(backfill_records([str(tmp_path / "syslog")], settings, first, SourceStats()))
    cut = next(i for i, r in enumerate(records) if r.host == "mx1" and "status=sent" in r.message)
    for rec in records[:cut]:
        first.feed(rec)
    state = json.loads(json.dumps(first.save_state()))
    second = Pipeline(settings, spans, CollectingSink())
    second.load_state(state)
    for rec in records[cut:]:
        second.feed(rec)
    second.finish()
    key = lambda s: (s.span_id, s.trace_id, s.parent_span_id)  # noqa: E731
    assert sorted(map(key, spans.span_list)) == sorted(map(key, whole.spans))


def test_a_link_found_too_late_becomes_a_span_link(tmp_path: Path) -> None:
    """mx1 logs its delivery long after mx2's connection span has left: a span link, not a parent."""
    late = MX1.replace("Nov 22 10:00:01 mx1 postfix/smtp", "Nov 22 10:00:40 mx1 postfix/smtp").replace(
        "Nov 22 10:00:01 mx1 postfix/qmgr", "Nov 22 10:00:40 mx1 postfix/qmgr")
    (tmp_path / "syslog").write_text("".join(sorted(_lines(late) + _lines(MX2), key=lambda line: line[:15])))
    result = run_pipeline([str(tmp_path / "syslog")], timezone="UTC", year=2026)
    spans = {(s.resource[0], s.name): s for s in result.spans}
    c2, d1 = spans[("mx2", "smtp.connection")], spans[("mx1", "smtp.delivery")]
    assert c2.parent_span_id is None and c2.trace_id != d1.trace_id
    assert d1.links == [(c2.trace_id, c2.span_id, {"smtp.link": "next_hop"})]
