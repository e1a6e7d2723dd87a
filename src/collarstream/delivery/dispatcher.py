"""Fan-out: one bounded queue and one worker task per (subscriber, channel).

A slow or dead endpoint only fills its own lane: its worker sleeps between retries
while every other lane keeps sending. Inside a lane deliveries go out in submission
order, one at a time, never before their ``not_before_ms`` (wall clock). A lane whose
head is held back (precision.delay_h) holds the rest of that lane with it, which only
delays, never advances, a message.

Overflow: a lane holds `queue_size` deliveries. When a new one arrives at a full lane,
the oldest *queued* one (not the one being retried) goes to the dead-letter callback
with reason ``queue-full`` and ``observer.dropped``. Nothing is silently dropped, and
the lane keeps the newest alerts, the ones still worth acting on. `submit` never
blocks, so one dead subscriber cannot stall the consumer that feeds everyone.

Dead letters: when retries give up, on overflow, and at `close` for whatever is still
queued or in flight (reason ``shutdown``), `dead_letter(record)` gets::

    {"delivery-id", "subscriber-id", "channel" (kind), "target" (safe label), "reason",
     "attempts", "first-attempt", "last-attempt" (ISO UTC or None), "body",
     "delivery-kind", "subject", "text", "not-before-ms", "fix-received-ms"}

enough for `delivery_from_dead_letter` to rebuild the Delivery for a replay.

What survives a crash (at-least-once, Tansu has no transactions). The queues live in
memory. If the worker commits a source offset as soon as `submit` returns, a crash
loses every delivery that was queued, in flight or held back by ``not_before_ms``;
held-back ones can sit for hours. So `submit` returns a receipt, an asyncio future
that resolves once every channel's copy is *settled*: delivered, or handed to
`dead_letter` (a durable topic) without error. It fails if the dead-letter callback
raised. Proposed wiring for the Faust worker:

* consume the deliveries stream with manual acks (``stream.noack()``) and ack each
  event (``await stream.ack(event)``) from its receipt's done callback, or on
  ``receipt.exception()``, leave it unacked. Faust commits only the highest
  *contiguous* acked offset, so after a crash everything unsettled is consumed again
  and the ids let receivers drop the repeats;
* the cost: one long-retrying (up to `max_elapsed_s`) or long-held delivery holds the
  commit of its partition back, and a crash replays everything after it. For
  delay_h subscribers, better to park held-back deliveries in a table or topic keyed
  by ``not_before_ms`` and submit them when due, so the source can be acked at once;
* on shutdown or rebalance (partitions revoked): ``await dispatcher.drain(timeout)``
  then ``await dispatcher.close()``; close dead-letters the rest, so their offsets
  may be committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from collarstream.delivery.channels import Channel, Observer
from collarstream.delivery.model import Delivery
from collarstream.delivery.retry import RetryPolicy, deliver
from collarstream.timefmt import iso

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "Dispatcher",
    "RecordingObserver",
    "dead_letter_record",
    "delivery_from_dead_letter",
]

log = logging.getLogger(__name__)

DeadLetter = Callable[[dict[str, Any]], Awaitable[None]]
# Per lane. At a few alerts per hour per subscriber, 1,000 is days of a dead endpoint's
# backlog (the retry budget gives up after 6 h anyway) and a few MB at most.
DEFAULT_QUEUE_SIZE = 1000
# Re-read the wall clock at least this often while holding a delivery back, so a clock
# step (NTP) does not release it early or keep it for an hour too long.
_HOLD_CHECK_S = 60.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Receipt:
    """Resolves when each of `pending` channel copies is delivered or dead-lettered."""

    def __init__(self, future: asyncio.Future[None], pending: int) -> None:
        self.future = future
        self.pending = pending
        if pending == 0:
            future.set_result(None)

    def settle(self) -> None:
        self.pending -= 1
        if self.pending == 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass
class _Item:
    d: Delivery
    receipt: _Receipt
    attempts: int = 0
    first_attempt_ms: int | None = None
    last_attempt_ms: int | None = None


@dataclass(eq=False)
class _Lane:
    """One subscriber's channel; also a Channel itself, so `deliver` counts attempts here."""

    subscriber_id: str
    channel: Channel
    queue: asyncio.Queue[_Item]
    now_ms: Callable[[], int]
    task: asyncio.Task[None] | None = None
    current: _Item | None = None
    kind: str = field(init=False)
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.kind = self.channel.kind
        self.label = getattr(self.channel, "label", self.channel.kind)

    async def send(self, d: Delivery) -> None:
        item = self.current
        if item is not None:
            item.attempts += 1
            item.last_attempt_ms = self.now_ms()
            if item.first_attempt_ms is None:
                item.first_attempt_ms = item.last_attempt_ms
        await self.channel.send(d)


