#!/usr/bin/env python3
"""Disconnect-to-collector latency of ``maillog2otel tail`` (a benchmark, not a test).

Writes synthetic Postfix connections (7 lines each: connect, client=, message-id, qmgr from=,
disconnect, delivery, removed) into a file at ``--rate`` lines per second with the current time in
their stamps, while ``maillog2otel tail`` follows the file and exports over OTLP/HTTP to a receiver
in this process. For every connection it measures the time from the write of its ``disconnect``
line to the arrival of its ``smtp.connection`` span, and prints p50/p90/p99/max.

    python benchmarks/tail_latency.py                      # 30 s at 500 lines/s, syslog stamps
    python benchmarks/tail_latency.py --precise            # RFC 3339 µs stamps (rsyslog high precision)
    python benchmarks/tail_latency.py --seconds 60 --rate 2000
    python benchmarks/tail_latency.py --rate 10000 --replay benchmarks/data/postfix-…-200000-s6.log
    python benchmarks/tail_latency.py --rate 5000 --profile benchmarks/out/tail.prof   # cProfile of the tail

``--replay FILE`` writes the lines of a Postfix log (a fixture, or one grown from the fixtures by
``generate.py``) in their order with the current time in place of their stamps; a connection is
then known by the client address and port of its ``disconnect`` line (the first one, when a port
repeats). ``--profile FILE`` runs the tail under cProfile (CPU time) and saves the stats there.
``tail_cpu_s`` is the tail process's own CPU time, its ≈1 s of start-up included;
``tail_cpu_us_per_line`` is that less the start-up (the CPU used until the state file appeared)
per line the tail read (``lines_read``, from its summary: fewer than ``lines`` when it fell behind
and was stopped before catching up). A tail that falls behind reads in bigger batches and pays
less per line than one that keeps up. ``load`` is the 1-minute load average at the end: on a shared
machine, compare runs made at similar loads.

Everything is on 127.0.0.1. The floor is the correlator's grace: a closed session waits 2 s of log
time for its trailing lines, and log time moves with the lines (or, when quiet, with the wall clock
less a 0.2 s skew). With whole-second stamps a disconnect written at hh:mm:ss.7 is stamped ss.0,
so its grace ends 1.3 s after the write when later lines keep the log clock moving.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[tuple[str, int], float] = {}  # client (address, port) -> span arrival time
        self.requests = 0
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.time()
                rec.requests += 1
                if self.path.endswith("/v1/traces"):
                    req = ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    for rs in req.resource_spans:
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                if s.name != "smtp.connection":
                                    continue
                                attrs = {a.key: a.value for a in s.attributes}
                                if "client.port" in attrs and "client.address" in attrs:
                                    key = (attrs["client.address"].string_value,
                                           attrs["client.port"].int_value)
                                    rec.arrivals.setdefault(key, now)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def stamp(precise: bool) -> str:
    now = dt.datetime.now(dt.UTC)
    if precise:
        return now.isoformat(timespec="microseconds")
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


def connection_lines(n: int, port: int) -> list[str]:
    pid = 20000 + n % 50
    qid = f"{0xB0000000 + n:X}"[:11]
    addr = f"unknown[127.0.0.{2 + n % 200}]:{port}"
    return [
        f"postfix/smtpd[{pid}]: connect from {addr}",
        f"postfix/smtpd[{pid}]: {qid}: client={addr}",
        f"postfix/cleanup[9185]: {qid}: message-id=<bench-{n}@bench.test>",
        f"postfix/qmgr[9080]: {qid}: from=<bench@bench.test>, size=512, nrcpt=1 (queue active)",
        f"postfix/smtpd[{pid}]: disconnect from {addr} ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        f"postfix/local[9186]: {qid}: to=<alice@local.test>, relay=local, delay=0.01, delays=0/0/0/0.01, "
        "dsn=2.0.0, status=sent (delivered to mailbox)",
        f"postfix/qmgr[9080]: {qid}: removed",
    ]


_DISCONNECT = re.compile(r"disconnect from [^\[\s]*\[([^\]]+)\]:(\d+)")
_BSD_STAMP = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
_PROFILED = """
import cProfile, sys, time
out = sys.argv.pop(1)
sys.argv[0] = "maillog2otel"
from maillog2otel.cli import main
prof = cProfile.Profile(time.process_time)
prof.enable()
try:
    main()
finally:
    prof.disable()
    prof.dump_stats(out)
