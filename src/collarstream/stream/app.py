"""The Faust app: raw fixes -> validated fixes -> steps, alerts, home ranges.

Two agents, each only putting events into a coalescer that a task of its own empties
whenever it is free (`stream.coalesce`: micro-batches as large as the backlog, and no
wait for a batch to fill when idle):

* `validate_fix` reads the raw topic (a fix or a collar upload per message), sends
  what breaks the contract to the dead-letter topic with the reason and the original
  bytes, and re-keys valid fixes by animal onto the fixes topic, one message per
  animal per batch. The raw topic cannot be trusted to be keyed by animal; this hop
  is what makes the next one's table partitioning correct. A batch whose fixes-topic
  partition this worker owns skips the broker (`_LocalBatch`): a lone worker, the
  usual deployment, never needs the hop.
* `track_fix` reads the fixes topic; its task groups a batch by animal and has the
  pure reducer (`core.track.advance_many`, all animals of the batch at once) run in a
  process of its own (`stream.reducer_process`), which keeps the states decoded; they reach the
  `animal_to_track` table once per commit interval, before the offsets are
  committed: not once per fix, nor per batch.

Delivery is at-least-once (Tansu has no transactions): after a crash a batch may be
processed again, and the reducer's deterministic ids and idempotent merge make the
repeat emit the same ids, which sinks drop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import faust
import numpy as np
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from collarstream.config import Settings
from collarstream.core.quality import PROFILES
from collarstream.core.track import Context, TrackConfig
from collarstream.fences import (
    border_lines,
    default_urban_path,
    load_countries,
    load_fence_file,
    load_protected_areas,
)
from collarstream.stream.children import tie_to_worker
from collarstream.stream.coalesce import Coalescer, wait_until_idle
from collarstream.stream.delivery_agents import install_delivery
from collarstream.stream.heap import freeze_heap
from collarstream.stream.reducer_process import MERGED, ReducerProcess
from collarstream.stream.topics import TopicNames
from collarstream.stream.watch import install_watchers
from collarstream.wire import (
    Fix,
    InvalidFix,
    dead_letter,
    encode_batch,
    home_range_message,
    parse_message,
    warm_up,
)

log = logging.getLogger(__name__)
# Scheduling priority of the home-range process, relative to the worker's.
HOME_RANGE_NICENESS = 10
# A home-range estimate (~5 ms) waits while fixes are pending, for at most this long
# from when its batch was taken: in a catch-up thousands of them would otherwise take
# the cores from the fix path (measured: 7.6-9.0 k fixes/s against 10.5-11.3 k with
# them switched off).
HOME_RANGE_DEFER_S = 30.0
# While the reducer's process is busy and has a call waiting behind the one it runs, the
# tracking stage hands it what it took at most this often. The child reduces everything
# waiting as one call when it is free (`stream.reducer_process`), so what matters is
# that the backlog is in its pipe by then, not in how many calls; more often would only
# cost the event loop a call per event in a catch-up.
COALESCE_S = 0.005
# Fix messages handed to the reducer and not answered yet, at most this many batches'
# worth (backpressure beyond, through the tracking coalescer to the broker).
IN_FLIGHT_BATCHES = 2


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes 1,500 ms; aiokafka reads this attribute when it starts.
        consumer._fetch_max_wait_ms = self.app.conf.collarstream_fetch_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Commit on the timer only (broker_commit_interval, its own task), never every
        # `broker_commit_every` messages (Faust: 10,000). That count commits inline in
        # the loop that hands messages to the agents, which then stops until the commit
        # is done: the hooks below wait for the outputs in flight and the reducer's
        # states, and the broker for the changelog and the offsets. Measured at 1,000
        # fixes/s: a 120-170 ms stall every 10 s, and latencies of ~300 ms behind it.
        # The hooks are built to run while later events are processed (`drain` waits
        # for what was put before it; only confirmed states are written).
        self._commit_every = None

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        # Every offset commit goes through here: cached table state is written first
        # (see stream.reducer_process for why the order makes at-least-once hold).
        for hook in getattr(self.app, "collarstream_before_commit", ()):
            await hook()
        return await super()._commit_offsets(offsets, start_new_transaction)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class CollarApp(faust.App):
    """faust.App whose consumer fetch wait is a setting (latency on Tansu depends on it)."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self, loop=self.loop)


