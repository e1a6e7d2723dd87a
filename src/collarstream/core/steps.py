"""Movement steps between consecutive good fixes: geodesic length, duration, speed,
heading and turning angle, with bursts split at gaps the collar schedule cannot explain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collarstream.core.geodesy import inverse

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Steps:
    """Parallel arrays, one row per step; i0/i1 index the fixes the step joins."""

    i0: IntArray
    i1: IntArray
    dist_m: FloatArray
    dt_s: FloatArray
    speed_mps: FloatArray
    heading_deg: FloatArray
    arrival_deg: FloatArray
    turn_deg: FloatArray
    burst_start_ms: IntArray

    def __len__(self) -> int:
        return int(self.i0.size)


def wrap180(deg: FloatArray) -> FloatArray:
    """Angle difference folded into (-180, 180]."""
    r = 180.0 - np.mod(180.0 - deg, 360.0)
    # np.mod can round 360 - tiny up to 360.0, which would land on -180 exactly.
    return np.where(r <= -180.0, r + 360.0, r)


def compute_steps(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    good: npt.NDArray[np.bool_],
    max_gap_s: float,
    prior_arrival_deg: float = np.nan,
    prior_burst_start_ms: int | None = None,
    pair_inverse: tuple[FloatArray, FloatArray, FloatArray] | None = None,
) -> Steps:
    """Steps between consecutive good fixes of one animal (input sorted by time).

    A step longer than max_gap_s is not a step: it starts a new burst, and turning
    angles exist only inside a burst. `prior_*` carry the step that ended at the first
    good fix, so a track processed in pieces gives the same angles and burst ids as
    the whole track. `pair_inverse`: `geodesy.inverse` of every pair of consecutive
    good fixes, when the caller has it already (the reducer asks for all animals at
    once); the same numbers, computed elsewhere.
    """
    idx = np.flatnonzero(good)
    if idx.size == 0:
        return _empty()
    if pair_inverse is None:
        pair_inverse = inverse(lon[idx[:-1]], lat[idx[:-1]], lon[idx[1:]], lat[idx[1:]])
    st = compute_steps_many(
        t_ms[idx],
        [idx.size],
        [max_gap_s],
        pair_inverse,
        [prior_arrival_deg],
        None if prior_burst_start_ms is None else [prior_burst_start_ms],
    )
    return Steps(idx[st.i0], idx[st.i1], *(getattr(st, f) for f in STEP_COLUMNS))


def compute_steps_many(
    t_ms: IntArray,
    sizes: npt.ArrayLike,
    max_gap_s: npt.ArrayLike,
    pair_inverse: tuple[FloatArray, FloatArray, FloatArray],
    prior_arrival_deg: npt.ArrayLike | None = None,
    prior_burst_start_ms: npt.ArrayLike | None = None,
) -> Steps:
    """`compute_steps` of many tracks' good fixes laid end to end (`sizes` of them each,
    in order): one set of numpy passes for all. i0 and i1 are positions in `t_ms`; no
    step joins two tracks. Per track: its max_gap_s, and the carried arrival direction
    (NaN: none) and burst start (None for all, or NaN-free int per track; a track whose
    first fix does not continue a burst passes its own first time, the same as none).
    `pair_inverse`: `geodesy.inverse` of each pair of consecutive fixes within a track,
    in order. Each row is bitwise the one-track result's (the same operations)."""
    t = np.asarray(t_ms, np.int64)
    sizes_a = np.asarray(sizes, np.int64)
    n = t.size
    if n == 0:
        return _empty()
    ends = np.cumsum(sizes_a)
    starts = ends - sizes_a
    track_start = np.zeros(n, bool)
    track_start[starts[sizes_a > 0]] = True
    # Pairs (p, p + 1) inside a track: every p but a track's last fix.
    pair_pos = np.flatnonzero(~track_start[1:])
    if pair_inverse[0].size != pair_pos.size:
        raise ValueError("pair_inverse needs one row per pair of consecutive good fixes")
    dt_all = (np.diff(t) / 1000.0).astype(np.float64)[pair_pos]
    gap = dt_all > np.repeat(np.asarray(max_gap_s, np.float64), sizes_a)[pair_pos]
    # Burst of each good fix: the time of the first fix after the last gap (or of its
    # track's first fix, or what the track carries in).
    first = track_start.copy()
    first[pair_pos + 1] = gap
    start_pos = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    burst_of_fix = t[start_pos]
    if prior_burst_start_ms is not None:
        carried = np.repeat(np.asarray(prior_burst_start_ms, np.int64), sizes_a)
        burst_of_fix = np.where(track_start[start_pos], carried, burst_of_fix)
    keep = ~gap
    i0 = pair_pos[keep]
    i1 = i0 + 1
    dist, heading, arrival = (np.asarray(a)[keep] for a in pair_inverse)
    dt = dt_all[keep]
    speed = np.divide(dist, dt, out=np.zeros_like(dist), where=dt > 0)
    # Previous step's arrival direction, where the previous step joins this one; a
    # track's first step from its first fix takes the carried one.
    prev_arrival = np.full(i0.size, np.nan)
    if i0.size:
        chained = i1[:-1] == i0[1:]  # (never across tracks: no step ends a track's head)
        prev_arrival[1:] = np.where(chained, arrival[:-1], np.nan)
        if prior_arrival_deg is not None:
            carried_deg = np.repeat(np.asarray(prior_arrival_deg, np.float64), sizes_a)
            prev_arrival = np.where(track_start[i0], carried_deg[i0], prev_arrival)
    turn = wrap180(heading - prev_arrival)
    return Steps(i0, i1, dist, dt, speed, heading, arrival, turn, burst_of_fix[i0])


# The columns of Steps after i0 and i1.
STEP_COLUMNS = (
    "dist_m",
    "dt_s",
    "speed_mps",
    "heading_deg",
    "arrival_deg",
    "turn_deg",
    "burst_start_ms",
)


def _empty() -> Steps:
    f, i = np.empty(0), np.empty(0, dtype=np.int64)
    return Steps(i, i, f, f, f, f, f, f, i)


def max_gap_seconds(t_ms: IntArray, fix_interval_s: float | None, intervals: float) -> float:
    """Longest step still inside a burst: a few schedule intervals.

    When the schedule is unknown it is taken as the median interval of the track.
    """
    if fix_interval_s is None:
        dts = np.diff(np.unique(t_ms)) / 1000.0
        fix_interval_s = float(np.median(dts)) if dts.size else 3600.0
    return max(fix_interval_s, 1.0) * intervals
