"""Hostile input: framing and every grammar take random bytes, invalid UTF-8, NULs, huge and
truncated lines, one MTA's lines under another's name, edge years and zones, and queue IDs reused
out of order, and never raise; every line is counted (lines == parsed + known + foreign + unparsed); the
state stays bounded. A 1M-line garbage run completes (slow). Files: a FIFO and a pipe from
process substitution work; an OTLP collector that fails never gets its API key printed."""

from __future__ import annotations

import importlib.util
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, OtlpHttpReceiver, clean_env, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maillog2otel import mtas
from maillog2otel.config import build_settings
from maillog2otel.correlate.base import CorrelateSettings
from maillog2otel.export.base import NullSink
from maillog2otel.framing import Framer, LocalClock, YearGuess
from maillog2otel.pipeline import Pipeline, backfill_records
from maillog2otel.sources import SourceStats


def _fixture_lines() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for mta_dir in sorted(p for p in FIXTURES.iterdir() if p.is_dir() and p.name in mtas.REGISTRY):
        lines: list[str] = []
        for f in sorted(mta_dir.iterdir()):
            if f.suffix in (".log", ".mainlog", ".rejectlog"):
                lines += f.read_text(errors="replace").splitlines()
        out[mta_dir.name] = lines
    return out


FIXTURE_LINES = _fixture_lines()
ALL_LINES = [line for lines in FIXTURE_LINES.values() for line in lines]
_ENVELOPE = re.compile(r"^(?:\S+ +\d+ [\d:]+ \S+ \S+?: "
                       r"|\d{4}-\d\d-\d\d[T ][\d:.]+(?:Z|[+-]\d\d:?\d\d)? (?:\S+ \S+?: )?)")
BODIES = [_ENVELOPE.sub("", line, count=1) for line in ALL_LINES]
ENVELOPES = [
    "Nov 22 02:59:17 mx postfix/smtpd[9180]: ", "Dec 31 23:59:59 mx postfix/qmgr[2]: ",
    "Jan  1 00:00:00 mx postfix/smtp[3]: ", "Feb 29 12:00:00 mx postfix/cleanup[4]: ",
    "Jan 01 00:00:00 mx postfix-out/submission/smtpd[5]: ", "Mar 31 02:30:00 mx postfix/smtpd[6]: ",
    "2026-11-22T02:59:17.123456+14:00 mx postfix/smtpd[7]: ", "1970-01-01T00:00:00Z mx postfix/qmgr[8]: ",
    "9999-12-31T23:59:59.999999999-12:00 mx postfix/smtpd[9]: ", "2026-13-45T25:61:61Z mx postfix/smtpd[1]: ",
    "0001-01-01T00:00:00+00:00 mx exim[1]: ", "2026-11-22 02:59:17 ", "2026-11-22 02:59:17.123 +0000 [123] ",
    "1969-12-31 23:59:59 ", "2026-11-22T02:59:17.123Z [INFO] [-] [core] ", "2026-11-22T02:59:17Z ",
    "Nov 22 02:59:17 mx haraka[1]: ", "Nov 22 02:59:17 mx exim[77]: ", "Nov 22 02:59:17 mx dovecot[1]: ",
    "", "Nov 22 02:59:17 ", "Nov 22 02:59:17 mx ", "<13>Nov 22 02:59:17 mx postfix/smtpd[1]: ",
]


def new_pipeline(mta: str = "auto", correlate: CorrelateSettings | None = None) -> tuple[Pipeline, Framer]:
    s = build_settings(env={}, exporter="none", timezone="UTC", year=2026, hostname="mx", mta=mta)
    p = Pipeline(s, NullSink(), NullSink(), correlate=correlate)
    p.traces_on = p.metrics_on = True  # build spans and points too: their code runs on the garbage
    return p, Framer(stream=0, clock=LocalClock("UTC"), year=YearGuess(2026, ref_month=12), default_host="mx")


class TooSlow(AssertionError):
    pass


def _too_slow(_signum: int, _frame: object) -> None:
    raise TooSlow("one batch of lines took over the time budget: a super-linear pattern?")


def feed(texts: list[str], mta: str = "auto", correlate: CorrelateSettings | None = None,
         budget_s: float = 20.0) -> Pipeline:
    """Feed, tick and finish; a hang becomes a failure after ``budget_s`` (not a stuck suite)."""
    p, framer = new_pipeline(mta, correlate)
    old = signal.signal(signal.SIGALRM, _too_slow)
    signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        for i, text in enumerate(texts):
            rec = framer.frame(text, i)
            if rec is None:
                p.unframed(text)
            else:
                p.feed(rec)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    p.tick((p.counters.last_ns or 0) + 10**13)
    p.finish()
    c = p.counters
    assert c.lines == len(texts) == c.parsed + c.known + c.foreign + c.unparsed
    return p