class CollarWorker(faust.Worker):
    """faust.Worker without the start-up spinner. The spinner hangs a handler on the root
    logger and lowers it to DEBUG so that it spins on every record; every debug call in
    aiokafka's send and fetch paths then builds a LogRecord (measured: ~5 % of the GIL
    under load). A service has no terminal to spin on."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        freeze_heap()  # what starting made stays too (see stream.heap)


def build_app(settings: Settings) -> CollarApp:
    if not settings.bootstrap_servers:
        raise ValueError("KAFKA_BOOTSTRAP_SERVERS: the worker needs a broker address")
    names = TopicNames(settings.topic_prefix)
    app = CollarApp(
        settings.app_id,
        broker=[f"kafka://{b}" for b in settings.bootstrap_servers.split(",")],
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_rebalance_timeout=settings.session_timeout_s,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        # web_host is only the advertised URL; bind to loopback, and no /table pages:
        # they would serve animal_to_track (exact fixes) without authentication.
        web_bind="127.0.0.1",
        web_tables_enabled=False,
        producer_linger=0.002,
        broker_commit_interval=settings.commit_interval_s,
    )
    app.conf.collarstream_fetch_wait_ms = settings.fetch_wait_ms
    ctx = live_context(settings)

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )

    raw, fixes = topic(names.raw_fixes), topic(names.fixes)
    home_range_due = topic(names.home_range_work)
    outputs = {
        "step": _Sender(app, names.steps),
        "alert": _Sender(app, names.alerts),
        "home-range": _Sender(app, names.home_ranges),
        "home-range-due": _Sender(app, names.home_range_work),
    }
    dlq, fixes_out = _Sender(app, names.dead_letter), _Sender(app, names.fixes)

    async def send_alert(key: bytes, alert: dict[str, Any]) -> None:
        await outputs["alert"].send(key, orjson.dumps(alert))

    # Hooks run before every offset commit, in order (see _Consumer._commit_offsets).
    app.collarstream_before_commit = []  # type: ignore[attr-defined]
    # A replayed clock (the demo) runs `speed` times faster: tick as often in its time.
    speed = settings.data_clock[2] if settings.data_clock else 1.0
    watchers = install_watchers(
        app,
        ctx,
        topic(names.positions),
        send_alert,
        interval_s=max(0.5, min(60.0, 3600.0 / speed)),
        now_ms=settings.now_ms,
        replayed_clock=settings.data_clock is not None,
    )
    animal_to_track = app.Table("animal_to_track", partitions=settings.partitions)
    # Faust derives serializers from key/value types (json for bytes); state_codec
    # already makes bytes. Set before the store and changelog topic are created (lazily).
    animal_to_track.key_serializer = "raw"
    animal_to_track.value_serializer = "raw"
    # The reducer and the decoded states live in a process of their own (see
    # stream.reducer_process): it starts now, while the worker joins its group.
    reducer = ReducerProcess(animal_to_track, functools.partial(live_context, settings))
    reducer.start()

    # Each agent only puts its events into a coalescer; a task takes everything pending
    # whenever it is free, so micro-batches are as large as the backlog (see
    # stream.coalesce). Events are acked when put, so every offset commit first waits for
    # the outputs of what was put before it (the first commit hooks).
    raw_in: Coalescer[Any] = Coalescer(settings.batch_max)
    fixes_in: Coalescer[Any] = Coalescer(settings.batch_max)
    # Reducing batch N+1 (in the reducer's process) overlaps sending batch N's outputs
    # (the emitter); the calls in flight are bounded in the tracking stage.
    reduced: asyncio.Queue[Any] = asyncio.Queue()
    in_flight_limit = IN_FLIGHT_BATCHES * settings.batch_max

    def fixes_pending() -> bool:
        busy = reducer.calls_in_flight > 0 or not reduced.empty()
        return busy or len(raw_in) > 0 or len(fixes_in) > 0

    async def flush_states() -> None:
        # Fixes are reduced and sent while a commit runs: write the states confirmed
        # before the producer's flush, whose outputs it acknowledges; later ones wait.
        confirm = reducer.hold()
        try:
            await app.producer.flush()
            await reducer.flush(confirm)
        finally:
            reducer.release()

    app.collarstream_before_commit += [  # type: ignore[attr-defined]
        raw_in.drain,
        fixes_in.drain,
        flush_states,
    ]

    # The partitions this worker owns, kept by the rebalance signals: asking the consumer
    # (`assignment()`, a set built through its thread) on every take was ~3 % of the event
    # loop's time in a catch-up.
    owned: set[TP] = set()

    @app.on_partitions_revoked.connect
    async def _states_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        owned.difference_update(revoked)
        # Faust has committed (through flush_states) and waited for the agents; write
        # anything left and forget: the next owner restores from the changelog.
        await fixes_in.drain()
        await reducer.flush()
        await reducer.drop()

    @app.on_partitions_assigned.connect
    async def _states_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        owned.clear()
        owned.update(app.consumer.assignment())
        await fixes_in.drain()
        await reducer.flush()
        await reducer.drop()

    @app.agent(raw, name="validate_fix")
    async def validate_fix(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await raw_in.put(event)

    # Marks the fixes-topic copies of batches this worker tracked in process; they are
    # published only for delivery (which reads the topic), else the topic is left out.
    mark_here = (TRACKED_BY, uuid.uuid4().hex.encode())
    delivering = settings.subscriptions is not None

    @app.agent(fixes, name="track_fix")
    async def track_fix(stream: faust.StreamT) -> None:
        async for event in stream.events():
            if not _tracked(event.message.headers, mark_here):
                await fixes_in.put(event)

    async def crash_on_error(stage: Any) -> None:
        # A crashed task would leave a worker that looks alive and tracks nothing (Faust
        # does not restart it), and a dead reducer process took the states with it.
        # Stop, so that a supervisor restarts from the table; an output not sent must
        # not be committed past.
        try:
            await stage()
        except Exception as exc:
            await app.crash(exc)
            raise

    async def validate() -> None:
        while True:
            mark, events = await raw_in.take()
            by_animal: dict[str, list[Fix]] = defaultdict(list)
            for ev in events:
                msg = ev.message
                try:
                    for fix in parse_message(msg.value, received_ms=_received_ms(msg)):
                        by_animal[fix.animal].append(fix)
                except InvalidFix as exc:
                    record = dead_letter(
                        msg.value,
                        str(exc),
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        msg.key,
                        _received_ms(msg),
                    )
                    await dlq.send(msg.key, orjson.dumps(record))
            here = owned if settings.local_handoff else set()
            for animal, items in by_animal.items():
                key, value = animal.encode(), encode_batch(animal, items)
                local = _LocalBatch(key, value, names.fixes, fixes_partition(key))
                if TP(local.topic, local.partition) in here:
                    await fixes_in.put(local)  # see _LocalBatch
                    if delivering:  # it hands fixes off from the topic: publish, marked
                        await fixes_out.send(key, value, headers=[mark_here])
                else:
                    await fixes_out.send(key, value)
            raw_in.done(mark)

    partitioner = DefaultPartitioner()
    all_partitions = list(range(settings.partitions))

    @functools.lru_cache(maxsize=65_536)  # murmur2 in Python, per animal per batch
    def fixes_partition(key: bytes) -> int:
        """The fixes topic's partition of a key, as the producer would choose it."""
        return int(partitioner(key, all_partitions, all_partitions))

    async def track() -> None:
        while True:
            while reducer.in_flight_messages >= in_flight_limit:
                await reducer.answered()
            if reducer.calls_in_flight >= 2:  # one running, one waiting: see COALESCE_S
                await reducer.answered(COALESCE_S)
            mark, events = await fixes_in.take()
            grouped: dict[bytes, list[Any]] = defaultdict(list)
            for ev in events:
                if isinstance(ev, _LocalBatch) and TP(ev.topic, ev.partition) not in owned:
                    # Put before a rebalance took its partition away (after the revoke
                    # drained this coalescer): its new owner tracks it, from the topic.
                    await fixes_out.send(ev.key, ev.value)
                    continue
                grouped[ev.message.key].append(ev)
            if not grouped:  # nothing to reduce; done in order, after the emitter's
                await reduced.put((mark, None, []))
                continue
            # Written to the reducer's pipe now, awaited by the emitter: the child takes it
            # (with whatever else waits) the moment it finishes the call before, not after
            # the loop has come back for that one's result and sent it.
            call = reducer.reduce(
                [(key, [ev.message.value for ev in evs]) for key, evs in grouped.items()]
            )
            await reduced.put((mark, call, [(key, evs[-1]) for key, evs in grouped.items()]))

    async def emit() -> None:
        # Each animal's last event over the calls whose outputs are still to come: a call
        # the child reduced together with later ones (MERGED) is answered by the last.
        lasts: dict[bytes, Any] = {}
        while True:
            mark, call, call_lasts = await reduced.get()
            if call is not None:
                answer = await call
                lasts.update(call_lasts)
                if answer is MERGED:
                    continue  # nor done: that waits for the outputs, with the last call's
                seq, results = answer
                for key, (steps, others, rec) in results:
                    await _emit(key, lasts[key], seq, steps, others, rec)
                lasts.clear()
            if not lasts:  # (else a merged call's outputs are still to come)
                fixes_in.done(mark)

    @app.task
    async def validator() -> None:
        await crash_on_error(validate)

    @app.task
    async def tracker() -> None:
        await crash_on_error(track)

    @app.task
    async def emitter() -> None:
        await crash_on_error(emit)

    async def _emit(
        key: bytes,
        last: Any,
        seq: int,
        steps: bytes | None,
        others: list[tuple[str, bytes]],
        rec: dict[str, Any] | None,
    ) -> None:
        if rec is not None:
            watchers.on_record(key, rec, last)
        if steps is not None:
            await outputs["step"].send(key, steps)
        for kind, body in others:
            await outputs[kind].send(key, body)
        # Only now, with its outputs handed to the producer, may the state be written.
        reducer.sent(key, seq, last)

    # Home ranges cost milliseconds each (KDE, isopleths) against microseconds a fix, so
    # they are estimated here, off the fix path, in a process of their own: the tracking
    # agent only says which are due (with their fixes), and alerts never wait for them.
    # "spawn": forking a process that runs the consumer's thread can deadlock the child.
    # Niced: on a small machine it shares the cores with the fix path (and often the
    # broker), and a home range may come minutes late where an alert may not.
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=tie_to_worker,  # see stream.children
        initargs=(os.getpid(), HOME_RANGE_NICENESS),
    )
    pool.submit(warm_up)  # its process starts and imports now, while the worker joins
    pool.submit(freeze_heap)  # then what it loaded stays (see stream.heap)

    @app.agent(home_range_due, name="estimate_home_range")
    async def estimate_home_range(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            # A later item for the same id (a correction) supersedes an earlier one.
            latest = {}
            for ev in events:
                item_id = orjson.loads(ev.message.value)["id"]
                latest[item_id] = (ev.message.key, ev.message.value)
            deadline = loop.time() + HOME_RANGE_DEFER_S
            for key, item in latest.values():
                await wait_until_idle(fixes_pending, deadline - loop.time())
                body = await loop.run_in_executor(pool, home_range_message, item)
                await outputs["home-range"].send(key, body)

    @app.on_before_shutdown.connect
    async def _stop_pool(app: faust.App, **kwargs: Any) -> None:
        pool.shutdown(wait=False, cancel_futures=True)
        reducer.shutdown()

    install_delivery(app, settings, names)
    app.collarstream_topics = names  # type: ignore[attr-defined]
    return app


TRACKED_BY = "collarstream-tracked-by"


def _tracked(headers: Any, mark: tuple[str, bytes]) -> bool:
    """Whether a fixes-topic message carries this worker's mark (headers as aiokafka or
    Faust give them: pairs, or a mapping)."""
    if not headers:
        return False
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return any(tuple(pair) == mark for pair in pairs)


class _Sender:
    """Sends bytes to one topic through the app's producer, not through Faust's
    `Topic.send`, which builds a FutureMessage, runs the sensors and hangs a callback on
    every message: measured in a catch-up, 132 µs of the event loop's CPU a send against
    21 µs for the producer's, at one output message for every 6-8 fixes. Nothing here
    used what it adds. Outputs are not sent from an agent's event, so Faust would not
    have attached them to one, and that they were delivered is made sure by flushing the
    producer before every offset commit (`flush_states`), not by per-message futures.
    The worker creates every topic before the app starts (`topics.ensure_topics`)."""

    __slots__ = ("_app", "topic")

    def __init__(self, app: faust.App, topic: str) -> None:
        self._app, self.topic = app, topic

    async def send(self, key: bytes, value: bytes, headers: list[Any] | None = None) -> Any:
        producer = await self._app.maybe_start_producer()
        return await producer.send(self.topic, key, value, None, None, headers)


class _LocalBatch:
    """A validated batch whose fixes-topic partition this worker owns: the tracking
    stage takes it in process instead of from the broker (a fetch and a round trip off
    every alert's latency, and the tracking stage never waits on the validating one's
    produce). It stands in for the fixes-topic event: the same key, value, topic and
    partition, so its state and last fix are written to the table partitions the
    event's would have been. With delivery installed (subscriptions set) the batch is
    still published to the fixes topic, which delivery hands fixes off from, with a
    header naming this worker instance, whose tracking agent skips it; another worker
    (after a rebalance) tracks it again, which changes nothing. Without delivery
    nothing reads the topic, and a lone worker leaves it empty (measured, catch-up:
    10.7 k fixes/s unpublished, 6.8 k published, 6.5 k without the handoff). Commits
    stay safe: validating is done with a raw event only once its local batches are in
    the tracking coalescer, which every commit drains next. A batch put just before a
    rebalance took its partition away is sent to the topic when the tracking stage
    takes it (its new owner tracks it), never reduced against a dropped state.
    Batches of the same animal arriving through the broker (from another worker) may
    overtake or trail it; the reducer's results do not depend on arrival order."""

    __slots__ = ("__weakref__", "key", "partition", "topic", "value")

    def __init__(self, key: bytes, value: bytes, topic: str, partition: int) -> None:
        self.key, self.value, self.topic, self.partition = key, value, topic, partition

    @property
    def message(self) -> _LocalBatch:
        return self


def _received_ms(msg: Any) -> int:
    ts = getattr(msg, "timestamp", None)
    return int(ts * 1000) if ts else int(time.time() * 1000)


def live_context(settings: Settings) -> Context:
    """What the worker judges tracks against; replay builds the same from the same settings."""
    countries = load_countries(settings.countries)
    # Build the point index now (~0.3 s for the world layer), not on the first fix.
    countries.locate(np.zeros(1), np.zeros(1))
    return Context(
        countries,
        load_fence_file(settings.urban_fences or default_urban_path()),
        profile=PROFILES[settings.profile],
        # The Kyzylsai male is a Persian leopard; the collared snow leopards take the default.
        profiles={"PL-KYZ-01": PROFILES["persian-leopard"]},
        borders=border_lines(countries),
        areas=load_protected_areas(),
        config=TrackConfig(home_range_akde=settings.home_range_akde),
    )
