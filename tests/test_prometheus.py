"""--prometheus: a real Prometheus (Debian package) scrapes /metrics and the series come back
through its HTTP API; /health, /ready and /live while a collector fails, with no secret shown."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, OtlpHttpReceiver, clean_env

from maillog2otel.export.prometheus import metric_name, render
from maillog2otel.health import parse_listen
from maillog2otel.testing import run_pipeline

LOG = FIXTURES / "postfix" / "port-logging.log"
PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _serve(port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "maillog2otel", "backfill", "--timezone", "UTC",
                             "--prometheus", f"127.0.0.1:{port}", *args, str(LOG)],
                            env=env or clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.mark.skipif(PROMETHEUS is None, reason="the Debian package prometheus is not installed "
                    "(tests/run.sh installs it when run as root on Debian)")
def test_a_real_prometheus_scrapes_the_series(tmp_path: Path) -> None:
    expected = run_pipeline([str(LOG)], timezone="UTC")
    port, prom_port = _free_port(), _free_port()
    ours = _serve(port, "--exporter", "none", "--quiet", "--linger", "60")
    prom = None
    try:
        final = 'maillog2otel_lines_total{result="parsed"} 102'
        _wait(lambda: final in _get(f"http://127.0.0.1:{port}/metrics")[1].decode(), 30, "the final values")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: maillog2otel\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",  # type: ignore[list-item]
                                 f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def query(q: str) -> list[dict[str, Any]]:
            code, body = _get(f"http://127.0.0.1:{prom_port}/api/v1/query?"
                              + urllib.parse.urlencode({"query": q}))
            return json.loads(body)["data"]["result"] if code == 200 else []

        results = _wait(lambda: query('postfix_messages_total{job="maillog2otel"}'), 40,
                        "Prometheus to scrape")
        got = {r["metric"]["smtp_result"]: float(r["value"][1]) for r in results}
        for result in ("queued", "delivered", "deferred", "bounced", "rejected"):
            want = expected.metric_total("postfix.messages", {"smtp.result": result})
            assert got.get(result, 0.0) == want, result
        assert all(r["metric"]["host_name"] == "mx" and r["metric"]["mta_name"] == "postfix" for r in results)
        (conn,) = query("postfix_connections_total")
        assert float(conn["value"][1]) == expected.metric_total("postfix.connections") == 14
        (count,) = query("postfix_connection_duration_milliseconds_count")
        assert float(count["value"][1]) == 14
        (up,) = query("postfix_up")
        assert up["value"][1] == "1"
        (scrape,) = query('up{job="maillog2otel"}')
        assert scrape["value"][1] == "1"
    finally:
        _stop(ours)
        if prom is not None:
            _stop(prom)


def test_health_while_the_collector_fails_shows_no_secret(otlp_http: OtlpHttpReceiver) -> None:
    otlp_http.fail_next = 10**6  # down for good
    port = _free_port()
    endpoint = otlp_http.endpoint.replace("http://", "http://carol:PASSWORD-7@") + "/?api_key=QUERYKEY-9"
    env = clean_env(
        OTEL_EXPORTER_OTLP_HEADERS="x-api-key=SECRET-KEY-123,authorization=Bearer%20TOPSECRET-456")
    proc = _serve(port, "--endpoint", endpoint, "--retry-for", "6", "--logs", env=env)
    bodies = []
    try:
        def degraded() -> dict[str, Any] | None:
            code, body = _get(f"http://127.0.0.1:{port}/health")
            bodies.append(body)
            doc = json.loads(body) if body else {}
            return doc if code == 503 and doc.get("status") == "degraded" else None

        doc = _wait(degraded, 20, "/health to report the collector retrying")
        retrying = [name for name, e in doc["exporters"].items() if e.get("state") == "retrying"]
        assert retrying and "503" in doc["last_error"]
        assert doc["exporters"]["traces"]["endpoint"].startswith("http://127.0.0.1:")
        code, body = _get(f"http://127.0.0.1:{port}/ready")
        bodies.append(body)
        assert code == 503 and json.loads(body)["status"] == "degraded"
        code, body = _get(f"http://127.0.0.1:{port}/live")
        assert code == 200 and json.loads(body)["status"] == "alive"
        proc.wait(timeout=60)  # it gives up after --retry-for
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 1 and b"could not export" in err
    for secret in (b"SECRET-KEY-123", b"TOPSECRET-456", b"PASSWORD-7", b"QUERYKEY-9"):
        assert secret not in out and secret not in err, secret
        assert all(secret not in b for b in bodies), secret
    assert otlp_http.requests > 2  # it really tried, with those headers


def test_ready_and_health_when_all_is_well(tmp_path: Path) -> None:
    port = _free_port()
    proc = _serve(port, "--exporter", "none", "--quiet", "--linger", "30")
    try:
        _code, _body = _wait(lambda: (r := _get(f"http://127.0.0.1:{port}/ready"))[0] == 200 and r, 30,
                             "/ready")
        doc = json.loads(_wait(lambda: (r := _get(f"http://127.0.0.1:{port}/health"))[0] == 200
                               and b'"read": 107' in r[1] and r[1], 30, "/health"))
        assert doc["status"] == "ok" and doc["mode"] == "backfill" and doc["sources"] == [str(LOG)]
        assert doc["lines"] == {"read": 107, "parsed": 102, "known": 5, "foreign": 0, "unparsed": 0}
        assert doc["lag_s"] > 0 and doc["last_log_time"].endswith("Z")
        assert _get(f"http://127.0.0.1:{port}/nope")[0] == 404
    finally:
        _stop(proc)


def test_exposition_format_names_and_reject_classes() -> None:
    assert metric_name("postfix.hook.total", "{call}", "sum") == "postfix_hook_total"
    assert metric_name("postfix.connections", "{connection}", "sum") == "postfix_connections_total"
    assert metric_name("postfix.connection.duration", "ms", "histogram") == \
        "postfix_connection_duration_milliseconds"
    assert metric_name("postfix.message.size", "By", "histogram") == "postfix_message_size_bytes"
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464) and parse_listen(":9464") == ("0.0.0.0", 9464)
    with pytest.raises(ValueError):
        parse_listen("localhost")
    from maillog2otel.config import build_settings
    from maillog2otel.pipeline import Pipeline, backfill_records
    from maillog2otel.sources import SourceStats
    from maillog2otel.testing import CollectingSink

    settings = build_settings(env={}, exporter="none", timezone="UTC", reject_classes=True)
    p = Pipeline(settings, CollectingSink(), CollectingSink())
    for rec in backfill_records([str(LOG)], settings, p, SourceStats()):
        p.feed(rec)
    p.finish()
    text = render(p.aggregator, p.counters)
    rejected = [line for line in text.splitlines() if 'smtp_result="rejected"' in line]
    assert rejected and all("smtp_reject_class=" in line for line in rejected)
    assert sum(float(line.rsplit(" ", 1)[1]) for line in rejected) == 4
    buckets = [line for line in text.splitlines() if line.startswith("postfix_message_size_bytes_bucket")]
    values = [float(line.rsplit(" ", 1)[1]) for line in buckets]
    assert values == sorted(values) and buckets[-1].count('le="+Inf"') == 1
