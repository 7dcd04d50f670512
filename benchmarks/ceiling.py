#!/usr/bin/env python3
"""Where a line's instructions go, by kind of CPython work, and what compiling could at most remove.

    python benchmarks/ceiling.py --mta postfix --file postfix-1m.log
    python benchmarks/ceiling.py --mta exim --file exim.log --modes none,full --endpoint http://127.0.0.1:4318

For each mode (``none``: ``--exporter none``; ``metrics``: ``--no-traces --exporter console``;
``full``: OTLP/HTTP to ``--endpoint``) this runs ``maillog2otel backfill`` under valgrind's
callgrind on the first ``--lines`` lines of the file and on the first ``--base`` lines, and divides
the difference by the difference in lines, so start-up and imports cancel. It then sorts every C
function's own (exclusive) instructions into kinds: the bytecode interpreter and its frames and
calls (what a compiler can remove), and the runtime work a compiled module still asks CPython to do
(regular expressions, allocation, dictionaries, strings and bytes, numbers). The baseline the
issue's targets name (pflogsumm for Postfix, eximstats for Exim) and the Python line-loop floor
(floor.py) are counted the same way, so the table reads "instructions per line, ours against
theirs", a machine-independent companion to run.py's wall-clock ratios.

Instructions are not time: Perl's regex-driven loop retires more instructions per cycle than
CPython's interpreter does, so compare instruction counts between revisions of this project, and
run.py's ratios against the baselines.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

MODES = {
    "none": ["--exporter", "none"],
    "metrics": ["--no-traces", "--exporter", "console"],
    "full": [],  # --endpoint added
}

# First match wins. Prefixes of CPython 3.11 / glibc function names as callgrind reports them.
KINDS: list[tuple[str, str]] = [
    ("interpreter", r"_PyEval_|_PyFrame|_PyEvalFrame|_Py_Specialize|_PyFunction_Vectorcall|"
                    r"PyObject_Vectorcall|_PyObject_VectorcallTstate|_PyObject_Call|PyObject_Call|"
                    r"_PyObject_MakeTpCall|method_vectorcall|cfunction_|vectorcall|initialize_locals|"
                    r"_PyThreadState_Push|_PyThreadState_Pop|frame_|clear_thread_frame|"
                    r"_Py_HandlePending|type_call|vgetargs|_PyArg_|PyArg_"),
    ("regex", r"sre_|pattern_|match_|_sre|state_init|state_fini|getslice"),
    ("allocation + gc", r"_PyObject_Malloc|_PyObject_Free|PyObject_Malloc|PyObject_Free|_PyObject_GC|"
                        r"gc_|visit_|PyObject_GC|_PyObject_New|_Py_Dealloc|_Py_NewReference|"
                        r"object_dealloc|subtype_dealloc|subtype_traverse|_PyMem|PyMem|_int_malloc|"
                        r"_int_free|malloc|free|cfree|tupledealloc|tuple_alloc|PyTuple_New|"
                        r"_PyTuple_FromArray|list_dealloc|PyList_New|_PyLong_New|long_dealloc|"
                        r"unicode_dealloc|bytes_dealloc|PyType_GenericAlloc|_PyType_AllocNoTrack|"
                        r"dict_dealloc|free_keys_object|new_keys_object|\w*traverse"),
    ("dict", r"_Py_dict_|dict|insertdict|insert_to_emptydict|PyDict|_PyDict|unicodekeys_lookup|"
             r"lookdict|find_empty_slot|build_indices|dictresize|new_dict"),
    ("str + bytes", r"unicode|_PyUnicode|PyUnicode|bytes|_PyBytes|PyBytes|ascii_|find_char|"
                    r"fastsearch|stringlib|_Py_bytes|__mem|memchr|memcpy|memmove|memcmp|memset|"
                    r"__strlen|strlen|_copy_characters|_Py_HashBytes|siphash|utf8|any_find_slice|"
                    r"ucs1lib|asciilib|split"),
    ("attribute lookup", r"_PyObject_GenericGetAttrWithDict|_PyType_Lookup|PyObject_GetAttr|"
                         r"_PyObject_LookupAttr|PyObject_GenericGetAttr|_PyObject_GenericSetAttrWithDict|"
                         r"PyObject_SetAttr|slot_tp|member_get|member_set|PyMember|_PyObject_GetMethod|"
                         r"PyDescr|method_get"),
    ("numbers", r"long_|PyLong|_PyLong|float_|PyFloat|_PyFloat|PyNumber|x_add|x_sub|k_mul"),
]
_KIND_RES = [(name, re.compile(rx)) for name, rx in KINDS]


def kind(function: str) -> str:
    for name, rx in _KIND_RES:
        if rx.match(function):
            return name
    return "other"


def exclusive(out_file: Path) -> collections.Counter[str]:
    """Own instructions per function name, from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", str(out_file)],
                          capture_output=True, text=True, check=True).stdout
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(?:\S.*?):([^\s']+)", line)
        if m:
            counts[m.group(2)] += int(m.group(1).replace(",", ""))
    return counts


def callgrind(cmd: list[str], work: Path, tag: str) -> collections.Counter[str]:
    out = work / f"{tag}.cg"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    counts = exclusive(out)
    out.unlink()
    return counts


def per_line(cmd_for, cuts: dict[int, Path], work: Path, tag: str) -> collections.Counter[str]:
    (big, big_path), (small, small_path) = sorted(cuts.items(), reverse=True)
    a = callgrind(cmd_for(big_path), work, f"{tag}-{big}")
    b = callgrind(cmd_for(small_path), work, f"{tag}-{small}")
    n = big - small
    return collections.Counter({f: (a[f] - b[f]) / n for f in set(a) | set(b)})


def by_kind(counts: collections.Counter[str]) -> dict[str, float]:
    kinds: dict[str, float] = collections.defaultdict(float)
    for function, v in counts.items():
        kinds[kind(function)] += v
    return kinds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mta", choices=("postfix", "exim", "haraka"), required=True)
    ap.add_argument("--file", type=Path, required=True, help="a log of this MTA (generate.py makes one)")
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--base", type=int, default=1_000)
    ap.add_argument("--modes", default="none,metrics,full")
    ap.add_argument("--endpoint", default="http://127.0.0.1:4399",
                    help="OTLP/HTTP receiver for the full mode (benchmarks/otlp_sink.py)")
    ap.add_argument("--top", type=int, default=0, help="also list the top N functions of each mode")
    args = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_annotate"):
        print("ceiling.py: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
        work = Path(tmp)
        cuts: dict[int, Path] = {}
        with args.file.open("rb") as src:
            lines = [src.readline() for _ in range(args.lines)]
        for n in (args.lines, args.base):
            cuts[n] = work / f"cut-{n}.log"
            cuts[n].write_bytes(b"".join(lines[:n]))

        rows: list[tuple[str, dict[str, float], collections.Counter[str]]] = []
        for mode in args.modes.split(","):
            opts = MODES[mode] + (["--endpoint", args.endpoint] if mode == "full" else [])

            def ours(path: Path, opts: list[str] = opts) -> list[str]:
                return [sys.executable, "-m", "maillog2otel", "backfill", "--no-state", "--timezone",
                        "UTC", "--year", "2026", *opts, str(path)]
            counts = per_line(ours, cuts, work, mode)
            rows.append((f"maillog2otel, {mode}", by_kind(counts), counts))

        baseline = {"postfix": ["pflogsumm"], "exim": ["eximstats"]}.get(args.mta)
        if baseline and shutil.which(baseline[0]):
            counts = per_line(lambda p: [*baseline, str(p)], cuts, work, baseline[0])
            rows.append((baseline[0], {"all (not CPython)": sum(counts.values())}, counts))
        counts = per_line(lambda p: [sys.executable, str(HERE / "floor.py"), args.mta, str(p)],
                          cuts, work, "floor")
        rows.append(("Python line-loop floor", by_kind(counts), counts))

    names = [name for name, _ in KINDS] + ["other"]
    print(f"Instructions per {args.mta} line ({args.file.name}, lines {args.base + 1}–{args.lines}), "
          f"Python {sys.version.split()[0]}, {'compiled' if _compiled() else 'pure'} build\n")
    print("| run | total | " + " | ".join(names) + " | without the interpreter |")
    print("| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: |")
    for label, kinds, _counts in rows:
        total = sum(kinds.values())
        if "all (not CPython)" in kinds:
            print(f"| {label} | {total:,.0f} | " + " | ".join("" for _ in names) + " | |")
            continue
        cells = " | ".join(f"{kinds.get(n, 0):,.0f} ({100 * kinds.get(n, 0) / total:.0f} %)" for n in names)
        rest = total - kinds.get("interpreter", 0)
        print(f"| {label} | {total:,.0f} | {cells} | {rest:,.0f} (≤ {total / rest:.2f}× fewer) |")
    for label, _kinds, counts in rows if args.top else ():
        print(f"\n{label}: top {args.top} functions (own instructions per line)")
        for function, v in counts.most_common(args.top):
            print(f"  {v:9,.0f}  {function}  [{kind(function)}]")
    return 0


def _compiled() -> bool:
    out = subprocess.run([sys.executable, "-m", "maillog2otel", "--version"], check=False,
                         capture_output=True, text=True).stdout
    return "no compiled modules" not in out


if __name__ == "__main__":
    sys.exit(main())
