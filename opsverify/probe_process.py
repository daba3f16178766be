"""The probe process: a forked copy of this process runs queued probes on its own
interpreter, so their I/O and parsing stop competing with the checks for one lock.

Probes of fast targets are mostly CPU (a loopback GET is parsing, not waiting), and in one
interpreter the pool's threads and the checks took turns: a 1,000-target run spent about
1 s handing the interpreter lock back and forth. Forked once the run's probes are queued
(and before any pool thread starts), the child holds the same pool, clients and probe
functions; it runs the probes it was handed under the same two limits and writes their
results back through a pipe as they finish, in batches of at most FLUSH_EVERY_S. The
parent's pool finishes each probe when its result arrives: checks wait on it as on any
other probe.

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
import signal
import struct
import threading
import time
from typing import IO, Any

from opsverify.probes import Probe, ProbePool

_HEADER = struct.Struct("!II")  # a result's frame: the probe's index, the payload's length
_TAKE_BACK = b"\0"  # a result that cannot cross: the parent runs the probe itself
# Results go back in batches, at most this long after they are ready: one wake-up of the
# parent's reader (and one hand-over of its interpreter lock) per batch, not per probe.
FLUSH_EVERY_S = 0.005


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
    """The parent's end: the child's pid and the thread that reads its results."""

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
        pool.hand_off(probes)
        self._results = os.fdopen(read_end, "rb")
        self._reader = threading.Thread(target=self._read, name="opsverify-probe-results",
                                        daemon=True)
        self._reader.start()

    def close(self) -> None:
        """End the child if it still runs (probes past the run's end are abandoned, as the
        pool's own threads are)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._reader.join(timeout=5)

    def _read(self) -> None:
        try:
            while True:
                header = self._results.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                index, length = _HEADER.unpack(header)
                self._receive(self.probes[index], self._results.read(length))
        finally:
            self._results.close()
            # Whatever did not come back runs here (none, when the child finished).
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
