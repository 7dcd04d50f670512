"""Element factories shared by the grammars, and the pyparsing -> ``re`` compiler.

The grammars are written with a small set of pyparsing elements whose whitespace is explicit
(``leave_whitespace``), so that each rule has one exact meaning that ``re`` can reproduce
(with atomic groups for pyparsing's no-backtracking):
``Literal``, ``Regex``, ``And``, ``MatchFirst``, ``Opt``, ``ZeroOrMore``/``OneOrMore``,
``Suppress`` and ``Combine``. ``compile_rule`` walks a rule's element tree and emits one regex
with a named group per results name; ``Rule.parse_slow`` runs pyparsing itself. Both return the
same dict, which the differential tests prove on every fixture line and on generated lines.

Values are converted in one place: an element built with ``conv=`` carries its converter, and
both paths apply it to the matched text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyparsing as pp

Converter = Callable[[str], Any]
_CONV_ATTR = "_m2o_conv"


def lit(text: str) -> pp.ParserElement:
    """An exact piece of text, whitespace included."""
    return pp.Literal(text).leave_whitespace()


def rx(pattern: str, name: str | None = None, conv: Converter | None = None) -> pp.ParserElement:
    """A regex leaf; ``name`` makes it a field, ``conv`` converts the matched text."""
    if "(?P<" in pattern:
        raise ValueError(f"use results names, not named groups: {pattern!r}")
    el = pp.Regex(pattern).leave_whitespace()
    if conv is not None:
        setattr(el, _CONV_ATTR, conv)
    return el.set_results_name(name) if name else el


def seq(*parts: pp.ParserElement | str) -> pp.ParserElement:
    """Parts in order, nothing skipped between them."""
    return pp.And([lit(p) if isinstance(p, str) else p for p in parts]).leave_whitespace()


def alt(*parts: pp.ParserElement | str) -> pp.ParserElement:
    """The first part that matches (PEG order; write the longer alternative first)."""
    return pp.MatchFirst([lit(p) if isinstance(p, str) else p for p in parts]).leave_whitespace()


def opt(*parts: pp.ParserElement | str) -> pp.ParserElement:
    """An optional sequence."""
    inner = parts[0] if len(parts) == 1 and not isinstance(parts[0], str) else seq(*parts)
    return pp.Opt(inner).leave_whitespace()


def many(*parts: pp.ParserElement | str) -> pp.ParserElement:
    """Zero or more repetitions of a sequence (fields inside keep the last repetition)."""
    inner = parts[0] if len(parts) == 1 and not isinstance(parts[0], str) else seq(*parts)
    return pp.ZeroOrMore(inner).leave_whitespace()


def field_(name: str, expr: pp.ParserElement, conv: Converter | None = None) -> pp.ParserElement:
    """Name a composite element: its whole matched text becomes one field."""
    el = pp.Combine(expr.copy()).leave_whitespace()
    if conv is not None:
        setattr(el, _CONV_ATTR, conv)
    return el.set_results_name(name)


# --- converters used by several grammars ------------------------------------------------------

# A key is tried only where a run of key characters starts (skipping the digits, dots and dashes
# before its first letter): the same matches as a plain ``([A-Za-z_][\w.-]*)=``, but findall reads
# a long word once instead of once per character (a 1 MB line without "=" was quadratic: hours).
_KEY = r"(?<![\w.-])(?:(?![A-Za-z_])[\w.-])*([A-Za-z_][\w.-]*)="
_KV_SPACE = re.compile(_KEY + r'("(?:[^"\\]|\\.)*"|<[^>]*>|\S*)')
_KV_COMMA = re.compile(_KEY + r"(<[^>]*>|[^,]*)")


def kv_spaces(text: str) -> dict[str, str]:
    """``a=1 b="x y" c=<p q>`` -> dict; quotes and angle brackets removed, escapes undone."""
    out: dict[str, str] = {}
    for key, raw in _KV_SPACE.findall(text):
        if raw[:1] == '"':
            val = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif raw[:1] == "<":
            val = raw[1:-1]
        else:
            val = raw
        out[key] = val
    return out


def kv_commas(text: str) -> dict[str, str]:
    """``, a=1, b=<x>`` (Postfix delivery and client= tails) -> dict; angle brackets removed."""
    out: dict[str, str] = {}
    for key, val in _KV_COMMA.findall(text):
        out[key] = val[1:-1] if val[:1] == "<" else val
    return out


def memo(conv: Callable[[str], dict[str, str]], size: int = 4096) -> Callable[[str], dict[str, str]]:
    """``conv`` with its results remembered, for fields that repeat across a log (Postfix's
    disconnect counts: a few dozen distinct texts in a million lines). Each call gets its own copy,
    so a consumer may change it; the memory is bounded (cleared when full)."""
    seen: dict[str, dict[str, str]] = {}

    def remembered(text: str) -> dict[str, str]:
        got = seen.get(text)
        if got is None:
            if len(seen) >= size:
                seen.clear()
            got = seen[text] = conv(text)
        return dict(got)

    return remembered


def as_int(text: str) -> int:
    return int(text)


def as_float(text: str) -> float:
    return float(text)


_BUILTIN_CONVERTERS: dict[Converter, Converter] = {as_int: int, as_float: float}


# --- shared pieces ---------------------------------------------------------------------------

def smtp_reply(prefix: str = "reply") -> pp.ParserElement:
    """``550 5.1.1 <a@b>: text`` -> ``{prefix}_code``, ``{prefix}_enhanced``, ``{prefix}_text``.

    The enhanced code is optional (Postfix omits it for some replies, Exim often)."""
    return seq(
        rx(r"[2-5]\d\d", f"{prefix}_code", as_int),
        alt(
            seq(rx(r"[ -]"), rx(r"[245]\.\d{1,3}\.\d{1,3}", f"{prefix}_enhanced"), opt(rx(r"[ ]"))),
            rx(r"[ -]?"),
        ),
        rx(r".*", f"{prefix}_text"),
    )


# --- rules and their compilation ---------------------------------------------------------------

@dataclass(slots=True)
class Rule:
    """One line shape: ``name`` as ``<daemon>_<event>``; ``keys`` are the first words of the
    message (after any queue ID) that can start it, used to dispatch; ``programs`` limits it to
    some daemons (empty: any).

    ``known``: the line is recognised and counted but feeds no telemetry (anvil statistics,
    start/stop notes, TLS library chatter): the grammar only tests that it matches, reads no
    field, and the correlators never see it (``check`` shows such lines as "known")."""

    name: str
    expr: pp.ParserElement
    keys: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    known: bool = False
    # the rule as one ``re`` pattern (None: pyparsing serves it), compiled into ``regex`` and ``fast``
    # on first use, so start-up pays only for the rules a log needs
    pattern: str | None = field(default=None, repr=False)
    regex: re.Pattern[str] | None = field(default=None, repr=False)
    converters: dict[str, Converter] = field(default_factory=dict, repr=False)
    group_names: dict[str, str] = field(default_factory=dict, repr=False)
    # text -> fields or None: the compiled ``re`` path, or pyparsing for a rule ``re`` cannot express
    fast: Callable[[str], dict[str, Any] | None] = field(default=lambda text: None, repr=False)

    _anchored: pp.ParserElement | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.expr = self.expr.copy().parse_with_tabs()
        # parse_all=True would skip trailing whitespace before the end; re.fullmatch does not
        self._anchored = pp.And([self.expr, pp.StringEnd().leave_whitespace()]).leave_whitespace()
        self._anchored.parse_with_tabs()
        self.converters = _collect_converters(self.expr)
        try:
            self.pattern, self.group_names = compile_rule(self.expr)
        except NotImplementedError:
            self.pattern = None  # pyparsing serves this rule on the slow path
        self.fast = self._compile_then_parse

    def compile(self) -> Callable[[str], dict[str, Any] | None]:
        """Compile the rule (once) and return ``fast``, its text -> fields reader."""
        if self.pattern is None:
            self.fast = self.parse_slow
        elif self.regex is None:
            self.regex = re.compile(self.pattern)  # the flags pyparsing gives its Regex leaves: none
            self.fast = _fast_parser(self.regex, self.group_names, self.converters)
        return self.fast

    def matcher(self) -> Callable[[str], object]:
        """text -> anything truthy when the rule matches, None when not, reading no field: what a
        ``known`` rule needs (the compiled ``re``'s own ``fullmatch``, or pyparsing)."""
        if self.pattern is None:
            return self.parse_slow
        if self.regex is None:
            self.compile()
        return self.regex.fullmatch  # type: ignore[union-attr]

    def _compile_then_parse(self, text: str) -> dict[str, Any] | None:
        return self.compile()(text)

    def parse_fast(self, text: str) -> dict[str, Any] | None:
        """The compiled ``re`` path (falls back to pyparsing for rules it could not compile)."""
        return self.fast(text)

    def parse_slow(self, text: str) -> dict[str, Any] | None:
        """pyparsing itself: the reference the fast path must agree with."""
        try:
            res = self._anchored.parse_string(text)  # type: ignore[union-attr]
        except pp.ParseBaseException:
            return None
        out: dict[str, Any] = {}
        for name, found in res.as_dict().items():
            # a repeated field keeps its last value, as in re
            value = found[-1] if isinstance(found, list) else found
            if value is None or isinstance(value, (dict, list)):
                continue
            conv = self.converters.get(name)
            out[name] = conv(value) if conv else value
        return out


def _fast_parser(regex: re.Pattern[str], group_names: dict[str, str],
                 converters: dict[str, Converter]) -> Callable[[str], dict[str, Any] | None]:
    """Writes, for one rule, the Python function that turns a ``fullmatch`` into its field dict.

    Every line of a log goes through one of these, so the generic version (``groupdict``, a dict
    comprehension dropping unmatched groups, a loop over converters) cost several times the
    match itself. Generated code reads the groups by index and converts each field in place, in
    group order, so the dict is the same, key order included: an unmatched group is no field, and
    a field in two branches (``f``, ``f__2``) keeps the last group that matched."""
    ns: dict[str, Any] = {"fullmatch": regex.fullmatch}
    body = ["def fast(text):", "    m = fullmatch(text)", "    if m is None:", "        return None",
            "    g = m.groups()", "    d = {}", *field_lines(regex, group_names, converters, ns),
            "    return d"]
    # exec of our own generated source, from our own grammar
    exec("\n".join(body), ns)
    return ns["fast"]


def field_lines(regex: re.Pattern[str], group_names: dict[str, str], converters: dict[str, Converter],
                ns: dict[str, Any]) -> list[str]:
    """The generated lines that fill ``d`` from the match's groups ``g`` (the converters they call
    go into ``ns``): shared by the rules' readers and the prefix reader (``parse.py``)."""
    lines: list[str] = []
    for gname, index in sorted(regex.groupindex.items(), key=lambda kv: kv[1]):
        name = group_names.get(gname, gname)
        value = "v"
        if name in converters:
            conv = converters[name]
            # the built-in itself for as_int/as_float: the same value without a Python call per field
            ns[f"c_{gname}"] = _BUILTIN_CONVERTERS.get(conv, conv)
            value = f"c_{gname}(v)"
        lines += [f"    v = g[{index - 1}]", "    if v is not None:", f"        d[{name!r}] = {value}"]
    return lines


def _collect_converters(expr: pp.ParserElement) -> dict[str, Converter]:
    found: dict[str, Converter] = {}
    stack = [expr]
    while stack:
        el = stack.pop()
        conv = getattr(el, _CONV_ATTR, None)
        if conv is not None and el.resultsName:
            found[el.resultsName] = conv
        stack.extend(_children(el))
    return found


def _children(el: pp.ParserElement) -> list[pp.ParserElement]:
    if isinstance(el, pp.ParseExpression):
        return list(el.exprs)
    if isinstance(el, pp.ParseElementEnhance) and el.expr is not None:
        return [el.expr]
    return []


def compile_rule(expr: pp.ParserElement) -> tuple[str, dict[str, str]]:
    """Translate an element tree into one regex; returns it and group -> field names.

    pyparsing is a PEG parser: a leaf, a choice, an option or a repetition, once matched, is never
    revisited when a later element fails. ``re`` would backtrack into them and could accept lines
    pyparsing rejects, so every such piece is an atomic group ``(?>…)``, or for an option or a
    repetition the possessive quantifier that means the same (``X?+`` is ``(?>X?)``, Python ≥ 3.11;
    it saves the group's own step in every match): the compiled pattern then accepts exactly what
    the grammar accepts.

    Python's ``re`` forbids a group name twice, so a field that appears in two branches gets
    numbered groups (``f__2``) mapped back to its name."""
    names: dict[str, str] = {}

    def group(name: str, body: str) -> str:
        gname = re.sub(r"\W", "_", name)
        if gname in names:
            n = 2
            while f"{gname}__{n}" in names:
                n += 1
            gname = f"{gname}__{n}"
        names[gname] = name
        return f"(?P<{gname}>{body})"

    def walk(el: pp.ParserElement, capture: bool = True) -> str:
        name = el.resultsName if capture else ""
        if isinstance(el, pp.Combine):
            body = walk(el.expr, capture=False)
        elif isinstance(el, pp.Suppress):
            return walk(el.expr, capture=False)
        elif isinstance(el, pp.Literal):
            body = re.escape(el.match)
        elif isinstance(el, pp.Regex):
            body = f"(?>{el.pattern})"
        elif isinstance(el, pp.And):
            body = "".join(walk(e, capture) for e in el.exprs)
        elif isinstance(el, pp.MatchFirst):
            body = "(?>" + "|".join(walk(e, capture) for e in el.exprs) + ")"
        elif isinstance(el, pp.Opt):
            body = f"(?:{walk(el.expr, capture)})?+"
        elif isinstance(el, pp.OneOrMore):
            body = f"(?:{walk(el.expr, capture)})++"
        elif isinstance(el, pp.ZeroOrMore):
            body = f"(?:{walk(el.expr, capture)})*+"
        else:
            raise NotImplementedError(type(el).__name__)
        if name and not isinstance(el, (pp.Literal, pp.Regex, pp.Combine)):
            raise NotImplementedError("results name on a composite: wrap it with field_()")
        return group(name, body) if name else body

    return walk(expr), names
