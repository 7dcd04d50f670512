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
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}  # client port -> arrival time of the connection span
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
                                for a in s.attributes:
                                    if a.key == "client.port":
                                        rec.arrivals.setdefault(a.value.int_value, now)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=500.0, help="lines per second")
    ap.add_argument("--precise", action="store_true", help="RFC 3339 stamps with microseconds")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    receiver = Receiver()
    tmp = tempfile.mkdtemp(prefix="m2o-latency-")
    log = os.path.join(tmp, "mail.log")
    open(log, "w").close()
    err = open(os.path.join(tmp, "tail.stderr"), "wb")  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    cmd = [
        sys.executable,
        "-m",
        "maillog2otel",
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

    written: dict[int, float] = {}
    interval = 1.0 / args.rate
    start = time.monotonic()
    n = sent = 0
    with open(log, "a") as fh:
        while time.monotonic() - start < args.seconds:
            port = 10000 + n
            for i, body in enumerate(connection_lines(n, port)):
                due = start + sent * interval
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                fh.write(f"{stamp(args.precise)} mx {body}\n")
                fh.flush()
                sent += 1
                if i == 4:
                    written[port] = time.time()
            n += 1
    wrote_for = time.monotonic() - start
    time.sleep(5)  # the last connections need their grace without further lines
    tail.send_signal(signal.SIGTERM)
    tail.wait(30)
    err.close()

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
        "p50_s": round(q[49], 3),
        "p90_s": round(q[89], 3),
        "p99_s": round(q[98], 3),
        "max_s": round(lat[-1], 3) if lat else None,
        "requests": receiver.requests,
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
