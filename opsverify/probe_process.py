"""The probe process: a forked copy of this process runs queued probes on its own
interpreter, so their I/O and parsing stop competing with the checks for one lock.

Probes of fast targets are mostly CPU (a loopback GET is parsing, not waiting), and in one
interpreter the pool's threads and the checks took turns: a 1,000-target run spent about
1 s handing the interpreter lock back and forth. Forked once the run's probes are queued
(and before any pool thread starts), the child holds the same pool, clients and probe
functions; it runs the probes it was handed under the same two limits and writes their
results back through a pipe as they finish, in batches of at most FLUSH_EVERY_S. No thread
of the parent reads the pipe: a check that waits for a probe reads what has come until its
result is in (the pool's receiver), so the checks keep the interpreter to themselves. The
child runs at a lower priority (CHILD_NICENESS): where the cores are fewer than the busy
processes, the checks, the run's critical path, go first.

Nothing is lost if a result cannot come back: a value or an exception that does not pickle,
or a child that dies, hands the probe back to the parent's own threads (one more read of a
read-only target). Probes submitted after the fork run in the parent as before.

The child never writes to the terminal or a report; it exits (``os._exit``, no clean-up of
the parent's state) when it has sent every result, and is killed when the run ends first.
Only a process with no other thread may fork (a lock another thread holds would stay held
in the child): under xdist, or with an in-process server thread, the pool stays threads.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import select
import signal
import struct
import threading
import time
from typing import IO, Any

from opsverify.probes import Probe, ProbePool

_HEADER = struct.Struct("!II")  # a result's frame: the probe's index, the payload's length
_TAKE_BACK = b"\0"  # a result that cannot cross: the parent runs the probe itself
# Results go back in batches, at most this long after they are ready: one write a batch,
# and one read by a waiting check, not one a probe.
FLUSH_EVERY_S = 0.005
READ_SIZE = 1 << 16  # a pipe's buffer
CHILD_NICENESS = 10


def start(pool: ProbePool, probes: list[Probe[Any]]) -> ProbeProcess | None:
    """Hand ``probes`` (queued, inside the pool's :meth:`~ProbePool.held` block) to a new
    probe process; None when this process may not fork (not POSIX, another thread runs, no
    process left), and the pool's threads run them as ever."""
    if not probes or not hasattr(os, "fork") or threading.active_count() != 1:
        return None
    try:
        return ProbeProcess(pool, probes)
    except OSError:
        return None


class ProbeProcess:
    """The parent's end: the child's pid, and the pipe its results come through, read by
    whoever waits for one (:meth:`receive`, the pool's :class:`~opsverify.probes.Receiver`).
    No thread reads it: a reader thread took the interpreter lock from the checks at every
    batch, and the checks read results in about the order they were queued anyway."""

    def __init__(self, pool: ProbePool, probes: list[Probe[Any]]) -> None:
        self.pool = pool
        self.probes = probes
        read_end, write_end = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if self.pid == 0:  # the child: never returns
            os.close(read_end)
            _child(pool, probes, write_end)
        os.close(write_end)
        self._fd: int | None = read_end
        self._buffer = bytearray()
        self._lock = threading.Lock()
        pool.hand_off(probes)
        pool.receiver = self

    def receive(self, until: Probe[Any] | None, *, block: bool) -> None:
        """Finish the probes whose results have come: with ``block``, until ``until`` is
        done (None: until the child has sent everything), else only what is in the pipe."""
        # One reader at a time; a thread that would not block leaves it to the one reading.
        if not self._lock.acquire(blocking=block):
            return
        try:
            while self._fd is not None and not (until is not None and until.done()):
                if not block and not select.select([self._fd], [], [], 0)[0]:
                    return
                chunk = os.read(self._fd, READ_SIZE)
                if not chunk:
                    self._ended()
                    return
                self._buffer += chunk
                self._frames()
        finally:
            self._lock.release()

    def close(self) -> None:
        """End the child if it still runs (probes past the run's end are abandoned, as the
        pool's own threads are)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with self._lock:
            if self._fd is not None:
                self._ended()

    def _frames(self) -> None:
        """Finish the probe of every whole frame in the buffer."""
        buffer, start = self._buffer, 0
        while len(buffer) - start >= _HEADER.size:
            index, length = _HEADER.unpack_from(buffer, start)
            end = start + _HEADER.size + length
            if len(buffer) < end:
                break
            self._receive(self.probes[index], bytes(buffer[start + _HEADER.size:end]))
            start = end
        del buffer[:start]

    def _ended(self) -> None:
        """The child is done (or dead): whatever did not come back runs here."""
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        self.pool.receiver = None
        for probe in self.probes:
            self.pool.take_back(probe)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def _receive(self, probe: Probe[Any], payload: bytes) -> None:
        if payload == _TAKE_BACK:
            self.pool.take_back(probe)
            return
        try:
            # Our own child's frames, through a pipe no one else holds.
            value, error, timing = pickle.loads(payload)  # noqa: S301
        except Exception:  # noqa: BLE001 - a result that does not unpickle is read again here
            self.pool.take_back(probe)
            return
        self.pool.complete(probe, value, error, timing)


def _child(pool: ProbePool, probes: list[Probe[Any]], write_end: int) -> None:
    """Run ``probes`` and send each result; exit without the parent's clean-up."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child at once
        # The checks are the run's critical path and the probes run ahead of them: on a
        # machine with fewer cores than busy processes the child yields first.
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICENESS)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        out = os.fdopen(write_end, "wb")
        done: queue.SimpleQueue[Probe[Any]] = queue.SimpleQueue()
        pool.finished = done.put
        pool.keep_only(probes)
        pool.release()
        index = {id(probe): i for i, probe in enumerate(probes)}
        flushed = time.monotonic()
        for _ in probes:
            while True:
                try:
                    probe = done.get(timeout=FLUSH_EVERY_S)
                    break
                except queue.Empty:
                    out.flush()
                    flushed = time.monotonic()
                    # Nobody here reads results, so nobody else tells the pool its threads
                    # wait on hung targets while probes queue.
                    pool.nudge()
            _send(out, index[id(probe)], probe)
            if time.monotonic() - flushed >= FLUSH_EVERY_S:
                out.flush()
                flushed = time.monotonic()
        out.flush()
    finally:
        os._exit(0)


def _send(out: IO[bytes], index: int, probe: Probe[Any]) -> None:
    try:
        payload = pickle.dumps((probe._value, probe._error, probe.timing),
                               pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - unpicklable (a live connection in it): sent back
        payload = _TAKE_BACK
    out.write(_HEADER.pack(index, len(payload)) + payload)
