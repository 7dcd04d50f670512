"""A backfill that can be stopped and continued: its input set, positions and state file.

A resumable backfill reads the same rotated sets as ``pipeline.backfill_records``, but hands out,
with every line, where it came from (set, file, offset), so the runner knows the last line fed
from each set. Exports happen only at checkpoints: the pipeline's state is taken, the buffered
spans and points are exported (blocking while the collector refuses), and only then is the state
file replaced with the positions of that moment. A run killed at any point (SIGKILL, a crash, a
``--retry-for`` deadline, Ctrl-C) leaves the last checkpoint; the same command continues from it,
re-sending at most what the checkpoint in flight had exported, with the same IDs.

The state names every input file by its absolute path, size and first bytes. A resumed run
refuses inputs that are not those (other files, a file rotated, replaced or truncated meanwhile)
with a sentence saying which and what to do; only the newest file of a set may have grown (a live
log): its new lines are read too, as a new backfill of the same files would read them.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import os
import zlib
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from maillog2otel import state as statefile
from maillog2otel.config import Settings
from maillog2otel.framing import Framer
from maillog2otel.pipeline import Counters, Pipeline, stream_framer, warn_untimed
from maillog2otel.records import Record
from maillog2otel.sources import SourceStats, read_lines

FP_MAX = 1024  # bytes of a file's (decompressed) content that identify it, as tail's fingerprint

# One line handed out: (merge key, set index, file index in the set, offset of the line, the
# framed record or None for a line without a log envelope, its text)
Item = tuple[int, int, int, int, Record | None, str]


def _head(path: str) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read(FP_MAX)
        if raw[:2] != b"\x1f\x8b":
            return raw
    try:
        with gzip.open(path, "rb") as gz:
            return gz.read(FP_MAX)
    except (OSError, EOFError, zlib.error):
        return b""


def identify(path: str) -> dict[str, Any]:
    """What a resumed run checks a file against: absolute path, size, the hash of its first bytes."""
    head = _head(path)
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "gz": _is_gz(path),
            "fp": hashlib.sha256(head).hexdigest(), "fp_len": len(head)}


def _is_gz(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def settings_key(settings: Settings) -> dict[str, Any]:
    """The options that change what a backfill exports (not where to): a resumed run must use the
    same, or its second half would not fit its first."""
    return {"mta": settings.mta, "year": settings.year, "timezone": settings.timezone,
            "hostname": settings.hostname, "service_name": settings.service_name,
            "metric_namespace": settings.metric_namespace, "export_interval_ms": settings.export_interval_ms,
            "delta": settings.delta, "traces": settings.traces.exporter != "none",
            "metrics": settings.metrics.exporter != "none", "logs": settings.logs.exporter != "none",
            "redact": settings.redact, "redact_clients": settings.redact_clients,
            "reject_classes": settings.reject_classes}


def check_settings(saved: dict[str, Any], settings: Settings, state_path: str) -> None:
    now = settings_key(settings)
    diff = [f"{k}: {saved.get(k)!r} then, {v!r} now" for k, v in now.items() if saved.get(k) != v]
    if diff:
        raise statefile.StateError(
            f"{state_path} is an interrupted backfill run with other options ({'; '.join(diff)}). Re-run it "
            f"with the options it had to continue it, or remove {state_path} to start over.")


def check_inputs(saved: list[list[dict[str, Any]]], now: list[list[dict[str, Any]]],
                 positions: list[list[int] | None], state_path: str) -> list[str]:
    """Compare the input set of the interrupted run with today's; returns notes for the user
    (files that grew), raises ``StateError`` when continuing would mix different data."""
    start_over = f"remove {state_path} to start over"
    then_paths = sorted(f["path"] for s in saved for f in s)
    now_paths = sorted(f["path"] for s in now for f in s)
    if then_paths != now_paths:
        gone = [p for p in then_paths if p not in now_paths]
        new = [p for p in now_paths if p not in then_paths]
        raise statefile.StateError(
            f"{state_path} is an interrupted backfill of other files"
            + (f"; not given now: {', '.join(gone)}" if gone else "")
            + (f"; not read then: {', '.join(new)}" if new else "")
            + f". Give the same files to continue it, another --state for a new backfill, or {start_over}.")
    by_path = {f["path"]: f for s in now for f in s}
    notes = []
    for si, files in enumerate(saved):
        for fi, then in enumerate(files):
            cur = by_path[then["path"]]
            if cur["fp_len"] < then["fp_len"] or (
                    hashlib.sha256(_head(cur["path"])[:then["fp_len"]]).hexdigest() != then["fp"]):
                raise statefile.StateError(
                    f"{then['path']} is not the file the interrupted backfill read (its first bytes differ: "
                    "rotated, replaced or truncated since). Its lines may now be in another file; continuing "
                    f"would skip or repeat them. Give the files as they were, or {start_over}.")
            if cur["size"] < then["size"]:
                raise statefile.StateError(
                    f"{then['path']} shrank since the interrupted backfill ({then['size']:,} -> "
                    f"{cur['size']:,} bytes: truncated?): lines would be skipped or repeated; {start_over}.")
            if cur["size"] > then["size"]:
                pos = positions[si] if si < len(positions) else None
                if fi != len(files) - 1 or then["gz"] or (pos is not None and pos[0] > fi):
                    raise statefile.StateError(
                        f"{then['path']} changed since the interrupted backfill ({then['size']:,} -> "
                        f"{cur['size']:,} bytes) and is not the newest plain file of its set; {start_over}.")
                notes.append(f"{then['path']} grew by {cur['size'] - then['size']:,} bytes since the "
                             "interrupted run: its new lines are read too, as a new backfill would read them")
    return notes


class Reader:
    """The lines of every rotated set, each set from a saved position, merged by time as
    ``backfill_records`` merges them. A position is (file index, offset of the last line fed):
    that line is read again and skipped, the next one is the first handed out."""

    def __init__(self, streams: list[list[str]], settings: Settings, stats: SourceStats,
                 positions: list[list[int] | None] | None = None,
                 framers: list[dict[str, Any] | None] | None = None) -> None:
        self.streams = streams
        self.stats = stats
        self.start = positions or [None] * len(streams)
        self.framers: list[Framer] = []
        for i, paths in enumerate(streams):
            f = stream_framer(paths, i, settings)
            statefile.restore_framer(f, (framers or [None] * len(streams))[i])
            self.framers.append(f)

    def items(self) -> Iterator[Item]:
        gens = [self._stream(i) for i in range(len(self.streams))]
        if len(gens) == 1:
            return gens[0]
        return heapq.merge(*gens, key=lambda item: item[0])

    def _stream(self, index: int) -> Iterator[Item]:
        paths, framer, start = self.streams[index], self.framers[index], self.start[index]
        first_file, first_offset = (start[0], start[1]) if start is not None else (0, 0)
        frame = framer.frame
        untimed = timed = 0
        for fi in range(first_file, len(paths)):
            skip = start is not None and fi == first_file  # the last line fed: already done
            lines = read_lines(paths[fi], self.stats, first_offset if skip else 0)
            if skip:
                next(lines, None)
            for text, offset in lines:
                rec = frame(text, offset)
                if rec is None:
                    yield (framer.last_ns, index, fi, offset, None, text)
                    continue
                if rec.ts_inferred:
                    untimed += 1
                else:
                    timed += 1
                yield (rec.ts_ns, index, fi, offset, rec, text)
        warn_untimed(paths[-1], untimed, timed)


# known_rules is filled by check only, which keeps no state
_COUNTERS = [f.name for f in fields(Counters) if f.name not in ("by_program", "shapes", "known_rules")]
_SOURCE_STATS = ("lines", "bytes", "oversized", "invalid_utf8")


def save_counters(c: Counters, stats: SourceStats) -> dict[str, Any]:
    """The summary's counts so far, so a resumed run's summary covers both runs."""
    return {**{k: getattr(c, k) for k in _COUNTERS},
            "by_program": [[mta, prog, *counts] for (mta, prog), counts in c.by_program.items()],
            "input": {k: getattr(stats, k) for k in _SOURCE_STATS}}


def load_counters(c: Counters, stats: SourceStats, saved: dict[str, Any]) -> None:
    for k in _COUNTERS:
        if k in saved:
            setattr(c, k, saved[k])
    for mta, prog, *counts in saved.get("by_program", []):
        c.by_program[(mta, prog)] = counts  # [understood, known, unparsed]
    for k, v in saved.get("input", {}).items():
        if k in _SOURCE_STATS:
            setattr(stats, k, v)


def resumable(pipeline: Pipeline) -> bool:
    """A checkpoint must not cut an Exim syslog entry whose pieces are still being joined (the
    pieces are not part of the saved state): wait for the set to close."""
    return not len(pipeline.fragments)
