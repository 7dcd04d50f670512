"""Files, ``.gz`` files and stdin -> lines with their byte offsets.

A rotated set given in any order (``mail.log.3.gz mail.log.2.gz mail.log.1 mail.log``) is one
stream read oldest first, so mail that straddles a rotation stays whole; different logs given
together (``mail.log`` and ``exim4/mainlog``) are separate streams that the pipeline merges by
time.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_LINE_BYTES = 1 << 20  # longer lines are cut here and counted (the filelog receiver's default)
_ROTATED = re.compile(r"^(?P<base>.+?)(?:\.(?P<n>\d+)|-(?P<date>\d{8}(?:\d{2})?))?(?:\.gz)?$")


class SourceError(OSError):
    """A path that cannot be read; the message is meant for the user as it is."""


@dataclass(slots=True)
class SourceStats:
    lines: int = 0
    bytes: int = 0
    oversized: int = 0
    invalid_utf8: int = 0
    errors: list[str] = field(default_factory=list)


def rotation_key(path: str) -> tuple[str, int, str]:
    """Sort key inside one rotated set: higher numbers are older, dated names in date order,
    the live file last."""
    m = _ROTATED.match(os.path.basename(path))
    if m is None:  # pragma: no cover - the pattern matches any name
        return (path, 0, "")
    if m["n"]:
        return (m["base"], -int(m["n"]), "")
    if m["date"]:
        return (m["base"], 0, m["date"])
    return (m["base"], 1, "")


def group_streams(paths: list[str]) -> list[list[str]]:
    """Group paths into rotated sets (same directory and base name), each oldest first."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in paths:
        if p == "-":
            groups[("-", "-")] = ["-"]
            continue
        base = rotation_key(p)[0]
        groups.setdefault((os.path.dirname(os.path.abspath(p)), base), []).append(p)
    return [sorted(g, key=rotation_key) for g in groups.values()]


def check_readable(path: str) -> None:
    """Fail early, with a sentence a person understands, for a path we cannot read."""
    if path == "-":
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except PermissionError:
        raise SourceError(f"{path}: permission denied (is the user in the adm group?)") from None
    if stat.S_ISDIR(st.st_mode):
        raise SourceError(f"{path}: is a directory; give the log files in it")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{path}: permission denied (is the user in the adm group?)")


def _open(path: str):
    if path == "-":
        return sys.stdin.buffer
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes it
    if fh.peek(2)[:2] == b"\x1f\x8b":  # peek, not seek: a FIFO or <(zcat …) cannot seek
        return gzip.GzipFile(fileobj=fh, mode="rb")
    return fh


def read_lines(path: str, stats: SourceStats, start: int = 0) -> Iterator[tuple[str, int]]:
    """Yield (text, byte offset of the line) for each line; the newline is removed, a CR before
    it too. Invalid UTF-8 is replaced (and counted), never fatal; a corrupt .gz ends that file
    with an error recorded, and the run goes on. ``start``: the offset of a line to begin at (a
    resumed backfill; in the decompressed content for .gz)."""
    try:
        fh = _open(path)
        if start:
            fh.seek(start)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    offset = start
    readline = fh.readline
    try:
        while True:
            try:
                raw = readline(MAX_LINE_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                stats.errors.append(f"{path}: read error after {offset} bytes: {exc}")
                return
            if not raw:
                return
            n = len(raw)
            if n == MAX_LINE_BYTES and raw[-1] != 10:  # an oversized line: keep its head, skip the rest
                stats.oversized += 1
                while (more := readline(MAX_LINE_BYTES)) and more[-1] != 10:
                    n += len(more)
                n += len(more)
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                stats.invalid_utf8 += 1
                text = raw.decode("utf-8", "replace")
            stats.lines += 1
            stats.bytes += n
            yield text.rstrip("\r\n"), offset
            offset += n
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def first_mtime(paths: list[str]) -> float | None:
    """Modification time of a stream's oldest file: its last line was written then."""
    for p in paths:
        if p != "-":
            try:
                return os.stat(p).st_mtime
            except OSError:
                continue
    return None
