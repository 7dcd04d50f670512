#!/usr/bin/env python3
"""Where maillog2otel's backfill time goes: cProfile on a generated log, parse-only and full export.

    python benchmarks/profile.py                       # 200k Postfix lines, both modes, prints the report
    python benchmarks/profile.py --save benchmarks/PROFILE-before.txt
    python benchmarks/profile.py --mode parse --lines 50000 --top 40

Each mode runs ``python -m cProfile -m maillog2otel backfill …`` in its own process (the full mode
exports over OTLP/HTTP to benchmarks/otlp_sink.py, as run.py does) and prints, from the saved
stats: time per module group (own time, so the groups add up to the total), then the top
functions by cumulative and by own (total) time. cProfile slows Python code down by roughly 1.5–2×,
and more for code making many small calls, so read shares, not seconds; run.py gives the rates.
Only the main process is profiled: work moved to another process would not show here.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from run import Sink, snapshot, tree_state  # noqa: E402

PY = sys.executable


def group_of(filename: str, funcname: str) -> str:
    """A readable bucket for a profile entry: our module, a third-party package, or a builtin."""
    if filename == "~":  # builtins: {method 'match' of 're.Pattern' objects}, <built-in method …>
        m = re.search(r"of '([\w.]+)' objects", funcname)
        if m:
            return f"builtin {m.group(1)}"
        m = re.search(r"<built-in method ([\w.]+)>", funcname)
        return f"builtin {m.group(1)}" if m else f"builtin {funcname}"
    f = filename.replace(os.sep, "/")
    m = re.search(r"/maillog2otel/(.+?)\.py$", f) or re.search(r"^maillog2otel/(.+?)\.py$", f)
    if m and "site-packages" not in f.split("/maillog2otel/")[0]:
        return "maillog2otel." + m.group(1).replace("/", ".").removesuffix(".__init__")
    m = re.search(r"/grammars/(\w+)\.py$", f)
    if m:
        return f"maillog2otel.grammars.{m.group(1)}"
    m = re.search(r"site-packages/([^/]+)/(?:([^/]+)/)?", f)
    if m:
        top = m.group(1)
        if top in ("google", "opentelemetry") and m.group(2):
            return f"{top}.{m.group(2).removesuffix('.py')}"
        return top.removesuffix(".py")
    m = re.search(r"/lib/python3\.\d+/([^/]+?)(?:\.py|/)", f)
    if m:
        return f"stdlib {m.group(1)}"
    return f


def report(prof: Path, title: str, top: int) -> str:
    st = pstats.Stats(str(prof))
    total = st.total_tt
    out = io.StringIO()
    out.write(f"\n=== {title} ===\n")
    out.write(
        f"total own time under the profiler: {total:.2f}s, {st.total_calls:,} calls "
        f"({st.prim_calls:,} primitive)\n"
    )
    groups: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in st.stats.items():
        g = group_of(filename, func)
        groups[g] = groups.get(g, 0.0) + tt
    out.write("\n-- own time by module (adds up to 100%) --\n")
    for g, tt in sorted(groups.items(), key=lambda kv: -kv[1])[:25]:
        out.write(f"{100 * tt / total:6.1f}%  {tt:8.2f}s  {g}\n")

    wrappers = re.compile(r"runpy|typer|click|<string>|__main__\.py|cli\.py|builtins\.exec|importlib")

    def listing(key: str, label: str) -> None:
        items = st.stats.items()
        if key == "cumulative":  # the entry-point chain (runpy, typer, cli) is 100% and says nothing
            items = [kv for kv in items if not wrappers.search(f"{kv[0][0]}:{kv[0][2]}")]
        rows = sorted(items, key=lambda kv: -kv[1][3 if key == "cumulative" else 2])[:top]
        out.write(f"\n-- top {top} by {label} --\n")
        out.write(f"{'cum%':>6} {'own%':>6} {'cum s':>8} {'own s':>8} {'calls':>11}  function\n")
        for (filename, line, func), (_cc, nc, tt, ct, _callers) in rows:
            where = re.sub(r"^.*?/(site-packages|lib/python3\.\d+)/", "", filename)
            where = re.sub(r"^" + re.escape(str(ROOT)) + "/", "", where)
            where = re.sub(r"^.*?/src-[0-9a-f]+/", "", where)  # a --rev snapshot
            name = f"{where}:{line}({func})" if filename != "~" else func
            out.write(
                f"{100 * ct / total:6.1f} {100 * tt / total:6.1f} {ct:8.2f} {tt:8.2f} {nc:11,}  {name}\n"
            )

    listing("cumulative", "cumulative time (the function and everything it calls)")
    listing("tottime", "own (total) time (the function's own code only)")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    ap.add_argument("--mta", default="postfix", choices=sorted(generate.SOURCES))
    ap.add_argument("--lines", type=lambda s: int(float(s)), default=200_000)
    ap.add_argument("--mode", choices=("parse", "full", "both"), default="both")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    ap.add_argument("--save", type=Path, help="also write the report to this file")
    ap.add_argument(
        "--rev",
        help="profile maillog2otel as committed at this git revision (e.g. HEAD) "
        "rather than the installed working tree",
    )
    a = ap.parse_args(argv)
    m2o_env: dict[str, str] = {}
    if a.rev:
        src, sha = snapshot(a.rev)
        m2o_env["PYTHONPATH"] = str(src)

    path, meta = generate.ensure(a.mta, a.lines, seed=a.seed)
    profdir = HERE / "out"
    profdir.mkdir(parents=True, exist_ok=True)
    if a.rev:
        source = f"git {sha} (--rev {a.rev})"
    else:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = tree_state()
        source = f"installed tree at git {head}" + (f" — {dirty}" if dirty else "")
    header = (
        f"maillog2otel backfill profile — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, maillog2otel: {source}\n"
        f"input: {path.relative_to(ROOT)} — {meta['lines']:,} {a.mta} lines "
        f"(benchmarks/generate.py, seed {meta['seed']}); {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}\n"
        "cProfile inflates Python-heavy code; read the shares. Rates without the profiler: run.py.\n"
    )
    parts = [header]
    modes = ["parse", "full"] if a.mode == "both" else [a.mode]
    sink = Sink() if "full" in modes else None
    try:
        for mode in modes:
            prof = profdir / f"profile-{a.mta}-{a.lines}-{mode}.prof"
            cmd = [
                PY,
                "-m",
                "cProfile",
                "-o",
                str(prof),
                "-m",
                "maillog2otel",
                "backfill",
                "--mta",
                a.mta,
                "--year",
                str(meta.get("year", 2026)),
                "--timezone",
                "UTC",
            ]
            if a.mta != "postfix":
                cmd += ["--hostname", "mx.bench.test"]
            if mode == "parse":
                cmd += ["--exporter", "none"]
                title = "parse only (--exporter none)"
            else:
                cmd += ["--traces", "--metrics", "--exporter", "otlp", "--endpoint", sink.endpoint]
                sink.stats(reset=True)
                title = "full (traces + metrics over OTLP/HTTP to benchmarks/otlp_sink.py)"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MAILLOG2OTEL_"))}
            env.update(m2o_env)
            print(f"profile: {mode} …", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            r = subprocess.run(
                [*cmd, str(path)], capture_output=True, text=True, env=env, cwd=str(profdir), check=False
            )
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                print(f"profile: {mode} failed (exit {r.returncode}):\n{r.stderr[-2000:]}", file=sys.stderr)
                return 1
            summary = "\n".join(x for x in r.stderr.splitlines() if x.startswith("maillog2otel:"))
            got = f"\nsink received: {sink.stats(reset=True)}" if mode == "full" else ""
            parts.append(
                report(
                    prof,
                    f"{title}: {wall:.1f}s wall under cProfile ({meta['lines'] / wall:,.0f} lines/s)",
                    a.top,
                )
                + "\nmaillog2otel's own summary:\n"
                + summary
                + got
                + "\n"
            )
    finally:
        if sink:
            sink.close()
    text = "\n".join(parts)
    print(text)
    if a.save:
        a.save.write_text(text)
        print(f"saved: {a.save}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
