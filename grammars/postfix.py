"""Postfix: one rule per line shape, dispatched on the daemon and the message's first word.

The message reaches these rules with its queue-ID prefix already split off by ``QUEUE_PREFIX``
(``NOQUEUE: `` / ``4F9D195432: `` / ``3Pt2mN2VXxznjll: ``). Sample lines (fixtures/postfix/; a long
line is wrapped here, its continuation indented after "…"):

    connect from unknown[127.0.0.2]:40312
    4F9D195432: client=unknown[127.0.0.2]:40312
    NOQUEUE: reject: RCPT from unknown[127.0.0.2]:40312: 554 5.7.1 <x@relay.test>: Relay access denied;
        … from=<a@client.example> to=<x@relay.test> proto=ESMTP helo=<client.example>
    4F9D195432: message-id=<20261122015126.4F9D195432@mx.test>
    4F9D195432: from=<a@client.example>, size=412, nrcpt=1 (queue active)
    4F9D195432: to=<bob@local.test>, relay=local, delay=0.02, delays=0.01/0/0/0, dsn=2.0.0,
        … status=sent (delivered to mailbox)
    disconnect from unknown[127.0.0.2]:40312 ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6
"""

from __future__ import annotations

import re

from .common import Rule, alt, as_int, kv_commas, kv_spaces, lit, memo, opt, rx, seq, smtp_reply

MTA = "postfix"

# Short IDs are upper-case hex, long IDs base-52 with a "z" before the inode part (postfix.md §2).
QUEUE_ID = r"(?:[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+)"
QUEUE_PREFIX = seq(rx(QUEUE_ID + "|NOQUEUE", "queue_id"), lit(": "))

SMTPD = ("smtpd",)


def program_key(program: str) -> tuple[str, dict[str, str]]:
    """``postfix-out/submission/smtpd`` -> daemon ``smtpd``, instance ``postfix-out``, service
    ``submission`` (collate.pl's rule: instance up to the first ``/``, daemon the last part)."""
    parts = program.split("/")
    daemon = parts[-1]
    service = parts[-2] if len(parts) > 2 else daemon
    return daemon, {"instance": parts[0], "service": service}
DELIVERY_AGENTS = ("smtp", "lmtp", "local", "virtual", "pipe", "error", "discard", "retry")


def namaddr(prefix: str = "client") -> object:
    """``name[addr]`` with an optional ``:port`` (``smtpd_client_port_logging``)."""
    return seq(
        rx(r"[^\[\s]*", f"{prefix}_name"), "[", rx(r"[^\]]*", f"{prefix}_address"), "]",
        opt(":", rx(r"\d+", f"{prefix}_port", as_int)),
    )


def bracket_addr(prefix: str = "client") -> object:
    """postscreen's ``[addr]:port``."""
    return seq("[", rx(r"[^\]]*", f"{prefix}_address"), "]:", rx(r"\d+", f"{prefix}_port", as_int))


STAGE = rx(r"[A-Z][A-Z-]*", "stage")
# Postfix's access actions (smtpd_check.c log_whatsup) and the milter ones.
ACTION = rx(
    # longest first: a regex leaf takes its first matching alternative and pyparsing never backtracks
    r"reject_warning|reject|hold|discard|filter|redirect|warning|warn|info|delay|hangup|permit|"
    r"milter-reject|milter-hold|milter-discard|proxy-reject|proxy-accept",
    "action",
)
# header/body_checks actions as cleanup logs them (cleanup_act_log), and milter_header_checks'
CLEANUP_ACTION = rx(
    r"milter-(?:header|body)-(?:reject|filter|discard|hold|redirect|bcc)|reject|warning|info|filter|pass|"
    r"discard|hold|delay|prepend|replace|redirect|bcc|strip",
    "action",
)
# "554 5.7.1 <b@y>: Relay access denied; from=<a> to=<b> proto=ESMTP helo=<h>": the reply runs up
# to the first such tail; milter replies start at the enhanced code.
REPLY_TAIL = seq(
    opt(rx(r"[2-5]\d\d", "reply_code", as_int), " "),
    opt(rx(r"[245]\.\d{1,3}\.\d{1,3}", "reply_enhanced"), " "),
    rx(r"[^;\n]*(?:;(?! (?:from|to|proto|helo)=)[^;\n]*)*(?=; (?:from|to|proto|helo)=|$)", "reply_text"),
    opt("; ", rx(r".*", "tail", kv_spaces)),
)

