"""User grammars: a Postfix variant line the shipped grammar does not know is unparsed in
``check`` without the documented grammar file, and parsed with it, from --grammars DIR or from
an installed package's ``maillog2otel.grammars`` entry point."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import FIXTURES, ROOT, clean_env, run_cli

EXAMPLE = ROOT / "deploy" / "grammars" / "postfix_policy_spf.py"
LINE = (b"Nov 22 03:10:00 mx postfix/policy-spf[9003]: Policy action=PREPEND Received-SPF: pass "
        b"(mx.example: domain of a@b.test designates 192.0.2.1 as permitted sender)\n")


def _log(tmp_path: Path) -> Path:
    log = tmp_path / "mail.log"
    log.write_bytes((FIXTURES / "postfix" / "port-logging.log").read_bytes() + LINE)
    return log


def test_check_shows_the_line_unparsed_without_the_file_and_parsed_with_it(tmp_path: Path) -> None:
    log = _log(tmp_path)
    proc = run_cli("check", "--strict", "--timezone", "UTC", str(log))
    out = proc.stdout.decode()
    assert proc.returncode == 1
    assert "108 lines: 102 understood, 5 known (nothing to export), 0 foreign (other programs), " \
        "1 unparsed" in out
    assert "postfix/policy-spf: Policy action=PREPEND Received-SPF: pass" in out  # the shape, to act on
    grammars = tmp_path / "grammars"
    grammars.mkdir()
    shutil.copy(EXAMPLE, grammars)
    proc = run_cli("check", "--strict", "--timezone", "UTC", "--grammars", str(grammars), str(log))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "108 lines: 103 understood, 5 known (nothing to export), 0 foreign (other programs), " \
        "0 unparsed" in out
    assert "14 connections" in out  # the shipped rules still do their work


def test_an_entry_point_teaches_it_without_any_option(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLE, site / "m2o_spf_grammar.py")
    dist = site / "m2o_spf_grammar-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: m2o-spf-grammar\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[maillog2otel.grammars]\npolicy_spf = m2o_spf_grammar\n"
                                           "broken = m2o_no_such_module\n")
    proc = run_cli("check", "--strict", "--timezone", "UTC", str(_log(tmp_path)),
                   env=clean_env(PYTHONPATH=str(site)))
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, out + err
    assert "103 understood, 5 known" in out
    assert "grammar entry point broken (m2o_no_such_module) skipped" in err  # a broken plugin: a warning
