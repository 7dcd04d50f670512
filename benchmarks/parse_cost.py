"""Frame a log, then (``parse``) run the grammar over it: the per-line parse cost, counted in
instructions under callgrind, which do not move with the load of a shared machine.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/parse_cost.py LOG frame
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/parse_cost.py LOG parse

(parse − frame) / lines is the grammar's cost per line. With ``PYTHONPATH=benchmarks/out/src-<sha>``
(a snapshot ``run.py --rev`` or ``stages.py --rev`` unpacked) it measures that commit; run it from
outside the repository so the working tree does not shadow the snapshot.
"""

from __future__ import annotations

import importlib
import sys

from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.parse import Grammar


def main() -> int:
    path, mode = sys.argv[1], sys.argv[2]
    mta = sys.argv[3] if len(sys.argv) > 3 else "postfix"
    grammar = Grammar([importlib.import_module(f"maillog2otel.grammars.{mta}")], fast=True)
    framer = Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026), default_host="h")
    with open(path, encoding="utf-8", errors="replace") as fh:
        records = [r for r in (framer.frame(line.rstrip("\n"), 0) for line in fh) if r is not None]
    if mode == "parse":
        parse = grammar.parse
        for rec in records:
            parse(rec)
    sys.stderr.write(f"{len(records):,} records, mode {mode}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
