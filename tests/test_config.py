"""How options, OTEL_* variables and the ini file combine (the OTLP exporter specification)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maillog2otel.config import ConfigError, build_settings


@pytest.mark.parametrize(("env", "cli_endpoint", "traces_url", "metrics_url"), [
    # generic endpoint: /v1/<signal> appended, one trailing slash dropped, base path kept
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, None, "http://c:4318/v1/traces", "http://c:4318/v1/metrics"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/otlp"}, None, "https://c/otlp/v1/traces", "https://c/otlp/v1/metrics"),
    # per-signal endpoint: verbatim, for its signal only
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/custom"}, None, "http://t:1/custom",
     "http://localhost:4318/v1/metrics"),
    # the command line names one collector for both signals
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}, "http://cli:4318", "http://cli:4318/v1/traces",
     "http://cli:4318/v1/metrics"),
])
def test_endpoint_rules(env: dict, cli_endpoint: str | None, traces_url: str, metrics_url: str) -> None:
    s = build_settings(env=env, endpoint=cli_endpoint)
    assert (s.traces.endpoint, s.metrics.endpoint) == (traces_url, metrics_url)


def test_no_endpoint_anywhere_means_console() -> None:
    s = build_settings(env={})
    assert (s.traces.exporter, s.metrics.exporter) == ("console", "console")


def test_an_endpoint_means_otlp() -> None:
    s = build_settings(env={"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4318/v1/metrics"})
    assert (s.traces.exporter, s.metrics.exporter) == ("console", "otlp")


def test_exporter_variables_and_sdk_disabled() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    s = build_settings(env=env)
    assert (s.traces.exporter, s.metrics.exporter) == ("none", "otlp")
    assert build_settings(env={**env, "OTEL_SDK_DISABLED": "true"}).metrics.exporter == "none"


def test_grpc_protocol_per_signal() -> None:
    s = build_settings(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
    assert (s.traces.protocol, s.traces.endpoint) == ("grpc", "http://c:4317")
    assert s.metrics.protocol == "http/protobuf"


def test_headers_per_signal_replace_generic() -> None:
    s = build_settings(env={"OTEL_EXPORTER_OTLP_HEADERS": "a=k3y,b=2",
                            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "c=3"})
    assert dict(s.traces.headers) == {"a": "k3y", "b": "2"} and dict(s.metrics.headers) == {"c": "3"}
    assert "k3y" not in repr(s.traces) and "hidden" in repr(s.traces)  # API keys never printed


def test_timeout_is_milliseconds_as_the_specification_says() -> None:
    assert build_settings(env={"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}).traces.timeout_s == 2.5


def test_env_beats_ini_and_cli_beats_env(tmp_path: Path) -> None:
    ini = tmp_path / "x.ini"
    ini.write_text("[main]\nservice_name=from-ini\nresource_attributes=a=ini,b=ini\n")
    s = build_settings(env={"OTEL_RESOURCE_ATTRIBUTES": "b=env"}, config_path=str(ini))
    assert s.service_name == "from-ini" and dict(s.resource_attributes) == {"a": "ini", "b": "env"}
    s = build_settings(env={"OTEL_SERVICE_NAME": "from-env"}, config_path=str(ini))
    assert s.service_name == "from-env"
    s = build_settings(env={"OTEL_SERVICE_NAME": "e"}, config_path=str(ini), service_name="cli")
    assert s.service_name == "cli"


def test_ini_switches(tmp_path: Path) -> None:
    ini = tmp_path / "x.ini"
    ini.write_text("[main]\nenabled=true\n[traces]\nenabled=false\n[metrics]\nexport_interval_ms=15000\n")
    s = build_settings(env={}, config_path=str(ini))
    assert s.traces.exporter == "none" and s.metrics.exporter == "console" and s.export_interval_ms == 15000
    assert build_settings(env={}, config_path=str(ini), traces=True).traces.exporter == "console"


@pytest.mark.parametrize(("kwargs", "env", "message"), [
    ({"exporter": "zipkin"}, {}, "unknown traces exporter"),
    ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier"}, "unsupported OTLP protocol"),
    ({}, {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "milliseconds"),
    ({"timezone": "Nowhere/Land"}, {}, "unknown time zone"),
    ({"config_path": "/nonexistent.ini"}, {}, "cannot read config file"),
])
def test_bad_settings_say_why(kwargs: dict, env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings(env=env, **kwargs)
