#!/usr/bin/env python3
"""The "Python line-loop floor": ``for line in file`` applying one syslog/MTA prefix regex.

    python benchmarks/floor.py postfix FILE

Nothing a Python parser of these logs does per line can cost less than this: read and decode the
line, match the envelope. run.py reports maillog2otel's parse-only rate as a ratio of it.
"""

from __future__ import annotations

import re
import sys

PREFIX = {
    # Jan  1 00:00:00 mx postfix/smtpd[3000]:
    "postfix": re.compile(r"(\w{3}) ([ \d]\d) (\d\d:\d\d:\d\d) (\S+) ([\w/.-]+)\[(\d+)\]: "),
    # 2026-01-01 00:00:00.792 +0000 [3000]
    "exim": re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(\.\d{3})?( [-+]\d{4})? (?:\[(\d+)\] )?"),
    # 2026-01-01T00:00:00.792Z
    "haraka": re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) "),
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in PREFIX:
        print(f"usage: floor.py {{{','.join(PREFIX)}}} FILE", file=sys.stderr)
        return 2
    match = PREFIX[argv[0]].match
    n = hits = 0
    with open(argv[1], encoding="utf-8", errors="replace") as fh:
        for line in fh:
            n += 1
            if match(line) is not None:
                hits += 1
    print(f"{n} lines, {hits} matched")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
