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

A probe that could not be evaluated may be tried again (:class:`Retry`): only for an
exception its policy calls retryable (an unreachable target, never an answer), after a
backoff spent off the threads, and never past the policy's total bound. A retried gate
retries before its dependants take its error; they wait for its last attempt.

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
from typing import Any, Generic, Protocol, TypeVar

# The retry policy and the timing record (opsverify/probe_timing.py), re-exported.
from opsverify.probe_timing import ATTEMPT_GRACE_S as ATTEMPT_GRACE_S
from opsverify.probe_timing import Retry as Retry
from opsverify.probe_timing import Timing as Timing

T = TypeVar("T")

DEFAULT_MAX_CONCURRENCY = 32
DEFAULT_PER_TARGET = 2
# Threads start as probes need them: this many at once, more only while a probe has been
# running for GROW_AFTER_S (its target is slow or hung, so another thread can overlap it).
# Probes of fast targets are CPU, and threads beyond a few only share one interpreter lock
# with the checks: 32 threads made a 1,000-target run on loopback slower than 4.
EAGER_THREADS = 4
GROW_AFTER_S = 0.01


class Receiver(Protocol):
    """The parent's end of a probe process (:mod:`opsverify.probe_process`)."""

    def receive(self, until: Probe[Any] | None, *, block: bool) -> None:
        """Finish the handed-off probes whose results have come: with ``block``, until
        ``until`` is done (None: every one), else only what is there now."""


