"""How a probe is tried again (:class:`Retry`) and how long it took (:class:`Timing`, the
line each check's evidence shows); split from :mod:`opsverify.probes`, whose pool keeps to
both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 4.0
# How far past its deadline a client may take to give up (their whole-answer graces: 0.5 s
# for HTTP, Redis and TLS, 2 s for SSH): one attempt's allowance is the deadline plus this.
ATTEMPT_GRACE_S = 2.0


@dataclass(frozen=True)
class Retry:
    """How a probe that could not be evaluated is tried again: up to ``retries`` more
    attempts, the k-th (from 0) after ``min(0.5 s * 2**k, 4 s)``; ``deadline_s`` is the
    longest one attempt may take (its client deadline and grace). No attempt starts that
    could not end within :attr:`bound_s` of the first attempt's start: every attempt's
    allowance plus every backoff."""

    retries: int
    deadline_s: float
    retryable: Callable[[BaseException], bool]

    @staticmethod
    def delay(k: int) -> float:
        return min(BACKOFF_BASE_S * 2.0 ** k, BACKOFF_CAP_S)

    @property
    def bound_s(self) -> float:
        return (self.retries + 1) * self.deadline_s + sum(self.delay(k)
                                                          for k in range(self.retries))


@dataclass(frozen=True)
class Timing:
    """How long a probe took: ``elapsed_s`` is its own I/O, ``waited_s`` the time it spent
    queued before a thread and its target had room (never part of a response time)."""

    name: str
    elapsed_s: float
    waited_s: float
    # A retried probe: ``elapsed_s`` is its last attempt; ``retried_s`` the time from its
    # first attempt's start to its last one's (earlier attempts, backoff), ``earlier`` why.
    attempts: int = 1
    retried_s: float = 0.0
    earlier: tuple[str, ...] = ()

    def line(self) -> str:
        text = (f"probe {self.name}: {self.elapsed_s * 1000:.1f} ms "
                f"(queued {self.waited_s * 1000:.1f} ms)")
        if self.attempts > 1:
            why = "; ".join(dict.fromkeys(self.earlier))
            text += (f"; attempt {self.attempts}, {self.retried_s:.2f} s after the first "
                     f"(earlier: {why})")
        return text
