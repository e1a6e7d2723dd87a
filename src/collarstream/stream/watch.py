"""Watchers that no single fix can trigger: silent collars (a timer) and proximity of
two collared animals (a view across animals).

* Silent collar. The tracking agent records each animal's last good fix in the
  `animal_to_last_fix` table; a timer compares it with the wall clock and raises the
  start of a silence the moment the collar has missed `silent_periods` intervals,
  with the id and content the reducer gives the same silence once the collar speaks
  again (`core.track.silent_collar_alert`): receivers see it once, and a replay of
  the track has it too. The all clear comes from the reducer, with the next fix.
* Proximity. The tracking agent sends each animal's newest good fix to the
  `<prefix>.positions` topic under one key, so one agent (on one partition) sees every
  animal's latest position and compares each new fix with the others' latest
  (`core.proximity.close_to`: within 500 m and 1 h). Known limit: live compares a new
  fix with the latest fix of each other animal only, so a late fix can miss a pair
  that a replay over whole tracks (`close_pairs`) finds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import numpy as np
import orjson

from collarstream.core import proximity
from collarstream.core.track import Context, TrackState, proximity_alert, silent_collar_alert

Send = Callable[[bytes, dict[str, Any]], Awaitable[None]]
ALL = b"all"


def last_fix_record(state: TrackState, ctx: Context) -> dict[str, Any] | None:
    """What the silence timer and the proximity agent need about an animal's newest
    good fix (None when it has none)."""
    good = np.flatnonzero(state.flags == 0)
    if good.size == 0:
        return None
    i = int(good[-1])
    return {
        "animal": state.animal,
        "tag": state.tag,
        "t_ms": int(state.t_ms[i]),
        "lon": float(state.lon[i]),
        "lat": float(state.lat[i]),
        "received_ms": int(state.received_ms[i]),
        "interval_s": ctx.profile_for(state.animal).fix_interval_s,
    }


def install_watchers(
    app: faust.App,
    ctx: Context,
    positions_topic: faust.TopicT,
    send_alert: Send,
    interval_s: float = 60.0,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> Callable[[bytes, TrackState, Any], None]:
    """Add the silence timer and the proximity agent to `app`. Returns the hook the
    tracking agent calls after each advance (key, new state, table write context)."""
    last_fix = app.Table("animal_to_last_fix", partitions=positions_topic.partitions)
    last_fix.key_serializer = "raw"
    last_fix.value_serializer = "raw"
    latest = app.Table("latest_positions", partitions=positions_topic.partitions)
    latest.key_serializer = "raw"
    latest.value_serializer = "raw"
    periods = ctx.detectors.silent_periods
    pending: list[dict[str, Any]] = []
    raised: set[tuple[bytes, int]] = set()  # silences this process has raised

    def on_state(key: bytes, state: TrackState, _: Any) -> None:
        rec = last_fix_record(state, ctx)
        if rec is None:
            return
        old = last_fix.get(key)
        if old is not None and orjson.loads(old)["t_ms"] >= rec["t_ms"]:
            return
        last_fix[key] = orjson.dumps(rec)
        pending.append(rec)

    @app.timer(interval_s, name="silent_collars")
    async def silent_collars() -> None:
        now = now_ms()
        for key, raw in list(last_fix.items()):
            rec = orjson.loads(raw)
            if rec.get("interval_s") is None or (key, rec["t_ms"]) in raised:
                continue
            limit_ms = round(rec["interval_s"] * periods * 1000)
            if now - rec["t_ms"] <= limit_ms:
                continue
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
        while pending:
            rec = pending.pop(0)
            await positions_topic.send(key=ALL, value=orjson.dumps(rec))

    @app.agent(positions_topic, name="proximity")
    async def proximity_agent(stream: faust.StreamT) -> None:
        async for value in stream:
            rec = orjson.loads(value)
            others = [orjson.loads(v) for k, v in latest.items() if k != rec["animal"].encode()]
            latest[rec["animal"].encode()] = value
            if not others:
                continue
            idx, dist = proximity.close_to(
                rec["lon"],
                rec["lat"],
                rec["t_ms"],
                np.array([o["lon"] for o in others]),
                np.array([o["lat"] for o in others]),
                np.array([o["t_ms"] for o in others], dtype=np.int64),
            )
            for k, d in zip(idx.tolist(), dist.tolist(), strict=True):
                a, b = rec, others[k]
                for me, other in ((a, b), (b, a)):
                    await send_alert(me["animal"].encode(), proximity_alert(me, other, d))

    return on_state
