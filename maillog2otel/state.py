"""The ``tail`` and ``backfill`` state files: one versioned JSON document, replaced atomically.

``tail``'s holds, per followed file, the identity and resume offset of every generation still
being read, the correlators' open sessions and messages, the cumulative metric series, and for
stdin the last journald cursor. ``backfill``'s holds the identity of every input file, the position
of the last line exported from each rotated set, and the same pipeline state
(``maillog2otel.resume``). Both are written only after the exporters accepted everything emitted
before them, so a restart continues exactly after the last checkpointed line.

Writing: a temporary file in the same directory, ``fsync``, ``os.replace`` over the old one, then
``fsync`` of the directory: a crash leaves either the old or the new document, never a mix. An
exclusive ``flock`` on ``<state>.lock`` keeps two ``tail`` processes from sharing one state.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from typing import Any

from maillog2otel.framing import Framer, YearGuess

FORMAT = "maillog2otel-tail-state"
FORMATS = {"tail": FORMAT, "backfill": "maillog2otel-backfill-state"}
VERSION = 1


class StateError(RuntimeError):
    """A state file that cannot be used; the message says which and what to do."""


def state_dir(env: dict[str, str] | None = None) -> str:
    """``$XDG_STATE_HOME/maillog2otel``, else ``~/.local/state/maillog2otel``."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "maillog2otel")


def default_state_path(paths: list[str], env: dict[str, str] | None = None, kind: str = "tail") -> str:
    """One state per set of paths (followed by ``tail``, read by ``backfill``), named by a hash of
    their absolute names."""
    names = sorted("-" if p == "-" else os.path.abspath(p) for p in paths)
    digest = hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    label = "stdin" if names == ["-"] else os.path.basename(names[0]) or "root"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:40]
    return os.path.join(state_dir(env), f"{kind}-{safe}-{digest}.json")


def load(path: str, kind: str = "tail") -> dict[str, Any] | None:
    """The saved document, or None when there is none yet."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"state file {path} cannot be read ({exc}); move it away to start afresh") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMATS[kind]:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        other = next((k for k, f in FORMATS.items() if fmt == f), None)
        raise StateError(f"{path} is not a maillog2otel {kind} state file"
                         + (f" (it is {other}'s: give each command its own --state)" if other else ""))
    if doc.get("version") != VERSION:
        raise StateError(f"state file {path} has version {doc.get('version')!r}; this maillog2otel reads "
                         f"version {VERSION} (move it away to start afresh)")
    return doc


def save(path: str, doc: dict[str, Any], kind: str = "tail") -> int:
    """Write ``doc`` atomically; returns its size in bytes."""
    doc = {"format": FORMATS[kind], "version": VERSION, "saved_at": time.time(), **doc}
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8", "surrogateescape")
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return len(data)


def framer_state(f: Framer) -> dict[str, Any]:
    """What a framer has learnt of its stream (the year of year-less stamps, the last time)."""
    return {"year": f.year.year, "last_month": f.year.last_month, "ref_month": f.year.ref_month,
            "last_ns": f.last_ns, "native": f.native}


def restore_framer(f: Framer, s: dict[str, Any] | None) -> None:
    if not s:
        return
    f.year = YearGuess(int(s["year"]), int(s.get("last_month", 0)), int(s.get("ref_month", 12)))
    f.last_ns = int(s.get("last_ns", 0))
    f.native = s.get("native")


class StateLock:
    """An exclusive lock beside the state file, held for the life of a ``tail``; released by the
    kernel if the process dies."""

    def __init__(self, path: str, kind: str = "tail") -> None:
        self.path = path + ".lock"
        self.kind = kind
        self.fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(f"another maillog2otel {self.kind} is using {self.path[:-5]} "
                             "(give each instance its own --state)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def remove(path: str) -> None:
    """A finished backfill's state: gone, so the same command later reads everything again. That
    includes the half-written copy of a run killed while it saved (``save``'s temporary file, named
    after the dead process): nothing reads it, and it would lie beside the state for ever."""
    directory, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}."
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            if entry.startswith(prefix) and entry.endswith(".tmp") and _dead(entry[len(prefix):-4]):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, entry))
    for p in (path, path + ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def _dead(pid: str) -> bool:
    """Whether the process of a temporary file's name is gone (another may still be writing)."""
    if not pid.isdecimal():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
