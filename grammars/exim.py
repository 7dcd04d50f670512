"""Exim: one rule per main-log (and reject-log) line shape, dispatched on the body's first word.

``PREFIX`` splits off what may precede the body: Exim's own stamp and ``[pid]`` when the line came
through syslog (``exim[123]: 2026-11-22 03:00:16.261 [10272] …``; a native line has them taken
apart by framing) and the message ID in both formats (6-6-2 before 4.97, 6-11-4 from 4.97).
Sample bodies (fixtures/exim/):

    SMTP connection from [127.0.0.1]:34367 I=[127.0.0.1]:3525 (TCP/IP connection count = 1)
    <= alice@local.test H=(trusted.client.test) [127.0.0.1]:35897 I=[127.0.0.1]:3525 P=esmtp S=605
       RT=0.005s id=multi-recipient.1@client.test for bob@local.test dave@relay.test
    => dave@relay.test R=sink_route T=remote_smtp S=625 H=127.0.0.1 [127.0.0.1] I=[127.0.0.1]
       C="250 2.0.0 Ok: queued as SINK1000" QT=0.043s DT=0.010s
    == tmp-harry@relay.test routing defer (-52) DT=0.000s: retry time not reached
    H=(relay.client.test) [127.0.0.6]:57449 I=[127.0.0.1]:3525 F=<mallory@outside.test> rejected RCPT
       <victim@relay.test>: relay not permitted
    no MAIL in SMTP connection from (noop.client.test) [127.0.0.2]:39505 I=[127.0.0.1]:3525 D=0.200s
       C=EHLO,QUIT

Tagged fields (``H= I= P= S= X= C= DT= …``) are read by tag, not position: their order and set
change with the version and ``log_selector``. A tag region is one leaf whose converter
``tags`` turns it into a dict (``H``/``I`` taken apart, sizes as int, durations as seconds).
Every leaf that could be backtracked into is an atomic group, so the compiled ``re`` and
pyparsing (which never backtracks into a finished element) read a line the same way.
"""

from __future__ import annotations

import re
from typing import Any

from .common import Rule, alt, lit, opt, rx, seq

MTA = "exim"

_B62 = "0-9A-Za-z"
MSGID = rf"[{_B62}]{{6}}-(?:[{_B62}]{{11}}-[{_B62}]{{4}}|[{_B62}]{{6}}-[{_B62}]{{2}})"

