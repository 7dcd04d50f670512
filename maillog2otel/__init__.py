"""maillog2otel: OpenTelemetry traces and metrics from Haraka, Postfix and Exim logs."""

__version__ = "0.1.0"
