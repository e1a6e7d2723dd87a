"""Watchers that no single fix can trigger: silent collars (a timer) and proximity of
two collared animals (a view across animals).

* Silent collar. The tracking agent records each animal's last good fix in memory and
  in the `animal_to_last_fix` table (written before offsets are committed); a timer
  compares it with the wall clock and raises the start of a silence the moment the
  collar has missed `silent_periods` intervals, with the id and content the reducer
  gives the same silence once the collar speaks again
  (`core.track.silent_collar_alert`): receivers see it once, and a replay of
  the track has it too. The all clear comes from the reducer, with the next fix.
* Proximity. The tracking agent sends each animal's newest good fix to the
  `<prefix>.positions` topic under one key (every 50 ms, the new ones in one message,
  in order), so one agent (on one partition) sees every animal's latest position and
  compares each new fix with the others' latest
  (`core.proximity.close_to`: within 500 m and 1 h). Each close pair is a detection;
  `core.proximity.continue_encounters` groups them into encounters per pair of animals,
  and only an encounter's first detection raises alerts (`core.encounters`: one per
  animal, the ids a replay gives the same encounter). Per pair, the open encounter
  (start fix times, last detection time) is kept in the `proximity_encounters` table and
  in memory; the latest positions, decoded, in memory, with `latest_positions` as the
  persisted copy, so a fix costs one decode and a vectorized distance to every other
  animal. Known limit: live compares a new fix with the latest fix of each other animal
  only, so a late fix, or a collar upload (only its newest fix is published), can miss
  a pair that a replay over whole tracks (`close_pairs`) finds, and so start an
  encounter later or not at all.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
import numpy as np
import orjson
from faust.streams import _current_event

from collarstream.core import proximity, silence
from collarstream.core.encounters import encounter_alerts, fix_record
from collarstream.core.track import Context, TrackState, silent_collar_alert

Send = Callable[[bytes, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Watchers:
    on_record: Callable[[bytes, dict[str, Any], Any], None]
    check_silence: Callable[[], Awaitable[None]]


ALL = b"all"
Pair = tuple[str, str]


def last_fix_record(state: TrackState, ctx: Context) -> dict[str, Any] | None:
    """What the silence timer and the proximity agent need about an animal's newest
    good fix (None when it has none)."""
    good = np.flatnonzero(state.flags == 0)
    if good.size == 0:
        return None
    return {
        **fix_record(state, int(good[-1])),
        "interval_s": ctx.profile_for(state.animal).fix_interval_s,
        "delay_ms": silence.usual_delay_ms(state.t_ms[good], state.received_ms[good]),
    }


class LatestFixes:
    """Each animal's newest good fix, decoded once: the records and, for the distance
    test, their positions and times in columns (updated in place)."""

    def __init__(self) -> None:
        self.recs: list[dict[str, Any]] = []
        self.index: dict[str, int] = {}
        self.lon = np.empty(8)
        self.lat = np.empty(8)
        self.t_ms = np.empty(8, np.int64)

    def __len__(self) -> int:
        return len(self.recs)

    def put(self, rec: dict[str, Any]) -> None:
        k = self.index.get(rec["animal"])
        if k is None:
            k = len(self.recs)
            if k == self.lon.size:  # double the columns: amortized O(1) a new animal
                self.lon, self.lat, self.t_ms = (
                    np.concatenate([c, np.empty_like(c)]) for c in (self.lon, self.lat, self.t_ms)
                )
            self.index[rec["animal"]] = k
            self.recs.append(rec)
        else:
            self.recs[k] = rec
        self.lon[k], self.lat[k], self.t_ms[k] = rec["lon"], rec["lat"], rec["t_ms"]

    def get(self, animal: str) -> dict[str, Any] | None:
        k = self.index.get(animal)
        return None if k is None else self.recs[k]

    def close_to(self, rec: dict[str, Any]) -> tuple[list[dict[str, Any]], list[float]]:
        """The other animals' latest fixes close to `rec`, and their distances."""
        n = len(self.recs)
        idx, dist = proximity.close_to(
            rec["lon"], rec["lat"], rec["t_ms"], self.lon[:n], self.lat[:n], self.t_ms[:n]
        )
        me = self.index.get(rec["animal"], -1)
        keep = idx != me
        return [self.recs[k] for k in idx[keep].tolist()], dist[keep].tolist()


def _pair_key(pair: Pair) -> bytes:
    return orjson.dumps(list(pair))


