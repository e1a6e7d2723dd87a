"""Proximity alerts: one per animal at the start of an encounter (``core.proximity``).

Pure, so the replay (``analyze``, over whole tracks) and the live proximity agent
(``stream.watch``) build the same alerts from the same first close pair of fixes. The id
names the pair and the fix times of that first detection: a replay and the live worker
give the same id, and a redelivered position re-raises the same id, which receivers
drop.

No all-clear is sent. An encounter ends only when the pair has gone ENCOUNTER_GAP_S
without a close pair of fixes, which nothing observes at that moment: live, the first
event after it is the pair's next close detection, whose "start" alert already says that
the previous encounter had ended; a separate "end" sent with it would be noise. An
all-clear at the moment the gap runs out needs a timer on data time across animals (the
silence timer runs on the wall clock, per animal) and would double the messages of an
"info" kind whose news is that two animals met. ``details.transition`` is "start" so a
later "end" can join without changing the alerts already sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collarstream.core.proximity import ENCOUNTER_GAP_S, WITHIN_M
from collarstream.core.track import TrackState, alert_event, event_id
from collarstream.timefmt import iso

Event = dict[str, Any]


def fix_record(state: TrackState, i: int) -> Event:
    """Fix i of a track as the encounter alerts (and the live watchers) read it."""
    return {
        "animal": state.animal,
        "tag": state.tag,
        "t_ms": int(state.t_ms[i]),
        "lon": float(state.lon[i]),
        "lat": float(state.lat[i]),
        "received_ms": int(state.received_ms[i]),
    }


def encounter_alerts(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    dist_m: float,
    within_m: float = WITHIN_M,
    gap_s: float = ENCOUNTER_GAP_S,
) -> list[Event]:
    """The start alerts of an encounter whose first detection is fixes `a` and `b` (of two
    different animals; records with animal, tag, t_ms, lon, lat, received_ms, as in
    ``stream.watch.last_fix_record``), one for each animal, the lower id first."""
    if a["animal"] > b["animal"]:
        a, b = b, a
    return [
        _start_alert(a, b, dist_m, within_m, gap_s),
        _start_alert(b, a, dist_m, within_m, gap_s),
    ]


def _start_alert(
    me: Mapping[str, Any], other: Mapping[str, Any], dist_m: float, within_m: float, gap_s: float
) -> Event:
    t, other_t = int(me["t_ms"]), int(other["t_ms"])
    return alert_event(
        me["animal"],
        me["tag"],
        "proximity",
        "info",
        event_id("alr", me["animal"], "proximity", other["animal"], "start", t, other_t),
        t,
        int(me["received_ms"]),
        me["lon"],
        me["lat"],
        {
            "transition": "start",
            "other": other["animal"],
            "other-fix-timestamp": iso(other_t),
            "distance_m": round(float(dist_m), 1),
            "within_m": float(within_m),
            "dt_s": abs(t - other_t) / 1000.0,
            "encounter-gap_s": float(gap_s),
        },
    )
