#!/usr/bin/env python3
"""CPU microseconds per line for each pipeline stage, in one process, on one log.

    python benchmarks/stages.py benchmarks/data/postfix-port-logging.w8+expiry-200000-s6.log
    python benchmarks/stages.py --mta exim --repeat 3 benchmarks/data/exim-rich-100000-s6.log
    python benchmarks/stages.py --rev HEAD~3 FILE      # the code as committed there (run.py's snapshot)

Each stage runs over the whole file before the next one starts (read; read + frame; parse the
framed records; correlate the parsed events; build spans and metric points from the outputs),
so each figure is that stage's own cost. Times are CPU seconds of this process
(``time.process_time``): on a shared machine they move much less than wall time. ``--repeat``
keeps the best of N passes per stage. ``run.py`` gives the end-to-end rates and the ratios.

The garbage collector is off while it measures: this harness keeps every stage's output in memory
(the pipeline never does), and collections scanning those lists would be charged to whichever
stage happened to trigger them.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

from maillog2otel import mtas
from maillog2otel.correlate.base import CorrelateSettings
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.records import Connection, Delivery
from maillog2otel.sources import SourceStats, read_lines
from maillog2otel.telemetry.spans import connection_span, delivery_span


def best(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        t = time.process_time()
        result = fn()
        times.append(time.process_time() - t)
    return min(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--mta", default=None, help="postfix | exim | haraka (default: from the file name)")
    ap.add_argument("--year", type=int, default=2026)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--rev", help="measure maillog2otel as committed at this git revision")
    args = ap.parse_args()
    if args.rev:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from run import snapshot

        src, sha = snapshot(args.rev)
        print(f"(git {sha})")
        argv = [a for i, a in enumerate(sys.argv) if a != "--rev" and sys.argv[i - 1] != "--rev"]
        env = {**os.environ, "PYTHONPATH": str(src)}
        return subprocess.run([sys.executable, *argv], env=env, check=False).returncode
    gc.disable()
    mta = args.mta or next((m for m in mtas.REGISTRY if m in args.file.rsplit("/", 1)[-1]), "postfix")

    def read() -> int:
        return sum(1 for _ in read_lines(args.file, SourceStats()))

    def frame() -> list:
        fr = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(args.year), default_host="host")
        return [r for text, off in read_lines(args.file, SourceStats()) if (r := fr.frame(text, off))]

    t_read, n = best(args.repeat, read)
    t_frame, recs = best(args.repeat, frame)
    grammar, _ = mtas.load(mta, CorrelateSettings())
    t_parse, events = best(args.repeat, lambda: [grammar.parse(r) for r in recs])
    events = [e for e in events if e is not None]

    def correlate() -> list:
        _, corr = mtas.load(mta, CorrelateSettings())
        outs: list = []
        for e in events:
            got = corr.feed(e)
            if got:
                outs.extend(got)
        outs.extend(corr.finish())
        return outs

    t_corr, outs = best(args.repeat, correlate)

    def spans() -> int:
        k = 0
        for o in outs:
            if isinstance(o, Connection):
                connection_span(o)
                k += 1
            elif isinstance(o, Delivery):
                delivery_span(o)
                k += 1
        return k

    t_spans, k = best(args.repeat, spans)
    us = 1e6 / n
    print(f"{args.file}: {n:,} lines, {len(recs):,} framed, {len(events):,} parsed ({mta}), "
          f"{len(outs):,} correlator outputs, {k:,} spans")
    print(f"  read              {t_read * us:6.2f} µs/line")
    print(f"  frame (no read)   {(t_frame - t_read) * us:6.2f} µs/line")
    print(f"  parse             {t_parse * us:6.2f} µs/line")
    print(f"  correlate         {t_corr * us:6.2f} µs/line")
    print(f"  spans             {t_spans * us:6.2f} µs/line")
    total = t_frame + t_parse + t_corr + t_spans
    print(f"  total             {total * us:6.2f} µs/line = {n / total:,.0f} lines per CPU-second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