def mutate(text: str, rnd: random.Random) -> str:
    kind = rnd.randrange(7)
    if kind == 0 and text:
        return text[: rnd.randrange(len(text))]  # truncated
    if kind == 1:
        i = rnd.randrange(len(text) + 1)
        junk = rnd.choice(["\x00", "\ufffd", "<", ">", "[", "]", "=", ":", " ", "\t", "@", "\\"])
        return text[:i] + junk + text[i:]
    if kind == 2:
        return text.replace(" ", "  ", 1)
    if kind == 3:
        return re.sub(r"\d", lambda _: str(rnd.randrange(10)), text)
    if kind == 4:
        return re.sub(r"\b[0-9A-F]{6,}\b", "ABCDE0", text)  # queue IDs reused
    if kind == 5:
        return text + rnd.choice("x<= ;@") * rnd.choice([1, 1000, 20_000])
    return text


lines_strategy = st.lists(
    st.one_of(
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
        st.tuples(st.sampled_from(ENVELOPES), st.sampled_from(BODIES), st.randoms(use_true_random=False))
        .map(lambda t: t[0] + mutate(t[1], t[2])),
        st.tuples(st.sampled_from(ALL_LINES), st.randoms(use_true_random=False))
        .map(lambda t: mutate(t[0], t[1])),
        st.tuples(st.sampled_from(ENVELOPES), st.text(max_size=120)).map("".join),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines_strategy, st.sampled_from(["auto", "postfix", "exim", "haraka"]))
def test_no_exception_and_every_line_counted(texts: list[str], mta: str) -> None:
    feed(texts, mta)


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(sorted(FIXTURE_LINES)))
def test_ids_reused_and_lines_out_of_order(rnd: random.Random, mta: str) -> None:
    lines = list(FIXTURE_LINES[mta])
    rnd.shuffle(lines)
    lines += rnd.sample(lines, min(20, len(lines)))  # the same lines again: IDs, pids, ports reused
    lines = [re.sub(r"\b[0-9A-F]{10}\b", rnd.choice(["ABCDE01234", "ABCDE05678"]), x) for x in lines]
    feed(lines)


# after "=" and "/": the key=value and a/b/c numbers the correlators convert
_NUMBER_AT = re.compile(r"(?<=[=/])\d+(?:\.\d+)?")
NUMBER_MANGLES = {
    "superscript": lambda m: "\u00b2" + m[0],  # "²".isdigit() is true, int("²") raises
    "arabic-indic": lambda m: "\u0663" + m[0],  # int() reads it: ٣
    "fullwidth": lambda m: "\uff17" + m[0],
    "nan": lambda m: "nan",  # float() reads these, int() of them raises
    "inf": lambda m: "inf",
    "huge": lambda m: "1e999",
}


@pytest.mark.parametrize("mangle", sorted(NUMBER_MANGLES))
def test_numbers_that_are_not_plain_digits(mangle: str) -> None:
    """Every number in every fixture line's body made into one that the usual tests let through
    and ``int()`` or ``float()`` then refuse or read as NaN or infinity: S=²2157, time=nan."""
    for mta, lines in FIXTURE_LINES.items():
        texts = []
        for line in lines:
            head = _ENVELOPE.match(line)
            cut = head.end() if head else 0
            texts.append(line[:cut] + _NUMBER_AT.sub(NUMBER_MANGLES[mangle], line[cut:]))
        feed(texts, mta)


def test_one_mtas_lines_under_another_mtas_name() -> None:
    """Exim and Haraka bodies under Postfix envelopes and the reverse, with every MTA loaded."""
    texts = []
    for mta, lines in FIXTURE_LINES.items():
        bodies = [_ENVELOPE.sub("", x, count=1) for x in lines]
        for env in ENVELOPES:
            if mta not in env:
                texts += [env + b for b in bodies[:150]]
    for mta in ("auto", "postfix", "exim", "haraka"):
        p = feed(texts, mta)
        assert p.counters.unparsed + p.counters.foreign > 0


