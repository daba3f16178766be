"""The probe pool: reads known before a check runs, done concurrently under two limits.

A *probe* is one read of one target (a GET, a query, a listing) whose function carries its
own client deadline. The pool runs probes on at most ``max_concurrency`` threads and never
more than ``per_target`` of one target at once, so a production server sees no burst from
us. Each target has one *gate*, its reachability probe: every other probe of that target
starts only after the gate passed, and when the gate fails they all take its error without
touching the target, so a hung target costs one deadline per run, not one per read.

Probes with the same ``(target, key)`` are one probe: a check that reads what the gate
already read (the health GET) takes the gate's answer. Among runnable probes the one with
the lowest ``priority`` (the index of the first check that needs it) goes first, so checks,
judged in pytest's order, rarely wait.

Nothing here knows pytest; ``fixtures/probes.py`` submits a run's probes and hands checks
their results.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_MAX_CONCURRENCY = 32
DEFAULT_PER_TARGET = 2


@dataclass(frozen=True)
class Timing:
    """How long a probe took: ``elapsed_s`` is its own I/O, ``waited_s`` the time it spent
    queued before a thread and its target had room (never part of a response time)."""

    name: str
    elapsed_s: float
    waited_s: float

    def line(self) -> str:
        return (f"probe {self.name}: {self.elapsed_s * 1000:.1f} ms "
                f"(queued {self.waited_s * 1000:.1f} ms)")


@dataclass(eq=False)
class Probe(Generic[T]):
    """One submitted read and, once it ran, its value or its exception."""

    target: str
    key: Hashable
    name: str
    fn: Callable[[], T]
    priority: int
    submitted: float = field(default_factory=time.monotonic)
    _done: threading.Event = field(default_factory=threading.Event)
    _value: Any = None
    _error: BaseException | None = None
    timing: Timing | None = None

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> T:
        """The probe's value, waiting for it; its exception is raised here."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def error(self) -> BaseException | None:
        self._done.wait()
        return self._error

    def _finish(self, value: Any, error: BaseException | None, timing: Timing | None) -> None:
        self._value, self._error, self.timing = value, error, timing
        self._done.set()


@dataclass
class _Target:
    """A target's probes: waiting for its gate, ready to run, and running."""

    gate: Probe[Any] | None = None
    blocked: list[Probe[Any]] = field(default_factory=list)  # waiting for the gate
    ready: list[tuple[int, int, Probe[Any]]] = field(default_factory=list)  # a heap
    running: int = 0


