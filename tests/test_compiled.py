"""The compiled build (Cython, issue 12) exports exactly what the pure-Python modules export.

Every fixture set and generated logs of each MTA are backfilled twice by the same install, in
subprocesses: once as installed (compiled modules where they were built) and once with
``MAILLOG2OTEL_PURE=1`` (the ``.py`` sources). Each signal goes to its own OTLP/HTTP receiver,
and the request bodies must be the same bytes, in the same order (log records: all but their
observed time, which is the wall clock of the run). Skipped, with the reason, only
when no compiled module is installed (an install without a C compiler or without Cython).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, OtlpHttpReceiver, clean_env, run_cli

from maillog2otel.compiled import HOT, PURE_ENV
from maillog2otel.testing import logs_without_observed_time

ROOT = Path(__file__).resolve().parent.parent
SETS = {
    "postfix": sorted(FIXTURES.glob("postfix/*.log")),
    "exim": sorted(FIXTURES.glob("exim/*.mainlog")),
    "haraka": sorted(FIXTURES.glob("haraka/*.log")),
    "chain": sorted([*FIXTURES.glob("chain/*.log"), *FIXTURES.glob("chain/*.mainlog")]),
}
GENERATED_LINES = 20_000


def _compiled_modules() -> list[str]:
    """HOT modules with a compiled module installed beside their source (looked for as files: the
    import system would find the source under MAILLOG2OTEL_PURE=1)."""
    found = []
    for name in HOT:
        parent, _, leaf = name.rpartition(".")
        spec = importlib.util.find_spec(parent)
        dirs = list(spec.submodule_search_locations or []) if spec else []
        if any(any(Path(d).glob(f"{leaf}.*.so")) or any(Path(d).glob(f"{leaf}.*.pyd")) for d in dirs):
            found.append(name)
    return found


COMPILED = _compiled_modules()
# tests/run.sh sets it: CI must run the comparison, not skip it because the build fell back to pure
REQUIRED = os.environ.get("MAILLOG2OTEL_REQUIRE_COMPILED", "") not in ("", "0")
needs_build = pytest.mark.skipif(
    not COMPILED and not REQUIRED,
    reason="no compiled modules installed (no C compiler, Python headers or Cython when the package was "
    "installed, or MAILLOG2OTEL_BUILD=pure): nothing to compare")


def _export(paths: list[Path], pure: bool, *extra: str) -> dict[str, list[bytes]]:
    """One backfill; the request bodies each receiver got, in order."""
    receivers = {s: OtlpHttpReceiver() for s in ("traces", "metrics", "logs")}
    try:
        env = {k: v for k, v in clean_env().items() if k != PURE_ENV}
        if pure:
            env[PURE_ENV] = "1"
        for signal, r in receivers.items():
            env[f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"] = f"{r.endpoint}/v1/{signal}"
        proc = run_cli("backfill", "--year", "2026", "--timezone", "UTC", "--hostname", "mx", "-q", *extra,
                       *map(str, paths), env=env)
        assert proc.returncode == 0, proc.stderr.decode()
        got = {s: list(r.received.raw) for s, r in receivers.items()}
        got["logs"] = [logs_without_observed_time(body) for body in got["logs"]]
        return got
    finally:
        for r in receivers.values():
            r.close()


def _same(paths: list[Path], *extra: str) -> None:
    compiled = _export(paths, False, *extra)
    pure = _export(paths, True, *extra)
    assert compiled["traces"] or compiled["metrics"], "nothing exported: the comparison would prove nothing"
    for signal in compiled:
        assert len(compiled[signal]) == len(pure[signal]), signal
        for i, (a, b) in enumerate(zip(compiled[signal], pure[signal], strict=True)):
            assert a == b, f"{signal} request {i} differs between the compiled and the pure modules"


def test_the_compiled_build_is_there_when_required() -> None:
    """Where the build is required (CI), every HOT module was compiled."""
    if not REQUIRED:
        pytest.skip("MAILLOG2OTEL_REQUIRE_COMPILED is not set (tests/run.sh sets it)")
    missing = sorted(set(HOT) - set(COMPILED))
    assert not missing, f"not compiled (see pip's build output, setup.py): {missing}"


def test_the_pure_switch_runs_the_sources() -> None:
    """``MAILLOG2OTEL_PURE=1`` imports every HOT module from its ``.py``; ``--version`` says so."""
    code = ("import sys; from maillog2otel.compiled import report; r = report(); "
            "sys.exit(1 if r['compiled'] else 0)")
    env = {**clean_env(), PURE_ENV: "1"}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0
    out = run_cli("--version", env=env).stdout.decode()
    assert "pure Python" in out and "no compiled modules" in out, out


@needs_build
def test_a_build_of_another_source_is_not_used() -> None:
    """An editable install whose ``.py`` changed after the build imports the ``.py``: a finder
    that knows no build's source (as after an edit) finds each compiled HOT module as its source."""
    from maillog2otel.compiled import _SourceFinder

    finder = _SourceFinder(pure=False)
    finder.built_from = {}
    for name in COMPILED:
        parent = importlib.import_module(name.rpartition(".")[0])
        spec = finder.find_spec(name, list(parent.__path__))
        assert spec is not None and spec.origin and spec.origin.endswith(".py"), name
    assert finder.stale == COMPILED


@needs_build
def test_version_names_the_compiled_build() -> None:
    out = run_cli("--version", env={k: v for k, v in clean_env().items() if k != PURE_ENV}).stdout.decode()
    assert "compiled (Cython)" in out, out


@needs_build
@pytest.mark.parametrize("name", sorted(SETS))
def test_fixture_set_exports_the_same_bytes(name: str) -> None:
    assert SETS[name], f"no fixture logs for {name}"
    _same(SETS[name])


@needs_build
@pytest.mark.parametrize("name", sorted(SETS))
def test_fixture_set_with_log_records_exports_the_same_bytes(name: str) -> None:
    _same(SETS[name], "--logs")


@needs_build
@pytest.mark.parametrize("mta", ["postfix", "exim", "haraka"])
def test_generated_log_exports_the_same_bytes(mta: str, tmp_path: Path) -> None:
    out = tmp_path / f"{mta}.log"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--mta", mta, "--lines",
                    str(GENERATED_LINES), "--out", str(out)], check=True, capture_output=True)
    _same([out], "--mta", mta)
