"""Retrying one delivery on one channel: capped exponential backoff with full jitter.

The k-th retry (k = 0, 1, ...) waits a uniform random time in
``[0, min(max_delay_s, initial_s * factor**k)]`` ("full jitter", AWS Architecture Blog,
"Exponential Backoff And Jitter"): after an outage every sender's retries spread out
instead of arriving at the receiver in synchronised waves. A receiver's ``Retry-After``
is a floor on the wait. Retrying stops after a permanent error, or when the next wait
would end past `max_elapsed_s` after the first attempt (a Retry-After beyond the budget
gives up at once; a jittered wait is cut to what is left, for one last try).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from collarstream.delivery.channels import Channel, Observer, PermanentError, TransientError
from collarstream.delivery.model import Delivery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 600.0  # a receiver back after an outage hears from us within 10 min
    max_elapsed_s: float = 6 * 3600.0  # then the dead-letter topic; an alert older is stale
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.factor < 1 or self.max_delay_s < 0 or self.max_elapsed_s < 0:
            raise ValueError(
                "RetryPolicy needs initial_s, max_delay_s, max_elapsed_s >= 0, factor >= 1"
            )

    def cap_s(self, k: int) -> float:
        """The upper bound of the k-th retry's wait (k from 0)."""
        # Compare exponents, not powers: factor**k overflows a float near k = 1024.
        if self.initial_s == 0:
            return 0.0
        bound = self.initial_s
        for _ in range(k):
            bound *= self.factor
            if bound >= self.max_delay_s:
                return self.max_delay_s
        return min(bound, self.max_delay_s)

    def delay_s(self, k: int) -> float:
        """The k-th retry's wait, drawn from `rng` (seed it for reproducible tests)."""
        return self.rng.uniform(0.0, self.cap_s(k))

    def delays(self) -> Iterator[float]:
        """The unbounded sequence of jittered waits, ignoring the elapsed budget."""
        k = 0
        while True:
            yield self.delay_s(k)
            k += 1


@dataclass(frozen=True)
class Outcome:
    status: Literal["delivered", "failed"]
    reason: str | None  # None when delivered
    attempts: int
    first_attempt_ms: int  # wall clock, for the dead-letter record
    last_attempt_ms: int


async def deliver(
    channel: Channel,
    d: Delivery,
    policy: RetryPolicy,
    observer: Observer,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> Outcome:
    """Send `d` on `channel` until it is delivered, fails permanently, or the retry
    budget runs out. Calls `observer.retried` before every retry and `delivered` or
    `failed` once at the end. Never raises for a delivery failure."""
    start = clock()
    first_ms = wall_ms()
    attempts = 0
    while True:
        attempts += 1
        last_ms = wall_ms() if attempts > 1 else first_ms
        try:
            await channel.send(d)
        except TransientError as e:
            wait = _next_wait(policy, attempts - 1, e, clock() - start)
            if wait is None:
                reason = f"gave up after {attempts} attempts: {e.reason}"
                return _failed(channel, d, observer, reason, attempts, first_ms, last_ms)
            log.info("delivery %s on %s: %s; retry in %.2fs", d.id, channel.kind, e.reason, wait)
            observer.retried(channel.kind, d.subscriber_id)
            await sleep(wait)
        except PermanentError as e:
            return _failed(channel, d, observer, e.reason, attempts, first_ms, last_ms)
        except Exception as e:  # a bug in an adapter: retrying cannot fix it
            log.exception("delivery %s on %s: unexpected %s", d.id, channel.kind, type(e).__name__)
            reason = f"unexpected {type(e).__name__}"
            return _failed(channel, d, observer, reason, attempts, first_ms, last_ms)
        else:
            observer.delivered(channel.kind, d.subscriber_id, latency_s(d, wall_ms()))
            return Outcome("delivered", None, attempts, first_ms, last_ms)


def latency_s(d: Delivery, now_ms: int) -> float | None:
    """Fix received to delivered, in seconds; None when the fix time is unknown."""
    return None if d.fix_received_ms is None else (now_ms - d.fix_received_ms) / 1000.0


def _next_wait(policy: RetryPolicy, k: int, e: TransientError, elapsed_s: float) -> float | None:
    remaining = policy.max_elapsed_s - elapsed_s
    if remaining <= 0:
        return None
    floor = e.retry_after_s or 0.0
    if floor > remaining:
        return None
    return min(max(policy.delay_s(k), floor), remaining)


def _failed(
    channel: Channel,
    d: Delivery,
    observer: Observer,
    reason: str,
    attempts: int,
    first_ms: int,
    last_ms: int,
) -> Outcome:
    log.warning("delivery %s on %s failed: %s", d.id, channel.kind, reason)
    observer.failed(channel.kind, d.subscriber_id)
    return Outcome("failed", reason, attempts, first_ms, last_ms)
