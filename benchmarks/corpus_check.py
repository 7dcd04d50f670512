"""How much of a collection of real log lines maillog2otel recognises: the ``check`` numbers per MTA.

    python benchmarks/corpus_check.py /work/corpus/postfix /work/corpus/exim --year 2023
    python benchmarks/corpus_check.py /var/log/mail.log* --shapes 40 --json out.json

Each argument is a log file or a directory (its files, recursively, sorted); every file is read as
its own stream, as ``check`` would read it. For each MTA it prints the lines understood (they feed
telemetry), known (recognised, nothing to export), unparsed and the ratio
(understood + known) / (understood + known + unparsed); then lines of other programs (foreign),
lines without a log envelope, the known lines by rule and the most common unparsed shapes
(addresses, IDs and numbers masked). Nothing leaves the machine: no exporter runs.

The repository ships no corpus: collections of real lines belong to their owners. See
benchmarks/README.md for the public ones measured and the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maillog2otel.config import ExportTarget, Settings
from maillog2otel.pipeline import Pipeline, stream_records
from maillog2otel.runner import _CountingSink
from maillog2otel.sources import SourceStats


def files_of(args: list[str]) -> list[str]:
    out: list[str] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.is_file())
        else:
            out.append(a)
    return out


def measure(paths: list[str], year: int | None, timezone: str | None,
            mta: str) -> tuple[Pipeline, SourceStats]:
    none = ExportTarget("none")
    settings = Settings(mta=mta, year=year, timezone=timezone or "UTC", traces=none, metrics=none)
    p = Pipeline(settings, _CountingSink(), _CountingSink(), collect_shapes=True)
    p.traces_on = p.metrics_on = True  # as check: build everything
    stats = SourceStats()
    for i, path in enumerate(paths):  # one stream per file: unrelated collections, unrelated years
        for rec in stream_records([path], i, settings, p, stats):
            p.feed(rec)
    p.finish()
    return p, stats


def report(p: Pipeline, stats: SourceStats, shapes: int) -> dict:
    c = p.counters
    per: dict[str, list[int]] = {}
    for (mta, _prog), row in c.by_program.items():
        if mta == "?":
            continue
        acc = per.setdefault(mta, [0, 0, 0])
        for i in range(3):
            acc[i] += row[i]
    doc: dict = {"lines": c.lines, "foreign": c.foreign, "unframed": c.unframed, "mtas": {}}
    w = sys.stdout.write
    w(f"{c.lines:,} lines read: {c.foreign:,} of other programs, {c.unframed:,} without a log envelope\n\n")
    w(f"{'mta':<8} {'understood':>11} {'known':>9} {'unparsed':>9} {'understood+known':>17}\n")
    for mta, (ok, known, bad) in sorted(per.items()):
        total = ok + known + bad
        ratio = (ok + known) / total if total else 0.0
        doc["mtas"][mta] = {"understood": ok, "known": known, "unparsed": bad, "ratio": ratio}
        w(f"{mta:<8} {ok:>11,} {known:>9,} {bad:>9,} {ratio:>16.2%}\n")
    if c.known_rules:
        w("\nknown lines by rule:\n")
        for (mta, rule), n in sorted(c.known_rules.items(), key=lambda kv: (-kv[1], kv[0])):
            w(f"  {mta:<8} {rule:<28} {n:>9,}\n")
    doc["known_rules"] = {f"{m}/{r}": n for (m, r), n in c.known_rules.items()}
    top = sorted(c.shapes.items(), key=lambda kv: -kv[1][0])[:shapes]
    if top:
        w(f"\ntop {len(top)} unparsed shapes (of {len(c.shapes):,}; lines without an envelope included):\n")
        for shape, (count, _example) in top:
            w(f"{count:>8,}  {shape}\n")
    doc["unparsed_shapes"] = [[count, shape] for shape, (count, _ex) in top]
    if stats.invalid_utf8 or stats.errors:
        w(f"\ninput: {stats.invalid_utf8:,} lines with invalid UTF-8; errors: {stats.errors}\n")
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="log files or directories of them")
    ap.add_argument("--year", type=int,
                    help="year of year-less syslog stamps (default: from each file's mtime)")
    ap.add_argument("--timezone", default="UTC", help="zone of zone-less stamps (default UTC)")
    ap.add_argument("--mta", default="auto", help="postfix, exim, haraka or auto (default)")
    ap.add_argument("--shapes", type=int, default=25, help="unparsed shapes to list (default 25)")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    paths = files_of(a.paths)
    if not paths:
        sys.stderr.write("no files\n")
        return 2
    p, stats = measure(paths, a.year, a.timezone, a.mta)
    doc = report(p, stats, a.shapes)
    doc["files"] = paths
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
