"""deploy/: the systemd unit is valid for systemd and has what docs/operations.md promises; the
collector example is valid YAML with the three pipelines."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

UNIT = ROOT / "deploy" / "maillog2otel.service"


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text().replace("\\\n", " "))
    return cp


def test_unit_has_state_directory_restart_adm_and_read_only_hardening() -> None:
    s = _unit()["Service"]
    assert s["StateDirectory"] == "maillog2otel" and s["Restart"] == "on-failure"
    assert s["SupplementaryGroups"] == "adm" and s["ProtectSystem"] == "strict"
    assert "ReadOnlyPaths" in s and s["NoNewPrivileges"] == "yes"
    assert "tail" in s["ExecStart"] and "/var/lib/maillog2otel/" in s["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "maillog2otel.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/maillog2otel", "/bin/true"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False,
                          env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"})
    problems = [line for line in proc.stderr.splitlines() if "maillog2otel.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_collector_example_has_the_three_pipelines() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    assert set(doc["service"]["pipelines"]) == {"traces", "metrics", "logs"}
    assert {"otlp/jaeger", "otlp/tempo"} <= set(doc["service"]["pipelines"]["traces"]["exporters"])


def test_gateway_example_wires_what_it_declares() -> None:
    """docs/scaling.md's gateway: three pipelines, and every component a pipeline names is declared."""
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "deploy" / "otel-collector-gateway.yaml").read_text())
    pipelines = doc["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for p in pipelines.values():
        assert set(p["receivers"]) <= set(doc["receivers"])
        assert set(p["processors"]) <= set(doc["processors"])
        assert set(p["exporters"]) <= set(doc["exporters"])
    assert set(doc["service"]["extensions"]) <= set(doc["extensions"])
    assert doc["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
