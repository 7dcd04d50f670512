"""A fresh run of a real Postfix on loopback, recorded now and reconstructed now: the sessions
maillog2otel rebuilds must be the ones the clients really had (not only the recorded fixtures)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_postfix_correlate import (
    check_auth,
    check_connections,
    check_outcomes,
    check_pflogsumm,
    check_postscreen,
)

from maillog2otel.testing import run_pipeline

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.mta, pytest.mark.slow]


NEEDS_POSTFIX = pytest.mark.skipif(
    shutil.which("postfix", path="/usr/sbin:/usr/bin") is None or shutil.which("pflogsumm") is None,
    reason="Postfix is not installed (fixtures/postfix/install.sh installs it)")


@NEEDS_POSTFIX
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


@NEEDS_POSTFIX
@pytest.mark.skipif(shutil.which("dovecot", path="/usr/sbin:/usr/bin") is None,
                    reason="Dovecot is not installed (fixtures/postfix/install.sh installs dovecot-core)")
def test_fresh_postscreen_and_sasl_run_matches_its_clients(tmp_path: Path) -> None:
    """postscreen in front of smtpd and SASL through Dovecot, recorded now (≈50 s): every TCP
    connection is one span with its verdict, every AUTH attempt one event, totals as pflogsumm."""
    proc = subprocess.run([sys.executable, str(ROOT / "fixtures/postfix/record.py"), "--only", "postscreen",
                           "--out", str(tmp_path)], capture_output=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout.decode()[-2000:] + proc.stderr.decode()[-2000:]
    truth = json.loads((tmp_path / "postscreen.truth.json").read_text())
    result = run_pipeline([str(tmp_path / "postscreen.log")], timezone="UTC")
    assert result.counters.unparsed == 0
    check_connections(result, truth)
    check_postscreen(result, truth)
    check_auth(result, truth)
    check_outcomes(result, truth)
    check_pflogsumm(result, (tmp_path / "postscreen.pflogsumm.txt").read_text())
