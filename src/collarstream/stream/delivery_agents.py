"""Delivery in the worker: route alerts and hand-off fixes, send them, serve the API.

`install_delivery(app, settings, names)` does nothing unless `settings.subscriptions`
is set. Then, at build time, it loads the subscriptions (a bad file stops the worker
with the key at fault), builds every subscriber's channels (a bad channel stops it
too) and adds to the app:

* `route_delivery`, one agent on the alerts and the validated fixes topics (both keyed
  by animal, so the `animal_to_router` table is partitioned like its input). One agent
  for both, so the router state of an animal is read and written in one place, in
  order. Alerts go through `Router.route`; each fix of a fix batch with coordinates
  becomes a fix record for `Router.route_fix` (quality flags are the tracker's; a fix
  on this topic has passed the wire contract, not the speed filter).
* Fixes and the alerts derived from them travel on two topics, so a fix can be routed
  before the crossing alert that opens its hand-off. The agent keeps an animal's last
  `RECENT_FIXES` fix records (`animal_to_recent_fixes`); when an alert changes the
  animal's hand-offs, the recent fixes from the alert's fix time on are routed again.
  The other way round is not repaired: a fix taken after the animal crossed back,
  routed before that crossing's alert, still reaches the team it just left.
* `watch_outputs` on the steps, home-ranges and dead-letter topics: feeds the
  `LiveView` (alerts are fed by `route_delivery`) and the pipeline counters. The view is
  in memory and per worker: it fills up again from new events after a restart, and a
  worker's API knows the animals of its own partitions only.
* a `Dispatcher` per retry budget (webhook `max_retry_h`, default `DEFAULT_RETRY_H`),
  dead letters as JSON on `<prefix>.delivery-dead-letter` (keyed by delivery id), the
  Kafka channel on a Faust topic per audience, and the HTTP API (`register_api`) on
  Faust's web server when it is enabled.

At-least-once, and what survives a crash. The dispatcher's queues are in memory, and
Faust commits an alert's offset soon after the agent moves past it, long before a
retrying or held-back (`delay_h`) delivery settles. So before a delivery is queued,
each of its channel copies is written to the `pending_deliveries` table (key
``<delivery id>|<channel index>``, changelogged in the partition of the event that
caused it); the copy is deleted when it is delivered or its dead letter is acked by
the broker. Faust flushes the producer (and so the table's changelog) before it
commits an offset, so:

* a crash after the commit: the restarted worker recovers the table and, when
  recovery completes (`on_recover`), submits every copy in it again;
* a crash before the commit: the events are consumed again; the router gives the same
  deliveries with the same ids (it re-sends an alert it already delivered), and copies
  already re-submitted from the table are not queued twice;
* a shutdown (SIGTERM) waits up to `DRAIN_S` for the queues, then leaves whatever is
  still queued, retrying or held back in the table for the next start; nothing is
  dead-lettered for "shutdown".

A copy may therefore arrive more than once (after a crash, or when delivered just
before one); it always carries the same delivery id (webhook ``Idempotency-Key``, email
``Message-ID``, Kafka key), which receivers use to drop repeats. A copy whose dead letter
could not be written stays in the table and is tried again at the next start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
import orjson
from faust.streams import _current_event

from collarstream.config import ConfigError, Settings
from collarstream.delivery.api import register_api
from collarstream.delivery.channels import Channel, build_channel
from collarstream.delivery.dispatcher import Dispatcher
from collarstream.delivery.liveview import LiveView
from collarstream.delivery.metrics import DeliveryMetrics
from collarstream.delivery.model import Delivery, Subscriber, Subscriptions
from collarstream.delivery.retry import RetryPolicy
from collarstream.delivery.router import Router, RouterState
from collarstream.delivery.subscriptions import load_subscriptions
from collarstream.stream.topics import TopicNames
from collarstream.timefmt import iso, parse_ms
from collarstream.wire import decode_batch

__all__ = ["DEFAULT_RETRY_H", "dead_letter_topic", "fix_records", "install_delivery"]

log = logging.getLogger(__name__)

DEFAULT_RETRY_H = 6.0  # RetryPolicy's own default budget, for channels without max_retry_h
# A few days of a 4-hourly collar: far more than a batch's lag between the two topics.
RECENT_FIXES = 32
# On SIGTERM, how long deliveries in flight may finish before they are left for the
# next start; short, so Kubernetes' 30 s grace period is never the one that ends us.
DRAIN_S = 5.0
ANIMAL = "individual-local-identifier"


def dead_letter_topic(names: TopicNames) -> str:
    return f"{names.prefix}.delivery-dead-letter"


def install_delivery(app: faust.App, settings: Settings, names: TopicNames) -> None:
    """Add routing, delivery and the HTTP API to `app` when subscriptions are set."""
    if settings.subscriptions is None:
        return
    subs = load_subscriptions(settings.subscriptions)
    _Delivery(app, settings, names, subs)


def fix_records(raw: bytes) -> list[dict[str, Any]]:
    """The fix records (`Router.route_fix` input) of one fix-batch message; fixes
    without coordinates are left out."""
    animal, b = decode_batch(raw)
    out = []
    for t, lon, lat, rec in zip(
        b.t_ms.tolist(), b.lon.tolist(), b.lat.tolist(), b.received_ms.tolist(), strict=True
    ):
        if math.isnan(lon) or math.isnan(lat) or (lon == 0.0 and lat == 0.0):
            continue
        out.append(
            {
                "type": "fix",
                ANIMAL: animal,
                "tag-local-identifier": b.tag or None,
                "timestamp": iso(t),
                "location-long": lon,
                "location-lat": lat,
                "received-timestamp": iso(rec),
            }
        )
    return out


@dataclasses.dataclass
class _At:
    """Stands in for the event a table write belongs to: Faust writes a table's
    changelog to the partition of the current event."""

    message: Any


@contextmanager
def _writing_at(topic: str, partition: int) -> Iterator[None]:
    at = _At(message=types.SimpleNamespace(topic=topic, partition=partition))
    token = _current_event.set(weakref.ref(at))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


def _raw_table(app: faust.App, name: str, partitions: int) -> Any:
    table = app.Table(name, partitions=partitions)
    table.key_serializer = "raw"  # set before the store and changelog exist (lazily)
    table.value_serializer = "raw"
    return table


class _Delivery:
    def __init__(
        self, app: faust.App, settings: Settings, names: TopicNames, subs: Subscriptions
    ) -> None:
        self.app, self.names, self.subs = app, names, subs
        self.router = Router(subs)
        self.view = LiveView()
        self.metrics = DeliveryMetrics()
        p = settings.partitions
        self.router_table = _raw_table(app, "animal_to_router", p)
        self.recent_table = _raw_table(app, "animal_to_recent_fixes", p)
        self.pending = _raw_table(app, "pending_deliveries", p)
        self._topics: dict[str, faust.TopicT] = {}
        self._declared: set[str] = set()
        self._dlq = dead_letter_topic(names)
        self._topic(self._dlq)
        self._inflight: set[bytes] = set()
        self._stopping = False
        self.channels = {s.id: self._channels(s) for s in subs.subscribers}
        self._dispatchers: dict[float, Dispatcher] = {}
        self._route_topic = app.topic(
            names.alerts,
            names.fixes,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

        async def route_delivery(stream: faust.StreamT) -> None:
            await self._route(stream)

        async def watch_outputs(stream: faust.StreamT) -> None:
            await self._watch(stream, settings.batch_max, settings.batch_within_s)

        app.agent(self._route_topic, name="route_delivery")(route_delivery)
        outputs = app.topic(
            names.steps,
            names.home_ranges,
            names.dead_letter,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(outputs, name="watch_outputs")(watch_outputs)
        self.pending.on_recover(self._resubmit)
        app.on_before_shutdown.connect(self._shutdown)
        if settings.web_enabled:
            register_api(
                app,
                self.view,
                subs.subscribers,
                self._may_see,
                self.metrics,
                metrics_token=settings.metrics_token,
            )

    # ---- channels and topics -------------------------------------------------------

    def _channels(self, sub: Subscriber) -> list[tuple[Channel, float]]:
        """Each channel with its retry budget in hours; misconfiguration fails here."""
        out = []
        for i, spec in enumerate(sub.channels):
            if spec.kind == "kafka":
                self._topic(str(spec.options["topic"]))
            try:
                ch = build_channel(spec, sub, self.subs.smtp, self._kafka_send)
            except ValueError as e:
                raise ConfigError(f"subscribers[{sub.id}].channels[{i}]: {e}") from None
            hours = spec.options.get("max_retry_h", DEFAULT_RETRY_H)
            out.append((ch, float(hours)))  # type: ignore[arg-type]
        return out

    def _topic(self, name: str) -> faust.TopicT:
        if name not in self._topics:
            self._topics[name] = self.app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )
        return self._topics[name]

    async def _send(self, name: str, key: bytes, value: bytes) -> None:
        """Send and wait for the broker's ack (a settled delivery must be durable)."""
        topic = self._topics[name]
        if name not in self._declared:
            await topic.maybe_declare()
            self._declared.add(name)
        fut = await topic.send(key=key, value=value)
        await fut

    async def _kafka_send(self, name: str, key: bytes, value: bytes) -> None:
        await self._send(name, key, value)

    async def _dead_letter(self, record: dict[str, Any]) -> None:
        if self._stopping and record.get("reason") == "shutdown":
            # Raising fails the receipt, so the copy stays in pending_deliveries.
            raise _LeftForNextStart()
        await self._send(self._dlq, str(record["delivery-id"]).encode(), orjson.dumps(record))

    def _dispatcher(self, retry_h: float) -> Dispatcher:
        d = self._dispatchers.get(retry_h)
        if d is None:
            policy = RetryPolicy(max_elapsed_s=retry_h * 3600.0)
            d = Dispatcher(self.metrics, policy, self._dead_letter)
            self._dispatchers[retry_h] = d
        return d

    # ---- pending deliveries ----------------------------------------------------------

    async def _deliver(self, d: Delivery, topic: str, partition: int) -> None:
        """Record each channel copy in the pending table, then queue it."""
        for i in range(len(self.channels.get(d.subscriber_id, ()))):
            key = f"{d.id}|{i}".encode()
            if key in self._inflight:
                continue
            doc = {"topic": topic, "partition": partition, "channel": i}
            doc["delivery"] = dataclasses.asdict(d)
            with _writing_at(topic, partition):
                self.pending[key] = orjson.dumps(doc)
            await self._submit(key, d, i, topic, partition)

    async def _submit(self, key: bytes, d: Delivery, i: int, topic: str, partition: int) -> None:
        channel, retry_h = self.channels[d.subscriber_id][i]
        self._inflight.add(key)
        receipt = await self._dispatcher(retry_h).submit(d, [channel])
        receipt.add_done_callback(lambda f: self._settled(key, topic, partition, f))

    def _settled(self, key: bytes, topic: str, partition: int, f: asyncio.Future[None]) -> None:
        self._inflight.discard(key)
        if f.cancelled() or f.exception() is not None:
            return  # stays pending: submitted again at the next start
        with _writing_at(topic, partition):
            self.pending.pop(key, None)

    async def _resubmit(self) -> None:
        """After a recovery: queue every copy the table holds that is not in flight."""
        n = 0
        for key, raw in list(self.pending.items()):
            if key in self._inflight or raw is None:
                continue
            doc = orjson.loads(raw)
            d = Delivery(**doc["delivery"])
            if d.subscriber_id not in self.channels or doc["channel"] >= len(
                self.channels[d.subscriber_id]
            ):
                # The subscriptions changed: nobody to send it to any more.
                with _writing_at(doc["topic"], doc["partition"]):
                    self.pending.pop(key, None)
                continue
            await self._submit(key, d, doc["channel"], doc["topic"], doc["partition"])
            n += 1
        if n:
            log.warning("delivery: re-submitted %d undelivered copies after recovery", n)

    async def _shutdown(self, app: faust.App, **kwargs: Any) -> None:
        for d in self._dispatchers.values():
            await d.drain(DRAIN_S / max(1, len(self._dispatchers)))
        self._stopping = True
        for d in self._dispatchers.values():
            await d.close()

    # ---- agents ----------------------------------------------------------------------

    async def _route(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            if msg.key is None:
                continue
            if msg.topic == self.names.alerts:
                await self._on_alert(msg.key, orjson.loads(msg.value), msg.topic, msg.partition)
            else:
                await self._on_fixes(msg.key, msg.value, msg.topic, msg.partition)

    def _state(self, key: bytes) -> RouterState:
        return RouterState.from_json(self.router_table.get(key))

    async def _on_alert(self, key: bytes, alert: dict[str, Any], topic: str, part: int) -> None:
        self.view.ingest(alert)
        self.metrics.alerts_out(str(alert.get("kind")))
        animal = key.decode()
        before = self._state(key)
        state, deliveries = self.router.route(before, alert)
        self.router_table[key] = state.for_animal(animal).to_json()
        for d in deliveries:
            await self._deliver(d, topic, part)
        if _handoffs(before, animal) != _handoffs(state, animal):
            since = parse_ms(str(alert.get("fix-timestamp") or alert.get("received-timestamp")))
            for rec in orjson.loads(self.recent_table.get(key) or b"[]"):
                if parse_ms(rec["timestamp"]) >= since:
                    for d in self.router.route_fix(state, rec)[1]:
                        await self._deliver(d, topic, part)

    async def _on_fixes(self, key: bytes, raw: bytes, topic: str, part: int) -> None:
        records = fix_records(raw)
        self.metrics.fixes_in(len(records))
        if not records:
            return
        recent = {r["timestamp"]: r for r in orjson.loads(self.recent_table.get(key) or b"[]")}
        recent.update({r["timestamp"]: r for r in records})
        keep = [recent[t] for t in sorted(recent, key=parse_ms)[-RECENT_FIXES:]]
        self.recent_table[key] = orjson.dumps(keep)
        state = self._state(key)
        for rec in records:
            for d in self.router.route_fix(state, rec)[1]:
                await self._deliver(d, topic, part)

    async def _watch(self, stream: faust.StreamT, n: int, within: float) -> None:
        async for events in stream.take_events(n, within):
            for ev in events:
                msg = ev.message
                if msg.topic == self.names.dead_letter:
                    self.metrics.dead_lettered(1)
                elif msg.topic == self.names.steps:
                    self.view.ingest_many(orjson.loads(msg.value))
                else:
                    self.view.ingest(orjson.loads(msg.value))

    def _may_see(self, sub: Subscriber, animal: str) -> bool:
        return self.router.may_see(self._state(animal.encode()), sub, animal)


class _LeftForNextStart(Exception):
    """A copy still queued at shutdown: kept in pending_deliveries, not dead-lettered."""


def _handoffs(state: RouterState, animal: str) -> Any:
    return (state.animals.get(animal) or {}).get("handoff")
