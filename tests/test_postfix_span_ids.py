"""Without spans and --logs the Postfix correlator hashes no IDs: what metrics read stays the same."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pytest

from maillog2otel import mtas
from maillog2otel.correlate.base import CorrelateSettings
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.records import Connection, Count, Delivery, MessageDone
from maillog2otel.sources import SourceStats, read_lines

LOGS = sorted(glob.glob(str(Path(__file__).parent.parent / "fixtures" / "postfix" / "*.log")))


def _metric_facts(path: str, span_ids: bool) -> list[tuple[Any, ...]]:
    """Every output's fields that metrics read, in order, for one fixture."""
    grammar, corr = mtas.load("postfix", CorrelateSettings(span_events=False, span_ids=span_ids))
    framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026, ref_month=12), default_host="h")
    outs = []
    for text, offset in read_lines(path, SourceStats()):
        rec = framer.frame(text, offset)
        ev = grammar.parse(rec) if rec is not None else None
        if ev is not None and not ev.known:
            outs += corr.feed(ev)
    outs += corr.finish()
    facts: list[tuple[Any, ...]] = []
    for o in outs:
        if isinstance(o, Connection):
            facts.append(("c", o.host, o.start_ns, o.end_ns, o.commands, o.auth, o.duration_known))
        elif isinstance(o, Delivery):
            facts.append(("d", o.host, o.end_ns, o.result, o.counted))
            assert bool(o.span_id) == span_ids
        elif isinstance(o, Count):
            facts.append(("n", o.host, o.ts_ns, o.result, o.size_bytes, o.reason))
        elif isinstance(o, MessageDone):
            pytest.fail("MessageDone without spans: only the stitcher reads it")
    return [*facts, tuple(sorted(corr.stats.counts.items()))]


@pytest.mark.parametrize("path", LOGS)
def test_no_ids_same_metric_facts(path: str) -> None:
    assert _metric_facts(path, span_ids=False) == _metric_facts(path, span_ids=True)
