"""journald helpers for ``tail -``: cursors and the command that resumes a ``journalctl`` pipe.

``journalctl -o json`` lines are framed by ``framing.Framer`` like any other line (MESSAGE as a
string, a list of byte values or null; SYSLOG_IDENTIFIER, SYSLOG_PID/_PID, _HOSTNAME,
_SOURCE_REALTIME_TIMESTAMP/__REALTIME_TIMESTAMP); each record carries its ``__CURSOR``. ``tail``
keeps the cursor of the last entry it exported in its state, prints the ``--after-cursor`` command
that continues from there, and skips entries at or before it when journalctl shows them again
(``journalctl -f`` starts with the last ten entries).

A cursor is documented as opaque, but its form has been stable since systemd 38:
``s=<seqnum id>;i=<seqnum hex>;b=<boot id>;m=<monotonic hex>;t=<realtime hex>;x=<xor hash hex>``.
Entries are compared only when both cursors parse and share the sequence-number ID (one journal
file set); otherwise nothing is skipped.
"""

from __future__ import annotations

import shlex


def cursor_position(cursor: str | None) -> tuple[str, int] | None:
    """(seqnum id, seqnum) of a cursor, or None when it does not have the usual form."""
    if not cursor:
        return None
    fields = {}
    for part in cursor.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    try:
        return fields["s"], int(fields["i"], 16)
    except (KeyError, ValueError):
        return None


def already_seen(cursor: str | None, last: tuple[str, int] | None) -> bool:
    """True for an entry at or before the last exported one (same journal sequence)."""
    if last is None:
        return False
    pos = cursor_position(cursor)
    return pos is not None and pos[0] == last[0] and pos[1] <= last[1]


def resume_command(cursor: str, state_path: str, follow: bool = True) -> str:
    """The shell pipeline that continues after ``cursor`` with the same state file."""
    parts = ["journalctl", "-o", "json", "--all"]
    if follow:
        parts.append("-f")
    parts.append(f"--after-cursor={cursor}")
    return (" ".join(shlex.quote(p) for p in parts) + " [your -u/-t filters] | maillog2otel tail --state "
            + shlex.quote(state_path) + " -")