def test_megabyte_lines_take_linear_time() -> None:
    """1 MB lines of every MTA (long words, runs of <, =, spaces): each one read in well under a
    second, never hours (key=value and <address> scans were quadratic once)."""
    rnd = random.Random(5)
    picked = [line for lines in FIXTURE_LINES.values() for line in random.Random(1).sample(lines, 8)]
    fills = [rnd.choice(["x", "<", "=", " ", "a=", "<x", "1.-"]) for _ in picked]
    texts = [line + fill * ((1 << 20) // len(fill)) for line, fill in zip(picked, fills, strict=True)]
    p = feed(texts, budget_s=60)
    assert p.counters.lines == len(texts)


def test_log_time_that_jumps_decades_ahead_stays_bounded() -> None:
    """One line stamped in 9999 among 2026 ones: a few metric points, not one per empty minute
    of 8000 years (that loop never ended)."""
    lines = FIXTURE_LINES["postfix"][:40]
    texts = [*lines[:20], "9999-11-22T02:59:17Z mx postfix/smtpd[9180]: connect from unknown[127.0.0.9]:1",
             *lines[20:], "1970-01-01T00:00:00Z mx postfix/qmgr[1]: ABCDEF0123: removed"]
    p = feed(texts, budget_s=10)
    assert p.aggregator.time_jumps >= 1 and p.metric_sink.stats.points < 5000


def test_huge_lines_nuls_and_invalid_utf8_through_the_file_reader(tmp_path: Path) -> None:
    rnd = random.Random(7)
    raw = [line.encode() for line in FIXTURE_LINES["postfix"][:50]]
    raw += [b"Nov 22 02:59:17 mx postfix/smtpd[1]: " + b"\x00" * 5000, b"\xff\xfe\xc3\x28" * 100,
            b"Nov 22 02:59:17 mx postfix/smtpd[1]: connect from " + b"A" * (2 << 20),  # over 1 MiB
            bytes(rnd.randrange(256) for _ in range(5000)).replace(b"\n", b""), b"", b"\r", b"\x1f\x8b\x08"]
    path = tmp_path / "hostile.log"
    path.write_bytes(b"\n".join(raw))  # no newline at the very end: a truncated last line
    s = build_settings(env={}, exporter="none", timezone="UTC", year=2026)
    p = Pipeline(s, NullSink(), NullSink())
    stats = SourceStats()
    for rec in backfill_records([str(path)], s, p, stats):
        p.feed(rec)
    p.finish()
    c = p.counters
    assert stats.lines == c.lines == len(raw) == c.parsed + c.known + c.foreign + c.unparsed
    assert stats.oversized == 1 and stats.invalid_utf8 >= 2 and not stats.errors


def test_state_stays_bounded() -> None:
    """Connections that never end, from ever new pids, and unparsed shapes without end: every
    table keeps to its cap and counts what it evicted."""
    cap = 500
    texts = []
    for i in range(3000):
        texts.append(f"Nov 22 02:{i // 60 % 60:02d}:{i % 60:02d} mx postfix/smtpd[{10000 + i}]: connect from "
                     f"unknown[10.0.{i // 256 % 256}.{i % 256}]:{1024 + i}")
        texts.append(f"Nov 22 02:{i // 60 % 60:02d}:{i % 60:02d} mx postfix/smtpd[{10000 + i}]: "
                     f"{0xA00000 + i:X}: client=unknown[10.0.0.1]:{1024 + i}")
        texts.append(f"Nov 22 02:{i // 60 % 60:02d}:{i % 60:02d} mx postfix/qmgr[2]: {0xB00000 + i:X}: "
                     "from=<a@b.test>, size=100, nrcpt=1 (queue active)")  # messages that never leave
        texts.append(f"Nov 22 02:{i // 60 % 60:02d}:{i % 60:02d} mx postfix/prog{i}[1]: shape {i} "
                     + "x " * (i % 97))
    p, framer = new_pipeline(correlate=CorrelateSettings(max_sessions=cap, max_messages=cap))
    p.collect_shapes = True
    for i, text in enumerate(texts):
        rec = framer.frame(text, i)
        assert rec is not None
        p.feed(rec)
        corr = p.stages["postfix"][1]
        assert len(corr.sessions) <= cap and len(corr.messages) <= cap
    assert len(p.counters.shapes) <= 500 and len(p.counters.by_program) <= 1001
    assert p.counters.by_program[("postfix", "(other programs)")][2] >= 3000 - 1000
    stats = p.correlator_stats()["postfix"]
    assert stats.get("session_evicted", 0) >= 3000 - cap and stats.get("message_evicted", 0) >= 3000 - cap
    assert len(p.aggregator.series) <= p.aggregator.max_series


GARBAGE = textwrap.dedent("""
    import random, sys, time
    sys.path.insert(0, {root!r})
    from maillog2otel.config import build_settings
    from maillog2otel.runner import run_backfill

    def hwm_mb():  # this process's own peak (ru_maxrss would keep the forking parent's size)
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) // 1024

    n, path = int(sys.argv[1]), sys.argv[2]
    rnd = random.Random(1)
    words = ["connect", "from", "unknown[10.0.0.1]:25", "to=<a@b>", "status=sent", "NOQUEUE:", "reject:",
             "ABCDEF1234:", "removed", "\\x00", "\\ufffd", "<", ">", "=", "[", "]", "client=", "disconnect"]
    envs = ["Nov 22 02:59:17 mx postfix/smtpd[{{}}]: ", "Nov 22 02:59:17 mx postfix/qmgr[{{}}]: ",
            "2026-11-22 02:59:17 ", "2026-11-22T02:59:17.123Z [INFO] [-] [core] ",
            "Nov 22 02:59:17 mx cron[{{}}]: ", ""]
    t0 = time.monotonic()
    pool = [" ".join(rnd.choice(words) for _ in range(i % 13)) for i in range(4999)]  # 4999: prime
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
        for i in range(0, n, 1000):
            fh.write("".join(envs[j % len(envs)].format(j % 50) + pool[j % 4999] + "\\n"
                             for j in range(i, min(n, i + 1000))))
    gen = time.monotonic() - t0
    s = build_settings(env={{}}, exporter="none", timezone="UTC", year=2026, quiet=True)
    t0 = time.monotonic()
    code = run_backfill([path], s)
    print(code, n, round(gen, 2), round(time.monotonic() - t0, 2),
          hwm_mb())
""")


@pytest.mark.slow
def test_a_million_lines_of_garbage(tmp_path: Path) -> None:
    script = tmp_path / "garbage.py"
    script.write_text(GARBAGE.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, str(script), "1000000", str(tmp_path / "garbage.log")],
                          capture_output=True, timeout=300, check=False, env=clean_env())
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    report = proc.stdout.decode().strip().splitlines()[-1]
    code, n, gen_s, run_s, rss_mb = report.split()
    assert code == "0" and n == "1000000", (report, proc.stderr.decode()[-2000:])
    print(f"1M garbage lines: generated in {gen_s}s, read in {run_s}s, peak RSS {rss_mb} MB")
    assert int(rss_mb) < 400, report  # bounded: not the file's size times anything
    assert float(run_s) < 150, report  # ~30 s on an idle CI core (25-35k lines/s); generous for a loaded one


def test_a_fifo_and_process_substitution_are_read(tmp_path: Path) -> None:
    log = FIXTURES / "postfix" / "port-logging.log"
    fifo = tmp_path / "mail.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(log.read_bytes()), daemon=True)
    writer.start()
    proc = run_cli("backfill", "--timezone", "UTC", "--exporter", "none", str(fifo), timeout=60)
    writer.join(10)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "107 read: 102 understood, 5 known" in proc.stderr.decode()
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m maillog2otel backfill --timezone UTC "
                           f"--exporter none <(gzip -c {log})"], capture_output=True, timeout=60, check=False,
                          env=clean_env(), cwd=ROOT)
    assert proc.returncode == 0 and b"107 read: 102 understood, 5 known" in proc.stderr, proc.stderr


