"""The MTA registry: which grammar and correlator serve which lines.

An MTA plugs in as ``grammars/<mta>.py`` plus ``maillog2otel/correlate/<mta>.py`` and one line
here. ``detect`` decides a line's MTA from its envelope (per line, so a central syslog file
carrying several MTAs works).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from types import ModuleType

from maillog2otel.correlate.base import CorrelateSettings, Correlator
from maillog2otel.parse import Grammar
from maillog2otel.records import Record

# name -> (grammar module, correlator "module:Class")
REGISTRY: dict[str, tuple[str, str]] = {
    "postfix": ("maillog2otel.grammars.postfix", "maillog2otel.correlate.postfix:PostfixCorrelator"),
    "exim": ("maillog2otel.grammars.exim", "maillog2otel.correlate.exim:EximCorrelator"),
    "haraka": ("maillog2otel.grammars.haraka", "maillog2otel.correlate.haraka:HarakaCorrelator"),
}
_HARAKA_BODY = re.compile(r"\[[A-Z]+\] \[[-0-9A-F.]+\] \[|\{\"level\":|level=[A-Z]+ uuid=")


def detect(rec: Record) -> str | None:
    """The MTA that wrote a line, or None for other programs (dovecot, amavis, cron …)."""
    if rec.mta is not None:
        return rec.mta
    p = rec.program
    if p.startswith("postfix"):
        return "postfix"
    if p.startswith("exim"):
        return "exim"
    if p.startswith("haraka") or (p in ("node", "haraka.js") and _HARAKA_BODY.match(rec.message)):
        return "haraka"
    return None


def available() -> list[str]:
    """MTAs whose grammar and correlator are both installed."""
    return [name for name, (gmod, cpath) in REGISTRY.items()
            if importlib.util.find_spec(gmod) is not None
            and importlib.util.find_spec(cpath.split(":")[0]) is not None]


ENTRY_POINT_GROUP = "maillog2otel.grammars"


def user_grammar_modules(directory: str | None) -> dict[str, list[ModuleType]]:
    """Extra grammars: installed packages' ``maillog2otel.grammars`` entry points (each names a
    module), then the files an admin dropped into ``--grammars DIR``. Each declares ``MTA`` and
    ``RULES`` and adds its rules after the shipped ones of that MTA (docs/operations.md)."""
    found: dict[str, list[ModuleType]] = {}
    for mod in _entry_point_modules():
        found.setdefault(mod.MTA, []).append(mod)
    if not directory:
        return found
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".py") or name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"maillog2otel_user_grammar_{name[:-3]}",
                                                      os.path.join(directory, name))
        if spec is None or spec.loader is None:
            continue
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        found.setdefault(mod.MTA, []).append(mod)
    return found


def _entry_point_modules() -> list[ModuleType]:
    """Grammar modules that installed distributions declare; a broken one is skipped, with a warning."""
    import logging
    from importlib.metadata import entry_points

    out = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            mod = ep.load()
            if (not isinstance(getattr(mod, "MTA", None), str)
                    or not isinstance(getattr(mod, "RULES", None), list)):
                raise TypeError("it must be a module with MTA (a string) and RULES (a list)")
        except Exception as exc:  # noqa: BLE001 - a third party's plugin must not stop the run
            logging.getLogger("maillog2otel").warning("grammar entry point %s (%s) skipped: %s",
                                                      ep.name, ep.value, exc)
            continue
        out.append(mod)
    return out


def load(name: str, settings: CorrelateSettings, *, fast: bool = True,
         extra: list[ModuleType] | None = None) -> tuple[Grammar, Correlator]:
    gmod, cpath = REGISTRY[name]
    grammar = Grammar([importlib.import_module(gmod), *(extra or [])], fast=fast)
    mod_name, cls_name = cpath.split(":")
    correlator = getattr(importlib.import_module(mod_name), cls_name)(settings)
    return grammar, correlator
