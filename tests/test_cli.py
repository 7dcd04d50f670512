"""The command line as called: options, bad input, summaries."""

from __future__ import annotations

import gzip
import os
import pwd
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, clean_env, run_cli

LOG = FIXTURES / "postfix" / "port-logging.log"


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.decode().startswith("maillog2otel ")
    out = run_cli("backfill", "--help").stdout.decode()
    for option in ("--mta", "--year", "--timezone", "--config", "--no-traces", "--no-metrics", "--exporter",
                   "--endpoint", "--service-name", "--metric-namespace", "--quiet"):
        assert option in out
    assert "maillog2otel backfill /var/log/mail.log*" in out


def test_console_is_the_default_without_an_endpoint() -> None:
    proc = run_cli("backfill", "--timezone", "UTC", str(LOG))
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0
    assert "connection" in out and "-> alice@local.test" in out and "postfix.messages" in out
    assert "107 read: 102 understood, 5 known, 0 foreign, 0 unparsed" in err and "lines/s" in err


def test_console_shows_postscreen_verdicts() -> None:
    """Every postscreen connection is on the console, with its verdict (fixtures/postfix/postscreen)."""
    proc = run_cli("backfill", "--timezone", "UTC", str(FIXTURES / "postfix" / "postscreen.log"))
    out = proc.stdout.decode()
    assert proc.returncode == 0 and "17 connections" in proc.stderr.decode()
    for verdict in ("DENYLISTED", "PREGREET", "PASS NEW", "PASS OLD", "ALLOWLISTED", "HANGUP"):
        assert f"postscreen {verdict}" in out, verdict


def test_stdin() -> None:
    proc = run_cli("backfill", "--timezone", "UTC", "--exporter", "none", "-", stdin=LOG.read_bytes())
    assert proc.returncode == 0 and "14 connections" in proc.stderr.decode()


def test_missing_file_and_directory_are_clear_errors(tmp_path: Path) -> None:
    proc = run_cli("backfill", str(tmp_path / "nope.log"))
    assert proc.returncode == 1 and "nope.log: no such file" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    proc = run_cli("backfill", str(tmp_path))
    assert proc.returncode == 1 and "is a directory" in proc.stderr.decode()


def _runnable_by_others(path: str) -> bool:
    parts = Path(path).resolve().parents
    return all(os.stat(p).st_mode & 0o001 for p in parts) and bool(os.stat(path).st_mode & 0o001)


@pytest.mark.skipif(os.geteuid() != 0 or not _runnable_by_others(sys.executable),
                    reason="needs root and an interpreter other users can run (root reads any file)")
def test_unreadable_file_is_a_clear_error() -> None:
    import tempfile

    folder = Path(tempfile.mkdtemp(dir="/tmp"))
    folder.chmod(0o755)
    log = folder / "secret.log"
    log.write_bytes(LOG.read_bytes())
    log.chmod(0o600)
    nobody = pwd.getpwnam("nobody")
    env = clean_env(HOME="/tmp")
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "maillog2otel", "backfill", str(log)], env=env,
                          capture_output=True, timeout=60, check=False, user=nobody.pw_uid,
                          group=nobody.pw_gid, cwd="/tmp")
    assert proc.returncode == 1, proc.stderr.decode()
    assert "permission denied" in proc.stderr.decode()


def test_garbage_invalid_utf8_and_huge_lines_are_counted_never_fatal(tmp_path: Path) -> None:
    good = LOG.read_bytes().splitlines(keepends=True)
    bad = [b"\xff\xfe garbage \x00\x01\n", b"Nov 22 02:59:16 mx postfix/smtpd[9180]: \xc3\x28 not utf8\n",
           b"x" * (3 << 20) + b"\n", b"Nov 22 02:59:16 mx postfix/smtpd[9180]: what is this\n",
           b"Nov 22 02:59:16 mx dovecot[1]: imap-login: Login\n"]
    mixed = good[:20] + bad + good[20:]
    (tmp_path / "mixed.log").write_bytes(b"".join(mixed))
    proc = run_cli("backfill", "--timezone", "UTC", "--exporter", "none", str(tmp_path / "mixed.log"))
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert f"{len(mixed)} read: 102 understood, 5 known, 1 foreign, 4 unparsed" in err
    assert "14 connections" in err
    assert "2 lines with invalid UTF-8" in err and "1 lines over 1 MiB" in err


def test_corrupt_gzip_is_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    data = gzip.compress(LOG.read_bytes())
    (tmp_path / "mail.log.2.gz").write_bytes(data[: len(data) // 2] + b"\x00" * 64)
    (tmp_path / "mail.log.1").write_bytes(LOG.read_bytes())
    proc = run_cli("backfill", "--timezone", "UTC", "--exporter", "none", str(tmp_path / "mail.log.2.gz"),
                   str(tmp_path / "mail.log.1"))
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "mail.log.2.gz: read error" in err
    assert "connections" in err  # the other file was still read


def test_check_reports_coverage_and_strict(tmp_path: Path) -> None:
    (tmp_path / "x.log").write_bytes(LOG.read_bytes() + b"Nov 22 03:00:00 mx postfix/smtpd[9]: "
                                     b"frobnicated 42 widgets for <a@b.example>\n")
    proc = run_cli("check", "--timezone", "UTC", str(tmp_path / "x.log"))
    out = proc.stdout.decode()
    assert proc.returncode == 0
    # the fixture's known lines (master start, postfix-script, anvil statistics, a relay host's reply) pass
    assert ("108 lines: 102 understood, 5 known (nothing to export), 0 foreign (other programs), "
            "1 unparsed") in out
    assert "99.07% of the MTAs' own lines understood or known" in out
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()
            if line.startswith("postfix ")}
    assert rows[("postfix", "postfix/smtpd")][-1] == "1"  # understood, known, unparsed
    assert "known lines by rule" in out
    assert "postfix/smtpd" in out and "frobnicated N widgets for <addr>" in out
    assert run_cli("check", "--strict", str(tmp_path / "x.log")).returncode == 1
    assert run_cli("check", "--strict", "--timezone", "UTC", str(LOG)).returncode == 0


def test_config_file_keys(tmp_path: Path) -> None:
    ini = tmp_path / "m.ini"
    ini.write_text("[main]\nservice_name=relay-east\nresource_attributes=deployment.environment=prod\n"
                   "[traces]\nenabled=false\n[metrics]\nexport_interval_ms=300000\n")
    proc = run_cli("backfill", "--timezone", "UTC", "--config", str(ini), str(LOG))
    out = proc.stdout.decode()
    assert proc.returncode == 0 and "connection  " not in out and "postfix.messages" in out


def test_bad_option_values_are_usage_errors() -> None:
    for args in (["--mta", "sendmail"], ["--exporter", "carrier-pigeon"], ["--timezone", "Mars/Olympus"]):
        proc = run_cli("backfill", *args, str(LOG))
        assert proc.returncode != 0 and "Traceback" not in proc.stderr.decode(), args