def _encode_open(e: proximity.OpenEncounter) -> bytes:
    return orjson.dumps({"start_ms": list(e.start_ms), "last_ms": e.last_ms})


def _decode_open(raw: bytes) -> proximity.OpenEncounter:
    d = orjson.loads(raw)
    return proximity.OpenEncounter(
        (int(d["start_ms"][0]), int(d["start_ms"][1])), int(d["last_ms"])
    )


def install_watchers(
    app: faust.App,
    ctx: Context,
    positions_topic: faust.TopicT,
    send_alert: Send,
    interval_s: float = 60.0,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    replayed_clock: bool = False,
) -> Watchers:
    """Add the silence timer and the proximity agent to `app`. Returns the hook the
    tracking agent calls with an animal's newest good fix (`last_fix_record`) after an
    advance changed its track, and an event of the animal's partition (table writes);
    and the timer's check, for tests.

    `replayed_clock`: `now_ms` runs faster than the wall clock (the demo replays days in
    minutes), so a second of worker lag is hours of it; the timer then judges silence
    no later than the newest arrival it has seen from any collar, not by a clock the
    worker may lag behind."""
    last_fix = app.Table("animal_to_last_fix", partitions=positions_topic.partitions)
    last_fix.key_serializer = "raw"
    last_fix.value_serializer = "raw"
    latest = app.Table("latest_positions", partitions=positions_topic.partitions)
    latest.key_serializer = "raw"
    latest.value_serializer = "raw"
    open_pairs = app.Table("proximity_encounters", partitions=positions_topic.partitions)
    open_pairs.key_serializer = "raw"
    open_pairs.value_serializer = "raw"
    # Decoded copies of the two tables, loaded on the first position after a start or a
    # rebalance (the tables are then restored); the agent writes both alike.
    mem_latest = LatestFixes()
    mem_open: dict[Pair, proximity.OpenEncounter] = {}
    loaded = False
    periods = ctx.detectors.silent_periods
    pending: list[dict[str, Any]] = []
    raised: set[tuple[bytes, int]] = set()  # silences this process has raised

    # The newest good fix per animal: decoded here, written to `animal_to_last_fix` before
    # the offsets are committed (as the track states are), not once per batch. Each
    # dirty key keeps an event of its partition for the write.
    mem_last: dict[bytes, dict[str, Any]] = {}
    dirty_last: dict[bytes, Any] = {}

    def on_record(key: bytes, rec: dict[str, Any], event: Any) -> None:
        old = mem_last.get(key)
        if old is None and (raw := last_fix.get(key)) is not None:
            old = orjson.loads(raw)
        if old is not None and old["t_ms"] >= rec["t_ms"]:
            return
        mem_last[key] = rec
        dirty_last[key] = event
        pending.append(rec)

    def flush_last() -> None:
        for key, event in dirty_last.items():
            token = _current_event.set(weakref.ref(event))
            try:
                last_fix[key] = orjson.dumps(mem_last[key])
            finally:
                _current_event.reset(token)
        dirty_last.clear()

    @app.timer(interval_s, name="silent_collars")
    async def silent_collars() -> None:
        await check_silence()

    async def check_silence() -> None:
        now = now_ms()
        stored = {key: raw for key, raw in list(last_fix.items()) if key not in mem_last}
        records = [(key, orjson.loads(raw)) for key, raw in stored.items()]
        records += list(mem_last.items())
        if replayed_clock and records:
            now = min(now, max(rec["received_ms"] for _, rec in records))
        # Collars on a schedule, not raised yet; judged all at once.
        records = [
            (key, rec)
            for key, rec in records
            if rec.get("interval_s") is not None and (key, rec["t_ms"]) not in raised
        ]
        if not records:
            return
        silent, _ = silence.silent_collars(
            np.array([rec["t_ms"] for _, rec in records], dtype=np.int64),
            np.array([rec["interval_s"] for _, rec in records], dtype=np.float64),
            now,
            periods,
            np.array([rec.get("delay_ms", 0) for _, rec in records], dtype=np.int64),
        )
        for k in np.flatnonzero(silent).tolist():
            key, rec = records[k]
            alert = silent_collar_alert(
                rec["animal"],
                rec["tag"],
                rec["t_ms"],
                rec["lon"],
                rec["lat"],
                rec["t_ms"],
                rec["received_ms"],
                rec["interval_s"],
                periods,
                "start",
            )
            alert.pop("_anchor")
            await send_alert(key, alert)
            # Tables cannot be written outside an event; after a restart the alert may
            # go out again, with the same id, which receivers drop.
            raised.add((key, rec["t_ms"]))

    @app.timer(0.05, name="publish_positions")
    async def publish_positions() -> None:
        # One message per tick with every new position (a JSON array, in order): a
        # message per position was a produce, a fetch and a Faust event per fix.
        if pending:
            batch = pending[:]
            del pending[: len(batch)]
            await positions_topic.send(key=ALL, value=orjson.dumps(batch))

    def load() -> None:
        nonlocal loaded, mem_latest
        mem_latest = LatestFixes()
        mem_open.clear()
        for raw in latest.values():
            mem_latest.put(orjson.loads(raw))
        for key, raw in open_pairs.items():
            a, b = orjson.loads(key)
            mem_open[a, b] = _decode_open(raw)
        loaded = True

    # Table writes wait for the next offset commit (see stream.state_cache): every
    # position moves a close pair's last detection, and a changelog record per pair per
    # position was most of this agent's cost where animals gather. Only the latest
    # value of each key is written, in the partition of the last position seen.
    dirty_latest: dict[bytes, bytes] = {}
    dirty_pairs: dict[Pair, proximity.OpenEncounter] = {}
    write_ctx: list[Any] = [None]

    def flush(
        only: tuple[dict[bytes, bytes], dict[Pair, proximity.OpenEncounter]] | None = None,
    ) -> None:
        """Write the dirty entries, or only those of `only` (a snapshot of them taken
        earlier); an entry changed since its snapshot stays dirty."""
        some_latest, some_pairs = only or (dict(dirty_latest), dict(dirty_pairs))
        if write_ctx[0] is None or not (some_latest or some_pairs):
            return
        token = _current_event.set(weakref.ref(write_ctx[0]))
        try:
            for key, raw in some_latest.items():
                latest[key] = raw
            for pair, enc in some_pairs.items():
                open_pairs[_pair_key(pair)] = _encode_open(enc)
        finally:
            _current_event.reset(token)
        for key, raw in some_latest.items():
            if dirty_latest.get(key) is raw:
                del dirty_latest[key]
        for pair, enc in some_pairs.items():
            if dirty_pairs.get(pair) is enc:
                del dirty_pairs[pair]

    async def flush_before_commit() -> None:
        # Positions are handled while a commit runs: write the encounters open before the
        # producer's flush, whose alerts it acknowledges; later ones wait for the next.
        snapshot = (dict(dirty_latest), dict(dirty_pairs))
        await app.producer.flush()
        flush(snapshot)
        flush_last()

    if not hasattr(app, "collarstream_before_commit"):
        app.collarstream_before_commit = []  # type: ignore[attr-defined]
    app.collarstream_before_commit.append(flush_before_commit)  # type: ignore[attr-defined]

    async def forget(*_: Any, **__: Any) -> None:
        nonlocal loaded
        flush()
        flush_last()
        mem_last.clear()  # another worker may own those animals next: the table is the truth
        loaded = False  # another worker may own the positions next: reload from the tables

    app.on_partitions_revoked.connect(forget)
    app.on_partitions_assigned.connect(forget)

    @app.agent(positions_topic, name="proximity")
    async def proximity_agent(stream: faust.StreamT) -> None:
        async for value in stream:
            if not loaded:
                load()
            write_ctx[0] = stream.current_event
            recs = orjson.loads(value)
            for rec in [recs] if isinstance(recs, dict) else recs:
                await _position(rec)

    async def _position(rec: dict[str, Any]) -> None:
        others, dist = mem_latest.close_to(rec)
        was = mem_latest.get(rec["animal"])
        if was is None or was["t_ms"] <= rec["t_ms"]:  # not a redelivered older one
            mem_latest.put(rec)
            dirty_latest[rec["animal"].encode()] = orjson.dumps(rec)
        if not others:
            return
        starts, changed = proximity.continue_encounters(
            mem_open,
            [rec["animal"]] * len(others),
            [o["animal"] for o in others],
            np.full(len(others), rec["t_ms"], np.int64),
            np.array([o["t_ms"] for o in others], dtype=np.int64),
        )
        for k in np.flatnonzero(starts).tolist():
            for alert in encounter_alerts(rec, others[k], dist[k]):
                await send_alert(alert["individual-local-identifier"].encode(), alert)
        # Only with the alerts handed to the producer: a crash before this re-raises
        # the same ids, which receivers drop.
        for pair, state in changed.items():
            mem_open[pair] = state
            dirty_pairs[pair] = state

    return Watchers(on_record, check_silence)
