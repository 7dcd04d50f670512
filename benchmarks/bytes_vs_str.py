#!/usr/bin/env python3
"""Bytes or str for the hot loop? The floor's loop three ways on one log, CPU seconds, twice each.

    python benchmarks/bytes_vs_str.py benchmarks/data/postfix-port-logging.w8+expiry-1000000-s6.log

str: decode every line, str regex (what maillog2otel does); bytes: bytes regex, no decode; bytes
then decode: bytes regex for the envelope, decode only the message (what a bytes framer would do,
since grammars, attributes and OTLP strings are text).
"""

import re
import sys
import time

path = sys.argv[1]
P = (r"(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]\d) (?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d) "
     r"(?P<host>\S+) (?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ")
rs, rb = re.compile(P), re.compile(P.encode())



def loop(binary: bool, decode_message: bool) -> int:
    pattern = rb if binary else rs
    n = 0
    with open(path, "rb") if binary else open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = pattern.match(line)
            if m:
                n += len(line[m.end():].decode()) if decode_message else len(m.group("prog"))
    return n


MODES = {"str": (False, False), "bytes": (True, False), "bytes then decode": (True, True)}

for name in [*MODES, *MODES]:
    t = time.process_time()
    loop(*MODES[name])
    print(name, f"{(time.process_time() - t):.2f}s")
