"""``Record`` -> ``Event``: find the one grammar rule that recognises a line.

Each MTA's grammar module names its rules, the words that can start each one and the programs
(daemons) it belongs to. Candidates are indexed by (program key, first word), so a line tries
one or two rules rather than all of them; each rule runs its compiled ``re`` (``fast=True``) or
pyparsing itself (``fast=False``: the reference the differential tests compare against).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

from maillog2otel.records import Event, Record

_FIRST_WORD = re.compile(r"[^ =:]*=?")


class Grammar:
    """The compiled rules of one MTA, with their dispatch index."""

    def __init__(self, modules: list[ModuleType], *, fast: bool = True) -> None:
        self.mta: str = modules[0].MTA
        self.rules = [r for m in modules for r in m.RULES]
        self.fast = fast
        # a module-level REWRITE(text, fast) -> text puts a line into the form the rules read
        # (Haraka: its logfmt and JSON records -> the DEFAULT text of the same record)
        self.rewrite: Callable[[str, bool], str] | None = getattr(modules[0], "REWRITE", None)
        prefix = getattr(modules[0], "QUEUE_PREFIX", None) or getattr(modules[0], "PREFIX", None)
        self.prefix = None
        if prefix is not None:
            from maillog2otel.grammars.common import Rule

            self.prefix = Rule("prefix", prefix)
            pattern = self.prefix.regex.pattern if self.prefix.regex else None
            self._prefix_re = re.compile(pattern) if pattern else None
        self.program_key: Callable[[str], tuple[str, dict[str, Any]]] = getattr(
            modules[0], "program_key", _last_component
        )
        self._keys = {k for r in self.rules for k in r.keys}
        self._index: dict[tuple[str, str | None], list[Any]] = {}
        self._programs: dict[str, tuple[str, dict[str, Any]]] = {}

    def _candidates(self, program: str, key: str | None) -> list[Any]:
        found = self._index.get((program, key))
        if found is None:
            keyed = [r for r in self.rules if key in r.keys and (not r.programs or program in r.programs)]
            loose = [r for r in self.rules if not r.keys and (not r.programs or program in r.programs)]
            found = self._index[(program, key)] = keyed + loose
        return found

    def parse(self, rec: Record) -> Event | None:
        prog = self._programs.get(rec.program)
        if prog is None:
            if len(self._programs) > 10_000:
                self._programs.clear()
            prog = self._programs[rec.program] = self.program_key(rec.program)
        daemon, prog_fields = prog
        body = rec.message if self.rewrite is None else self.rewrite(rec.message, self.fast)
        fields: dict[str, Any] | None = None
        if self.prefix is not None:
            if self.fast and self._prefix_re is not None:
                m = self._prefix_re.match(body)
                if m is not None:
                    fields = {k: v for k, v in m.groupdict().items() if v is not None}
                    body = body[m.end():]
            else:
                body, fields = _slow_prefix(self.prefix, body)
        key = _FIRST_WORD.match(body)[0]  # type: ignore[index]  # always matches (may be empty)
        index_key = (daemon, key if key in self._keys else None)
        candidates = self._index.get(index_key)
        if candidates is None:
            candidates = self._candidates(*index_key)
        for rule in candidates:
            got = rule.parse_fast(body) if self.fast else rule.parse_slow(body)
            if got is not None:
                if fields:
                    got.update(fields)
                if prog_fields:
                    got.update(prog_fields)
                return Event(rule.name, got, rec)
        return None


def _last_component(program: str) -> tuple[str, dict[str, Any]]:
    return program.rsplit("/", 1)[-1], {}


def _slow_prefix(rule: Any, body: str) -> tuple[str, dict[str, Any]]:
    """pyparsing's own prefix match: try ever shorter heads, since the rule is anchored."""


    try:
        tokens, start, end = next(rule.expr.scan_string(body, max_matches=1))
    except StopIteration:
        return body, {}
    if start != 0:
        return body, {}
    return body[end:], {k: v for k, v in tokens.as_dict().items() if isinstance(v, str)}

