"""Every span a backfill exports has its own span ID: a backend keys spans by it, and two spans
with one ID are merged or dropped there."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from maillog2otel.testing import run_pipeline

FIX = Path(__file__).resolve().parent.parent / "fixtures"
LOGS = sorted([*FIX.glob("postfix/*.log"), *FIX.glob("exim/*.mainlog"), *FIX.glob("haraka/*.log")])
# the relay chains, each read whole: (postfix, exim, haraka) and the half-closed one
CHAINS = {
    "chain": ["postfix.log", "exim.mainlog", "haraka.log"],
    "halfclose": ["halfclose.postfix.log", "halfclose.exim.mainlog", "halfclose.haraka.log"],
}


def repeated_span_ids(paths: list[Path]) -> dict[bytes, int]:
    result = run_pipeline([str(p) for p in paths], timezone="UTC")
    ids = Counter(s.span_id for s in result.spans)
    assert ids, "the fixture exported no span"
    return {sid: n for sid, n in ids.items() if n > 1}


@pytest.mark.parametrize("path", LOGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_fixture_spans_ids_are_distinct(path: Path) -> None:
    assert repeated_span_ids([path]) == {}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_every_chains_span_ids_are_distinct(chain: str) -> None:
    assert repeated_span_ids([FIX / "chain" / name for name in CHAINS[chain]]) == {}


# One message, one final recipient twice in the same second: directly, and through the list
# team@ it belongs to. cleanup keeps both recipients because their original recipients differ
# (enable_original_recipient = yes, the default), and smtp logs one line for each.
ALIAS_TWICE = """\
Dec  7 10:00:00 mx postfix/smtpd[2100]: connect from client.example[192.0.2.10]
Dec  7 10:00:00 mx postfix/smtpd[2100]: 3F2A81C0D4: client=client.example[192.0.2.10]
Dec  7 10:00:00 mx postfix/cleanup[2101]: 3F2A81C0D4: message-id=<m1@client.example>
Dec  7 10:00:00 mx postfix/qmgr[2102]: 3F2A81C0D4: from=<a@client.example>, size=412, nrcpt=2 (queue active)
Dec  7 10:00:00 mx postfix/smtpd[2100]: disconnect from client.example[192.0.2.10] ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6
Dec  7 10:00:01 mx postfix/smtp[2103]: 3F2A81C0D4: to=<u@dest.example>, relay=dest.example[198.51.100.5]:25, delay=1, delays=0.1/0/0.5/0.4, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9C1D2E3F4A)
Dec  7 10:00:01 mx postfix/smtp[2103]: 3F2A81C0D4: to=<u@dest.example>, orig_to=<team@mx.example>, relay=dest.example[198.51.100.5]:25, delay=1, delays=0.1/0/0.5/0.4, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9C1D2E3F4A)
Dec  7 10:00:01 mx postfix/qmgr[2102]: 3F2A81C0D4: removed
"""  # noqa: E501 - log lines as Postfix writes them


@pytest.mark.parametrize("span_events", [True, False], ids=["traces", "metrics-and-logs"])
def test_one_recipient_delivered_twice_in_a_second_gets_two_span_ids(tmp_path: Path,
                                                                      span_events: bool) -> None:
    log = tmp_path / "mail.log"
    log.write_text(ALIAS_TWICE)
    if span_events:
        result = run_pipeline([str(log)], timezone="UTC", year=2026)
        deliveries = result.deliveries()
        assert [d.attrs["smtp.rcpt_to"] for d in deliveries] == ["u@dest.example"] * 2
        assert deliveries[1].attrs["smtp.orig_rcpt_to"] == "team@mx.example"
        ids = [d.span_id for d in deliveries]
        # the first keeps the ID it always had: only a repeat within the second is told apart
        assert len(set(ids)) == 2 and all(len(i) == 8 for i in ids)
        assert repeated_span_ids([log]) == {}
    else:  # --logs without traces: each delivery line's log record names its own span
        from maillog2otel import mtas
        from maillog2otel.correlate.base import CorrelateSettings
        from maillog2otel.framing import Framer, LocalClock, YearGuess
        from maillog2otel.records import Delivery
        from maillog2otel.sources import SourceStats, read_lines

        grammar, corr = mtas.load("postfix", CorrelateSettings(span_events=False, span_ids=True))
        framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026, ref_month=12),
                        default_host="h")
        outs = []
        for text, offset in read_lines(str(log), SourceStats()):
            ev = grammar.parse(framer.frame(text, offset))
            assert ev is not None
            if not ev.known:
                outs += corr.feed(ev)
        outs += corr.finish()
        ids = [o.span_id for o in outs if isinstance(o, Delivery)]
        assert len(ids) == 2 and len(set(ids)) == 2
