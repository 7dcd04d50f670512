"""A fresh run of a real Postfix on loopback, recorded now and reconstructed now: the sessions
maillog2otel rebuilds must be the ones the clients really had (not only the recorded fixtures)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_postfix_correlate import check_connections, check_outcomes, check_pflogsumm

from maillog2otel.testing import run_pipeline

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.mta, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("postfix", path="/usr/sbin:/usr/bin") is None
                    or shutil.which("pflogsumm") is None,
                    reason="Postfix is not installed (fixtures/postfix/install.sh installs it)")
def test_fresh_postfix_run_matches_its_clients(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "fixtures/postfix/record.py"), "--only", "port-logging",
                           "--out", str(tmp_path)], capture_output=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout.decode()[-2000:] + proc.stderr.decode()[-2000:]
    truth = json.loads((tmp_path / "port-logging.truth.json").read_text())
    result = run_pipeline([str(tmp_path / "port-logging.log")], timezone="UTC")
    assert result.counters.unparsed == 0
    check_connections(result, truth)
    check_outcomes(result, truth)
    check_pflogsumm(result, (tmp_path / "port-logging.pflogsumm.txt").read_text())