_COUNT = re.compile(r"\d+(?:/\d+)?")


def _counts(text: str) -> dict[str, str]:
    """``ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4``: only what is a count (N or OK/N) is kept,
    so a mangled or forged tail cannot make a number of something else."""
    return {k: v for k, v in kv_spaces(text).items() if _COUNT.fullmatch(v)}


COUNTS = memo(_counts)  # few distinct texts in a whole log: remembered

# ", relay=…, delay=0.4, delays=0.1/0/0.1/0.2, dsn=2.0.0" before ", status=" in every delivery line
DELIVERY_KV = r"(?:, (?!status=)[a-z_]+=(?:<[^>]*>|[^, ]*))*"

# one pair of such text without "<": DELIVERY_KV's own shape, so findall walks its pairs in order
_DELIVERY_PAIR = re.compile(r", ([a-z_]+)=([^, ]*)")


def delivery_kv(text: str) -> dict[str, str]:
    """``kv_commas`` for text DELIVERY_KV matched, on the most frequent line of a Postfix log.

    There every pair starts with ", " and a value holds no comma or space unless it is in <…>:
    without "<", one findall of that shape is exact and several times faster than kv_commas' general
    key pattern, which is tried at every character. A "<" (orig_to=<…>, rare) takes the general path."""
    if "<" in text:
        return kv_commas(text)
    return dict(_DELIVERY_PAIR.findall(text))


