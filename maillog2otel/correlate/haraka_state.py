"""The Haraka correlator's state as JSON-able data (``tail`` saves it; a restart loads it).

The state is a tree of a few dataclasses; rather than one hand-written converter per class, every
dataclass is written as ``{"@": class name, field: value…}`` and bytes as ``{"#": hex}``, so a
field added later needs no change here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from maillog2otel.records import Event, Record, SpanEvent


def dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"@": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = dump(getattr(value, f.name))
        return out
    if isinstance(value, bytes):
        return {"#": value.hex()}
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [dump(v) for v in value]
    return value


def load(value: Any, classes: dict[str, type]) -> Any:
    if isinstance(value, dict):
        if "#" in value and len(value) == 1:
            return bytes.fromhex(value["#"])
        if "@" in value:
            cls = {**_RECORDS, **classes}[value["@"]]
            return cls(**{k: load(v, classes) for k, v in value.items() if k != "@"})
        return {k: load(v, classes) for k, v in value.items()}
    if isinstance(value, list):
        return [load(v, classes) for v in value]
    return value


_RECORDS: dict[str, type] = {"Event": Event, "Record": Record, "SpanEvent": SpanEvent}
