"""What every correlator shares: settings, the grace queue for closed sessions, and bounded
tables that expire in log time and count what they evict."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from maillog2otel.records import Event, Output

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class CorrelateSettings:
    # lines that follow a close (qmgr, Exim's "no MAIL" ~0.2 s later) still belong to it; short,
    # because a live tail exports a connection only after it (2 s latency target)
    grace_ns: int = 1 * NS
    session_idle_ns: int = 3600 * NS  # an open session with no line for this long is given up
    message_retention_ns: int = 7 * 86400 * NS  # deferred mail keeps its trace this long (≥ 6 days)
    max_sessions: int = 100_000
    max_messages: int = 500_000
    # False when no span is exported (--no-traces, --exporter none): a connection then carries
    # only what metrics read (command counts, times), not the events the span would have
    span_events: bool = True
    # False when nothing reads a trace or span ID (no spans, no --logs, a backfill: tail's saved
    # state must keep them for a restart with other options): the correlator skips hashing them
    span_ids: bool = True


@dataclass(slots=True)
class Stats:
    """What a correlator gave up on, by reason; reported in the summary and ``check``."""

    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n


class Correlator(Protocol):
    mta: str
    stats: Stats

    def feed(self, ev: Event) -> list[Output]: ...
    def tick(self, now_ns: int) -> list[Output]: ...
    def finish(self) -> list[Output]: ...
    def open_counts(self) -> dict[str, int]: ...
    def oldest_open_ns(self) -> int | None: ...
    def save_state(self) -> dict[str, Any]: ...
    def load_state(self, state: dict[str, Any]) -> None: ...


K = TypeVar("K")
V = TypeVar("V")


class Table(Generic[K, V]):
    """Insertion-ordered map with a size cap: the oldest entry goes first, and is counted."""

    def __init__(self, cap: int, stats: Stats, name: str) -> None:
        self._d: OrderedDict[K, V] = OrderedDict()
        self.cap, self.stats, self.name = cap, stats, name
        self.get = self._d.get  # looked up on most lines: the dict's own method, no wrapper call

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: K) -> bool:
        return key in self._d

    def put(self, key: K, value: V) -> V | None:
        """Insert; returns an entry evicted to stay under the cap, if any."""
        self._d[key] = value
        self._d.move_to_end(key)
        if len(self._d) > self.cap:
            _, old = self._d.popitem(last=False)
            self.stats.bump(f"{self.name}_evicted")
            return old
        return None

    def touch(self, key: K) -> None:
        self._d.move_to_end(key)

    def pop(self, key: K) -> V | None:
        return self._d.pop(key, None)

    def oldest(self) -> V | None:
        return next(iter(self._d.values()), None)

    def values(self) -> Iterator[V]:
        return iter(list(self._d.values()))

    def items(self) -> list[tuple[K, V]]:
        return list(self._d.items())


class Grace(Generic[V]):
    """Closed sessions wait here ``grace_ns`` of log time for their trailing lines."""

    def __init__(self) -> None:
        self._q: deque[tuple[int, V]] = deque()
        self.queue = self._q  # (due, item), oldest first: read-only for callers on a hot path

    def __len__(self) -> int:
        return len(self._q)

    def push(self, due_ns: int, item: V) -> None:
        self._q.append((due_ns, item))

    def due(self, now_ns: int) -> Iterator[V]:
        q = self._q
        while q and q[0][0] <= now_ns:
            yield q.popleft()[1]

    def drain(self) -> Iterator[V]:
        while self._q:
            yield self._q.popleft()[1]

    def items(self) -> list[V]:
        return [v for _, v in self._q]

    def entries(self) -> list[tuple[int, V]]:
        return list(self._q)
