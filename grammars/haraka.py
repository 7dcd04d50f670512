"""Haraka: one rule per message shape, after the ``[LEVEL] [UUID] [origin]`` head.

Haraka writes the same record in three formats (``log.ini`` ``format=``); ``REWRITE`` turns logfmt
and JSON records into the DEFAULT text Haraka itself would have written (logger.js: ``[LEVEL]
[UUID] [origin] message`` and, for every object argument, a space and ``k=v`` pairs quoted by its
``stringify``), so each rule is written once. Sample lines (fixtures/haraka/, DEFAULT):

    [NOTICE] [8270FD71-…-CCC4DAE82BB0] [core] connect ip=127.0.0.2 port=56729 local_ip=127.0.0.1 …
    [INFO] [8270FD71-….1] [core]  hook=rcpt plugin=rcpt_to.in_host_list function=hook_rcpt params=<u@l.test> …
    [NOTICE] [8270FD71-….1] [core] recipient <user@local.test> code=OK msg="" sender=alice@remote.example
    [NOTICE] [A1627879-….1.2] [outbound]  delivered file=1795316645150_…_vm domain=bounce.test … rcpts=1/0/1
    [INFO] [-] [core] [smtp_client] uuid=EBC9DCF2-… host=127.0.0.1 port=20026 created
    loglevel: INFO                                                     (untagged start-up line)

The head is ``PREFIX``: the level, the UUID (``-`` outside a connection; absent in a fork that
dropped it), the origin, any older extra bracket groups, and the second space of hook-result and
``delivered`` lines (their message is empty, the key=value pairs follow it). Lines whose first
word no rule claims are ``other``: plugin chatter, DEBUG detail, untagged stdout noise and the
continuation lines of multi-line records (Haraka before 3.3 did not collapse line breaks; the
correlator attaches those to the record before them, see ``continue_kv``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyparsing as pp

from .common import Rule, as_float, as_int, lit, many, memo, opt, rx, seq

MTA = "haraka"

LEVELS = r"DATA|PROTOCOL|DEBUG|INFO|NOTICE|WARN|ERROR|CRIT|ALERT|EMERG"
UUID_RE = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
OPEN = "<open>"  # key of the kv dict naming a quoted value the line ended inside (a line break)

# --- key=value pairs as Haraka's stringify() writes them ------------------------------------------

# the loop unrolled: fast; the key tried only where a run of key characters starts (common._KEY:
# linear on a long word, where a plain ([A-Za-z_][\w.-]*)= is quadratic)
_PAIR = re.compile(r'(?<![\w.-])(?:(?![A-Za-z_])[\w.-])*([A-Za-z_][\w.-]*)=("[^"\\]*(?:\\.[^"\\]*)*"?|[^ ]*)')
# the same on ASCII text (nearly every line), where \w is [A-Za-z0-9_]: no Unicode class lookups,
# and possessive, since no part can give back a character the next one could take
_PAIR_ASCII = re.compile(r'(?<![A-Za-z0-9_.-])[0-9.-]*+([A-Za-z_][A-Za-z0-9_.-]*+)='
                         r'("[^"\\]*+(?:\\.[^"\\]*+)*+"?|[^ ]*+)')
_ESC = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "r": "\r"}


def _unescape(text: str) -> str:
    return _ESC.sub(lambda m: _ESCAPES.get(m[1], m[1]), text) if "\\" in text else text


def kv_haraka(text: str) -> dict[str, str]:
    """``a=1 b="x \\"y\\"" c=`` -> dict, quotes removed and escapes undone. A quoted value that
    runs to the end of the text (its record went on in the next line) is kept so far, and its key
    is named under ``OPEN``."""
    pairs = _PAIR_ASCII.findall(text) if text.isascii() else _PAIR.findall(text)
    if '"' not in text:
        return dict(pairs)
    out: dict[str, str] = {}
    for key, raw in pairs:
        if raw[:1] != '"':
            out[key] = raw
        # closed, unless the last quote is escaped (the value then runs on to the end of the text)
        elif len(raw) > 1 and raw[-1] == '"' and (raw[-2] != "\\" or not _odd_backslashes(raw[1:-1])):
            value = raw[1:-1]
            out[key] = _unescape(value) if "\\" in value else value
        else:
            out[key], out[OPEN] = _unescape(raw[1:]), key
    return out


def _odd_backslashes(text: str) -> bool:
    """True when ``text`` ends in an escaping backslash (so the quote after it is escaped)."""
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def continue_kv(kv: dict[str, str], line: str) -> dict[str, str]:
    """A continuation line of a record that ended inside the quoted value ``kv[OPEN]``: the value
    goes on up to the first unescaped quote, then more pairs may follow."""
    key = kv.get(OPEN)
    if key is None:
        return kv
    out = {k: v for k, v in kv.items() if k != OPEN}
    m = re.match(r'((?:[^"\\]|\\.)*)"', line)
    if m is None:
        out[key] = f"{out.get(key, '')}\n{_unescape(line)}"
        out[OPEN] = key
        return out
    out[key] = f"{out.get(key, '')}\n{_unescape(m[1])}"
    out.update(kv_haraka(line[m.end():]))
    return out


# --- logfmt and JSON -> the DEFAULT text --------------------------------------------------------

_NEEDS_QUOTING = re.compile(r'(^$|[ ="\\\r\n])')
_NEEDS_ESCAPING = re.compile(r'["\\\r\n]')
_ESCAPE_OUT = {'"': '\\"', "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_LINE_BREAKS = re.compile(r"[\r\n]")
_REWRITTEN = ("level=", '{"level"')  # the heads of a logfmt and of a JSON record

LOGFMT_HEAD = Rule("logfmt_head", seq(
    "level=", rx(LEVELS, "level"), " uuid=", rx(r"[^ ]+", "uuid"), " origin=", rx(r"[^ ]+", "origin"),
    " message=", rx(r'"(?:[^"\\]|\\.)*"|[^ "]*', "message"), opt(" ", rx(r".*", "rest"))))


def _js_string(value: Any) -> str:
    """A JSON value as JavaScript's ``String(v)`` renders it in logger.js (Address objects, which
    JSON spells out, as their ``original`` text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict) and isinstance(value.get("original"), str):
        return value["original"]
    if isinstance(value, list):
        return ",".join(_js_string(v) for v in value)
    return json.dumps(value, separators=(",", ":"))


