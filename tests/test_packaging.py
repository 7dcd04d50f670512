"""The grammars ship in the wheel and work from an installed copy, not only from the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, clean_env

pytestmark = pytest.mark.slow


def test_wheel_carries_the_grammars_and_runs_installed(tmp_path: Path) -> None:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path / "dist"), str(ROOT)],
                           capture_output=True, timeout=300, check=False)
    assert build.returncode == 0, build.stderr.decode()[-2000:]
    wheel = next((tmp_path / "dist").glob("maillog2otel-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("postfix", "exim", "haraka", "common"):
        assert f"maillog2otel/grammars/{module}.py" in names
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(target), str(wheel)],
                             capture_output=True, timeout=300, check=False)
    assert install.returncode == 0, install.stderr.decode()[-2000:]
    # run from elsewhere with only the installed copy importable: -S skips site's .pth files (the
    # editable install's finder), the dependencies come from site-packages on PYTHONPATH after it
    import sysconfig

    env = clean_env(PYTHONPATH=f"{target}:{sysconfig.get_paths()['purelib']}", PYTHONSAFEPATH="1")
    code = ("import sys, maillog2otel.grammars.postfix as g; assert 'site' in g.__file__, g.__file__; "
            "from maillog2otel.cli import main; "
            "sys.argv = ['maillog2otel', 'backfill', '--exporter', 'none', "
            f"'--timezone', 'UTC', {str(FIXTURES / 'postfix' / 'port-logging.log')!r}]; main()")
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path, capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "14 connections" in proc.stderr.decode()
