"""Trace and span IDs as a function of log content, so a second backfill sends identical IDs."""

from __future__ import annotations

from hashlib import blake2b


def ids_for(key: str) -> tuple[bytes, bytes]:
    """(trace_id, span_id) for a root span identified by ``key``."""
    h = blake2b(key.encode("utf-8", "surrogateescape"), digest_size=24).digest()
    return _nonzero(h[:16]), _nonzero(h[16:])


def span_id_for(key: str) -> bytes:
    """A span ID for a child span identified by ``key``."""
    return _nonzero(blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest())


def _nonzero(b: bytes) -> bytes:
    # An all-zero ID is invalid in OTLP; the odds are 2^-64, the fix is free.
    return b if any(b) else b[:-1] + b"\x01"