"""


def replay_lines(path: str) -> list[str]:
    """A log's lines without their syslog stamp: ``host program[pid]: message``."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = _BSD_STAMP.match(line)
            if m:
                out.append(line[m.end():].rstrip("\n"))
    return out


def synthetic_lines() -> Iterator[tuple[str, tuple[str, int] | None]]:
    n = 0
    while True:
        port = 10000 + n
        for i, body in enumerate(connection_lines(n, port)):
            yield f"mx {body}", (f"127.0.0.{2 + n % 200}", port) if i == 4 else None
        n += 1


def replayed(lines: list[str]) -> Iterator[tuple[str, tuple[str, int] | None]]:
    seen: set[tuple[str, int]] = set()
    while True:  # round and round: ports repeat after the first round and are not measured again
        for line in lines:
            m = _DISCONNECT.search(line)
            key = (m[1], int(m[2])) if m else None
            if key is not None and key in seen:
                key = None
            elif key is not None:
                seen.add(key)
            yield line, key


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process has used (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=500.0, help="lines per second")
    ap.add_argument("--precise", action="store_true", help="RFC 3339 stamps with microseconds")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--replay", metavar="FILE", help="write this Postfix log's lines (restamped) instead")
    ap.add_argument("--profile", metavar="FILE", help="run the tail under cProfile, stats saved here")
    args = ap.parse_args()

    receiver = Receiver()
    tmp = tempfile.mkdtemp(prefix="m2o-latency-")
    log = os.path.join(tmp, "mail.log")
    open(log, "w").close()
    err = open(os.path.join(tmp, "tail.stderr"), "wb")  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    runner = ["-c", _PROFILED, os.path.abspath(args.profile)] if args.profile else ["-m", "maillog2otel"]
    cmd = [
        sys.executable,
        *runner,
        "tail",
        "--endpoint",
        receiver.endpoint,
        "--timezone",
        "UTC",
        "--no-metrics",
        "--state",
        os.path.join(tmp, "state.json"),
        log,
    ]
    tail = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 15
    while not os.path.exists(os.path.join(tmp, "state.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    startup_cpu = _cpu_s(tail.pid)  # imports and start-up, not following

    written: dict[tuple[str, int], float] = {}
    interval = 1.0 / args.rate
    source = replayed(replay_lines(args.replay)) if args.replay else synthetic_lines()
    start = time.monotonic()
    sent = 0
    with open(log, "a") as fh:
        for body, key in source:  # one write() per line, as a syslog daemon writes
            if time.monotonic() - start >= args.seconds:
                break
            due = start + sent * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            fh.write(f"{stamp(args.precise)} {body}\n")
            fh.flush()
            sent += 1
            if key is not None:
                written.setdefault(key, time.time())
    wrote_for = time.monotonic() - start
    time.sleep(5)  # the last connections need their grace without further lines
    tail.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(tail.pid, 0)  # the tail's own CPU time (this process writes and receives)
    tail.returncode = 0
    err.close()
    with open(os.path.join(tmp, "tail.stderr"), encoding="utf-8", errors="replace") as fh:
        m = re.search(r"lines\s+([\d,]+) read", fh.read())
    read = int(m[1].replace(",", "")) if m else sent  # the tail's summary: lines it read
    follow_cpu = usage.ru_utime + usage.ru_stime - startup_cpu

    lat = sorted(receiver.arrivals[p] - t for p, t in written.items() if p in receiver.arrivals)
    if os.environ.get("M2O_LATENCY_DEBUG"):  # the slowest: when were they written?
        t0 = min(written.values())
        got = [(receiver.arrivals[p] - t, t - t0) for p, t in written.items() if p in receiver.arrivals]
        print("worst (latency, written at):", [(round(a, 2), round(b, 2)) for a, b in sorted(got)[-15:]])
    missing = len(written) - len(lat)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    result = {
        "lines": sent,
        "lines_per_s": round(sent / wrote_for),
        "connections": len(written),
        "missing": missing,
        "stamps": "rfc3339-us" if args.precise else "syslog-1s",
        "lines_from": os.path.basename(args.replay) if args.replay else "synthetic",
        "p50_s": round(q[49], 3),
        "p90_s": round(q[89], 3),
        "p99_s": round(q[98], 3),
        "max_s": round(lat[-1], 3) if lat else None,
        "requests": receiver.requests,
        "lines_read": read,
        "tail_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "tail_cpu_us_per_line": round(follow_cpu / max(read, 1) * 1e6, 1),
        "load": round(os.getloadavg()[0], 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:12} {v}")
    receiver.server.shutdown()
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
