#!/usr/bin/env python3
"""Micro-benchmark of OTLP encoding: spans/s (and metric points/s) through the message-object path
(``encode_spans`` + ``SerializeToString``, what OTLP/HTTP protobuf sent before) and the hand-written
wire encoder (``encode_spans_bytes``), on the spans a real backfill makes.

    python benchmarks/encode_bench.py                     # the generated 200k-line Postfix log if present
    python benchmarks/encode_bench.py --file fixtures/exim/rich.mainlog --copies 200
    python benchmarks/encode_bench.py --repeat 7 --batch 512

The spans come from running the pipeline in memory (``maillog2otel.testing.run_pipeline``) on the file
(a fixture can be replicated ``--copies`` times: the same spans again, which the caches see as repeats,
so a generated log is the honest input). They are encoded in batches of ``--batch`` spans, as
``OtlpSink`` does (512), each mode ``--repeat`` times alternating (A B A B …); the best and median rates
are printed, by wall and by CPU time. Both outputs are checked to be the same bytes before timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT = HERE / "data" / "postfix-port-logging.w8+expiry-200000-s6.log"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, default=None,
                    help=f"log to take spans from (default: {DEFAULT.relative_to(ROOT)}, "
                         "else fixtures/postfix/port-logging.log)")
    ap.add_argument("--copies", type=int, default=None, help="replicate the spans N times (default: 1 for "
                    "the generated log, 2000 for a fixture)")
    ap.add_argument("--year", type=int, default=2026)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from maillog2otel.export.encode import (
        Resources,
        encode_metrics,
        encode_metrics_bytes,
        encode_spans,
        encode_spans_bytes,
    )
    from maillog2otel.testing import run_pipeline

    path = args.file or (DEFAULT if DEFAULT.exists() else ROOT / "fixtures" / "postfix" / "port-logging.log")
    copies = args.copies or (1 if path == DEFAULT else 2000)
    t0 = time.perf_counter()
    result = run_pipeline([str(path)], timezone="UTC", year=args.year)
    spans, metrics = result.spans * copies, result.metrics * copies
    n_points = sum(len(m.points) for m in metrics)
    print(f"{path.name} ×{copies}: {len(spans):,} spans ({sum(len(s.events) for s in spans):,} events, "
          f"{sum(len(s.attrs) for s in spans):,} span attributes), {n_points:,} metric points; "
          f"pipeline {time.perf_counter() - t0:.1f} s", flush=True)

    resources = Resources(service_name=None, service_version=None, extra={})
    span_batches = [spans[i:i + args.batch] for i in range(0, len(spans), args.batch)]
    metric_batches = [metrics[i:i + 200] for i in range(0, len(metrics), 200)]
    for b in span_batches[:50]:
        assert encode_spans_bytes(b, resources) == encode_spans(b, resources).SerializeToString()
    for b in metric_batches[:50]:
        assert encode_metrics_bytes(b, resources) == encode_metrics(b, resources).SerializeToString()

    modes = {
        "spans: objects + SerializeToString": (
            lambda: [encode_spans(b, resources).SerializeToString() for b in span_batches], len(spans)),
        "spans: wire encoder (encode_spans_bytes)": (
            lambda: [encode_spans_bytes(b, resources) for b in span_batches], len(spans)),
        "points: objects + SerializeToString": (
            lambda: [encode_metrics(b, resources).SerializeToString() for b in metric_batches], n_points),
        "points: wire encoder (encode_metrics_bytes)": (
            lambda: [encode_metrics_bytes(b, resources) for b in metric_batches], n_points),
    }
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeat):
        for name, (fn, n) in modes.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(n / (time.perf_counter() - w))
            cpu[name].append(n / max(time.process_time() - c, 1e-9))
    print(f"{'mode':45} {'best/s':>12} {'median/s':>12} {'median per CPU-s':>17}")
    for name in modes:
        print(f"{name:45} {max(wall[name]):12,.0f} {statistics.median(wall[name]):12,.0f} "
              f"{statistics.median(cpu[name]):17,.0f}")
    for what in ("spans", "points"):
        old, new = (f"{what}: objects + SerializeToString",
                    next(m for m in modes if m.startswith(f"{what}: wire")))
        by_cpu = statistics.median(cpu[new]) / statistics.median(cpu[old])
        print(f"{what}: wire encoder / objects = {by_cpu:.2f}× (median by CPU), "
              f"{max(wall[new]) / max(wall[old]):.2f}× (best by wall)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
