"""Correlator records -> ``SpanData``: the ``smtp.connection`` SERVER span and the
``smtp.delivery`` CLIENT spans of docs/telemetry.md."""

from __future__ import annotations

from maillog2otel.records import CLIENT, SERVER, Connection, Delivery, SpanData


def connection_span(c: Connection) -> SpanData:
    return SpanData("smtp.connection", SERVER, c.trace_id, c.span_id, c.parent_span_id, c.start_ns,
                    c.end_ns, c.attrs, c.events, c.error, (c.host, c.mta), c.links)


def delivery_span(d: Delivery) -> SpanData:
    return SpanData("smtp.delivery", CLIENT, d.trace_id, d.span_id, d.parent_span_id, d.start_ns,
                    d.end_ns, d.attrs, [], d.error, (d.host, d.mta), d.links, d.parent_pending)
