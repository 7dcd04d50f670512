"""maillog2otel: OpenTelemetry traces and metrics from Haraka, Postfix and Exim logs."""

import os as _os

__version__ = "0.1.0"

# MAILLOG2OTEL_PURE=1: run the pure-Python modules even where compiled ones are installed beside
# them (one install tests both; see maillog2otel/compiled.py). Must act before any other import.
if _os.environ.get("MAILLOG2OTEL_PURE", "").strip().lower() not in ("", "0", "no", "false"):
    from maillog2otel.compiled import install_pure_finder as _install

    _install()
