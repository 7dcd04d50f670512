"""Per-MTA pyparsing grammars: the source of truth for every log line maillog2otel understands.

Installed as ``maillog2otel.grammars``. Each module (``postfix``, ``exim``, ``haraka``) declares
``MTA`` and ``RULES``; ``common`` holds the small element factories and the compiler that turns a
rule into an equivalent ``re`` pattern for the hot path.
"""
