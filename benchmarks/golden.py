#!/usr/bin/env python3
"""Is the output still byte-for-byte the same? Exports of the working tree against a git revision.

    python benchmarks/golden.py                    # working tree vs HEAD
    python benchmarks/golden.py --rev main~3       # vs an older revision
    python benchmarks/golden.py --lines 50000 --only postfix --keep

A speed-up must not change a single exported byte (issue 12). This runs ``maillog2otel backfill``
on every fixture set (Postfix, Exim, Haraka, the relay chains) and on a generated log per MTA
(benchmarks/generate.py), under several option sets (default, ``--no-traces``, ``--logs``,
``--redact hash`` …), once with the code as committed at ``--rev`` (a ``git archive`` snapshot,
see run.py) and once with the working tree, each signal into its own local OTLP/HTTP receiver,
and compares the request bodies in order. Log records are compared without their observed time
(the wall clock of the run). Exit status 0 when every case is identical.

This is a developer's check while refactoring the hot path; the test suite proves the same
properties on its own terms (tests/test_compiled.py, test_jobs.py, the golden fixture tests).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from maillog2otel.testing import logs_without_observed_time

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from run import snapshot  # noqa: E402

SETS = {
    "postfix": sorted(FIXTURES.glob("postfix/*.log")),
    "exim": sorted(FIXTURES.glob("exim/*.mainlog")),
    "haraka": sorted(FIXTURES.glob("haraka/*.log")),
    "chain": sorted([*FIXTURES.glob("chain/*.log"), *FIXTURES.glob("chain/*.mainlog")]),
}
OPTIONS = {
    "default": [],
    "metrics": ["--no-traces"],
    "logs": ["--logs"],
    "redact": ["--redact", "hash", "--redact-clients", "hash"],  # the key: --redact-key-file, below
    "no-reject-classes": ["--no-reject-classes"],
}
# Every run keeps no resume state: a resumable backfill (the default over OTLP) also cuts requests at
# its checkpoints, which come every few seconds of wall clock, so the request boundaries would depend
# on the run's speed (the spans and points do not; tests/test_resume.py proves that part).
ALWAYS = ["--no-state"]


class Receiver:
    """Keeps every request body by signal, in arrival order (one client connection at a time)."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {"traces": [], "metrics": [], "logs": []}
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                enc = self.headers.get("Content-Encoding")
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                bodies[self.path.rsplit("/", 1)[-1]].append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def export(paths: list[Path], options: list[str], pythonpath: str | None, state_home: str) -> dict[str, str]:
    """One backfill; a digest of each signal's request bodies (and their count)."""
    r = Receiver()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MAILLOG2OTEL_"))}
        # not the cwd itself: a maillog2otel/ state folder there would shadow the package
        env["XDG_STATE_HOME"] = os.path.join(state_home, "state")
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        else:
            env.pop("PYTHONPATH", None)
        key = os.path.join(state_home, "redact.key")
        if not os.path.exists(key):
            Path(key).write_bytes(b"golden.py's fixed key, so both revisions hash alike\n")
        if "--redact" in options:
            options = [*options, "--redact-key-file", key]
        cmd = [sys.executable, "-m", "maillog2otel", "backfill", "--endpoint", r.endpoint, "--year", "2026",
               "--timezone", "UTC", "--hostname", "mx", "-q", *ALWAYS, *options, *map(str, paths)]
        proc = subprocess.run(cmd, env=env, cwd=state_home, capture_output=True, check=False)
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}"}
        out = {}
        for signal, bodies in r.bodies.items():
            h = hashlib.sha256()
            for body in bodies:
                h.update(logs_without_observed_time(body) if signal == "logs" else body)
                h.update(b"\0")
            out[signal] = f"{len(bodies)} requests {h.hexdigest()[:16]}"
        return out
    finally:
        r.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD", help="the revision to compare with (default HEAD)")
    ap.add_argument("--lines", type=int, default=30_000, help="lines of each generated log (0: none)")
    ap.add_argument("--only", help="comma list of sets: postfix, exim, haraka, chain")
    ap.add_argument("--options", help=f"comma list of option sets: {', '.join(OPTIONS)}")
    ap.add_argument("--extra", default="", help="more backfill options for the working tree's runs only "
                    "(e.g. '--jobs 2' to compare a multi-process run with the revision's serial one)")
    args = ap.parse_args()
    src, sha = snapshot(args.rev)
    only = set(args.only.split(",")) if args.only else set(SETS)
    options = {k: v for k, v in OPTIONS.items() if not args.options or k in args.options.split(",")}
    cases = [(name, paths) for name, paths in SETS.items() if name in only and paths]
    if args.lines:
        for mta in ("postfix", "exim", "haraka"):
            if mta in only:
                path, _ = generate.ensure(mta, args.lines, quiet=True)
                cases.append((f"{mta} generated {args.lines:,}", [path]))
    print(f"working tree vs {args.rev} ({sha}): {len(cases)} inputs × {len(options)} option sets")
    differ = 0
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        for name, paths in cases:
            for oname, opts in options.items():
                before = export(paths, opts, str(src), tmp)
                after = export(paths, [*opts, *args.extra.split()], None, tmp)
                same = before == after and "error" not in after
                differ += not same
                print(f"  {'same  ' if same else 'DIFFER'} {name:28} {oname:18} "
                      + ("" if same else f"\n      {args.rev}: {before}\n      tree: {after}"), flush=True)
    print("identical" if not differ else f"{differ} case(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
