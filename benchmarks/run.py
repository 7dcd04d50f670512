#!/usr/bin/env python3
"""One command: maillog2otel against the baselines, side by side, on the same generated files.

    python benchmarks/run.py --lines 1000000 --mta postfix
    python benchmarks/run.py --mta exim --lines 1e6 --repeat 3 --json benchmarks/out/exim.json
    python benchmarks/run.py --mta postfix --sizes 100000,1000000,10000000     # linearity

For each file (made by generate.py, cached in benchmarks/data/) it runs, one after the other:

- ``m2o full``     maillog2otel backfill, traces + metrics over OTLP/HTTP (protobuf) to
                    benchmarks/otlp_sink.py, a separate process on 127.0.0.1 that decodes and discards
- ``m2o metrics``  the same with ``--no-traces``
- ``m2o parse``    ``--exporter none`` (read, parse, correlate; export nothing)
- ``m2o … pure``   the same three with ``MAILLOG2OTEL_PURE=1`` when the install has compiled modules
- ``m2o … -jN``    the same three with ``backfill --jobs N`` for each ``--jobs`` value asked
- ``pflogsumm``    (Postfix) Debian's pflogsumm, default report
- ``eximstats``    (Exim) Exim's eximstats, default report
- ``mtail``        ``mtail --one_shot`` with this directory's mtail/<mta>/ program
- ``py floor``     benchmarks/floor.py: ``for line in file`` + one prefix regex

and prints lines/s, the ratios that issue 12 sets targets on, peak RSS and CPU use. It installs
nothing: missing baselines are reported with the command that installs them, and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

import generate  # noqa: E402

PY = sys.executable
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
BASELINE = {"postfix": "pflogsumm", "exim": "eximstats", "haraka": None}
TARGETS = {  # mta -> (tool, versus, minimum ratio), issue 12 (issue 6's were 2× / 5× / 4× / 0.5×)
    "postfix": [("m2o full", "baseline", 1.0), ("m2o metrics", "baseline", 2.0),
                ("m2o full pure", "baseline", 0.5)],
    "exim": [("m2o full", "baseline", 0.5), ("m2o metrics", "baseline", 1.0)],
    "haraka": [("m2o full", "mtail", 2.0)],
}
RSS_TARGET_MB = 150


# ----------------------------------------------------------------------------------------------
# What is installed


@dataclass
class Tool:
    name: str
    cmd: list[str] | None  # None: missing
    how: str = ""  # how to install, when missing
    kind: str = "baseline"  # m2o | baseline | floor
    extra_env: dict[str, str] = field(default_factory=dict)
    needs_sink: bool = False


def _find_eximstats() -> str | None:
    for cand in (
        shutil.which("eximstats"),
        "/usr/local/bin/eximstats",
        "/opt/exim-unpacked/usr/sbin/eximstats",
    ):
        if cand and os.access(cand, os.X_OK):
            return cand
    root = Path("/opt/exim-unpacked")
    if root.is_dir():
        for p in root.rglob("eximstats"):
            if os.access(p, os.X_OK):
                return str(p)
    return None


def snapshot(rev: str) -> tuple[Path, str]:
    """maillog2otel as committed at ``rev``, unpacked under benchmarks/out/ (``git archive``; the
    repository is not touched), laid out so that ``PYTHONPATH=<dir>`` imports it instead of the
    installed (editable, possibly being edited) tree. Returns (dir, short sha)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = OUT / f"src-{sha}"
    if not (dest / "maillog2otel" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        arch = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha, "maillog2otel", "grammars"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
    link = dest / "maillog2otel" / "grammars"  # setup.py maps grammars/ to maillog2otel.grammars
    if not link.exists() and (dest / "grammars").is_dir():
        link.symlink_to("../grammars")
    # An editable install's finder would still serve modules the snapshot lacks (say a grammar that
    # exists only in the working tree): drop it at start-up.
    (dest / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path\n"
        "                    if not getattr(f, '__module__', '').startswith('__editable__')]\n"
    )
    return dest, sha


def tree_state() -> str:
    """'' when maillog2otel/ and grammars/ match HEAD, else a warning."""
    r = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "maillog2otel", "grammars"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (
        (
            f"working tree differs from HEAD in {len(r.stdout.splitlines())} file(s) under maillog2otel/ or "
            "grammars/ (use --rev HEAD to measure the committed code)"
        )
        if r.stdout.strip()
        else ""
    )


M2O_ENV: dict[str, str] = {}  # PYTHONPATH for --rev


def m2o_supports(mta: str) -> tuple[bool, str]:
    """Whether the installed maillog2otel has a grammar for this MTA (asked in a subprocess)."""
    code = (
        "import importlib.util, sys\n"
        "try:\n    from maillog2otel import mtas\nexcept Exception as e:\n"
        "    print('cannot import maillog2otel:', e); sys.exit(2)\n"
        f"if hasattr(mtas, 'available'):\n    sys.exit(0 if {mta!r} in mtas.available() else 3)\n"
        f"gm = mtas.REGISTRY.get({mta!r}, (None,))[0]\n"
        "sys.exit(0 if gm and importlib.util.find_spec(gm) else 3)\n"
    )
    try:
        r = subprocess.run(
            [PY, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **M2O_ENV},
            cwd="/",
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {PY}: {exc}"
    if r.returncode == 0:
        return True, ""
    if r.returncode == 3:
        return False, f"this maillog2otel does not support {mta} yet (no grammar and/or correlator)"
    if r.returncode == 2:
        return False, (r.stdout.strip() or "cannot import maillog2otel") + " — install it: pip install -e ."
    # an older/newer maillog2otel without mtas.REGISTRY: let the run itself tell
    return True, ""


def m2o_build() -> tuple[bool, bool, str]:
    """(compiled modules installed, backfill has --jobs, the --version text), asked in a subprocess."""
    env = {**os.environ, **M2O_ENV}
    env.pop("MAILLOG2OTEL_PURE", None)
    try:
        v = subprocess.run([PY, "-m", "maillog2otel", "--version"], capture_output=True, text=True,
                           timeout=60, env=env, cwd="/", check=False).stdout
        h = subprocess.run([PY, "-m", "maillog2otel", "backfill", "--help"], capture_output=True, text=True,
                           timeout=60, env={**env, "COLUMNS": "200"}, cwd="/", check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False, False, ""
    return "compiled (Cython)" in v or "partly compiled" in v, "--jobs" in h, " ".join(v.split())


def tools_for(mta: str, path: Path, endpoint: str | None, year: int, jobs: list[int] | None = None,
              pure: bool = True) -> list[Tool]:
    """Each m2o mode as installed (compiled where built), then with MAILLOG2OTEL_PURE=1 (`… pure`)
    when compiled modules are installed and ``pure``, then with ``--jobs N`` for each N asked."""
    tools: list[Tool] = []
    ok, why = m2o_supports(mta)
    compiled, has_jobs, _ = m2o_build() if ok else (False, False, "")
    m2o = [PY, "-m", "maillog2otel", "backfill", "--mta", mta, "--year", str(year), "--timezone", "UTC"]
    if mta != "postfix":
        m2o += ["--hostname", "mx.bench.test"]
    variants: list[tuple[str, dict[str, str], list[str], str]] = [("", {}, [], "")]
    if compiled and pure:
        variants.append((" pure", {"MAILLOG2OTEL_PURE": "1"}, [], ""))
    for n in jobs or []:
        variants.append((f" -j{n}", {}, ["--jobs", str(n)], "" if has_jobs else
                         "this maillog2otel has no backfill --jobs yet"))
    for suffix, env, more, missing in variants:
        for mode, extra, needs_sink in (
            ("m2o full", ["--traces", "--metrics"], True),
            ("m2o metrics", ["--no-traces", "--metrics"], True),
            ("m2o parse", ["--exporter", "none"], False),
        ):
            name = mode + suffix
            if not ok or missing:
                tools.append(Tool(name, None, why or missing, "m2o"))
            elif needs_sink and endpoint is None:
                tools.append(Tool(name, None, "the OTLP sink did not start (see above)", "m2o"))
            else:
                exp = ["--exporter", "otlp", "--endpoint", endpoint] if needs_sink else []
                tools.append(Tool(name, [*m2o, *extra, *more, *exp, str(path)], kind="m2o",
                                  needs_sink=needs_sink, extra_env={**M2O_ENV, **env}))
    if mta == "postfix":
        pfl = shutil.which("pflogsumm")
        tools.append(
            Tool(
                "pflogsumm",
                [pfl, str(path)] if pfl else None,
                "apt-get install pflogsumm   (Debian package pflogsumm)",
            )
        )
    if mta == "exim":
        ex = _find_eximstats()
        tools.append(
            Tool(
                "eximstats",
                [ex, str(path)] if ex else None,
                "sudo bash fixtures/exim/install.sh   (unpacks Debian's exim4-base: "
                "/usr/local/bin/eximstats)",
            )
        )
    mt = shutil.which("mtail")
    prog = HERE / "mtail" / mta
    tools.append(
        Tool(
            "mtail",
            [
                mt,
                "--one_shot",
                "--one_shot_format",
                "prometheus",
                "--address",
                "127.0.0.1",
                "--port",
                "0",
                "--logtostderr",
                "--progs",
                str(prog),
                "--logs",
                str(path),
            ]
            if mt
            else None,
            "apt-get install mtail   (Debian package mtail)",
        )
    )
    tools.append(Tool("py floor", [PY, str(HERE / "floor.py"), mta, str(path)], kind="floor"))
    return tools


# ----------------------------------------------------------------------------------------------
# Measuring one process


def _proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as fh:
                s = fh.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, IndexError, ValueError):
        return 0


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            s = fh.read()
        f = s[s.rindex(b")") + 2 :].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Run:
    tool: str
    lines: int
    wall_s: float = 0.0
    lines_per_s: float = 0.0
    peak_rss_mb: float = 0.0  # ru_maxrss: the largest single process (the tool or a child it reaped)
    tree_rss_mb: float = 0.0  # sampled sum over the process tree (matters once work is spread over processes)
    cpu_s: float = 0.0  # user + sys of the tool and the children it reaped
    rc: int | None = None
    error: str = ""
    sink_cpu_s: float = 0.0
    rss_quarters_mb: list[float] = field(
        default_factory=list
    )  # peak tree RSS by 1/4, 1/2, 3/4, all of the run
    others_cores: float = 0.0  # CPU used by other processes on the machine during the run, in cores
    received: dict = field(default_factory=dict)
    summary: str = ""


def measure(tool: Tool, lines: int, out_prefix: Path, timeout: float, sink: Sink | None) -> Run:
    run = Run(tool.name, lines)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", tool.name.lower())
    stdout_path = Path(f"{out_prefix}-{slug}.out")
    stderr_path = Path(f"{out_prefix}-{slug}.err")
    rss_path = Path(f"{out_prefix}-{slug}.rss")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MAILLOG2OTEL_"))}
    env.update(tool.extra_env)
    # GNU time reports the tool's own peak RSS. Our own wait4() cannot: a child forked from this
    # (≈40 MB) Python process carries our RSS into its ru_maxrss when it execs.
    cmd = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *tool.cmd] if GNU_TIME else tool.cmd
    if sink is not None:
        sink.stats(reset=True)
    sink_cpu0 = sink.cpu() if sink else 0.0
    peak_tree = 0
    timeline: list[int] = []  # sampled tree RSS (KB), every 0.25 s
    stop = threading.Event()
    busy0 = _busy_s()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(OUT),
            start_new_session=True,
        )  # not ROOT: -m would import ROOT/maillog2otel

        def sample():
            nonlocal peak_tree
            while not stop.wait(0.25):
                kids = _proc_children()
                todo, total = [proc.pid], 0
                while todo:
                    p = todo.pop()
                    total += _rss_kb(p)
                    todo.extend(kids.get(p, ()))
                peak_tree = max(peak_tree, total)
                timeline.append(total)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killer = threading.Timer(timeout, _kill_group, (proc.pid,))
        killer.daemon = True
        killer.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        killer.cancel()
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    run.wall_s = wall
    run.rc = proc.returncode
    run.peak_rss_mb = ru.ru_maxrss / 1024
    if GNU_TIME:
        with contextlib.suppress(OSError, ValueError, IndexError):
            run.peak_rss_mb = int(rss_path.read_text().split()[-1]) / 1024
    run.tree_rss_mb = max(peak_tree / 1024, run.peak_rss_mb)
    if len(timeline) >= 8:  # RSS along the run: flat, or growing with the lines read?
        run.rss_quarters_mb = [
            round(max(timeline[: max(1, len(timeline) * q // 4)]) / 1024, 1) for q in (1, 2, 3, 4)
        ]
    run.cpu_s = ru.ru_utime + ru.ru_stime
    run.lines_per_s = lines / wall if wall > 0 else 0.0
    busy = _busy_s() - busy0
    if run.rc != 0:
        tail = stderr_path.read_text(errors="replace").strip().splitlines()[-3:]
        run.error = ("timeout" if run.rc == -signal.SIGKILL else f"exit {run.rc}") + (
            ": " + " | ".join(tail) if tail else ""
        )
    if sink is not None:
        time.sleep(0.05)
        run.received = sink.stats(reset=True)
        run.sink_cpu_s = sink.cpu() - sink_cpu0
    run.others_cores = max(0.0, (busy - run.cpu_s - run.sink_cpu_s) / wall) if wall > 0 else 0.0
    if tool.kind == "m2o":
        text = stderr_path.read_text(errors="replace")
        m = re.search(r"read:\s*([\d,]+) parsed, ([\d,]+) foreign, ([\d,]+) unparsed", text)
        e = re.search(r"exported\s+([\d,]+) spans, ([\d,]+) metric points", text)
        if m and run.rc == 0 and int(m.group(1).replace(",", "")) < lines // 100:
            run.rc = -1
            run.error = f"parsed {m.group(1)} of {lines:,} lines: this build does not handle these logs"
        run.summary = ", ".join(
            x
            for x in (
                f"parsed {m.group(1)} unparsed {m.group(3)}" if m else "",
                f"exported {e.group(1)} spans {e.group(2)} points" if e else "",
            )
            if x
        )
    return run


# ----------------------------------------------------------------------------------------------
# The OTLP sink process


class Sink:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PY, str(HERE / "otlp_sink.py"), "--port", "0", "--max-seconds", "14400"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        m = re.search(r"LISTENING (http://127\.0\.0\.1:\d+)", line)
        if not m:
            self.close()
            raise RuntimeError(f"otlp_sink.py did not start: {line!r}")
        self.endpoint = m.group(1)

    def stats(self, reset: bool = False) -> dict:
        url = f"{self.endpoint}/stats" + ("?reset=1" if reset else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.loads(r.read())

    def cpu(self) -> float:
        return _cpu_s(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------------------------
# Reporting


def _ratio(a: float | None, b: float | None) -> str:
    if not (a and b):
        return "—"
    x = a / b
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"


def summarize(runs_by_tool: dict[str, list[Run]]) -> dict[str, Run]:
    """Median lines/s over repeats (the run nearest the median), worst peak RSS."""
    best: dict[str, Run] = {}
    for name, runs in runs_by_tool.items():
        good = [r for r in runs if r.rc == 0]
        if not good:
            best[name] = runs[-1]
            continue
        med = statistics.median(r.lines_per_s for r in good)
        pick = min(good, key=lambda r: abs(r.lines_per_s - med))
        rep = Run(**{**asdict(pick)})
        rep.lines_per_s = med
        rep.peak_rss_mb = max(r.peak_rss_mb for r in good)
        rep.tree_rss_mb = max(r.tree_rss_mb for r in good)
        best[name] = rep
    return best


def _per_cpu(r: Run) -> float:
    return r.lines / r.cpu_s if r.cpu_s > 0 else 0.0


def table(
    mta: str, lines: int, tools: list[Tool], res: dict[str, Run], repeat: int
) -> tuple[str, list[dict]]:
    base = BASELINE[mta]
    ref = {
        k: (res[k].lines_per_s if k in res and res[k].rc == 0 else None) for k in (base, "mtail", "py floor")
    }
    head = [
        "tool",
        "lines/s",
        f"× {base or 'baseline'}",
        "× mtail",
        "× py floor",
        "peak RSS MB",
        "CPU %",
        "lines/CPU-s",
        "notes",
    ]
    rows, data = [], []
    for t in tools:
        r = res.get(t.name)
        if r is None:
            rows.append([t.name, "missing", "", "", "", "", "", "", t.how])
            data.append({"tool": t.name, "missing": t.how})
            continue
        if r.rc != 0:
            rows.append([t.name, "failed", "", "", "", f"{r.peak_rss_mb:.0f}", "", "", r.error[:100]])
            data.append({"tool": t.name, "error": r.error, **asdict(r)})
            continue
        cpu = 100 * r.cpu_s / r.wall_s if r.wall_s else 0
        note = []
        if r.others_cores > 0.25:
            note.append(f"others busy {r.others_cores:.1f} cores")
        if t.kind == "m2o" and len(r.rss_quarters_mb) == 4 and r.rss_quarters_mb[0] > 0:
            q = r.rss_quarters_mb
            note.append(f"RSS by quarter {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}/{q[3]:.0f} MB")
        if r.tree_rss_mb > 1.15 * r.peak_rss_mb:
            note.append(f"tree RSS {r.tree_rss_mb:.0f} MB")
        if t.needs_sink:
            got = r.received or {}
            note.append(
                f"sink got {got.get('spans', 0):,} spans, {got.get('metric_points', 0):,} "
                f"points in {got.get('requests', 0):,} req (sink CPU {r.sink_cpu_s:.1f}s)"
            )
            e = re.search(r"exported ([\d,]+) spans ([\d,]+) points", r.summary)
            if e and (
                int(e.group(1).replace(",", "")) != got.get("spans", 0)
                or int(e.group(2).replace(",", "")) != got.get("metric_points", 0)
            ):
                note.append(f"MISMATCH: m2o says {r.summary}")
        elif t.kind == "m2o" and r.summary:
            note.append(r.summary)
        rows.append(
            [
                t.name,
                f"{r.lines_per_s:,.0f}",
                _ratio(r.lines_per_s, ref[base]) if base else "—",
                _ratio(r.lines_per_s, ref["mtail"]),
                _ratio(r.lines_per_s, ref["py floor"]),
                f"{r.peak_rss_mb:.0f}",
                f"{cpu:.0f}",
                f"{_per_cpu(r):,.0f}",
                "; ".join(note),
            ]
        )
        data.append(
            {
                **asdict(r),
                "cpu_pct": round(cpu, 1),
                "lines_per_cpu_s": _per_cpu(r),
                "ratio_baseline": (r.lines_per_s / ref[base]) if base and ref[base] else None,
                "ratio_mtail": (r.lines_per_s / ref["mtail"]) if ref["mtail"] else None,
                "ratio_floor": (r.lines_per_s / ref["py floor"]) if ref["py floor"] else None,
            }
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    widths[-1] = 0
    fmt = lambda row: "  ".join(  # noqa: E731
        (str(c).ljust(w) if i in (0, len(row) - 1) else str(c).rjust(w))
        for i, (c, w) in enumerate(zip(row, widths, strict=True))
    ).rstrip()
    out = [
        f"{mta}, {lines:,} lines" + (f", median of {repeat}" if repeat > 1 else ""),
        fmt(head),
        fmt(["-" * w for w in widths[:-1]] + ["-----"]),
    ]
    out += [fmt(r) for r in rows]
    # the same ratios by CPU time: less sensitive to other processes on a shared machine
    cref = {
        k: (_per_cpu(res[k]) if k in res and res[k].rc == 0 else None) for k in (base, "mtail", "py floor")
    }
    by_cpu = []
    for t in tools:
        r = res.get(t.name)
        if r is None or r.rc != 0 or t.kind != "m2o":
            continue
        vs = [f"{_ratio(_per_cpu(r), cref[k])} {k}" for k in (base, "mtail", "py floor") if k and cref[k]]
        if vs:
            by_cpu.append(f"{t.name} " + " ".join(vs))
    if by_cpu:
        out.append(
            "ratios by CPU time (lines per CPU-second; the sink's CPU not counted): " + "; ".join(by_cpu)
        )
    # targets
    checks = []
    for tool, versus, need in TARGETS.get(mta, []):
        vs = base if versus == "baseline" else versus
        if vs is None or tool not in res or res[tool].rc != 0 or not ref.get(vs):
            continue
        got = res[tool].lines_per_s / ref[vs]
        by_cpu_got = _per_cpu(res[tool]) / cref[vs] if cref.get(vs) else 0.0
        checks.append(f"{tool} ≥ {need:g}× {vs}: {got:.2f}× wall {'PASS' if got >= need else 'FAIL'}, "
                      f"{by_cpu_got:.2f}× CPU {'PASS' if by_cpu_got >= need else 'FAIL'}")
    for tool in [t.name for t in tools if t.kind == "m2o"]:
        if tool in res and res[tool].rc == 0 and lines >= 1_000_000:
            rss = max(res[tool].peak_rss_mb, res[tool].tree_rss_mb)
            checks.append(
                f"{tool} peak RSS ≤ {RSS_TARGET_MB} MB: {rss:.0f} MB "
                f"{'PASS' if rss <= RSS_TARGET_MB else 'FAIL'}"
            )
    if checks:
        out.append("targets (issue 12): " + "; ".join(checks))
    return "\n".join(out), data


# ----------------------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next(
            (
                x.split(":", 1)[1].strip()
                for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")
            ),
            "",
        )
    mem = 0
    with contextlib.suppress(OSError, StopIteration, ValueError):
        mem = (
            int(
                next(
                    x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
                ).split()[1]
            )
            // 1024
        )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "mem_mb": mem,
        "python": sys.version.split()[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def versions(tools: list[Tool]) -> dict[str, str]:
    v = {}
    for cmd in (
        ["dpkg-query", "-W", "-f", "${Version}", "pflogsumm"],
        ["dpkg-query", "-W", "-f", "${Version}", "mtail"],
    ):
        with contextlib.suppress(OSError):
            v[cmd[-1]] = subprocess.run(
                cmd, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
    with contextlib.suppress(OSError, IndexError, subprocess.TimeoutExpired):
        v["maillog2otel"] = (
            subprocess.run(
                [PY, "-m", "maillog2otel", "--version"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, **M2O_ENV},
                cwd="/",
                check=False,
            )
            .stdout.strip()
            .split()[-1]
        )
    with contextlib.suppress(OSError):
        v["git"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    v["maillog2otel source"] = (
        f"git {M2O_ENV['M2O_REV']} (--rev, {M2O_ENV['PYTHONPATH']})"
        if M2O_ENV
        else "installed tree" + (" (DIRTY: " + tree_state() + ")" if tree_state() else "")
    )
    return v


def warm(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    ap.add_argument("--mta", default="postfix", help="postfix, exim, haraka or all (comma list)")
    ap.add_argument("--lines", type=lambda s: int(float(s)), default=1_000_000)
    ap.add_argument("--sizes", help="comma list of line counts, e.g. 100000,1000000,10000000 (linearity)")
    ap.add_argument(
        "--file",
        type=Path,
        help="measure this log (a real one, or one generate.py made) instead of generating; needs one --mta",
    )
    ap.add_argument("--year", type=int, default=2026, help="year of the first line of --file (syslog stamps)")
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per tool (interleaved); the median is reported"
    )
    ap.add_argument("--only", help="comma list of tools to run (e.g. 'm2o parse,py floor')")
    ap.add_argument("--sets", help="generator fixture sets, e.g. port-logging:8,expiry:1 (see generate.py)")
    ap.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per tool run (then it is killed)")
    ap.add_argument("--json", type=Path, help="also write every result as JSON to this file")
    ap.add_argument(
        "--rev",
        help="measure maillog2otel as committed at this git revision (e.g. HEAD) rather "
        "than the installed working tree, which other people may be editing",
    )
    ap.add_argument("--jobs", help="comma list of backfill --jobs values to run too (rows `m2o … -jN`)")
    ap.add_argument("--no-pure", action="store_true",
                    help="skip the MAILLOG2OTEL_PURE=1 rows (`m2o … pure`) of a compiled install")
    ap.add_argument("--check-only", action="store_true", help="report what is installed and exit")
    a = ap.parse_args(argv)
    if a.rev:
        src, sha = snapshot(a.rev)
        M2O_ENV.update({"PYTHONPATH": str(src), "M2O_REV": sha})

    mtas = ["postfix", "exim", "haraka"] if a.mta == "all" else a.mta.split(",")
    sizes = [int(float(x)) for x in a.sizes.split(",")] if a.sizes else [a.lines]
    if a.file:
        if len(mtas) != 1:
            ap.error("--file needs exactly one --mta")
        with open(a.file, "rb") as fh:
            sizes = [sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 24), b""))]
    only = {x.strip() for x in a.only.split(",")} if a.only else None
    jobs = [int(x) for x in a.jobs.split(",")] if a.jobs else []

    sink = None
    try:
        sink = Sink()
    except (OSError, RuntimeError) as exc:
        print(f"run: OTLP sink unavailable ({exc}); the exporting runs are skipped", file=sys.stderr)
    info = {"machine": machine(), "results": []}
    try:
        # what is installed
        print(
            f"machine: {info['machine']['cores']} cores, {info['machine']['cpu']}, "
            f"{info['machine']['mem_mb'] // 1024} GiB, Python {info['machine']['python']}; "
            f"{info['machine']['date']}"
        )
        missing_any = False
        for mta in mtas:
            for t in tools_for(mta, Path("FILE"), sink.endpoint if sink else None, 2026):
                if t.cmd is None:
                    missing_any = True
                    print(f"  {mta}: {t.name}: MISSING — {t.how}")
        if not missing_any:
            print("  all baselines present")
        if not GNU_TIME:
            print(
                "  /usr/bin/time: MISSING — apt-get install time   (peak RSS falls back to wait4(), which "
                "overstates small tools by this script's own RSS)"
            )
        v = versions([])
        v["maillog2otel build"] = m2o_build()[2]
        info["versions"] = v
        print("versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x))
        if a.check_only:
            return 0

        linearity: dict[str, dict[str, dict[int, Run]]] = {}
        for mta in mtas:
            if not generate.available_sets(mta) and not a.file:
                print(f"\n{mta}: no fixture logs under fixtures/{mta}/ — skipped")
                continue
            sets = generate.parse_sets(mta, a.sets if len(mtas) == 1 else None)
            for n in sizes:
                if a.file:
                    meta_path = Path(str(a.file) + ".json")
                    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
                    meta = {"sets": {}, "seed": None, "year": a.year, **meta, "bytes": a.file.stat().st_size}
                    path = a.file.resolve()
                else:
                    path, meta = generate.ensure(mta, n, seed=a.seed, sets=sets)
                tools = tools_for(mta, path, sink.endpoint if sink else None, meta.get("year", 2026), jobs,
                                  not a.no_pure)
                if only:
                    tools = [t for t in tools if t.name in only]
                warm(path)
                runs: dict[str, list[Run]] = {t.name: [] for t in tools if t.cmd}
                prefix = OUT / f"{mta}-{n}"
                for i in range(a.repeat):
                    for t in tools:
                        if t.cmd is None:
                            continue
                        print(f"  [{mta} {n:,} #{i + 1}] {t.name} …", end="", flush=True, file=sys.stderr)
                        r = measure(t, n, prefix, a.timeout, sink if t.needs_sink else None)
                        runs[t.name].append(r)
                        print(
                            f" {r.lines_per_s:,.0f} lines/s, {r.peak_rss_mb:.0f} MB"
                            + (f" ({r.error})" if r.error else ""),
                            file=sys.stderr,
                        )
                res = summarize(runs)
                text, data = table(mta, n, tools, res, a.repeat)
                print("\n" + text, flush=True)
                print(
                    f"file: {_rel(path)} ({meta['bytes'] / 1e6:.0f} MB, sets "
                    f"{','.join(f'{k}:{w:g}' for k, w in meta['sets'].items())}, seed {meta['seed']})"
                )
                info["results"].append(
                    {
                        "mta": mta,
                        "lines": n,
                        "file": _rel(path),
                        "generator": meta,
                        "repeat": a.repeat,
                        "tools": data,
                    }
                )
                for name, r in res.items():
                    linearity.setdefault(mta, {}).setdefault(name, {})[n] = r
        if len(sizes) > 1:
            for mta, by_tool in linearity.items():
                print(f"\nlinearity, {mta}: lines/s (peak RSS MB) at each size")
                head = ["tool"] + [f"{n:,}" for n in sizes] + [f"{sizes[-1]:,} / {sizes[0]:,}"]
                rows = []
                for name, per in by_tool.items():
                    cells = [
                        f"{per[n].lines_per_s:,.0f} ({per[n].peak_rss_mb:.0f})"
                        if n in per and per[n].rc == 0
                        else "—"
                        for n in sizes
                    ]
                    first, last = per.get(sizes[0]), per.get(sizes[-1])
                    ratio = (
                        f"{last.lines_per_s / first.lines_per_s:.2f}"
                        if first and last and first.rc == 0 and last.rc == 0
                        else "—"
                    )
                    rows.append([name, *cells, ratio])
                w = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
                for row in [head, *rows]:
                    print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(row)))
            info["linearity"] = {
                mta: {
                    name: {
                        str(n): {"lines_per_s": r.lines_per_s, "peak_rss_mb": r.peak_rss_mb}
                        for n, r in per.items()
                    }
                    for name, per in by_tool.items()
                }
                for mta, by_tool in linearity.items()
            }
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(info, indent=1, default=str) + "\n")
            print(f"\njson: {a.json}")
    finally:
        if sink:
            sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
