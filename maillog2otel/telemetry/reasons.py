"""Reject reasons -> a small fixed set of classes, for the bounded ``smtp.reject.class`` metric
attribute (the free text stays on the span event's ``smtp.reject.reason``).

The first class whose pattern matches the reply text (case-insensitive ``re.search``) wins: the
ini file's ``[reasons]`` entries first, in file order, then the defaults below; nothing matched is
``other``, no reason known is ``unknown``. At most ``MAX_CLASSES`` classes, names of lower-case
letters, digits and ``_``, so a metric never gets more than that many series from it.

    [metrics]
    reject_classes = true

    [reasons]
    greylisted = Greylisted|try again later
    relay_denied = Relay access denied|relaying denied
    use_defaults = true

(``--reject-classes`` turns the attribute on from the command line; ``use_defaults = false``
keeps only the file's classes, ``other`` and ``unknown``.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

MAX_CLASSES = 24
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

DEFAULT_CLASSES: tuple[tuple[str, str], ...] = (
    ("relay_denied", r"Relay access denied|relaying denied|relay not permitted|not permitted to relay"),
    ("unknown_recipient", r"User unknown|unknown user|No such user|Recipient address rejected: undeliverable|"
                          r"Unrouteable address|mailbox unavailable|does not exist|no mailbox|"
                          r"Invalid recipient"),
    ("sender_rejected", r"Sender address rejected|sender verify failed|Sender verification|"
                        r"Domain of sender address|Unrouteable sender"),
    ("blocklisted", r"blocked using|listed (?:at|in|by|on)\b|\bRBL\b|DNSBL|Spamhaus|blacklist|blocklist"),
    ("client_rejected", r"Client host rejected|cannot find your (?:reverse )?hostname|Helo command rejected|"
                        r"HELO|EHLO|Access denied|not allowed to connect"),
    ("auth_required", r"Authentication (?:required|failed)|must authenticate|SASL|\bAUTH\b"),
    ("tls_required", r"STARTTLS|TLS required|Encryption required"),
    ("content_rejected", r"content rejected|header_checks|body_checks|\bspam\b|virus|malware|milter|"
                         r"Message rejected|policy"),
    ("rate_limited", r"rate limit|ratelimit|too many (?:recipients|connections|messages)|Too much mail|"
                     r"try again later|Greylist"),
    ("too_large", r"size (?:limit|exceeds)|too (?:big|large)|exceeds .*(?:size|limit)"),
    ("protocol", r"pipelining|syntax|bare newline|Improper use|Data command rejected|unrecognized command|"
                 r"Bad sequence"),
)


class ConfigProblem(ValueError):
    pass


def compile_classes(user: Iterable[tuple[str, str]] = (), use_defaults: bool = True
                    ) -> list[tuple[str, re.Pattern[str]]]:
    out: list[tuple[str, re.Pattern[str]]] = []
    for name, pattern in [*user, *(DEFAULT_CLASSES if use_defaults else ())]:
        if not _NAME.fullmatch(name) or name in ("other", "unknown"):
            raise ConfigProblem(f"[reasons] {name}: class names are lower-case letters, digits and _ "
                                "(other and unknown are built in)")
        try:
            out.append((name, re.compile(pattern, re.IGNORECASE)))
        except re.error as exc:
            raise ConfigProblem(f"[reasons] {name}: bad regular expression: {exc}") from None
    if len({n for n, _ in out}) > MAX_CLASSES:
        raise ConfigProblem(f"[reasons]: at most {MAX_CLASSES} classes (metric attributes must stay bounded)")
    return out


class Classifier:
    def __init__(self, classes: list[tuple[str, re.Pattern[str]]]) -> None:
        self.classes = classes
        self._cache: dict[str, str] = {}

    def __call__(self, reason: str | None) -> str:
        if not reason:
            return "unknown"
        got = self._cache.get(reason)
        if got is None:
            got = next((name for name, rx in self.classes if rx.search(reason)), "other")
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[reason] = got
        return got


def classifier(settings: object) -> Callable[[str | None], str] | None:
    """The settings' classifier, or None when ``smtp.reject.class`` is off."""
    if not getattr(settings, "reject_classes", False):
        return None
    return Classifier(compile_classes(getattr(settings, "reason_classes", ()),
                                      getattr(settings, "reason_defaults", True)))