@dataclass(eq=False)
class Probe(Generic[T]):
    """One submitted read and, once it ran, its value or its exception."""

    target: str
    key: Hashable
    name: str
    fn: Callable[[], T]
    priority: int
    retry: Retry | None = None
    submitted: float = field(default_factory=time.monotonic)
    attempts: int = 0
    _first_started: float = 0.0
    _earlier: list[str] = field(default_factory=list)
    _last_error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _value: Any = None
    _error: BaseException | None = None
    _started: float = 0.0  # this attempt's start, while it runs
    _wait: Callable[[Probe[Any]], object] = lambda probe: probe._done.wait()  # its pool's
    _elsewhere: bool = False  # run by a probe process (probe_process.py), not these threads
    timing: Timing | None = None

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> T:
        """The probe's value, waiting for it; its exception is raised here."""
        while not self._done.is_set():
            self._wait(self)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def error(self) -> BaseException | None:
        while not self._done.is_set():
            self._wait(self)
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
        self._running: set[Probe[Any]] = set()
        self._idle = 0
        self._unfinished = 0
        self._closed = False
        self._holding = 0
        self._all_done = threading.Condition(self._lock)
        # Probes waiting out a retry's backoff, by when they may run again.
        self._delayed: list[tuple[float, int, Probe[Any]]] = []
        # Told of every probe that finishes (outside or inside the lock): how a probe
        # process hears what to send back.
        self.finished: Callable[[Probe[Any]], None] = lambda probe: None
        # Where the results of handed-off probes come from (a probe process's pipe), read by
        # whoever waits for one: there is no reader thread to take the interpreter lock
        # from the checks each time a result arrives.
        self.receiver: Receiver | None = None

    # -- submitting ------------------------------------------------------------------------

    def gate(self, target: str, key: Hashable, fn: Callable[[], T], *, name: str = "",
             priority: int = 0, retry: Retry | None = None) -> Probe[T]:
        """Submit ``target``'s reachability probe; the target's other probes wait for it
        (and for its retries: they take the error of its last attempt)."""
        with self._lock:
            state = self._targets.setdefault(target, _Target())
            if state.gate is not None:
                return state.gate
            probe = self._existing(target, key, priority)
            if probe is None:
                probe = self._new(target, key, fn, name, priority, retry)
                self._make_ready(state, probe)
            state.gate = probe
            return probe

    def submit(self, target: str, key: Hashable, fn: Callable[[], T], *, name: str = "",
               priority: int = 0, retry: Retry | None = None) -> Probe[T]:
        """Submit one read of ``target``; the same ``(target, key)`` is read once."""
        with self._lock:
            existing = self._existing(target, key, priority)
            if existing is not None:
                return existing
            state = self._targets.setdefault(target, _Target())
            probe = self._new(target, key, fn, name, priority, retry)
            self._place(state, probe)
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
                self._grow()
                self._wake.notify_all()

    def release(self) -> None:
        """End every :meth:`held` block at once (in a probe process, whose copy of the
        block never ends)."""
        with self._lock:
            self._holding = 0
            self._grow()
            self._wake.notify_all()

    def wait_idle(self) -> None:
        """Block until every submitted probe has finished (before sequential sampling)."""
        receiver = self.receiver
        if receiver is not None:
            receiver.receive(None, block=True)  # everything handed off
        with self._lock:
            while self._unfinished:
                self._all_done.wait()

    def queued(self) -> list[Probe[Any]]:
        """The probes no thread has started yet (all of them, inside :meth:`held`)."""
        with self._lock:
            return [p for p in self._probes.values() if not p.done() and not p._elsewhere
                    and p not in self._running and p.attempts == 0]

    def hand_off(self, probes: list[Probe[Any]]) -> None:
        """These queued probes run elsewhere (a probe process): no thread here takes them,
        and each counts as running against its target until :meth:`complete` or
        :meth:`take_back`. Probes submitted later still run here, after those gates."""
        with self._lock:
            for probe in probes:
                probe._elsewhere = True
                self._targets[probe.target].running += 1
            self._requeue(lambda probe: not probe._elsewhere)

    def keep_only(self, probes: list[Probe[Any]]) -> None:
        """The other side of :meth:`hand_off`, in the probe process: only these run."""
        with self._lock:
            mine = set(probes)
            self._requeue(lambda probe: probe in mine)

    def complete(self, probe: Probe[Any], value: Any, error: BaseException | None,
                 timing: Timing | None) -> None:
        """A handed-off probe's result arrived."""
        with self._lock:
            if probe.done():
                return
            probe._elsewhere = False
            probe._finish(value, error, timing)
            self._finished(probe)

    def take_back(self, probe: Probe[Any]) -> None:
        """A handed-off probe whose result could not come back (the probe process ended,
        or its value cannot cross a pipe): it runs here after all."""
        with self._lock:
            if probe.done() or not probe._elsewhere:
                return
            probe._elsewhere = False
            state = self._targets[probe.target]
            state.running -= 1
            self._place(state, probe)

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
             priority: int, retry: Retry | None) -> Probe[Any]:
        probe: Probe[Any] = Probe(target, key, name or str(key), fn, priority, retry)
        probe._wait = self._wait
        self._probes[(target, key)] = probe
        self._unfinished += 1
        return probe

    def _place(self, state: _Target, probe: Probe[Any]) -> None:
        """Queue ``probe`` behind its target's gate: ready, blocked, or failed with it."""
        gate = state.gate
        if gate is None or gate is probe or (gate.done() and gate._error is None):
            self._make_ready(state, probe)
        elif gate.done():
            self._fail_from_gate(probe, gate)
        else:
            state.blocked.append(probe)

    def _requeue(self, keep: Callable[[Probe[Any]], bool]) -> None:
        """Drop from the queues every probe not to ``keep``."""
        self._runnable.clear()
        self._queued.clear()
        for target, state in self._targets.items():
            state.ready = [entry for entry in state.ready if keep(entry[2])]
            heapq.heapify(state.ready)
            state.blocked = [probe for probe in state.blocked if keep(probe)]
            self._queue_target(target, state)

    def _make_ready(self, state: _Target, probe: Probe[Any]) -> None:
        heapq.heappush(state.ready, (probe.priority, next(self._seq), probe))
        self._queue_target(probe.target, state)
        self._grow()
        self._wake.notify()

    def _queue_target(self, target: str, state: _Target) -> None:
        if state.ready and state.running < self.per_target and target not in self._queued:
            heapq.heappush(self._runnable, (state.ready[0][0], next(self._seq), target))
            self._queued.add(target)

    def _grow(self, slow: bool = False) -> None:
        """Start threads for ready probes no idle thread will take, below the limit: up to
        EAGER_THREADS at once; beyond them one at a time, while probes are slow (``slow``:
        one just was), when overlapping them is what saves time. One at a time: a quick
        probe the machine stalled for a moment must not bring the pool to its limit."""
        if self._holding:
            return
        eager = min(self.max_concurrency, EAGER_THREADS)
        while self._idle < len(self._runnable) and len(self._threads) < eager:
            self._start_thread()
        if self._idle < len(self._runnable) and len(self._threads) < self.max_concurrency \
                and (slow or self._slow()):
            self._start_thread()

    def _slow(self) -> bool:
        """Whether a running probe has taken GROW_AFTER_S so far: waiting, not computing."""
        started = min((p._started for p in self._running), default=None)
        return started is not None and time.monotonic() - started >= GROW_AFTER_S

    def _wait(self, probe: Probe[Any]) -> None:
        """Wait a while for ``probe``: its result from the probe process, read here; or,
        every GROW_AFTER_S, a thread more if the ones there are wait on slow targets while
        probes queue (and what the probe process sent meanwhile: the gate this probe waits
        behind may be among it)."""
        receiver = self.receiver
        if receiver is not None and probe._elsewhere:
            receiver.receive(probe, block=True)
            return
        if not probe._done.wait(GROW_AFTER_S):
            self.nudge()
            if receiver is not None:
                receiver.receive(None, block=False)

    def nudge(self) -> None:
        """Someone waits for probes (a reader, or a probe process's sender): a thread more
        if the ones there are wait on slow targets while probes queue. Said every few
        milliseconds of waiting."""
        with self._lock:
            if self._runnable:
                self._grow()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"opsverify-probe-"
                                  f"{len(self._threads) + 1}", daemon=True)
        self._threads.append(thread)
        self._idle += 1
        thread.start()

    def _take(self) -> Probe[Any] | None:
        while not self._closed:
            now = time.monotonic()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, due = heapq.heappop(self._delayed)
                state = self._targets[due.target]
                heapq.heappush(state.ready, (due.priority, next(self._seq), due))
                self._queue_target(due.target, state)
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
            self._wake.wait(self._delayed[0][0] - now if self._delayed else None)
        return None

    def _fail_from_gate(self, probe: Probe[Any], gate: Probe[Any]) -> None:
        probe._finish(None, gate._error, Timing(probe.name, 0.0, 0.0))
        self._unfinished -= 1
        self.finished(probe)

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

    def _postpone(self, probe: Probe[Any], until: float) -> None:
        """A retry: the probe leaves its target's slot and waits out its backoff."""
        state = self._targets[probe.target]
        state.running -= 1
        heapq.heappush(self._delayed, (until, next(self._seq), probe))
        self._queue_target(probe.target, state)
        self._wake.notify_all()  # a waiting thread's timeout may now be too long

    def _work(self) -> None:
        while True:
            with self._lock:
                probe = self._take()
                if probe is None:
                    return
                self._idle -= 1
                probe._started = time.monotonic()
                self._running.add(probe)
                if self._runnable:
                    self._grow()
            again = self._attempt(probe)
            if again is None:
                self.finished(probe)
            with self._lock:
                self._running.discard(probe)
                if self._runnable and time.monotonic() - probe._started >= GROW_AFTER_S:
                    self._grow(slow=True)  # before this thread counts as idle again
                self._idle += 1
                if again is None:
                    self._finished(probe)
                else:
                    self._postpone(probe, again)

    def _attempt(self, probe: Probe[Any]) -> float | None:
        """Run one attempt of ``probe`` (outside the lock); finish it, or say when to try
        it again."""
        started = time.monotonic()
        if not probe.attempts:
            probe._first_started = started
        value: Any = None
        error: BaseException | None = None
        retry, again = probe.retry, None
        if retry is not None and probe.attempts and \
                started + retry.deadline_s - probe._first_started > retry.bound_s:
            # It queued behind others for so long that this attempt could end past the
            # bound: the last attempt's error stands.
            error = probe._last_error
            probe._earlier.pop()
            ended = started
        else:
            try:
                value = probe.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the check that reads it
                error = exc
            ended = time.monotonic()
            probe.attempts += 1
            again = self._retry_at(probe, error, ended)
        if again is None:
            probe._finish(value, error, Timing(
                probe.name, ended - started, probe._first_started - probe.submitted,
                probe.attempts, started - probe._first_started, tuple(probe._earlier)))
        return again

    @staticmethod
    def _retry_at(probe: Probe[Any], error: BaseException | None, ended: float) -> float | None:
        """When ``probe`` is tried again, or None: it answered (a verdict is never retried),
        its error is not retryable, its retries are spent, or the next attempt could not
        end within the total bound."""
        retry = probe.retry
        if error is None or retry is None or probe.attempts > retry.retries or \
                not retry.retryable(error):
            return None
        at = ended + retry.delay(probe.attempts - 1)
        if at + retry.deadline_s - probe._first_started > retry.bound_s:
            return None
        probe._earlier.append(str(getattr(error, "cause", None) or error))
        probe._last_error = error
        return at

