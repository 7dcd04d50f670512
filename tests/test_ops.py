"""The operations features from the other commands: tail with --prometheus and --logs, check's
per-MTA table, and the reject classes with the ini file's [reasons]."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, OtlpHttpReceiver, clean_env, run_cli
from test_prometheus import _free_port, _get, _wait

from maillog2otel.config import ConfigError, build_settings
from maillog2otel.telemetry.reasons import Classifier, compile_classes
from maillog2otel.testing import run_pipeline

LOG = FIXTURES / "postfix" / "port-logging.log"


def test_tail_serves_health_and_metrics_and_sends_log_records(tmp_path: Path,
                                                              otlp_http: OtlpHttpReceiver) -> None:
    port = _free_port()
    log = tmp_path / "mail.log"
    log.write_bytes(LOG.read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "maillog2otel", "tail", "--timezone", "UTC",
                             "--from-beginning", "--state", str(tmp_path / "state.json"),
                             "--endpoint", otlp_http.endpoint, "--logs",
                             "--prometheus", f"127.0.0.1:{port}", str(log)],
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        doc = json.loads(_wait(lambda: (r := _get(f"http://127.0.0.1:{port}/health"))[0] == 200
                               and b'"read": 107' in r[1] and r[1], 30, "/health after the whole file"))
        assert doc["mode"] == "tail" and doc["sources"] == [str(log)] and doc["status"] == "ok"
        assert doc["exporters"]["logs"]["exporter"] == "otlp"
        text = _wait(lambda: (r := _get(f"http://127.0.0.1:{port}/metrics"))[0] == 200
                     and b"postfix_connections_total" in r[1] and r[1].decode(), 30, "/metrics")
        assert 'postfix_connections_total{host_name="mx",mta_name="postfix"} 14' in text
        # the log records leave 5 s of log time after their line, or at the end
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert len(otlp_http.received.log_records()) == 107 and b"107 log records exported" in err
    assert _get(f"http://127.0.0.1:{port}/live")[0] == 0  # the server stopped with the run


def test_check_prints_per_mta_counts_foreign_programs_and_open_sessions(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(LOG.read_bytes() + b"Nov 22 03:00:00 mx dovecot[77]: imap-login: Login: user=<bob>\n"
                    b"Nov 22 03:00:01 mx postfix/smtpd[4242]: connect from unknown[127.0.0.9]:4444\n")
    proc = run_cli("check", "--timezone", "UTC", str(log))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out
    assert "dovecot" in out and "1 lines of another program" in out
    row = next(line for line in out.splitlines() if line.startswith("postfix ") and "connections" not in line
               and len(line.split()) == 10)
    connections, queued, _deliveries, delivered, _deferred, _bounced, rejected, open_s, _ = row.split()[1:]
    expected = run_pipeline([str(LOG)], timezone="UTC")
    assert int(connections) == 15
    assert int(queued) == expected.metric_total("postfix.messages", {"smtp.result": "queued"})
    assert int(delivered) == expected.metric_total("postfix.messages", {"smtp.result": "delivered"})
    assert int(rejected) == 4 and int(open_s) == 1
    assert "left open at the end (postfix): 1 sessions" in out


def test_reject_classes_default_user_and_bounded() -> None:
    classify = Classifier(compile_classes())
    assert classify("<x@relay.test>: Relay access denied") == "relay_denied"
    assert classify("<nosuchuser@local.test>: Recipient address rejected: User unknown in local recipient "
                    "table") == "unknown_recipient"
    assert classify("Service unavailable; Client host [192.0.2.1] blocked using "
                    "zen.spamhaus.org") == "blocklisted"
    assert classify("something nobody wrote a pattern for") == "other" and classify(None) == "unknown"
    user = Classifier(compile_classes([("greylisted", "greylist"), ("relay_denied", "never matches")], True))
    assert user("451 Greylisted, try later") == "greylisted"  # the file's classes come first
    only = Classifier(compile_classes([("greylisted", "greylist")], use_defaults=False))
    assert only("Relay access denied") == "other"


def test_reject_classes_from_the_ini_file(tmp_path: Path) -> None:
    ini = tmp_path / "m.ini"
    ini.write_text("[metrics]\nreject_classes = true\n[reasons]\nno_such_user = User unknown|100% sure\n")
    result = run_pipeline([str(LOG)], settings=build_settings(env={}, exporter="none", timezone="UTC",
                                                              config_path=str(ini)))
    points = [p.attrs for md in result.metrics if md.name == "postfix.messages" for p in md.points
              if p.attrs.get("smtp.result") == "rejected"]
    classes = {a["smtp.reject.class"] for a in points}
    assert "no_such_user" in classes and classes <= {"no_such_user", "relay_denied", "other", "unknown",
                                                     "sender_rejected", "client_rejected", "content_rejected"}
    total = sum(result.metric_total("postfix.messages", {"smtp.result": "rejected", "smtp.reject.class": c})
                for c in classes)
    assert total == 4  # the same rejections as without classes, split
    plain = run_pipeline([str(LOG)], timezone="UTC")
    assert plain.metric_total("postfix.messages", {"smtp.result": "rejected"}) == 4  # off by default
    for bad, message in (("[reasons]\nBad-Name = x\n", "class names"),
                         ("[reasons]\nok = (\n", "regular expression")):
        (tmp_path / "bad.ini").write_text(bad)
        with pytest.raises(ConfigError, match=message):
            build_settings(env={}, config_path=str(tmp_path / "bad.ini"))