def _stringify(pairs: dict[str, Any]) -> str:
    parts = []
    for key, value in pairs.items():
        if value is None:
            parts.append(f'{key}=""')
            continue
        v = _js_string(value)
        if _NEEDS_QUOTING.search(v):
            v = '"' + _NEEDS_ESCAPING.sub(lambda m: _ESCAPE_OUT[m[0]], v) + '"'
        parts.append(f"{key}={v}")
    return " ".join(parts)


def _default_text(level: str, uuid: str, origin: str, message: str, rest: str) -> str:
    message = _LINE_BREAKS.sub(" ", message)  # DEFAULT collapses line breaks (collapse_line_breaks)
    if rest:
        message += ("" if message.endswith(" ") else " ") + rest
    return f"[{level}] [{uuid}] [{origin}] {message}"


def rewrite(text: str, fast: bool = True) -> str:
    """logfmt and JSON records -> the DEFAULT text of the same record; anything else unchanged."""
    if not text.startswith(_REWRITTEN):  # DEFAULT: every line of the common case goes here
        return text
    if text[0] == "l":
        f = LOGFMT_HEAD.parse_fast(text) if fast else LOGFMT_HEAD.parse_slow(text)
        if f is None:
            return text
        msg = f["message"]
        if msg[:1] == '"':
            msg = _unescape(msg[1:-1])
        return _default_text(f["level"], f["uuid"], f["origin"], msg, f.get("rest", ""))
    try:  # '{"level"…'
        obj = json.loads(text)
    except ValueError:
        return text
    if not isinstance(obj, dict):
        return text
    head = [obj.pop(k, None) for k in ("level", "uuid", "origin", "message")]
    if not all(isinstance(v, str) for v in head):
        return text
    return _default_text(*head, _stringify(obj))  # type: ignore[arg-type]


REWRITE = rewrite
REWRITE_HEADS = _REWRITTEN  # the lines REWRITE may change start so: parse.py calls it for them only

# --- the head of a DEFAULT record --------------------------------------------------------------

PREFIX = seq(
    "[", rx(LEVELS, "level"), "] ",
    opt("[", rx("-|" + UUID_RE + r"(?:\.\d+){0,2}", "uuid"), "] "),
    "[", rx(r"(?![0-9A-Fa-f]{8}-)[^\]]+", "origin"), "] ",  # a cut UUID is no origin
    many("[", rx(r"[^\]]*", "extra"), "] "),
    opt(" "),
)