def test_api_keys_never_shown_when_the_collector_fails(otlp_http: OtlpHttpReceiver) -> None:
    otlp_http.fail_next = 10**6
    env = clean_env(OTEL_EXPORTER_OTLP_HEADERS="api-key=HDR-SECRET-1,x-honeycomb-team=HDR-SECRET-2",
                    OTEL_EXPORTER_OTLP_TRACES_HEADERS="authorization=Basic%20SIG-SECRET-3")
    for extra in ([], ["--logs"], ["--exporter", "otlp", "--no-traces"]):
        proc = run_cli("backfill", "--timezone", "UTC", "--retry-for", "1", "--endpoint",
                       otlp_http.endpoint.replace("http://", "http://u:URL-SECRET-4@"), *extra,
                       str(FIXTURES / "postfix" / "port-logging.log"), env=env)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and b"could not export" in out, out
        for secret in (b"HDR-SECRET-1", b"HDR-SECRET-2", b"SIG-SECRET-3", b"URL-SECRET-4"):
            assert secret not in out, (extra, secret)
    assert otlp_http.requests >= 3


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed (optional: "
                    "tests/run.sh tries pip install atheris)")
def test_atheris_over_framing_and_grammars(tmp_path: Path) -> None:
    """Coverage-guided fuzzing for a bounded number of runs; a crash fails the test."""
    harness = tmp_path / "fuzz_lines.py"
    harness.write_text(textwrap.dedent(f"""
        import sys
        import atheris
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(ROOT / "tests")!r})
        with atheris.instrument_imports():
            import maillog2otel.framing, maillog2otel.parse, maillog2otel.correlate.postfix
        from test_fuzz import feed

        def one(data: bytes) -> None:
            feed(data.decode("utf-8", "replace").split("\\n"))

        atheris.Setup(sys.argv, one)
        atheris.Fuzz()
    """))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, line in enumerate(ALL_LINES[::25]):
        (corpus / f"seed{i}").write_text(line)
    proc = subprocess.run([sys.executable, str(harness), "-runs=400", "-max_len=1024", "-timeout=20",
                           str(corpus)], capture_output=True, timeout=240, check=False, cwd=tmp_path,
                          env=clean_env())
    tail = proc.stderr.decode(errors="replace")[-3000:]
    assert proc.returncode == 0, tail
    assert re.search(r"Done \d+ runs", tail), tail
