"""The shared per-line path before the MTA modules, counted in instructions under callgrind.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/frame_cost.py MODE LOG

MODE: ``read`` (sources.read_lines), ``frame`` (read + Framer.frame, as a backfill without a state
runs it: ``pipeline.backfill_records``), ``resume`` (read + frame through ``resume.Reader``, as a
backfill with a state runs it). (Ir of a 20,000-line log − Ir of its first 1,000 lines) ÷ 19,000
is the per-line cost with start-up cancelled (benchmarks/README.md).
"""

from __future__ import annotations

import sys

from maillog2otel.config import Settings
from maillog2otel.pipeline import Pipeline, backfill_records
from maillog2otel.sources import SourceStats, group_streams, read_lines


def main() -> int:
    mode, paths = sys.argv[1], sys.argv[2:]
    settings = Settings(timezone="UTC", year=2026)
    stats = SourceStats()
    n = 0
    if mode == "read":
        for p in paths:
            for _ in read_lines(p, stats):
                n += 1
    elif mode == "frame":
        from maillog2otel.export.base import NullSink

        pipeline = Pipeline(settings, NullSink(), NullSink())
        for _ in backfill_records(paths, settings, pipeline, stats):
            n += 1
    elif mode == "resume":
        from maillog2otel.resume import Reader

        for _ in Reader(group_streams(paths), settings, stats).items():
            n += 1
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.stderr.write(f"{n:,} items, {stats.lines:,} lines, mode {mode}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
