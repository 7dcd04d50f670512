"""The compiled build (issue 12): the hot modules compiled by Cython from the same ``.py`` sources
(pure-Python mode, with C types from the augmenting ``.pxd`` files beside them), wherever a C
compiler, Python's headers and Cython exist: the default. ``MAILLOG2OTEL_BUILD=pure`` installs
pure Python without trying (a quicker install; ≈ 10 % slower per line).

Everything else is in ``pyproject.toml``. An install never fails because of this file: without
Cython, or when a module does not compile or link, that module stays pure Python (the ``.py``
next to it is installed either way) and the build says so on stderr. ``maillog2otel --version``
tells which modules run compiled; ``MAILLOG2OTEL_PURE=1`` runs the pure ones of the same install.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The modules to compile: maillog2otel/compiled.py's HOT, read as a file (the package is not
# importable before it is installed); what each one pays is in benchmarks/README.md.
_HERE = Path(__file__).resolve().parent
_compiled = runpy.run_path(str(_HERE / "maillog2otel" / "compiled.py"))
HOT = [(name, _compiled["source_of"](name)) for name in _compiled["HOT"]]

# Python semantics kept exactly: annotations are documentation, not C types (a ``float`` annotation
# would otherwise become a C double, an ``int`` one an exact-int check); the pure and the compiled
# modules must give byte-identical output (tests/test_compiled.py).
# C types come only from a module's augmenting .pxd beside its .py (framing.pxd: Framer as an
# extension type), which Cython reads by itself and the pure install never does.
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True,
              "embedsignature": False, "always_allow_keywords": True}


def _say(msg: str) -> None:
    print(f"maillog2otel setup: {msg}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext whose failures leave the pure module in place instead of failing the install."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:  # one compiler per core: 23 modules take minutes one by one
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler or headers: pure Python install
            _say(f"compiled modules not built ({exc}); installing pure Python")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - this module stays pure Python
            _say(f"{ext.name} not compiled ({exc}); it stays pure Python")
            # nor may an earlier build of it stay beside the source: _build_info.py already names
            # the new source, so the package would take the old build for a current one
            src = _HERE / _compiled["source_of"](ext.name)
            for old in [*src.parent.glob(src.stem + ".*.so"), *src.parent.glob(src.stem + ".*.pyd"),
                        Path(self.get_ext_fullpath(ext.name))]:
                if old.is_file():
                    old.unlink()


def _extensions() -> list:
    # the default since the typed classes (framing, parse, pipeline, Postfix correlator .pxd): a
    # Postfix line 10-13 % fewer instructions and 9-14 % faster than pure (benchmarks/README.md,
    # "Issue 12, session 6"), for about 1-2 minutes of compiling on two cores at install time
    if os.environ.get("MAILLOG2OTEL_BUILD", "compiled").lower() == "pure":
        _say("pure Python (MAILLOG2OTEL_BUILD=pure); unset it to compile the hot modules with Cython")
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        _say("Cython is not available: installing pure Python")
        return []
    exts = [Extension(name, [src], extra_compile_args=["-O2"]) for name, src in HOT]
    try:
        built = cythonize(exts, compiler_directives=DIRECTIVES, quiet=True, build_dir="build/cython")
    except Exception as exc:  # noqa: BLE001 - a module Cython cannot translate: all stay pure
        _say(f"Cython failed ({exc}); installing pure Python")
        return []
    # which source each compiled module is built from: the package runs a module's .py instead of
    # a compiled module built from another source (maillog2otel/compiled.py, _SourceFinder)
    sources = {name: _compiled["source_hash"](_HERE / src) for name, src in HOT}
    (_HERE / "maillog2otel" / "_build_info.py").write_text(
        '"""Written by setup.py: the sha256 of the source of each compiled module."""\n\n'
        f"SOURCES = {sources!r}\n")
    return built


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
