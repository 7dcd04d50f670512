"""The command line: ``backfill``, ``tail`` and ``check``.

Options are declared here and turned into one ``Settings`` by ``config.build_settings``; nothing
else reads the environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from maillog2otel import __version__

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    help="Turn Postfix, Exim and Haraka logs into OpenTelemetry traces and metrics, after the fact.",
)
log = logging.getLogger("maillog2otel")

MtaOpt = Annotated[str, typer.Option("--mta", help="auto (decide per line), postfix, exim or haraka.",
                                     envvar="MAILLOG2OTEL_MTA")]
YearOpt = Annotated[int | None, typer.Option("--year", help="Year of the first line, for year-less "
                                                "syslog stamps (default: from the oldest file's mtime).")]
TzOpt = Annotated[str | None, typer.Option("--timezone", help="IANA zone for stamps without an offset "
                                              "(default: the machine's).", envvar="MAILLOG2OTEL_TIMEZONE")]
HostOpt = Annotated[str | None, typer.Option("--hostname", help="host.name for logs whose lines name no "
                                                "host (Exim's and Haraka's own files).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="ini file with the Haraka plugin's keys.",
                                                   envvar="MAILLOG2OTEL_CONFIG")]
TracesOpt = Annotated[bool | None, typer.Option("--traces/--no-traces", help="Export spans.")]
MetricsOpt = Annotated[bool | None, typer.Option("--metrics/--no-metrics", help="Export metrics.")]
ExporterOpt = Annotated[str | None, typer.Option(
    "--exporter", help="otlp, console or none (default: otlp when an endpoint is configured, else console).")]
EndpointOpt = Annotated[str | None, typer.Option(
    "--endpoint", help="OTLP base URL, e.g. http://localhost:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT).")]
ServiceOpt = Annotated[str | None, typer.Option("--service-name", help="service.name (default: the MTA's "
                                                   "name).")]
NamespaceOpt = Annotated[str | None, typer.Option("--metric-namespace", help="Metric name prefix "
                                                     "(default: the MTA's name: postfix.connections …).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")]
GrammarsOpt = Annotated[Path | None, typer.Option("--grammars", help="Directory of extra grammar files.")]
RetryOpt = Annotated[float | None, typer.Option(
    "--retry-for", help="A deadline: stop (exit 1, resumable) when the collector refuses one batch for this "
    "many seconds (default: wait for it however long it takes).", envvar="MAILLOG2OTEL_RETRY_BUDGET_S")]

# operations (docs/operations.md)
LogsOpt = Annotated[bool | None, typer.Option(
    "--logs/--no-logs", help="Also export every line of the MTA as an OTLP log record carrying the trace and "
    "span ID of its connection or delivery (default: off; [logs] enabled).")]
RedactOpt = Annotated[str | None, typer.Option(
    "--redact", help="Mail addresses in everything exported: none, hash (keyed HMAC), domain (*@example.com) "
    "or drop (default: none; [main] redact).", envvar="MAILLOG2OTEL_REDACT")]
RedactClientsOpt = Annotated[str | None, typer.Option(
    "--redact-clients", help="Client IP addresses, client names and HELO names: none, hash or drop.",
    envvar="MAILLOG2OTEL_REDACT_CLIENTS")]
RedactKeyOpt = Annotated[Path | None, typer.Option(
    "--redact-key-file", help="HMAC key for hash redaction (default: $MAILLOG2OTEL_REDACT_KEY).")]
RejectClassesOpt = Annotated[bool | None, typer.Option(
    "--reject-classes/--no-reject-classes", help="Add the bounded smtp.reject.class attribute to rejected "
    "counts ([reasons] in the config file maps reply texts to classes).")]
PrometheusOpt = Annotated[str | None, typer.Option(
    "--prometheus", metavar="HOST:PORT",
    help="Serve /metrics for Prometheus and /health, /ready, /live here.", envvar="MAILLOG2OTEL_PROMETHEUS")]


def _ops(logs: bool | None, redact: str | None, redact_clients: str | None, redact_key_file: Path | None,
         reject_classes: bool | None, prometheus: str | None) -> dict:
    return {"logs": logs, "redact": redact, "redact_clients": redact_clients,
            "redact_key_file": str(redact_key_file) if redact_key_file else None,
            "reject_classes": reject_classes, "prometheus": prometheus}


def _version(value: bool) -> None:
    if value:
        from maillog2otel.compiled import describe

        typer.echo(f"maillog2otel {__version__}\n{describe()}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    logging.basicConfig(format="maillog2otel: %(message)s", level=logging.WARNING, stream=sys.stderr)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"maillog2otel: {message}", err=True)
    return typer.Exit(code)


def _settings(**kw):
    from maillog2otel.config import ConfigError, build_settings

    try:
        return build_settings(**kw)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


@app.command()
def backfill(
    paths: Annotated[list[str], typer.Argument(help="Log files (plain or .gz), or - for stdin.")],
    mta: MtaOpt = "auto", year: YearOpt = None, timezone: TzOpt = None, hostname: HostOpt = None,
    config: ConfigOpt = None, traces: TracesOpt = None, metrics: MetricsOpt = None,
    exporter: ExporterOpt = None, endpoint: EndpointOpt = None, service_name: ServiceOpt = None,
    metric_namespace: NamespaceOpt = None, quiet: QuietOpt = False, grammars: GrammarsOpt = None,
    retry_for: RetryOpt = None, logs: LogsOpt = None, redact: RedactOpt = None,
    redact_clients: RedactClientsOpt = None, redact_key_file: RedactKeyOpt = None,
    reject_classes: RejectClassesOpt = None, prometheus: PrometheusOpt = None,
    linger: Annotated[float, typer.Option(
        "--linger", help="With --prometheus: keep serving this many seconds after the end of the input, so a "
        "scrape sees the final values.")] = 0.0,
    state: Annotated[Path | None, typer.Option(
        "--state", help="State file that lets an interrupted backfill continue where it stopped (default, "
        "when files are exported over OTLP: $XDG_STATE_HOME/maillog2otel/backfill-<name>-<hash>.json; "
        "removed when the run completes).", envvar="MAILLOG2OTEL_BACKFILL_STATE")] = None,
    no_state: Annotated[bool, typer.Option(
        "--no-state", help="Keep no state: an interrupted run starts again from the first line.")] = False,
    jobs: Annotated[str, typer.Option(
        "--jobs", help="Processes: 1, 2 (spans and metrics built, encoded and sent by a second process, "
        "with or without --state) or auto (1: two measured no faster, docs/scaling.md). The "
        "output is the same for any value.")
    ] = "auto",
) -> None:
    """Read logs to the end and export their traces and metrics with the logs' own timestamps.

    A rotated set is read oldest first as one stream, whatever the order given:

        maillog2otel backfill /var/log/mail.log*

        maillog2otel backfill --endpoint http://collector:4318 mainlog.3.gz mainlog.2.gz mainlog.1 mainlog

        zcat old/*.gz | maillog2otel backfill --year 2024 -

    While the collector is down reading pauses, and the run goes on when it is back. Stopped
    (Ctrl-C, kill, a crash, a --retry-for deadline), the same command continues after the last
    exported line (see --state).
    """
    from maillog2otel.parallel import parse_jobs
    from maillog2otel.runner import run_backfill

    try:
        n_jobs = parse_jobs(jobs)
    except ValueError:
        raise _fail(f"--jobs {jobs!r}: give a number of processes (1 or more) or auto", 2) from None
    settings = _settings(config_path=str(config) if config else None, mta=mta, year=year, timezone=timezone,
                         hostname=hostname, traces=traces, metrics=metrics, exporter=exporter,
                         endpoint=endpoint, service_name=service_name, metric_namespace=metric_namespace,
                         quiet=quiet, retry_budget_s=retry_for,
                         **_ops(logs, redact, redact_clients, redact_key_file, reject_classes, prometheus))
    if state and no_state:
        raise _fail("--state and --no-state contradict each other", 2)
    code = run_backfill(paths, settings, grammars_dir=str(grammars) if grammars else None, linger_s=linger,
                        state=str(state) if state else None, use_state=False if no_state else None,
                        jobs=n_jobs)
    raise typer.Exit(code)


@app.command()
def check(
    paths: Annotated[list[str], typer.Argument(help="Log files (plain or .gz), or - for stdin.")],
    mta: MtaOpt = "auto", year: YearOpt = None, timezone: TzOpt = None, hostname: HostOpt = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 1 when any line of a supported MTA is unparsed (known lines pass).")] = False,
    grammars: GrammarsOpt = None,
) -> None:
    """Read logs without exporting and report how much of them maillog2otel understands.

    Run it before the first backfill: per MTA and program it prints the lines understood (they feed
    telemetry), known (recognised, nothing to export: anvil statistics, start/stop notes…), foreign
    (other programs) and unparsed, the connections and messages reconstructed, and the most common
    unparsed line shapes. --strict fails on unparsed lines only.
    """
    from maillog2otel.runner import run_check

    settings = _settings(mta=mta, year=year, timezone=timezone, hostname=hostname, exporter="none", env={})
    raise typer.Exit(run_check(paths, settings, strict=strict,
                               grammars_dir=str(grammars) if grammars else None))


@app.command()
def tail(
    paths: Annotated[list[str], typer.Argument(help="Live log files (may not exist yet), or - for stdin.")],
    mta: MtaOpt = "auto", year: YearOpt = None, timezone: TzOpt = None, hostname: HostOpt = None,
    config: ConfigOpt = None, traces: TracesOpt = None, metrics: MetricsOpt = None,
    exporter: ExporterOpt = None, endpoint: EndpointOpt = None, service_name: ServiceOpt = None,
    metric_namespace: NamespaceOpt = None, quiet: QuietOpt = False, grammars: GrammarsOpt = None,
    state: Annotated[Path | None, typer.Option(
        "--state", help="State file (default: $XDG_STATE_HOME/maillog2otel/tail-<name>-<hash>.json).",
        envvar="MAILLOG2OTEL_STATE")] = None,
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning", help="Read files the state does not know from their start (default: their end).")]
    = False,
    force_polling: Annotated[bool | None, typer.Option(
        "--force-polling/--no-force-polling", help="Poll the directories instead of inotify (NFS, SMB, FUSE, "
        "some containers; default: watchfiles' rule, WATCHFILES_FORCE_POLLING).")] = None,
    lossy: Annotated[bool, typer.Option(
        "--lossy", help="While the collector is down, keep reading and drop the oldest data beyond --buffer "
        "(counted) instead of pausing.")] = False,
    buffer: Annotated[int, typer.Option("--buffer", min=100, help="Spans (and points) held with --lossy.")]
    = 20_000,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log rotations and truncations.")] = False,
    logs: LogsOpt = None, redact: RedactOpt = None, redact_clients: RedactClientsOpt = None,
    redact_key_file: RedactKeyOpt = None, reject_classes: RejectClassesOpt = None,
    prometheus: PrometheusOpt = None,
) -> None:
    """Follow live logs and export each connection moments after it ends; survives rotation and restarts.

        maillog2otel tail --endpoint http://collector:4318 /var/log/mail.log

        journalctl -f -o json -u postfix@- -u exim4 -u haraka | maillog2otel tail -

    Rotation by rename (logrotate create, postfix logrotate), copytruncate, delete and re-create,
    and files that do not exist yet are all followed. A state file, written only after the
    collector accepted the data it covers, lets a restart continue after the last exported line.
    SIGTERM/SIGINT stop cleanly; SIGHUP reopens the files. See docs/live.md.
    """
    from maillog2otel.runner import run_tail

    if verbose:
        logging.getLogger("maillog2otel").setLevel(logging.INFO)
    settings = _settings(config_path=str(config) if config else None, mta=mta, year=year, timezone=timezone,
                         hostname=hostname, traces=traces, metrics=metrics, exporter=exporter,
                         endpoint=endpoint, service_name=service_name, metric_namespace=metric_namespace,
                         quiet=quiet, **_ops(logs, redact, redact_clients, redact_key_file, reject_classes,
                                             prometheus))
    raise typer.Exit(run_tail(paths, settings, state_path=str(state) if state else None,
                              from_beginning=from_beginning, force_polling=force_polling, lossy=lossy,
                              buffer=buffer, grammars_dir=str(grammars) if grammars else None))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("maillog2otel: interrupted\n")
        sys.exit(130)


__all__ = ["app", "main", "os", "time"]
