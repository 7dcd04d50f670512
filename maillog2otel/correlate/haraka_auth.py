"""Haraka AUTH attempts (``auth/*`` plugins built on ``auth_base``), from what each level logs.

PROTOCOL: ``C: AUTH PLAIN <b64>`` / ``C: AUTH LOGIN`` start an attempt, the client's lines after a
``S: 334`` are its data (not commands: the user, the password), and the next reply that is not
334 ends it (``235`` accepted; ``535``, ``504``… failed). The attempted user is read from the
PLAIN initial response or the first LOGIN answer; passwords are never kept.

INFO: the method and the replies are not logged. Each step of an exchange is one
``hook=unrecognized_command plugin=auth/… retval=OK`` line (written once the reply is sent),
``params=AUTH`` for the command, else the client's base64 answer; a failure writes
``[auth/…] delaying for N seconds`` before the reply (535) of the step that fails. So: an attempt
starts at ``params=AUTH``; the step after a ``delaying`` line ends it as failed; an attempt that
ends otherwise was accepted when ``disconnect relay=Y`` (a successful AUTH sets relaying for the
connection; ``relay=N`` proves no AUTH succeeded) and is failed otherwise. The shape gives the
method: one step is PLAIN with the initial response; two steps whose answer decodes with NUL
separators is PLAIN (user in it); three steps is LOGIN (user = the first answer). A two-step
attempt whose answer has no NUL (LOGIN with an initial user, whose second step is the password)
names no method and no user.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from maillog2otel.records import SpanEvent

_PLUGIN_PREFIX = "auth/"


@dataclass(slots=True)
class Attempt:
    ts_ns: int  # the command's time; the end's once known
    method: str | None = None
    user: str | None = None
    code: int | None = None
    text: str = ""
    accepted: bool | None = None
    steps: int = 0  # INFO: hook lines of the exchange; PROTOCOL: answers to 334
    candidate: str = ""  # INFO: the first answer, until the shape says whether it was the user


def _b64(text: str) -> str | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    value = raw.decode("utf-8", "replace")
    return value if value.isprintable() or "\0" in value else None


def plain_user(b64: str) -> str | None:
    """The authentication identity of a PLAIN response (``authzid NUL authcid NUL password``)."""
    value = _b64(b64)
    if value is None or value.count("\0") != 2:
        return None
    user = value.split("\0")[1]
    return user if user.isprintable() and user else None


def login_user(b64: str) -> str | None:
    value = _b64(b64)
    return value if value and "\0" not in value and value.isprintable() else None


def auth_hook(kv: dict[str, str]) -> bool:
    """A step of an AUTH exchange at INFO: an auth plugin answered an unrecognized command."""
    return (kv.get("hook") == "unrecognized_command" and kv.get("plugin", "").startswith(_PLUGIN_PREFIX)
            and kv.get("retval") == "OK")


# --- INFO ------------------------------------------------------------------------------------


def info_step(attempts: list[Attempt], failing: bool, ts: int, params: str) -> None:
    """One ``hook=unrecognized_command plugin=auth/…`` line; ``failing``: a ``delaying`` line
    came since the previous step, so this step's reply was the 535."""
    cur = attempts[-1] if attempts else None
    if params.upper() == "AUTH":
        cur = Attempt(ts)
        attempts.append(cur)
    elif cur is None or cur.accepted is not None or cur.steps >= 3:
        return  # an exchange that began before the log did: nothing here says what it was
    cur.steps += 1
    cur.ts_ns = ts
    if cur.steps == 2:
        # the first answer: PLAIN's response, LOGIN's user, or (LOGIN with an initial user) the
        # password: kept undecoded until a third step proves it was the user (settle_info drops it)
        if (user := plain_user(params)) is not None:
            cur.method, cur.user = "PLAIN", user
        else:
            cur.candidate = params
    elif cur.steps == 3:
        cur.method, cur.user = "LOGIN", login_user(cur.candidate)
        cur.candidate = ""
    if failing:
        cur.accepted, cur.code = False, 535
        if cur.steps == 1:
            cur.method = "PLAIN"  # the initial response, answered at once
        cur.candidate = ""


def settle_info(attempts: list[Attempt], relay: bool | None, last_reject: str) -> None:
    """Attempts the log left open: accepted when the connection relayed at the end (see above).
    Without a ``disconnect`` line (the log ended, the connection expired) nothing settles them:
    they are left out rather than guessed."""
    if relay is None:
        attempts[:] = [a for a in attempts if a.accepted is not None]
    for a in attempts:
        a.candidate = ""
        if a.accepted is None:
            a.accepted = bool(relay)
            if a.accepted:
                a.code = 235
                if a.steps == 1:
                    a.method = "PLAIN"
    # the disconnect line's lr= is the last refusal's text: the last failed attempt's, if no
    # later refusal came (then it names another reply)
    failed = [a for a in attempts if a.accepted is False and a.code == 535]
    if failed and last_reject.startswith("535 "):
        failed[-1].text = last_reject[4:]


# --- PROTOCOL --------------------------------------------------------------------------------


def proto_command(attempts: list[Attempt], ts: int, line: str) -> None:
    """``C: AUTH <method> [<initial response>]``."""
    parts = line.split()
    a = Attempt(ts, method=parts[1].upper() if len(parts) > 1 else None)
    if len(parts) > 2:
        a.user = plain_user(parts[2]) if a.method == "PLAIN" else (
            login_user(parts[2]) if a.method == "LOGIN" else None)
    attempts.append(a)


def proto_answer(attempts: list[Attempt], line: str) -> None:
    """A client line after ``S: 334``: LOGIN's user (the first answer) or PLAIN's response."""
    a = attempts[-1]
    a.steps += 1
    if a.user is None and a.steps == 1:
        a.user = (plain_user(line) if a.method == "PLAIN" else
                  login_user(line) if a.method == "LOGIN" else None)


def proto_reply(attempts: list[Attempt], ts: int, code: int, text: str) -> None:
    a = attempts[-1]
    a.ts_ns, a.code, a.accepted = ts, code, code == 235
    if code >= 400:
        a.text = text


# --- the span's events and the counter --------------------------------------------------------


def auth_events(attempts: list[Attempt], events: list[SpanEvent] | None, attrs: dict[str, Any] | None
                ) -> dict[str, int]:
    """``Connection.auth`` counts; with ``events`` the ``smtp.auth`` events, with ``attrs`` the
    accepted login's method and user on the span."""
    counts: dict[str, int] = {}
    for a in attempts:
        result = "accepted" if a.accepted else "failed"
        counts[result] = counts.get(result, 0) + 1
        if events is None:
            continue
        ev: dict[str, Any] = {"smtp.auth.accepted": bool(a.accepted)}
        if a.method:
            ev["smtp.auth.method"] = a.method
        if a.code is not None:
            ev["smtp.response.code"] = a.code
        enh, _, reason = a.text.partition(" ")
        if enh[:1] in "245" and enh.count(".") == 2 and enh.replace(".", "").isdigit():
            ev["smtp.response.enhanced_code"] = enh
        else:
            reason = a.text
        if a.user:
            ev["smtp.auth.user"] = a.user
        if not a.accepted and reason:
            ev["smtp.auth.reason"] = reason
        events.append(SpanEvent("smtp.auth", a.ts_ns, ev))
        if a.accepted and attrs is not None:
            if a.method:
                attrs["smtp.auth.method"] = a.method
            if a.user:
                attrs["smtp.auth.user"] = a.user
    return counts
