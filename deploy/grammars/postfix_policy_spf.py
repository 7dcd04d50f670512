"""A user grammar (docs/operations.md, "Teaching it a line"): the verdict lines of an SPF policy
service that master.cf runs under Postfix's name, which the shipped Postfix grammar does not know:

    Nov 22 03:10:00 mx postfix/policy-spf[9003]: Policy action=PREPEND Received-SPF: pass (mx.example: ...)

Drop this file into a directory and run with ``--grammars DIR`` (or ship it in a package with a
``maillog2otel.grammars`` entry point). Its rules come after the shipped Postfix rules.
"""

from maillog2otel.grammars.common import Rule, rx, seq

MTA = "postfix"  # whose lines these are: the rules join that MTA's grammar

RULES = [
    Rule(
        "policy_spf",  # the rule's name: check and --logs (maillog2otel.rule) show it
        seq("Policy action=", rx(r"\S+", "action"), " ", rx(r".*", "text")),  # the line after "pid]: "
        ("Policy",),  # the message's first word(s) that can start this rule (fast dispatch)
        ("policy-spf",),  # the daemon(s): the last part of the program name (postfix/policy-spf)
    ),
]
