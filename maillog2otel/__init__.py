"""maillog2otel: OpenTelemetry traces and metrics from Haraka, Postfix and Exim logs."""

import os as _os

__version__ = "0.1.0"

# Before any other import of the package: MAILLOG2OTEL_PURE=1 runs the pure-Python modules even
# where compiled ones are installed beside them (one install tests both), and a compiled module
# built from another source than its .py (an edited editable install) is not used. Only when
# something was compiled: a pure install pays nothing for it.
if _os.environ.get("MAILLOG2OTEL_PURE") or any(
        _n.endswith((".so", ".pyd")) for _n in _os.listdir(_os.path.dirname(__file__))):
    from maillog2otel.compiled import install_finder as _install

    _install()
