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

# (rule name, text -> fields or None, known) for each rule a line may be, in grammar order; a known
# rule's reader only tests the match (truthy or None) and reads no field
Candidates = list[tuple[str, Callable[[str], Any], bool]]

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
        # ... and REWRITE_HEADS, the starts of the lines it changes: the others skip its call, which
        # cost more than the test (a Haraka DEFAULT line, the common case, is never rewritten)
        heads = getattr(modules[0], "REWRITE_HEADS", None)
        self._rewrite_firsts: str | None = "".join(sorted({h[:1] for h in heads})) if heads else None
        prefix = getattr(modules[0], "QUEUE_PREFIX", None) or getattr(modules[0], "PREFIX", None)
        self.prefix = None
        if prefix is not None:
            from maillog2otel.grammars.common import Rule

            self.prefix = Rule("prefix", prefix)
            self._prefix_re = re.compile(self.prefix.pattern) if self.prefix.pattern else None
        self.program_key: Callable[[str], tuple[str, dict[str, Any]]] = getattr(
            modules[0], "program_key", _last_component
        )
        self._keys = {k for r in self.rules for k in r.keys}
        # program -> (the daemon's dispatch table: first word -> candidate rules, fields the program
        # name carries); built as lines arrive, so a log pays only for the daemons it has
        self._programs: dict[str, tuple[str, dict[str | None, Candidates], dict[str, Any]]] = {}
        self._daemons: dict[str, dict[str | None, Candidates]] = {}
        self._read_prefix: Callable[[str], tuple[dict[str, Any] | None, str, str]] | None = None
        if self.prefix is not None and self.fast and self._prefix_re is not None:
            self._read_prefix = _prefix_reader(self._prefix_re, self.prefix.group_names,
                                               getattr(modules[0], "PREFIX_SHORTCUT", None))

    def _candidates(self, daemon: str, key: str | None) -> Candidates:
        """The rules a line of ``daemon`` starting with ``key`` can be, in grammar order."""
        table = self._daemons.setdefault(daemon, {})
        found = table.get(key)
        if found is None:
            keyed = [r for r in self.rules if key in r.keys and (not r.programs or daemon in r.programs)]
            loose = [r for r in self.rules if not r.keys and (not r.programs or daemon in r.programs)]
            found = table[key] = [
                (r.name, (r.matcher() if r.known else r.compile()) if self.fast else r.parse_slow, r.known)
                for r in keyed + loose]
        return found

    def parse(self, rec: Record) -> Event | None:
        prog = self._programs.get(rec.program)
        if prog is None:
            if len(self._programs) > 10_000:
                self._programs.clear()
            daemon, prog_fields = self.program_key(rec.program)
            prog = self._programs[rec.program] = (daemon, self._daemons.setdefault(daemon, {}), prog_fields)
        daemon, table, prog_fields = prog
        body = rec.message
        if self.rewrite is not None and (self._rewrite_firsts is None or body[:1] in self._rewrite_firsts):
            body = self.rewrite(body, self.fast)  # ("" is in every string: an empty body asks too)
        fields: dict[str, Any] | None = None
        if self._read_prefix is not None:
            fields, body, key = self._read_prefix(body)
        else:
            if self.prefix is not None:
                body, fields = _slow_prefix(self.prefix, body)
            key = _FIRST_WORD.match(body)[0]  # type: ignore[index]  # always matches (may be empty)
        candidates = table.get(key)
        if candidates is None:
            candidates = self._candidates(daemon, key if key in self._keys else None)
            if len(table) < 1000:  # the unkeyed words share one list; the table stays bounded
                table[key] = candidates
        for name, rule_parse, known in candidates:
            got = rule_parse(body)
            if got is not None:
                if known:
                    return Event(name, {}, rec, known=True)
                # in-place "|=": no method lookup and no call per line, the same dict as update()
                if fields:
                    got |= fields
                if prog_fields:
                    got |= prog_fields
                return Event(name, got, rec)
        return None


def _prefix_reader(regex: re.Pattern[str], names: dict[str, str], shortcut: str | None = None
                   ) -> Callable[[str], tuple[dict[str, Any] | None, str, str]]:
    """Writes the function that takes a line's prefix (Postfix's queue ID, Exim's stamp, pid and
    message ID, Haraka's level, UUID and origin) apart: its fields, the rest of the message, and the
    rest's first word (the dispatch key), read by a lookahead in the same match. Every line goes
    through it; generated like the rules' own readers (``grammars.common._fast_parser``).

    ``shortcut`` (a grammar's ``PREFIX_SHORTCUT``): a stricter pattern for the common head, tried
    first, with a named group per field it reads, each taking part in every match, in the prefix's
    field order; whatever it matches the prefix must read the same way, to the same end. It gives
    the fields, the rest and the first word in one ``groups()``: no test and store per field, no
    optional outer group, no slice (Haraka: 12.5k -> 9.4k instructions a line)."""
    from maillog2otel.grammars.common import field_lines

    # One match for every line, prefix or not: the prefix is optional (group 1 tells whether it
    # matched), and the lookahead, which matches anywhere (it may be empty), reads the first word
    # after it; it changes no match and no end.
    both = re.compile(f"((?:{regex.pattern}))?(?=({_FIRST_WORD.pattern}))")
    ns: dict[str, Any] = {"match": both.match}
    # the prefix's fields stay text (converters: none), as pyparsing's prefix gives them
    body = ["def read(text):", "    g = match(text).groups()", "    if g[0] is None:",
            "        return None, text, g[-1]", "    d = {}",
            *field_lines(both, names, {}, ns), "    return d, text[len(g[0]):], g[-1]"]
    if shortcut is not None:
        short = re.compile(f"(?:{shortcut})(?=({_FIRST_WORD.pattern}))((?s:.*))")
        fields = [names.get(g, g) for g, _ in sorted(short.groupindex.items(), key=lambda kv: kv[1])]
        order = [names.get(g, g) for g, _ in sorted(regex.groupindex.items(), key=lambda kv: kv[1])]
        if short.groups != len(fields) + 2 or [f for f in order if f in fields] != fields:
            raise ValueError("PREFIX_SHORTCUT: a named group per field, in the prefix's order, no other")
        ns["short"] = short.match
        values = ", ".join(f"v{i}" for i in range(len(fields)))
        as_dict = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(fields))
        body[1:1] = ["    m = short(text)", "    if m is not None:",
                     f"        {values}, key, rest = m.groups()",
                     f"        return {{{as_dict}}}, rest, key"]
    exec("\n".join(body), ns)  # our own generated source, from our own grammar
    return ns["read"]


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

