"""Settings: command-line options, the ini file and the standard ``OTEL_*`` variables, resolved
once into a frozen ``Settings`` that the rest of the program is given.

Precedence, highest first: command-line option, ``OTEL_*`` variable, ini file, default. (The
Haraka plugin's rule that OTEL variables beat its ini file, with the command line on top.)
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

# The variables we read, in one place (opentelemetry-python's environment_variables style).
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"
OTEL_EXPORTER_OTLP_ = "OTEL_EXPORTER_OTLP_"  # + [TRACES_|METRICS_] + ENDPOINT, HEADERS, …
OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
OTEL_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"

DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
SIGNAL_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}


def display_endpoint(url: str) -> str:
    """An endpoint fit for messages: no ``user:password@``, no query string (credentials hide there)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<endpoint>"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class ConfigError(ValueError):
    """A setting that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ExportTarget:
    """Where and how one signal goes."""

    exporter: str  # otlp | console | none
    protocol: str = "http/protobuf"  # http/protobuf | http/json | grpc
    endpoint: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    compression: str | None = None  # gzip | deflate | None
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None
    insecure: bool | None = None

    def __repr__(self) -> str:  # headers carry API keys: never print them
        return (f"ExportTarget(exporter={self.exporter!r}, protocol={self.protocol!r}, "
                f"endpoint={display_endpoint(self.endpoint)!r}, "
                f"headers=<{len(self.headers)} hidden>)")


@dataclass(frozen=True, slots=True)
class Settings:
    mta: str = "auto"
    year: int | None = None
    timezone: str | None = None
    hostname: str | None = None
    traces: ExportTarget = ExportTarget("console")
    metrics: ExportTarget = ExportTarget("console")
    service_name: str | None = None  # None: the MTA's name
    service_version: str | None = None
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    metric_namespace: str | None = None
    export_interval_ms: int = 60_000
    delta: bool = False
    quiet: bool = False
    # how long one refused batch is retried before the run stops; < 0: for ever (wait out the collector)
    retry_budget_s: float = -1.0
    # operations (docs/operations.md): log records, redaction, reject classes, Prometheus/health
    logs: ExportTarget = ExportTarget("none")
    redact: str = "none"  # none | hash | domain | drop
    redact_clients: str = "none"  # none | hash | drop
    redact_key: bytes | None = field(default=None, repr=False)
    reject_classes: bool = False
    reason_classes: tuple[tuple[str, str], ...] = ()
    reason_defaults: bool = True
    prometheus: str | None = None  # HOST:PORT for /metrics, /health, /ready, /live


def parse_kv_list(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` (W3C baggage style, values URL-encoded) -> dict."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {item.strip()!r}")
        out[unquote(key.strip())] = unquote(value.strip())
    return out


def _truthy(text: str | None) -> bool | None:
    if text is None:
        return None
    return text.strip().lower() in ("1", "true", "yes", "on")


def read_ini(path: str | None) -> configparser.ConfigParser:
    cp = configparser.ConfigParser()
    if path is None:
        return cp
    try:
        with open(path, encoding="utf-8") as fh:
            cp.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except configparser.Error as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    return cp


def _signal_env(env: Mapping[str, str], signal: str, name: str) -> str | None:
    return env.get(f"{OTEL_EXPORTER_OTLP_}{signal.upper()}_{name}") or env.get(f"{OTEL_EXPORTER_OTLP_}{name}")


def export_target(signal: str, *, env: Mapping[str, str], cli_exporter: str | None,
                  cli_endpoint: str | None, ini_endpoint: str | None) -> ExportTarget:
    """Resolve one signal's exporter with the OTLP exporter specification's rules.

    The generic endpoint gets ``/v1/<signal>`` appended; the per-signal one is used verbatim.
    With no endpoint configured anywhere, the exporter is ``console``."""
    if _truthy(env.get(OTEL_SDK_DISABLED)):
        return ExportTarget("none")
    per_signal = env.get(f"{OTEL_EXPORTER_OTLP_}{signal.upper()}_ENDPOINT")
    generic = cli_endpoint or env.get(f"{OTEL_EXPORTER_OTLP_}ENDPOINT") or ini_endpoint
    exporter = cli_exporter or env.get(f"OTEL_{signal.upper()}_EXPORTER")
    if exporter:
        exporter = exporter.split(",")[0].strip().lower()
    else:
        exporter = "otlp" if (per_signal or generic) else "console"
    if exporter not in ("otlp", "console", "none"):
        raise ConfigError(f"unknown {signal} exporter {exporter!r} (use otlp, console or none)")
    protocol = (_signal_env(env, signal, "PROTOCOL") or "http/protobuf").strip().lower()
    if protocol not in ("http/protobuf", "http/json", "grpc"):
        raise ConfigError(f"unsupported OTLP protocol {protocol!r} (use http/protobuf, http/json or grpc)")
    if cli_endpoint:
        per_signal = None  # the command line names the collector for both signals
    if protocol == "grpc":
        endpoint = per_signal or generic or DEFAULT_GRPC_ENDPOINT
    elif per_signal:
        endpoint = per_signal
    else:
        endpoint = (generic or DEFAULT_HTTP_ENDPOINT).rstrip("/") + SIGNAL_PATHS[signal]
    raw_headers = env.get(f"{OTEL_EXPORTER_OTLP_}{signal.upper()}_HEADERS")
    if raw_headers is None:  # per-signal headers replace the generic ones, as the spec says
        raw_headers = env.get(f"{OTEL_EXPORTER_OTLP_}HEADERS", "")
    try:
        headers = {k.lower(): v for k, v in parse_kv_list(raw_headers).items()}
    except ConfigError as exc:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_HEADERS: {exc}") from None
    raw_timeout = _signal_env(env, signal, "TIMEOUT")
    try:
        # The specification says milliseconds; opentelemetry-python reads seconds (#4044). We follow
        # the specification, so a value shared with other SDKs means the same thing here.
        timeout_s = float(raw_timeout) / 1000 if raw_timeout else 10.0
    except ValueError:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_TIMEOUT must be a number of milliseconds, got {raw_timeout!r}") from None
    compression = (_signal_env(env, signal, "COMPRESSION") or "none").strip().lower()
    if compression not in ("gzip", "deflate", "none"):
        raise ConfigError(f"unsupported OTLP compression {compression!r} (use gzip, deflate or none)")
    insecure = _truthy(_signal_env(env, signal, "INSECURE"))
    return ExportTarget(exporter, protocol, endpoint, headers, timeout_s,
                        None if compression == "none" else compression,
                        _signal_env(env, signal, "CERTIFICATE"), _signal_env(env, signal, "CLIENT_KEY"),
                        _signal_env(env, signal, "CLIENT_CERTIFICATE"), insecure)


def build_settings(*, env: Mapping[str, str] | None = None, config_path: str | None = None,
                   mta: str = "auto", year: int | None = None, timezone: str | None = None,
                   hostname: str | None = None, traces: bool | None = None, metrics: bool | None = None,
                   exporter: str | None = None, endpoint: str | None = None, service_name: str | None = None,
                   metric_namespace: str | None = None, quiet: bool = False,
                   retry_budget_s: float | None = None, logs: bool | None = None, redact: str | None = None,
                   redact_clients: str | None = None, redact_key_file: str | None = None,
                   reject_classes: bool | None = None, prometheus: str | None = None) -> Settings:
    env = os.environ if env is None else env
    ini = read_ini(config_path)
    ops = _ops_settings(ini, env, exporter=exporter, endpoint=endpoint, logs=logs, redact=redact,
                        redact_clients=redact_clients, redact_key_file=redact_key_file,
                        reject_classes=reject_classes, prometheus=prometheus)

    def ini_get(section: str, key: str) -> str | None:
        return ini.get(section, key, fallback=None)

    enabled = _truthy(ini_get("main", "enabled"))
    traces_on = traces if traces is not None else _truthy(ini_get("traces", "enabled"))
    metrics_on = metrics if metrics is not None else _truthy(ini_get("metrics", "enabled"))
    if enabled is False:
        traces_on = traces_on if traces is not None else False
        metrics_on = metrics_on if metrics is not None else False
    ini_endpoint = ini_get("main", "endpoint")
    t = export_target("traces", env=env, cli_exporter=exporter, cli_endpoint=endpoint,
                      ini_endpoint=ini_endpoint)
    m = export_target("metrics", env=env, cli_exporter=exporter, cli_endpoint=endpoint,
                      ini_endpoint=ini_endpoint)
    if traces_on is False:
        t = ExportTarget("none")
    if metrics_on is False:
        m = ExportTarget("none")
    resource = parse_kv_list(ini_get("main", "resource_attributes") or "")
    resource.update(parse_kv_list(env.get(OTEL_RESOURCE_ATTRIBUTES, "")))
    name = service_name or env.get(OTEL_SERVICE_NAME) or resource.pop("service.name", None) \
        or ini_get("main", "service_name")
    resource.pop("service.name", None)
    interval = ini_get("metrics", "export_interval_ms") or env.get(OTEL_METRIC_EXPORT_INTERVAL)
    try:
        interval_ms = int(interval) if interval else 60_000
    except ValueError:
        raise ConfigError(f"export_interval_ms must be an integer, got {interval!r}") from None
    if interval_ms < 1000:
        raise ConfigError("export_interval_ms must be at least 1000")
    temporality = env.get(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "cumulative").strip().lower()
    zone = timezone or ini_get("main", "timezone")
    if zone:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(zone)
        except (ValueError, OSError, KeyError):
            raise ConfigError(
                f"unknown time zone {zone!r} (use an IANA name such as Europe/Berlin or UTC)") from None
    if mta not in ("auto", "postfix", "exim", "haraka"):
        raise ConfigError(f"unknown MTA {mta!r} (use auto, postfix, exim or haraka)")
    return Settings(
        mta=mta, year=year, timezone=timezone or ini_get("main", "timezone"), hostname=hostname,
        traces=t, metrics=m, service_name=name,
        service_version=ini_get("main", "service_version"), resource_attributes=resource,
        metric_namespace=metric_namespace or ini_get("metrics", "namespace"),
        export_interval_ms=interval_ms, delta=temporality in ("delta", "lowmemory"), quiet=quiet,
        retry_budget_s=retry_budget_s if retry_budget_s is not None else -1.0, **ops,
    )


def _ops_settings(ini: configparser.ConfigParser, env: Mapping[str, str], *, exporter: str | None,
                  endpoint: str | None, logs: bool | None, redact: str | None, redact_clients: str | None,
                  redact_key_file: str | None, reject_classes: bool | None, prometheus: str | None) -> dict:
    """The operations settings (docs/operations.md), with the same precedence as the rest."""
    from maillog2otel.telemetry import reasons
    from maillog2otel.telemetry.redact import RedactError, Redactor, load_key

    def ini_get(section: str, key: str) -> str | None:
        return ini.get(section, key, fallback=None)

    out: dict = {}
    logs_on = logs if logs is not None else _truthy(ini_get("logs", "enabled"))
    if logs_on and not _truthy(env.get(OTEL_SDK_DISABLED)):
        out["logs"] = export_target("logs", env=env, cli_exporter=exporter, cli_endpoint=endpoint,
                                    ini_endpoint=ini_get("main", "endpoint"))
    mode = (redact or ini_get("main", "redact") or "none").strip().lower()
    clients = (redact_clients or ini_get("main", "redact_clients") or "none").strip().lower()
    key_file = redact_key_file or ini_get("main", "redact_key_file")
    try:
        key = load_key(key_file, env) if "hash" in (mode, clients) else None
        Redactor(mode, clients, key)  # validates modes and the key
    except RedactError as exc:
        raise ConfigError(str(exc)) from None
    out.update(redact=mode, redact_clients=clients, redact_key=key)
    rc = reject_classes if reject_classes is not None else _truthy(ini_get("metrics", "reject_classes"))
    user = (tuple((k, v) for k, v in ini.items("reasons", raw=True) if k != "use_defaults")
            if ini.has_section("reasons") else ())
    use_defaults = _truthy(ini_get("reasons", "use_defaults")) is not False
    try:
        reasons.compile_classes(user, use_defaults)
    except reasons.ConfigProblem as exc:
        raise ConfigError(str(exc)) from None
    out.update(reject_classes=bool(rc), reason_classes=user, reason_defaults=use_defaults)
    listen = prometheus or ini_get("main", "prometheus")
    if listen:
        from maillog2otel.health import parse_listen

        try:
            parse_listen(listen)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        out["prometheus"] = listen
    return out
