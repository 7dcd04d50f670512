"""Which modules run compiled (Cython, built by setup.py from the same ``.py`` sources) and which
run as pure Python; and ``MAILLOG2OTEL_PURE=1``, which makes one install run the pure ones.

This module is read by ``setup.py`` too (as a file, before the package is installed): ``HOT`` is
the one list of what the compiled build compiles.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

PURE_ENV = "MAILLOG2OTEL_PURE"

# the modules on the per-line path (benchmarks/README.md, "compiled build": what each one gave)
HOT: tuple[str, ...] = (
    "maillog2otel.framing",
    "maillog2otel.parse",
    "maillog2otel.records",
    "maillog2otel.pipeline",
    "maillog2otel.sources",
    "maillog2otel.grammars.common",
    "maillog2otel.grammars.postfix",
    "maillog2otel.grammars.exim",
    "maillog2otel.grammars.haraka",
    "maillog2otel.correlate.base",
    "maillog2otel.correlate.postfix",
    "maillog2otel.correlate.exim",
    "maillog2otel.correlate.exim_messages",
    "maillog2otel.correlate.exim_span",
    "maillog2otel.correlate.haraka",
    "maillog2otel.correlate.haraka_outbound",
    "maillog2otel.correlate.haraka_span",
    "maillog2otel.correlate.haraka_state",
    "maillog2otel.telemetry.ids",
    "maillog2otel.telemetry.spans",
    "maillog2otel.telemetry.metrics",
    "maillog2otel.telemetry.stitch",
    "maillog2otel.export.encode",
)


_HOT_SET = frozenset(HOT)


def source_of(module: str) -> str:
    """The source file of a HOT module, relative to the repository (grammars/ installs as
    maillog2otel.grammars)."""
    parts = module.split(".")
    if parts[:2] == ["maillog2otel", "grammars"]:
        parts = parts[1:]
    return "/".join(parts) + ".py"


def pure_requested() -> bool:
    return os.environ.get(PURE_ENV, "").strip().lower() not in ("", "0", "no", "false")


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _built_from() -> dict[str, str]:
    """module -> sha256 of the source its compiled module was built from (setup.py writes it)."""
    try:
        from maillog2otel import _build_info  # type: ignore[attr-defined]
    except ImportError:
        return {}
    return dict(getattr(_build_info, "SOURCES", {}))


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds this package's HOT modules as their ``.py`` files where a compiled module sits beside
    them (the import system would prefer the extension) and either every module is to run pure
    (``MAILLOG2OTEL_PURE``) or the compiled one was built from another source: an editable install
    whose ``.py`` was edited after the build runs the edit, not the stale build."""

    def __init__(self, pure: bool) -> None:
        self.pure = pure
        self.built_from = {} if pure else _built_from()
        self.stale: list[str] = []

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _HOT_SET or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for directory in path:  # type: ignore[attr-defined]  # the parent package's __path__
            candidate = Path(directory, leaf + ".py")
            if candidate.is_file():
                if not self.pure:
                    compiled = any(Path(directory).glob(leaf + ".*.so")) or any(
                        Path(directory).glob(leaf + ".*.pyd"))
                    if not compiled or self.built_from.get(fullname) == source_hash(candidate):
                        return None  # the compiled module is current (or there is none)
                    self.stale.append(fullname)
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None


def install_finder() -> None:
    """Put the source finder first (idempotent); the package's ``__init__`` calls it."""
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(pure_requested()))


def stale_modules() -> list[str]:
    """HOT modules run from their source because their compiled module was built from another."""
    return [n for f in sys.meta_path if isinstance(f, _SourceFinder) for n in f.stale]


def is_compiled(module: ModuleType) -> bool:
    return not (getattr(module, "__file__", None) or "").endswith(".py")


def report() -> dict[str, list[str]]:
    """HOT modules by how they run now: {"compiled": […], "pure": […]} (imports them)."""
    out: dict[str, list[str]] = {"compiled": [], "pure": []}
    for name in HOT:
        mod = importlib.import_module(name)
        out["compiled" if is_compiled(mod) else "pure"].append(name)
    return out


def describe() -> str:
    """One line for ``--version``: compiled, pure, or which part of each."""
    got = report()
    compiled, pure = got["compiled"], got["pure"]
    short = [n.removeprefix("maillog2otel.") for n in pure]
    stale = stale_modules()
    if stale:
        short = [f"{n} (its build is of another source)" if f"maillog2otel.{n}" in stale else n
                 for n in short]
    if not compiled:
        why = f" ({PURE_ENV} is set)" if pure_requested() else ""
        return f"pure Python{why}: no compiled modules"
    if not pure:
        return f"compiled (Cython): all {len(compiled)} hot modules"
    return (f"partly compiled (Cython): {len(compiled)} of {len(HOT)} hot modules; pure: "
            + ", ".join(short))