class ProbePool:
    """Runs probes on a bounded set of threads, at most ``per_target`` per target.

    Usage::

        pool = ProbePool(max_concurrency=32, per_target=2)
        pool.gate("api", ("GET", "/health"), client.reachable, priority=0)
        response = pool.submit("api", ("GET", "/metrics"), fetch, priority=1).result()
        pool.close()
    """

    def __init__(self, max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
                 per_target: int = DEFAULT_PER_TARGET) -> None:
        if max_concurrency < 1 or per_target < 1:
            raise ValueError("concurrency limits must be at least 1")
        self.max_concurrency = max_concurrency
        self.per_target = per_target
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._probes: dict[tuple[str, Hashable], Probe[Any]] = {}
        self._targets: dict[str, _Target] = {}
        # Targets with a ready probe and room to run it, by the priority of that probe.
        self._runnable: list[tuple[int, int, str]] = []
        self._queued: set[str] = set()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._unfinished = 0
        self._closed = False
        self._holding = 0
        self._all_done = threading.Condition(self._lock)

    # -- submitting ------------------------------------------------------------------------

    def gate(self, target: str, key: Hashable, fn: Callable[[], T], *, name: str = "",
             priority: int = 0) -> Probe[T]:
        """Submit ``target``'s reachability probe; the target's other probes wait for it."""
        with self._lock:
            state = self._targets.setdefault(target, _Target())
            if state.gate is not None:
                return state.gate
            probe = self._existing(target, key, priority)
            if probe is None:
                probe = self._new(target, key, fn, name, priority)
                self._make_ready(state, probe)
            state.gate = probe
            return probe

    def submit(self, target: str, key: Hashable, fn: Callable[[], T], *, name: str = "",
               priority: int = 0) -> Probe[T]:
        """Submit one read of ``target``; the same ``(target, key)`` is read once."""
        with self._lock:
            existing = self._existing(target, key, priority)
            if existing is not None:
                return existing
            state = self._targets.setdefault(target, _Target())
            probe = self._new(target, key, fn, name, priority)
            gate = state.gate
            if gate is None or (gate.done() and gate._error is None):
                self._make_ready(state, probe)
            elif gate.done():
                self._fail_from_gate(probe, gate)
            else:
                state.blocked.append(probe)
            return probe

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Submit many probes at once: no thread starts until the block ends, so the
        submitting thread does not compete with the first probes for the interpreter."""
        with self._lock:
            self._holding += 1
        try:
            yield
        finally:
            with self._lock:
                self._holding -= 1
                while self._runnable and len(self._threads) < self.max_concurrency and \
                        self._idle < len(self._runnable):
                    self._start_thread()
                self._wake.notify_all()

    def wait_idle(self) -> None:
        """Block until every submitted probe has finished (before sequential sampling)."""
        with self._lock:
            while self._unfinished:
                self._all_done.wait()

    def close(self) -> None:
        """Stop the threads; probes still queued are dropped, running ones abandoned (their
        threads are daemons that end at their own deadline)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()

    # -- internals (called with the lock held) ---------------------------------------------

    def _existing(self, target: str, key: Hashable, priority: int) -> Probe[Any] | None:
        probe = self._probes.get((target, key))
        if probe is not None and priority < probe.priority and not probe.done():
            probe.priority = priority  # takes effect when it is next queued
        return probe

    def _new(self, target: str, key: Hashable, fn: Callable[[], Any], name: str,
             priority: int) -> Probe[Any]:
        probe: Probe[Any] = Probe(target, key, name or str(key), fn, priority)
        self._probes[(target, key)] = probe
        self._unfinished += 1
        return probe

    def _make_ready(self, state: _Target, probe: Probe[Any]) -> None:
        heapq.heappush(state.ready, (probe.priority, next(self._seq), probe))
        self._queue_target(probe.target, state)
        self._grow()
        self._wake.notify()

    def _queue_target(self, target: str, state: _Target) -> None:
        if state.ready and state.running < self.per_target and target not in self._queued:
            heapq.heappush(self._runnable, (state.ready[0][0], next(self._seq), target))
            self._queued.add(target)

    def _grow(self) -> None:
        if not self._holding and self._idle == 0 and len(self._threads) < self.max_concurrency:
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"opsverify-probe-"
                                  f"{len(self._threads) + 1}", daemon=True)
        self._threads.append(thread)
        self._idle += 1
        thread.start()

    def _take(self) -> Probe[Any] | None:
        while not self._closed:
            if self._runnable:
                _, _, target = heapq.heappop(self._runnable)
                self._queued.discard(target)
                state = self._targets[target]
                if not state.ready or state.running >= self.per_target:
                    continue
                _, _, probe = heapq.heappop(state.ready)
                state.running += 1
                self._queue_target(target, state)
                return probe
            self._wake.wait()
        return None

    def _fail_from_gate(self, probe: Probe[Any], gate: Probe[Any]) -> None:
        probe._finish(None, gate._error, Timing(probe.name, 0.0, 0.0))
        self._unfinished -= 1

    def _finished(self, probe: Probe[Any]) -> None:
        state = self._targets[probe.target]
        state.running -= 1
        self._unfinished -= 1
        if state.gate is probe:
            blocked, state.blocked = state.blocked, []
            for waiting in blocked:
                if probe._error is None:
                    heapq.heappush(state.ready, (waiting.priority, next(self._seq), waiting))
                else:
                    self._fail_from_gate(waiting, probe)
            if state.ready:
                self._grow()
        self._queue_target(probe.target, state)
        self._wake.notify()
        if not self._unfinished:
            self._all_done.notify_all()

    def _work(self) -> None:
        while True:
            with self._lock:
                probe = self._take()
                if probe is None:
                    return
                self._idle -= 1
                if self._runnable:
                    self._grow()
            started = time.monotonic()
            value: Any = None
            error: BaseException | None = None
            try:
                value = probe.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the check that reads it
                error = exc
            ended = time.monotonic()
            probe._finish(value, error,
                          Timing(probe.name, ended - started, started - probe.submitted))
            with self._lock:
                self._idle += 1
                self._finished(probe)

