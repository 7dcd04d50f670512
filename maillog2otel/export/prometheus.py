"""The aggregator's series in the Prometheus text exposition format (version 0.0.4), for scraping.

What a scrape sees: for every series, its **cumulative total since the series' first log time**
(the same value the next OTLP cumulative point would carry), exposed **without a timestamp**, so
Prometheus stamps it with the scrape time. In a live ``tail`` that is what you want: ``rate()`` and
``increase()`` work as for any exporter. In a ``backfill`` the values climb as fast as the log is
read, so the time axis is the reading, not the log: use OTLP for history. A restart of ``tail``
continues the totals from its state file (no counter reset); a fresh ``backfill`` starts at 0,
which ``rate()`` treats as a counter reset.

Names follow the OpenTelemetry → Prometheus rules: dots become ``_``, the unit is appended
(``ms`` → ``_milliseconds``, ``By`` → ``_bytes``; ``{…}`` units are dropped), monotonic sums end in
``_total`` (once). Labels: ``host_name``, ``mta_name`` (the resource) and the metric's own
attribute (``smtp_result``, ``postfix_hook``, ``smtp_reject_class``).

    postfix_connections_total{host_name="mx",mta_name="postfix"} 14
    postfix_messages_total{host_name="mx",mta_name="postfix",smtp_result="delivered"} 9
    postfix_connection_duration_milliseconds_bucket{host_name="mx",mta_name="postfix",le="250"} 13
    postfix_up{host_name="mx",mta_name="postfix"} 1

Plus the tool's own: ``maillog2otel_lines_total{result=parsed|known|foreign|unparsed}``,
``maillog2otel_last_log_time_seconds`` (log time of the newest line) and
``maillog2otel_exported_total{signal=spans|metric_points|log_records}``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from maillog2otel.telemetry.metrics import _CLASS_SEP, GAUGE, HISTOGRAM, METRICS, SUM

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UNITS = {"ms": "milliseconds", "s": "seconds", "By": "bytes", "1": ""}
_BAD = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str, unit: str, kind: str) -> str:
    base = _BAD.sub("_", name)
    suffix = "" if unit.startswith("{") else _UNITS.get(unit, _BAD.sub("_", unit))
    if suffix and not base.endswith("_" + suffix):
        base += "_" + suffix
    if kind == SUM and not base.endswith("_total"):
        base += "_total"
    return base


def label_name(key: str) -> str:
    out = _BAD.sub("_", key).replace(":", "_")
    return "_" + out if out[:1].isdigit() else out


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: list[tuple[str, Any]]) -> str:
    return "{" + ",".join(f'{label_name(k)}="{_escape(v)}"' for k, v in pairs) + "}"


def _num(v: float) -> str:
    if isinstance(v, float):
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        if v.is_integer():
            return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def render(aggregator: Any, counters: Any = None, exported: dict[str, int] | None = None,
           redactor: Any = None) -> str:
    """The exposition text for an ``Aggregator`` (and the pipeline's counters)."""
    families: dict[str, tuple[str, str, list[str]]] = {}  # name -> (type, help, sample lines)

    def family(name: str, kind: str, help_text: str) -> list[str]:
        fam = families.get(name)
        if fam is None:
            fam = families[name] = (kind, help_text, [])
        return fam[2]

    for (host, mta, metric, attr), s in list(aggregator.series.items()):
        d = METRICS[metric]
        ns = aggregator.namespace or mta
        labels: list[tuple[str, Any]] = [("host_name", host), ("mta_name", mta)]
        if d.attr and attr is not None:
            key = d.attr.replace("{ns}", ns)
            if _CLASS_SEP in attr:
                result, cls = attr.split(_CLASS_SEP, 1)
                labels += [(key, result), ("smtp.reject.class", cls)]
            else:
                labels.append((key, redactor.text(attr) if redactor is not None else attr))
        name = metric_name(f"{ns}.{d.suffix}", d.unit, d.kind)
        if d.kind == SUM:
            family(name, "counter", d.description).append(f"{name}{_labels(labels)} {_num(s.value)}")
        elif d.kind == HISTOGRAM:
            lines = family(name, "histogram", d.description)
            running = 0
            for bound, n in zip(d.bounds, s.counts, strict=False):
                running += n
                lines.append(f"{name}_bucket{_labels([*labels, ('le', _num(float(bound)))])} {running}")
            total = sum(s.counts)
            lines.append(f"{name}_bucket{_labels([*labels, ('le', '+Inf')])} {total}")
            lines.append(f"{name}_sum{_labels(labels)} {_num(s.total)}")
            lines.append(f"{name}_count{_labels(labels)} {total}")
    for host, mta in sorted(aggregator.sources):
        d = METRICS["up"]
        name = metric_name(f"{aggregator.namespace or mta}.{d.suffix}", d.unit, GAUGE)
        up_labels = _labels([("host_name", host), ("mta_name", mta)])
        family(name, "gauge", d.description).append(f"{name}{up_labels} 1")
    if counters is not None:
        lines = family("maillog2otel_lines_total", "counter", "Log lines read, by what became of them")
        for result in ("parsed", "known", "foreign", "unparsed"):
            lines.append(f'maillog2otel_lines_total{{result="{result}"}} {getattr(counters, result)}')
        if counters.last_ns is not None:
            family("maillog2otel_last_log_time_seconds", "gauge", "Log time of the newest line read").append(
                f"maillog2otel_last_log_time_seconds {_num(counters.last_ns / 1e9)}")
    if exported:
        lines = family("maillog2otel_exported_total", "counter", "Items the exporters' collectors accepted")
        for signal, n in exported.items():
            lines.append(f'maillog2otel_exported_total{{signal="{signal}"}} {n}')
    out: list[str] = []
    for name, (kind, help_text, lines) in families.items():
        out.append(f"# HELP {name} {_escape(help_text)}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + "\n"