PREFIX = seq(
    opt(rx(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?(?: [+-]\d{4})? ", "exim_stamp")),
    opt("[", rx(r"\d+", "exim_pid"), "] "),
    opt(rx(MSGID, "msgid"), " "),
)

# --- tagged fields ------------------------------------------------------------------------------

# H= value: [name ][DS ][(helo) ][ip][:port][*]. Only the last [ip] is Exim's own (the HELO is
# the client's), so the helo may hold anything but ")" (host.c host_build_sender_fullhost).
HOSTV = r"(?:[^\s\[\]()]+ )?+(?:DS )?+(?:\([^)]*\) )?+\[[^\]\s]*+\](?::\d+)?+\*?"
# unrolled loops (``a*(?:b a*)*``, not ``(?:a|b)*``): the same longest run, in half the time.
# Possessive quantifiers (``*+``, ``?+``) where giving back could never make a match: the same
# match as the greedy ones, without the backtracking state ``re`` keeps for each repetition of a
# group (a quarter of the grammar's regex time). TAGS is one possessive run, so it is atomic as
# the ``(?>…)`` it replaces (it must be: the strerror lookahead below relies on it). LEAD_TAGS
# keeps ``(?:DS )?`` greedy: "DS" alone is also a bare flag, read when "DS " leads to no tag.
_VALUE = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|<[^>]*+>|[^\s:"]*+(?::(?!\s|\Z)[^\s:"]*+)*+'
_BARE = r"(?:DS|K|L[-.*]?|PRDR|TFO\*?|ARC)(?=\s|\Z|:)"  # flags without "=" (spec "Log line flags")
# H= is always a host: a malformed one makes the line unparsed rather than a text-valued H; any
# other key (``H*=`` and ``HX=`` too) is spelled out rather than behind a ``(?!H=)`` lookahead
_TOKEN = rf"(?:H=(?:{HOSTV})|(?:[A-GI-Za-z][A-Za-z0-9]*+\*?|H(?:[A-Za-z0-9]++\*?|\*))=(?:{_VALUE})|{_BARE})"
TAGS = rf"(?: {_TOKEN})*+"
LEAD_TAGS = rf"(?:DS )?{_TOKEN}(?: {_TOKEN})*+"  # host_and_ident(TRUE) and what follows it
DURATION = r"(?>\d[\w.]*)"

# One tag per match, in the order of _TOKEN, read with findall (tuples, no match objects): the H=
# value's parts are groups here, so a host is taken apart in the same pass
_NAME_HOST = r"(?:([^\s\[\]()]+) )?(?:DS )?(\([^)]*\) )?\[([^\]\s]*)\](?::(\d+))?(\*)?"
_TOKENS = re.compile(rf" ?(?:H=({_NAME_HOST})|(?!H=)([A-Za-z][A-Za-z0-9]*\*?)=({_VALUE})|({_BARE}))")
_HOST_RE = re.compile(r"(?:(?P<name>[^\s\[\]()]+) )?+(?:DS )?+(?:\((?P<helo>[^)]*)\) )?+"
                      r"\[(?P<address>[^\]\s]*)\](?::(?P<port>\d+))?+(?P<reused>\*)?")  # possessive as HOSTV
_ADDR_PORT = re.compile(r"\[(?P<address>[^\]]*)\](?::(?P<port>\d+))?")
_DUR_RE = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")
_UNESCAPE = re.compile(r"\\(.)")
_VALUE_RE = re.compile(_VALUE)
_OPENERS = frozenset('"<')
_INTS = {"S", "M8S"}
_DURATIONS = {"D", "DT", "QT", "RT"}
# A log repeats a few hundred durations (``0.001s``) and interfaces (``[127.0.0.1]:25``) on
# nearly every line; bounded, so a log of unique values costs only the lookups.
_SECONDS: dict[str, float | None] = {}
_INTERFACES: dict[str, dict[str, Any]] = {}
_CACHE_MAX = 4096


def seconds(text: str) -> float | None:
    """``3m45s`` / ``0.149s`` / ``1d2h`` -> seconds; None for anything else (munged test logs)."""
    try:
        return _SECONDS[text]
    except KeyError:
        pass
    m = _DUR_RE.fullmatch(text)
    value = None
    if m is not None and text:
        w, d, h, mi, s = m.groups()
        value = (int(w or 0) * 604800 + int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60
                 + float(s or 0))
    if len(_SECONDS) < _CACHE_MAX:
        _SECONDS[text] = value
    return value


def host(text: str) -> dict[str, Any]:
    """``name (helo) [ip]:port*`` -> its parts (absent ones left out)."""
    m = _HOST_RE.fullmatch(text)
    if m is None:  # pragma: no cover - the grammar only hands over text HOSTV matched
        return {"raw": text}
    return _host_dict(m)


def _host_dict(m: re.Match[str]) -> dict[str, Any]:
    name, helo, address, port, reused = m.groups()
    out: dict[str, Any] = {"raw": m[0], "address": address}
    if name:
        out["name"] = name
    if helo is not None:
        out["helo"] = helo
    if port:
        out["port"] = int(port)
    if reused:
        out["reused"] = True
    return out


def _interface(text: str) -> dict[str, Any]:
    got = _INTERFACES.get(text)
    if got is None:
        m = _ADDR_PORT.fullmatch(text)
        if m is None:
            got = {"raw": text}
        else:
            got = {"address": m["address"], **({"port": int(m["port"])} if m["port"] else {})}
        if len(_INTERFACES) < _CACHE_MAX:
            _INTERFACES[text] = got
    return dict(got)  # each event its own: a consumer may change it


def _int_or_text(text: str) -> int | str:
    return int(text) if text.isdecimal() else text


_CONVERT = {"S": _int_or_text, "M8S": _int_or_text, "D": seconds, "DT": seconds, "QT": seconds, "RT": seconds,
            "I": _interface}


# A region new as a whole is mostly tags seen before (``P=esmtp``, ``RT=0.001s``, ``I=[ip]:port``):
# a one-piece tag's (key, converted value), by its text. Bounded like the others; a value shared by
# lines is a str, number or an ``I`` dict (nothing changes them).
_PIECES: dict[str, tuple[str, Any]] = {}
_PIECES_MAX = 8192

# Whole tag regions repeat too: a connection line's `` I=[192.0.2.1]:25``, a router and transport
# pair, ``DT=0s``. Cleared when full, so a log of unique regions costs one lookup per region.
_REGIONS: dict[str, dict[str, Any]] = {}


def tags(text: str) -> dict[str, Any]:
    """A tag region -> dict (``_read_tags``), remembered. Each call gets its own dict; the ``H``
    and ``I`` dicts inside it may be shared with other lines' (nothing changes them)."""
    got = _REGIONS.get(text)
    if got is None:
        if len(_REGIONS) >= _CACHE_MAX:
            _REGIONS.clear()
        got = _REGIONS[text] = _read_tags(text)
    return got.copy()


def _read_tags(text: str) -> dict[str, Any]:
    """A tag region -> dict: quotes and angle brackets removed, ``H``/``I`` as dicts, ``S`` as int,
    durations as seconds, bare flags as True. A repeated tag keeps its first value.

    ``text`` is what ``TAGS``/``LEAD_TAGS`` matched, so its tags are separated by single spaces and
    a value holds a space only inside quotes, angle brackets or an H= host: split on spaces, and
    only those values are measured with a regex (from where they start, the same first match the
    grammar took). ``_tags_by_regex`` reads the same dict with one regex match per tag, slower;
    it is the one taken if the text is ever not a tag region."""
    if not text:
        return {}
    pieces = text.split(" ")
    last = len(pieces) - 1
    colon_end = text[-1] == ":"  # a value never ends in ":" at the end of the text
    out: dict[str, Any] = {}
    it = enumerate(pieces)
    if text[0] == " ":
        next(it)
    known = _PIECES.get
    for i, piece in it:
        got = known(piece)
        if got is not None and not (colon_end and i == last):
            if got[0] not in out:
                out[got[0]] = got[1]
            continue
        key, eq, val = piece.partition("=")
        if not eq:
            out[piece] = True
            continue
        if key == "H" or val[:1] in _OPENERS:  # a value that may hold spaces
            start = sum(map(len, pieces[:i])) + i + len(key) + 1
            m = (_HOST_RE if key == "H" else _VALUE_RE).match(text, start)
            if m is None:
                return _tags_by_regex(text)
            val = m[0]
            for _ in range(val.count(" ")):
                next(it)
            if key in out:
                continue
            if key == "H":
                out["H"] = _host_dict(m)
                continue
            if val[:1] == '"':
                val = val[1:-1]
                if "\\" in val:
                    val = _UNESCAPE.sub(r"\1", val)
            elif val[-1:] == ">":
                val = val[1:-1]
        elif colon_end and i == last:
            if key in out:
                continue
            val = _VALUE_RE.match(text, len(text) - len(val))[0]  # type: ignore[index]
        else:  # one piece is the whole tag: remembered for the next region that has it
            conv = _CONVERT.get(key)
            value = val if conv is None else conv(val)
            if len(_PIECES) >= _PIECES_MAX:
                _PIECES.clear()
            _PIECES[piece] = (key, value)
            if key not in out:
                out[key] = value
            continue
        conv = _CONVERT.get(key)
        out[key] = val if conv is None else conv(val)
    return out


def _tags_by_regex(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw, name, helo, address, port, reused, key, value, bare in _TOKENS.findall(text):
        if key:
            if key in out:
                continue
            val = value
            if val[:1] == '"':
                val = val[1:-1]
                if "\\" in val:
                    val = _UNESCAPE.sub(r"\1", val)
            elif val[:1] == "<" and val[-1:] == ">":
                val = val[1:-1]
            if key in _INTS:
                out[key] = int(val) if val.isdecimal() else val
            elif key in _DURATIONS:
                out[key] = seconds(val)
            elif key == "I":
                out[key] = _interface(val)
            else:
                out[key] = val
        elif raw:
            if "H" not in out:
                h: dict[str, Any] = {"raw": raw, "address": address}
                if name:
                    h["name"] = name
                if helo:  # "(helo) ": present, even if empty
                    h["helo"] = helo[1:-2]
                if port:
                    h["port"] = int(port)
                if reused:
                    h["reused"] = True
                out["H"] = h
        else:
            out[bare] = True
    return out


# converters called on every line are builtins where one fits (int, str.split): no Python frame
words = str.split


def sender(text: str) -> str:
    return "" if text == "<>" else text


# --- shared pieces ---------------------------------------------------------------------------

# Delivery addresses: a pipe command may hold spaces (it is always followed by its " <top address>");
# ":blackhole:" keeps its colons; otherwise an address never ends in ":" (that starts the error).
ADDRESS = rx(r"(?>\|.*?(?= [(<])|:blackhole:|\S*[^\s:])", "address")
ADDRESS_PART = seq(ADDRESS, opt(" (", rx(r"[^)]*", "parent"), ")"), opt(" <", rx(r"[^>]*", "original"), ">"))
HOST_OR_USER = alt(rx(HOSTV, "host", host), rx(r"[^\s\[(]\S*", "user"))
VIA = opt(rx(r" \((?:via inetd|ODMR customer)\)", "via"))
CONNECTION_FROM = seq("SMTP connection", opt(" Ci=", rx(r"\S+", "Ci")), " from ", HOST_OR_USER, VIA)
LEAD = rx(LEAD_TAGS, "tags", tags)
LEAD_OR_HOST = alt(LEAD, rx(HOSTV, "host", host))
REST = rx(r".*", "reason")
QUOTED_CMD = rx(r'"(?:[^"\\]|\\.)*"', "command")
STAGE = rx(r'(?>after DATA(?: PRDR)?|during MIME ACL checks|connection in "connect" ACL|by non-SMTP ACL'
           r'|by local_scan\(\)|EHLO or HELO|[A-Z]+)', "stage")


def _tail_duration(name: str = "detail") -> Any:
    """Free text that may end in `` D=<duration>`` (lost, timeouts): the text, then D= apart (one
    place at most is followed by `` D=…`` to the end: sought back from the end, as ``failure``)."""
    return seq(rx(r"(?>.*(?= D=\d[\w.]*\Z)|.*)", name), opt(" D=", rx(DURATION, "D", seconds)))


# --- rules -------------------------------------------------------------------------------------

RULES: list[Rule] = [
    # --- message lines (the prefix held the message ID) ---------------------------------------
    Rule("arrival", seq(rx(r"<=|\(=", "flag"), " ", rx(r"\S+", "sender", sender), rx(TAGS, "tags", tags),
                        opt(" from <", rx(r"[^>]*", "raw_sender"), ">"),
                        opt(" for ", rx(r".+", "rcpts", words))),
         ("<=", "(=")),
    Rule("delivery", seq(rx(r"=>|->|>>|\*>", "flag"), " ", ADDRESS_PART, rx(TAGS, "tags", tags)),
         ("=", "->", ">>", "*>")),
    # failure_log: the error follows ": " (" : " from 4.99), DT= comes last (``.*`` then back, not
    # ``.*?`` forward: one place can be followed by `` DT=…`` to the end, found from the end)
    Rule("failure", seq("** ", ADDRESS_PART, rx(TAGS, "tags", tags),
                        opt(rx(r" : |: ", "separator"), rx(r"(?>.*(?= DT=\d[\w.]*\Z)|.*)", "message")),
                        opt(" DT=", rx(DURATION, "DT", seconds))), ("**",)),
    # deferral_log: [R= T=| routing] defer (errno)[: strerror][ H=…][ DT=][: message]; the strerror
    # ends where tags (which start with " ") or ": " follow: a cheap test of the character first
    Rule("deferral", seq("== ", ADDRESS_PART, rx(TAGS, "tags", tags), opt(rx(r" routing", "routing")),
                         " defer (", rx(r"-?\d+", "errno", int), ")",
                         opt(": ", rx(rf"(?>.*?(?=[ :]|\Z)(?={TAGS}(?:: |\Z)))", "strerror")),
                         rx(TAGS, "tags2", tags),
                         opt(": ", rx(r".*", "message"))), ("=",)),
    Rule("completed", seq("Completed", opt(" QT=", rx(DURATION, "QT", seconds))), ("Completed",)),
    Rule("message_state", rx(r"Frozen(?: \(delivery error message\))?|Unfrozen by .+|frozen by .+"
                             r"|Message is frozen|spool file is locked.*|cancelled by timeout_frozen_after"
                             r"|Message frozen.*", "state"),
         ("Frozen", "Unfrozen", "frozen", "Message", "spool", "cancelled"), known=True),
    Rule("no_immediate_delivery", seq("no immediate delivery: ", REST), ("no",), known=True),
    Rule("error_ignored", seq(ADDRESS, ": error ignored"), (), known=True),
    # a transport's note on one host, before its == / ** line (transports/smtp.c write_logs)
    Rule("host_error", seq("H=", rx(r"[^\s\[]\S*", "relay_name"), " [", rx(r"[^\]]*", "relay_address"), "]",
                           opt(":", rx(r"\d+", "relay_port", int)), opt(rx(r"\*", "reused")),
                           alt(seq(": ", rx(r".*", "error")),
                               seq(" ", rx(r"(?![A-Za-z][A-Za-z0-9]*\*?=|Warning: )[A-Z].*", "error")))),
         ("H=",)),
    Rule("dkim", seq("DKIM: ", REST), ("DKIM",), known=True),
    # --- SMTP sessions --------------------------------------------------------------------------
    Rule("connection_open", seq("SMTP connection from ", alt(
        seq(rx(HOSTV, "host", host), rx(TAGS, "tags", tags), " (TCP/IP connection count = ",
            rx(r"\d+", "count", int), ")"),
        rx(r"[^\s\[(]\S*(?: \(via inetd\))?", "user"))), ("SMTP",)),
    Rule("connection_closed", seq(CONNECTION_FROM, rx(TAGS, "tags", tags), " closed ",
                                  rx(r"(?:by|after) .+", "reason")), ("SMTP",)),
    Rule("connection_lost", seq(CONNECTION_FROM, rx(TAGS, "tags", tags), " lost", _tail_duration()),
         ("SMTP",)),
    Rule("no_mail", seq("no MAIL in ", opt(rx(r"TFO\*? ", "tfo")), "SMTP connection from ", HOST_OR_USER,
                        rx(TAGS, "tags", tags)), ("no",)),
    Rule("unexpected_disconnection", seq("unexpected ", rx(r"disconnection|EOF", "what"),
                                         " while reading SMTP command from ", opt(rx(r"TFO\*? ", "tfo")),
                                         HOST_OR_USER, rx(TAGS, "tags", tags),
                                         opt(rx(r" \([^)]*\)", "detail")), rx(TAGS, "tags2", tags)),
         ("unexpected",)),
    Rule("command_timeout", seq("SMTP command timeout on ", opt(rx(r"TLS ", "tls")), "connection from ",
                                HOST_OR_USER, rx(TAGS, "tags", tags)), ("SMTP",)),
    Rule("data_timeout", seq("SMTP data timeout (message abandoned) on connection from ",
                             alt(rx(HOSTV, "host", host), rx(r"local process", "user")),
                             rx(TAGS, "tags", tags)),
         ("SMTP",)),
    Rule("call_dropped", seq("SMTP call from ", rx(HOSTV, "host", host), rx(TAGS, "tags", tags), " dropped: ",
                             REST), ("SMTP",)),
    Rule("protocol_error", seq("SMTP ", rx(r"protocol|syntax", "kind"), " error in ", QUOTED_CMD, " ", LEAD,
                               " ", REST), ("SMTP",)),
    Rule("synchronization_error", seq("SMTP protocol synchronization error (", rx(r"[^)]*", "detail"),
                                      "): rejected ", rx(r'connection from|"(?:[^"\\]|\\.)*"', "command"),
                                      " ", LEAD, rx(r".*", "input")), ("SMTP",)),
    Rule("tls_error", seq("TLS error ", REST), ("TLS",)),
    # host_and_ident(TRUE) + tags, then what happened (smtp_in.c smtp_handle_acl_fail and friends)
    Rule("rejected", seq(LEAD, " ", opt(rx(r"temporarily ", "temporarily")), "rejected ", STAGE,
                         opt(" ", rx(r"(?>.*?(?=: |\Z))", "argument")), opt(": ", REST)),
         ("H=", "U=", "F=", "DS")),
    Rule("dropped_by_acl", seq(LEAD, " dropped by ", REST), ("H=", "U=", "DS")),
    Rule("incomplete_transaction", seq(LEAD, " incomplete transaction (", rx(r"[^)]*", "what"), ")",
                                       opt(" from <", rx(r"[^>]*", "sender"), ">"),
                                       opt(" for ", rx(r".+", "rcpts", words))), ("H=", "U=")),
    Rule("sender_verify", seq(LEAD, " sender verify ", rx(r"fail|defer", "verdict"), " for <",
                              rx(r"[^>]*", "address"), ">", opt(": ", REST)), ("H=", "U=")),
    Rule("acl_warning", seq(LEAD, " Warning: ", REST), ("H=", "U=")),
    Rule("rcpt_discarded", seq(LEAD, " RCPT ", rx(r"(?>.*?(?=: discarded by ))", "argument"),
                               ": discarded by ", rx(r"\S+", "acl"), " ACL", opt(": ", REST)), ("H=", "U=")),
    Rule("rejected_helo", seq("rejected ", rx(r"EHLO|HELO", "verb"), " from ", rx(HOSTV, "host", host),
                              rx(TAGS, "tags", tags), ": syntactically invalid argument(s): ",
                              rx(r".*", "argument")),
         ("rejected",)),
    Rule("rejected_helo_verify", seq(opt(rx(r"temporarily ", "temporarily")), "rejected ",
                                     rx(r'"(?:[^"\\]|\\.)*"', "command"), " from ", rx(HOSTV, "host", host),
                                     rx(TAGS, "tags", tags)), ("rejected", "temporarily")),
    Rule("rejected_mail", seq("rejected MAIL ", rx(r"(?>from |command |FROM:<[^>]*> )", "form"), LEAD_OR_HOST,
                              rx(TAGS, "tags2", tags), ": ", REST), ("rejected",)),
    Rule("unqualified_rejected", seq("unqualified ", rx(r"sender|recipient", "which"), " rejected: <",
                                     rx(r"[^>]*", "address"), "> ", LEAD, rx(r".*", "detail")),
         ("unqualified",)),
    Rule("too_many_recipients", seq("too many recipients: ",
                                    rx(r"message rejected|excess temporarily rejected", "what"),
                                    ": sender=<", rx(r"[^>]*", "sender"), "> ", LEAD), ("too",)),
    Rule("auth_failed", seq(rx(r"\S+", "authenticator"), " authenticator failed for ", LEAD_OR_HOST,
                            rx(TAGS, "tags2", tags), ": ", REST), ()),
    Rule("connection_refused", seq(rx(r"Connection|connection", "word"), " from ", rx(HOSTV, "host", host),
                                   rx(TAGS, "tags", tags), " refused", rx(r".*", "reason")),
         ("Connection", "connection")),
    Rule("refused_connection", seq(opt(rx(r"temporarily ", "temporarily")), "refused connection from ",
                                   rx(HOSTV, "host", host), rx(TAGS, "tags", tags),
                                   rx(r"(?:: | ).*", "reason")),
         ("refused", "temporarily")),
    Rule("eof_on_input", seq("Error or EOF on input from ", LEAD), ("Error",)),
    Rule("lookup_failed", seq(rx(r"no host name found for IP address |no IP address found for host ", "what"),
                              REST), ("no",), known=True),
    Rule("ignoring_auth", seq("ignoring AUTH=", rx(r"\S+", "value"), " from ", LEAD,
                              rx(r" \(.*\)", "reason")), ("ignoring",), known=True),
    Rule("vrfy_etrn", seq(rx(r"VRFY failed for |ETRN ", "what"), REST), ("VRFY", "ETRN"), known=True),
    # --- daemon and queue runners ---------------------------------------------------------------
    Rule("daemon_started", seq("exim ", rx(r"\S+", "version"), " daemon started: pid=",
                               rx(r"\d+", "daemon_pid", int), rx(r"(?:, .*)?", "detail")), ("exim",),
         known=True),
    Rule("daemon_signal", seq("pid ", rx(r"\d+", "daemon_pid", int), ": ", REST), ("pid",), known=True),
    # queue.c: "Start queue run: pid=…", "Start ODMR queue run: …", "End 'named' queue run: …"
    Rule("queue_run", seq(rx(r"Start|End", "what"), opt(rx(r" ODMR", "odmr")),
                          opt(" '", rx(r"[^']*", "queue"), "'"), " queue run: pid=",
                          rx(r"\d+", "runner_pid", int), rx(r".*", "detail")), ("Start", "End"), known=True),
    Rule("arguments", seq("cwd=", rx(r"\S+", "cwd"), " ", rx(r"\d+", "argc", int), " args: ", REST),
         ("cwd=",), known=True),
    Rule("listen_backlog", seq("listen backlog ", rx(r"\d+", "backlog", int), " I=",
                               rx(r"\S+", "interface")), ("listen",), known=True),
    Rule("lost_privilege", lit("exim user lost privilege for using -C option"), ("exim",), known=True),
    # --- known and ignored: recognised, counted, nothing to export (Rule.known) ----------------
    # sa-exim's local_scan notes (sa-exim.c: "SA: Action: …", "SA: Debug: …"); a rejection it asks for
    # is Exim's own "rejected by local_scan()" line
    Rule("sa_exim", rx(r"SA: (?:Action|Debug|Notice|Info|Warning|Error|Panic): .*"), ("SA",), known=True),
    # a delivery process that finds another one at work (spool_in.c), a message removed for its age
    Rule("message_note", rx(r"Spool file (?:for \S+ )?is locked \(another process is handling this "
                            r"message\)|Message removed because older than .*"),
         ("Spool", "Message"), known=True),
    # an administrator's "exim -Mrm" (queue.c), a peer certificate that did not verify (tls-openssl.c)
    Rule("admin_removed", rx(r"removed by \S+"), ("removed",), known=True),
    Rule("tls_verify_error", rx(r"\[[^\]\s]*\] SSL verify error.*"), known=True),
    # a transport's note on one host before 4.86 wrote it without "H=" (transports/smtp.c write_logs):
    # "mx.example [192.0.2.1] Connection refused"; the == or ** line after it carries the outcome
    Rule("host_note", rx(r"[^\s\[(=]+ \[[0-9A-Fa-f.:]+\](?::\d+)?(?::)? [A-Z].*"), known=True),
    # --- reject log: the lines after an entry's first one (header lines only if received) --------
    Rule("rejectlog_envelope", seq("Envelope-", rx(r"from|to", "which"), ": ", rx(r".*", "value")),
         ("Envelope-from", "Envelope-to")),
    # the header's type flag (F T C B I R P S, * = deleted, space = other), then the header
    Rule("rejectlog_header", seq(rx(r"[ FTCBIRPS*]", "header_type"), " ", rx(r"[!-9;-~]+", "header"), ":",
                                 rx(r".*", "value")), known=True),
    Rule("rejectlog_continuation", rx(r"\t.*| (?! [!-9;-~]+:).*|\*\*\* truncated \*\*\*", "text"),
         known=True),
]