class Dispatcher:
    def __init__(
        self,
        observer: Observer,
        policy: RetryPolicy,
        dead_letter: DeadLetter,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        now_ms: Callable[[], int] = _wall_ms,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.observer = observer
        self.policy = policy
        self._dead_letter = dead_letter
        self._queue_size = queue_size
        self._now_ms = now_ms
        self._sleep = sleep
        self._clock = clock
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._closed = False

    async def submit(self, d: Delivery, channels: Sequence[Channel]) -> asyncio.Future[None]:
        """Queue `d` on each channel's lane and return its receipt at once (see module
        docstring). A full lane dead-letters its oldest queued delivery."""
        if self._closed:
            raise RuntimeError("dispatcher is closed")
        receipt = _Receipt(asyncio.get_running_loop().create_future(), len(channels))
        for channel in channels:
            lane = self._lane(d.subscriber_id, channel)
            if lane.queue.full():
                oldest = lane.queue.get_nowait()
                lane.queue.task_done()
                await self._give_up(lane, oldest, "queue-full")
            lane.queue.put_nowait(_Item(d, receipt))
        return receipt.future

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every lane is empty and idle; False if `timeout_s` passed first."""
        joins = [lane.queue.join() for lane in self._lanes.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*joins), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop every worker; dead-letter what is still queued or in flight ("shutdown")."""
        self._closed = True
        lanes = list(self._lanes.values())
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in lanes:
            left = [lane.current] if lane.current is not None else []
            lane.current = None
            while not lane.queue.empty():
                left.append(lane.queue.get_nowait())
                lane.queue.task_done()
            for item in left:
                await self._give_up(lane, item, "shutdown")

    def pending(self) -> int:
        """Deliveries queued or in flight, over all lanes."""
        return sum(lane.queue.qsize() + (lane.current is not None) for lane in self._lanes.values())

    def _lane(self, subscriber_id: str, channel: Channel) -> _Lane:
        # Keyed by the channel object: build channels once per subscriber and reuse them.
        key = (subscriber_id, id(channel))
        lane = self._lanes.get(key)
        if lane is None:
            queue: asyncio.Queue[_Item] = asyncio.Queue(self._queue_size)
            lane = _Lane(subscriber_id, channel, queue, self._now_ms)
            lane.task = asyncio.create_task(
                self._run(lane), name=f"deliver:{subscriber_id}:{lane.label}"
            )
            self._lanes[key] = lane
        return lane

    async def _run(self, lane: _Lane) -> None:
        while True:
            item = await lane.queue.get()
            lane.current = item
            try:
                await self._hold(item.d.not_before_ms)
                outcome = await deliver(
                    lane, item.d, self.policy, self.observer, self._sleep, self._clock, self._now_ms
                )
                if outcome.status == "delivered":
                    item.receipt.settle()
                else:
                    await self._give_up(lane, item, outcome.reason or "failed")
            except asyncio.CancelledError:
                raise  # close() dead-letters lane.current
            except Exception:  # never let one delivery kill the lane
                log.exception("delivery %s: lane %s crashed", item.d.id, lane.label)
                await self._give_up(lane, item, "internal error")
            lane.current = None
            lane.queue.task_done()

    async def _hold(self, not_before_ms: int) -> None:
        while (wait_ms := not_before_ms - self._now_ms()) > 0:
            await self._sleep(min(wait_ms / 1000.0, _HOLD_CHECK_S))

    async def _give_up(self, lane: _Lane, item: _Item, reason: str) -> None:
        if reason in ("queue-full", "shutdown"):  # retry exhaustion already said failed()
            self.observer.dropped(lane.kind, lane.subscriber_id, reason)
        try:
            await self._dead_letter(dead_letter_record(lane, item, reason))
        except Exception as e:
            log.exception("delivery %s: dead-letter failed; it stays unacked", item.d.id)
            item.receipt.fail(e)
        else:
            item.receipt.settle()


def dead_letter_record(lane: _Lane, item: _Item, reason: str) -> dict[str, Any]:
    d = item.d
    return {
        "delivery-id": d.id,
        "subscriber-id": d.subscriber_id,
        "channel": lane.kind,
        "target": lane.label,
        "reason": reason,
        "attempts": item.attempts,
        "first-attempt": None if item.first_attempt_ms is None else iso(item.first_attempt_ms),
        "last-attempt": None if item.last_attempt_ms is None else iso(item.last_attempt_ms),
        "body": d.body,
        "delivery-kind": d.kind,
        "subject": d.subject,
        "text": d.text,
        "not-before-ms": d.not_before_ms,
        "fix-received-ms": d.fix_received_ms,
    }


def delivery_from_dead_letter(record: dict[str, Any]) -> Delivery:
    """The Delivery a dead-letter record came from, to submit it again."""
    return Delivery(
        id=record["delivery-id"],
        subscriber_id=record["subscriber-id"],
        kind=record["delivery-kind"],
        body=record["body"],
        subject=record["subject"],
        text=record["text"],
        not_before_ms=record["not-before-ms"],
        fix_received_ms=record["fix-received-ms"],
    )


@dataclass
class RecordingObserver:
    """An Observer that remembers every call, for tests."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def delivered(self, channel_kind: str, subscriber_id: str, latency_s: float | None) -> None:
        self.calls.append(("delivered", channel_kind, subscriber_id, latency_s))

    def retried(self, channel_kind: str, subscriber_id: str) -> None:
        self.calls.append(("retried", channel_kind, subscriber_id))

    def failed(self, channel_kind: str, subscriber_id: str) -> None:
        self.calls.append(("failed", channel_kind, subscriber_id))

    def dropped(self, channel_kind: str, subscriber_id: str, reason: str) -> None:
        self.calls.append(("dropped", channel_kind, subscriber_id, reason))

    def count(self, event: str, subscriber_id: str | None = None) -> int:
        return sum(1 for c in self.calls if c[0] == event and subscriber_id in (None, c[2]))