# Nearly every line's head, for parse.py to try before PREFIX (one regex call and no per-field
# tests, ~3k instructions a line less): a level, a UUID or "-", an origin, and no [extra] group
# after it. PREFIX reads whatever this matches the same way and to the same end: its level, UUID and
# origin are the same atomic pieces, each followed by "] "; its [extra] groups would need the "["
# this refuses; its optional space is the one taken here.
PREFIX_SHORTCUT = (r"\[(?P<level>" + LEVELS + r")\] \[(?P<uuid>-|" + UUID_RE + r"(?:\.\d+){0,2}+)\] "
                   r"\[(?P<origin>(?![0-9A-Fa-f]{8}-)[^\]]++)\]  ?+(?!\[)")

# --- message shapes ----------------------------------------------------------------------------


def addr(name: str) -> Any:
    """``<local@domain>`` (``<>`` for the null sender) -> the address without brackets."""
    return seq("<", rx(r"[^<>]*", name), ">")


# A log repeats its pair lists (``code=CONT msg=""``, one plugin's hook results): remembered, each
# line given its own dict
_kv_lines = memo(kv_haraka)
KV = opt(" ", rx(r".*", "kv", _kv_lines))
KV_REQ = rx(r"[A-Za-z_][\w.-]*=.*", "kv", _kv_lines)  # at least one pair
TEXT = rx(r".*", "text")

RULES: list[Rule] = [
    # --- inbound connection, NOTICE and INFO -------------------------------------------------
    Rule("connect", seq("connect ", KV_REQ), ("connect",)),
    Rule("disconnect", seq("disconnect ", KV_REQ), ("disconnect",)),
    Rule("haproxy", seq("HAProxy ", KV_REQ), ("HAProxy",)),
    Rule("mail", seq("sender ", addr("mail_from"), KV), ("sender",)),
    Rule("outbound_rcpt", seq("recipient ", addr("rcpt_to"), " ", rx(r"deferred|rejected", "verdict"), ": ",
                              rx(r"[2-5]\d\d", "reply_code", as_int), rx(r".*", "reply_text")),
         ("recipient",)),
    Rule("rcpt", seq("recipient ", addr("rcpt_to"), KV), ("recipient",)),
    Rule("message", seq("message ", KV_REQ), ("message",)),
    Rule("queue", seq("queue ", KV_REQ), ("queue",)),
    Rule("hook_result", KV_REQ, ("hook=",)),
    Rule("client_gone", seq("client ", rx(r"half closed connection|dropped connection|connection timed out"
                                          r"|connection error: (?:(?! ip=).)*", "how"), KV), ("client",)),
    Rule("client_has_disconnected", lit("client has disconnected"), ("client",)),
    Rule("tls_secured", seq("secured", opt(":"), " ", KV_REQ), ("secured",)),
    # auth_base (auth/flat_file and the other auth/* plugins): a failed AUTH, answered 535 after the delay
    Rule("auth_delay", seq("delaying for ", rx(r"\d+(?:\.\d+)?", "delay_s", as_float), " seconds"),
         ("delaying",)),
    Rule("data_problem", rx(r"Client sent bare line-feed.*|Incoming message (?:exceeded max size|had too many"
                            r" Received headers|reached maximum parsing limit).*", "problem"),
         ("Client", "Incoming")),
    # --- PROTOCOL and DEBUG ------------------------------------------------------------------
    Rule("protocol_client", seq("C: ", rx(r".*?(?= state=\d+$)|.*", "line"),
                                opt(" state=", rx(r"\d+", "state", as_int))), ("C",)),
    Rule("protocol_server", seq("S: ", rx(r"[2-5]\d\d", "reply_code", as_int), rx(r"[ -]?", "sep"),
                                rx(r".*", "reply_text")), ("S",)),
    Rule("running_hooks", seq("running ", rx(r"[\w.-]+", "hook"), " hooks"), ("running",)),
    Rule("running_plugin", seq("running ", rx(r"[\w.-]+", "hook"), " hook in ", rx(r"\S+", "plugin"),
                               " plugin"), ("running",)),
    Rule("running_respond", seq("running ", rx(r"\w+_respond", "what")), ("running",)),
    # --- outbound ----------------------------------------------------------------------------
    Rule("delivered", seq("delivered ", KV_REQ), ("delivered",)),
    Rule("temp_fail", seq("Temp failing ", rx(r"\S+", "qfile"), " for ",
                          rx(r"\d+(?:\.\d+)?", "delay_s", as_float), " seconds: ", rx(r".*", "reason")),
         ("Temp",)),
    Rule("temp_fail_debug", seq("Temp fail for: ", rx(r".*", "reason")), ("Temp",)),
    Rule("bounce", seq("bouncing mail: ", rx(r".*", "reason")), ("bouncing",)),
    Rule("double_bounce", seq("Double bounce: ", rx(r".*", "reason")), ("Double",)),
    Rule("socket_fail", seq("Failed to get socket: ", rx(r".*", "reason")), ("Failed",)),
    Rule("mx_lookup_fail", seq("MX Lookup for ", rx(r"\S+", "domain"), " failed: ", rx(r".*", "reason")),
         ("MX",)),
    Rule("outbound_enqueue", seq("Transaction delivery for domain: ", rx(r"\S+", "domain")),
         ("Transaction",)),
    Rule("send_email", lit("Sending email via params"), ("Sending",)),
    Rule("sending_mail", seq("Sending mail: ", rx(r"\S+", "qfile")), ("Sending",)),
    Rule("created_transaction", seq("Created transaction: ", rx(UUID_RE, "new_uuid")), ("Created",)),
    Rule("not_deferring", seq(rx(r"[Pp]lugin", "who"), " responded with: ", rx(r"[A-Z_]+", "retval"),
                              rx(r"\. Not (?:deferring|sending bounce)\..*", "text")), ("plugin", "Plugin")),
    # --- process lifecycle and untagged start-up lines ----------------------------------------
    Rule("loglevel", seq("loglevel: ", rx(r"\S+", "loglevel")), ("loglevel",)),
    Rule("log_format", seq("log format: ", rx(r"\S+", "format")), ("log",)),
    Rule("startup", seq("Starting up Haraka version ", rx(r"\S+", "version")), ("Starting",)),
    Rule("listening", seq("Listening on ", rx(r"\S+", "address")), ("Listening",)),
    Rule("shutdown", rx(r"Shutting down\.?|SIG[A-Z]+ received", "what"), ("Shutting", "SIGINT", "SIGTERM")),
]