RULES: list[Rule] = [
    # --- smtpd ---------------------------------------------------------------------------
    Rule("smtpd_connect", seq("connect from ", namaddr()), ("connect",), SMTPD),
    Rule("smtpd_disconnect", seq("disconnect from ", namaddr(), opt(" ", rx(r".*", "counts", COUNTS))),
         ("disconnect",), SMTPD),
    Rule("smtpd_client", seq("client=", namaddr(), rx(r"(?:, .*)?", "extra", kv_commas)), ("client=",),
         SMTPD),
    Rule(
        "smtpd_reject",
        seq(ACTION, ": ", STAGE, " from ", namaddr(), ": ", REPLY_TAIL),
        ("reject", "reject_warning", "hold", "discard", "filter", "redirect", "warn", "warning", "info",
         "delay", "hangup", "permit", "milter-reject", "milter-hold", "milter-discard",
         "proxy-reject", "proxy-accept"),
        ("smtpd", "cleanup", "postscreen"),
    ),
    # a before-queue content filter's verdict (smtpd.c: "proxy-%s: %s: %s;%s"): the same event as
    # the access verdicts above, written without the client (the smtpd process is the session)
    Rule("smtpd_reject", seq(rx(r"proxy-reject|proxy-accept", "action"), ": ", STAGE, ": ", REPLY_TAIL),
         ("proxy-reject", "proxy-accept"), SMTPD),
    Rule(
        "smtpd_abort",
        seq(rx(r"lost connection|timeout|too many errors", "abort"), " after ", STAGE,
            # "(approximately N bytes)" before Postfix 2.9
            opt(" (", opt("approximately "), rx(r"\d+", "bytes", as_int), " bytes)"), " from ", namaddr(),
            rx(r".*", "rest")),
        ("lost", "timeout", "too"), SMTPD,
    ),
    Rule(
        "tls_established",
        seq(rx(r"Anonymous|Untrusted|Trusted|Verified", "tls_trust"), " TLS connection ",
            rx(r"established|reused", "tls_state"), " ", rx(r"from|to", "direction"), " ",
            namaddr("peer"), opt(" to ", rx(r"\S+", "sni")), ": ",
            rx(r"\S+", "tls_version"), " with cipher ", rx(r"\S+", "tls_cipher"),
            opt(" (", rx(r"[^)]*", "tls_bits"), ")"), rx(r".*", "tls_rest")),
        ("Anonymous", "Untrusted", "Trusted", "Verified"),
    ),
    Rule("smtpd_pipelining", seq("improper command pipelining after ", STAGE, " from ", namaddr(),
                                 rx(r".*", "rest")), ("improper",), SMTPD, known=True),
    Rule("smtpd_ssl_error", seq("SSL_accept error from ", namaddr(), rx(r".*", "rest")), ("SSL_accept",),
         SMTPD, known=True),
    Rule("smtpd_table_changed", seq("table ", rx(r"\S+", "table"), " has changed -- restarting"),
         ("table",), SMTPD, known=True),
    Rule("smtpd_starttls_fail", seq("STARTTLS ", rx(r".*", "rest")), ("STARTTLS",), SMTPD, known=True),
    # "warning: NAMADDR: SASL LOGIN authentication failed: <reason>" with ", sasl_username=<user>"
    # from 3.9 on ("(unavailable)" when the mechanism got no name), and "… authentication aborted"
    # when the client sent "*" (smtpd_sasl_glue.c)
    Rule("smtpd_sasl_failed",
         seq("warning: ", namaddr(), ": SASL ", rx(r"\S+", "sasl_method"), " authentication ",
             rx(r"failed|aborted", "sasl_result"),
             opt(": ", rx(r".*?(?=, sasl_username=|$)", "reason")),
             opt(", sasl_username=", rx(r".*", "sasl_username"))),
         ("warning",), SMTPD),
    # Cyrus SASL's own words before smtpd's line about the attempt: "warning: SASL authentication
    # failure: Password verification failed", "… problem: …" (the attempt is counted from smtpd's)
    Rule("smtpd_sasl_library", seq("warning: SASL authentication ", rx(r"failure|problem", "what"), ": ",
                                   rx(r".*", "text")), ("warning",), SMTPD,
         known=True),
    # --- cleanup -------------------------------------------------------------------------
    Rule("cleanup_message_id", seq(rx(r"(?:resent-)?message-id", "header"), "=", rx(r".*", "message_id")),
         ("message-id=", "resent-message-id="), ("cleanup",)),
    Rule(
        "cleanup_action",
        seq(CLEANUP_ACTION, ": ", rx(r"header|body|content|mime-error", "what"), " ",
            rx(r".*?(?= from (?:\S+\[[^\]]*\](?::\d+)?|local|unknown); )", "content"),
            " from ", alt(namaddr(), rx(r"local|unknown", "client_name")), "; ",
            opt("from=<", rx(r"[^>]*", "mail_from"), ">"),
            opt(" to=<", rx(r"[^>]*", "rcpt_to"), ">"),
            opt(" proto=", rx(r"\S+", "proto")),
            opt(" helo=<", rx(r"[^>]*", "helo"), ">"),
            opt(": ", rx(r".*", "reason"))),
        ("reject", "warning", "hold", "discard", "filter", "redirect", "replace", "prepend", "bcc",
         "strip", "info", "pass", "delay", *(f"milter-{where}-{what}" for where in ("header", "body")
                                             for what in ("reject", "filter", "discard", "hold", "redirect",
                                                          "bcc"))),
        ("cleanup",),
    ),
    Rule("cleanup_removed", seq("removed", opt(" (", rx(r"[^)]*", "reason"), ")")), ("removed",),
         ("cleanup",)),
    # --- qmgr ----------------------------------------------------------------------------
    Rule("qmgr_active", seq("from=<", rx(r"[^>]*(?:>(?!, size=)[^>]*)*", "mail_from"), ">, size=",
                            rx(r"\d+", "size", as_int), ", nrcpt=", rx(r"\d+", "nrcpt", as_int),
                            " (queue active)"), ("from=",), ("qmgr",)),
    Rule("qmgr_expired", seq("from=<", rx(r"[^>]*", "mail_from"), ">, status=",
                             rx(r"expired|force-expired", "status"), ", returned to sender"),
         ("from=",), ("qmgr",)),
    Rule("qmgr_removed", lit("removed"), ("removed",), ("qmgr", "postsuper")),
    Rule("qmgr_skipped", seq("skipped, still being delivered"), ("skipped,",), ("qmgr",), known=True),
    Rule("postsuper_action", rx(r"requeued|placed on hold|released from hold|expired", "action"),
         ("requeued", "placed", "released", "expired"), ("postsuper",), known=True),
    # postsuper.c: "Deleted: 3 messages", "Placed on hold: 1 message", "Released from hold: …", "Requeued: …"
    Rule("postsuper_summary", seq(rx(r"[A-Z][a-z]+(?: [a-z]+)*", "action"), ": ", rx(r"\d+", "count", as_int),
                                  rx(r" messages?", "rest")), (), ("postsuper",), known=True),
    # --- pickup --------------------------------------------------------------------------
    Rule("pickup_uid", seq("uid=", rx(r"\d+", "uid", as_int), " from=<", rx(r"[^>]*", "mail_from"), ">",
                           opt(" orig_id=", rx(QUEUE_ID, "orig_queue_id"))), ("uid=",), ("pickup",)),
    # --- delivery agents -----------------------------------------------------------------
    Rule(
        "delivery_status",
        seq("to=<", rx(r"[^>]*(?:>(?!, )[^>]*)*", "rcpt_to"), ">",
            rx(DELIVERY_KV, "kv", delivery_kv),
            # very old Postfix wrote "conn_use=2 delay=…" without a comma
            ", status=", rx(r"\S+", "status"), opt(" ", rx(r".*", "status_text"))),
        ("to=",), DELIVERY_AGENTS,
    ),
    # a delivery agent's notes on one host before its to= line, which carries the outcome: known
    Rule("delivery_connect_fail", seq("connect to ", namaddr("relay"), ": ", rx(r".*", "reason")),
         ("connect",), DELIVERY_AGENTS, known=True),
    Rule("delivery_host_said", seq("host ", namaddr("relay"), " said: ", smtp_reply()), ("host",),
         DELIVERY_AGENTS, known=True),
    Rule("delivery_refused_talk", seq("host ", namaddr("relay"), " refused to talk to me: ", smtp_reply()),
         ("host",), DELIVERY_AGENTS, known=True),
    Rule("delivery_lost", seq(rx(r"lost connection with|conversation with", "what"), " ", namaddr("relay"),
                              rx(r" .*", "rest")), ("lost", "conversation"), DELIVERY_AGENTS, known=True),
    Rule("delivery_starttls_offer", seq("Host offered STARTTLS: [", rx(r"[^\]]*", "relay_name"), "]"),
         ("Host",), DELIVERY_AGENTS, known=True),
    Rule("delivery_passing", seq("passing <", rx(r"[^>]*", "rcpt_to"), "> to transport=",
                                 rx(r"\S+", "transport")), ("passing",), known=True),
    # --- bounce --------------------------------------------------------------------------
    Rule("bounce_notification", seq(rx(r"sender|postmaster", "audience"), " ",
                                    rx(r"non-delivery|delay|delivery status|success", "kind"),
                                    " notification: ", rx(QUEUE_ID, "new_queue_id")),
         ("sender", "postmaster"), ("bounce",)),
    Rule("bounce_failed", seq("sender notification failed to ", rx(r".*", "rest")), ("sender",), ("bounce",),
         known=True),
    # --- postscreen ----------------------------------------------------------------------
    Rule("postscreen_connect", seq("CONNECT from ", bracket_addr(), " to ", bracket_addr("server")),
         ("CONNECT",), ("postscreen",)),
    Rule("postscreen_verdict", seq(rx(r"PASS NEW|PASS OLD|DISCONNECT|DENYLISTED|ALLOWLISTED|BLACKLISTED|"
                                      r"WHITELISTED|ALLOWLIST VETO|WHITELIST VETO", "verdict"), " ",
                                   bracket_addr()),
         ("PASS", "DISCONNECT", "DENYLISTED", "ALLOWLISTED", "BLACKLISTED", "WHITELISTED", "ALLOWLIST",
          "WHITELIST"), ("postscreen",)),
    # "PREGREET 14 after 0.08 from [ip]:port: EHLO x\\r\\n", "HANGUP after 0.42 from [ip]:port in tests
    # after SMTP handshake", "DNSBL rank 3 for [ip]:port", "COMMAND PIPELINING from [ip]:port after
    # EHLO: …", "DATA without valid RCPT from [ip]:port" (postscreen_early.c, _misc.c, _smtpd.c)
    Rule("postscreen_test",
         seq(rx(r"PREGREET|HANGUP|DNSBL rank|COMMAND (?:PIPELINING|TIME LIMIT|COUNT LIMIT|LENGTH LIMIT)|"
                r"NON-SMTP COMMAND|BARE NEWLINE|(?:DATA|BDAT) without valid RCPT", "test"),
             rx(r"[^\[]*", "detail"), bracket_addr(), rx(r".*", "rest")),
         ("PREGREET", "HANGUP", "DNSBL", "COMMAND", "NON-SMTP", "BARE", "DATA", "BDAT"), ("postscreen",)),
    # no queue-ID prefix and a lower-case stage: "reject: connect from [ip]:port: all screening ports busy"
    Rule("postscreen_busy", seq("reject: connect from ", bracket_addr(), ": ", rx(r".*", "reason")),
         ("reject",), ("postscreen",)),
    # once per client when compatibility_level < 3.6 leaves respectful_logging unset
    Rule("postscreen_compat_note", seq("using backwards-compatible default setting ", rx(r"\S+", "setting"),
                                       " for client ", bracket_addr()), ("using",), ("postscreen",),
         known=True),
    Rule("postscreen_cache", seq("cache ", rx(r".*", "rest")), ("cache",), ("postscreen", "verify"),
         known=True),
    Rule("dnsblog_listed", seq("addr ", rx(r"\S+", "client_address"), " listed by domain ",
                               rx(r"\S+", "dnsbl"), " as ", rx(r"\S+", "dnsbl_result")),
         ("addr",), ("dnsblog",)),
    # --- master, anvil, scache, tlsproxy, postfix-script ----------------------------------
    Rule("master_started", seq(rx(r"daemon started|reload", "what"), " -- version ", rx(r"[^,]+", "version"),
                               ", configuration ", rx(r".*", "config")), ("daemon", "reload"), ("master",),
         known=True),
    Rule("master_terminating", seq("terminating on signal ", rx(r"\d+", "signal", as_int)), ("terminating",),
         ("master",), known=True),
    Rule("master_process_exit", seq("warning: process ", rx(r"\S+", "path"), " pid ",
                                    rx(r"\d+", "child_pid", as_int), " ",
                                    rx(r"exit status|killed by signal", "how"), " ",
                                    rx(r"\d+", "code", as_int)), ("warning",), ("master",)),
    Rule("statistics", seq("statistics: ", rx(r".*", "rest")), ("statistics",), ("anvil", "scache"),
         known=True),
    Rule("postfix_script", rx(r"(?:starting|stopping|refreshing|waiting for) the Postfix mail system.*|"
                              r"Postfix is running.*|the Postfix mail system is .*", "what"),
         ("starting", "stopping", "refreshing", "waiting", "Postfix", "the"), ("postfix-script",),
         known=True),
    Rule("tlsproxy_conn", seq(rx(r"CONNECT|DISCONNECT", "verdict"), rx(r".*", "rest")),
         ("CONNECT", "DISCONNECT"), ("tlsproxy",), known=True),
    # --- known and ignored: recognised, counted, nothing to export (Rule.known) ----------------
    # TLS notes at smtp[d]_tls_loglevel 1-2 (tls_verify.c, tls_client.c, tls_server.c, tls_session.c)
    Rule("tls_note", rx(r"(?:[a-z]+ )?certificate verification failed for .*|"
                        r"SSL_(?:connect|set_fd) error (?:to|from) .*|"
                        r"(?:looking for|reloaded|save|remove) session .*|"
                        r"initializing the (?:client|server)-side TLS engine|"
                        r"setting up TLS connection (?:to|from) .*|Cannot start TLS: .*|"
                        r"(?:Server|server|Client|client) certificate could not be verified|"
                        r"TLS handshake failed for service=.*"),
         ("certificate", "server", "client", "SSL_connect", "SSL_set_fd", "looking", "reloaded", "save",
          "remove", "initializing", "setting", "Cannot", "Server", "Client", "TLS"), known=True),
    # the same, about one peer: "mx.example[192.0.2.1]:25: depth=0 verify=1 subject=…"
    Rule("tls_peer_note", rx(r"[^\s\[]*\[[^\]\s]*\](?::\d+)?: (?:depth=\d+ |verify=\d+|TLS cipher list |SNI "
                             r"hostname: |[Mm]atched |subject_CN=|re-using session |[Tt]rusted peer|"
                             r"[Uu]ntrusted peer|Trusted |Untrusted |Anonymous ).*"), known=True),
    # smtp.c/smtp_proto.c: "enabling PIX workarounds: disable_esmtp delay_dotcrlf for mx[192.0.2.1]:25"
    Rule("smtp_pix_workaround", rx(r"enabling PIX workarounds: .*"), ("enabling",), DELIVERY_AGENTS,
         known=True),
    Rule("smtpd_ehlo_discard", rx(r"discarding EHLO keywords: .*"), ("discarding",), SMTPD, known=True),
    # "-v" (verbose) daemons: "master_notify: status 1", "input attribute name: status", "request ignored"
    Rule("verbose", rx(r"input attribute (?:name|value): .*|send attr .*|request: \d+ \(.\)|request ignored|"
                       r"(?:start|done) (?:incoming|deferred|active|hold|corrupt) queue scan|"
                       r"(?:start|end) sorted recipient list|connection established|disconnect|"
                       r"connect to subsystem \S+|rewrite stream disconnect|wakeup \S+ after \d+ secs?|"
                       r"mynetworks: .*|process generation: .*|(?:start|end) move queue .*|"
                       r"recipient limit \d+|>>> .* <<<|[<>] [^\s\[]*\[[^\]\s]*\](?::\d+)?: .*|"
                       r"(?:Compiled against|Run-time linked against) Berkeley DB: .*|fsspace: .*|"
                       r"(?:before|after) [a-z_]+: .*|idle timeout -- exiting"),
         ("input", "send", "request", "start", "done", "end", "connection", "disconnect",
          "connect", "rewrite", "wakeup", "mynetworks", "process", "recipient", ">>>", "<", ">", "Compiled",
          "Run-time", "fsspace", "before", "after", "idle"), known=True),
    # "-v" start-up: every parameter the daemon read, "unknown_address_tempfail_action = defer_if_permit"
    Rule("verbose_parameter", rx(r"[a-z][a-z0-9_]* = .*"), known=True),
    # the same, from a function that names itself: "qmgr_scan_start: start deferred queue scan"
    Rule("verbose_function", rx(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+: .*|(?:private|public)/[\w.-]+ socket: .*"),
         known=True),
    # --- any daemon: diagnostics. Postfix's own warnings, errors, fatal and panic lines (rate
    # limits, hostnames that do not resolve, TLS library problems, lookup table trouble…): known
    Rule("diagnostic", seq(rx(r"warning|error|fatal|panic", "severity"), ": ", rx(r".*", "text")),
         ("warning", "error", "fatal", "panic"), known=True),
]