# The fallback leaves a line unparsed when it starts with the first word of a rule's shape; where
# that word is too common (plugins write "client …", "Failed …"), the rule's longer lead instead.
_LEADS = {
    "hook_result": "hook=",
    "client_gone": "client (?:half|dropped|connection)",
    "client_has_disconnected": "client has",
    "data_problem": "Client sent bare line-feed|Incoming message ",
    "temp_fail": "Temp failing ",
    "temp_fail_debug": "Temp fail for",
    "socket_fail": "Failed to get socket",
    "mx_lookup_fail": "MX Lookup for ",
    "not_deferring": "[Pp]lugin responded with: ",
    "log_format": "log format: ",
    "startup": "Starting up Haraka",
    "send_email": "Sending email via",
    "sending_mail": "Sending mail: ",
    "shutdown": r"Shutting down|SIG[A-Z]+ received",
}


def _first_word(expr: Any) -> str:
    """The first word every match of ``expr`` starts with (nested sequences flattened)."""
    el = expr
    while isinstance(el, pp.And):
        el = el.exprs[0]
    if not isinstance(el, pp.Literal):
        return ""
    word = el.match.split(" ", 1)[0]
    return re.escape(word) + (r"\b" if word[-1:].isalnum() else "")


def _fallback() -> Rule:
    """Whatever no rule above claims: a record we keep (for its connection's liveness) without
    reading it. A line that starts like a claimed shape, or like a record head that failed, stays
    unparsed, so a changed line shape shows in ``check``."""
    leads = []
    for rule in RULES:
        lead = _LEADS.get(rule.name) or _first_word(rule.expr)
        if not lead:
            raise ValueError(f"rule {rule.name}: no literal lead; name one in _LEADS")
        leads.append(lead)
    guard = r"(?!" + "|".join(dict.fromkeys(leads)) + r"|\[\w+\]\s|\{\"|level=)"
    return Rule("other", rx(guard + r".*", "text"))


RULES.append(_fallback())
