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
    dt_all = (np.diff(t_ms[idx]) / 1000.0).astype(np.float64)
    gap = dt_all > max_gap_s
    # Burst of each good fix: the time of the first fix after the last gap.
    first = np.concatenate([[True], gap])
    start_pos = np.maximum.accumulate(np.where(first, np.arange(idx.size), 0))
    burst_of_fix = t_ms[idx][start_pos]
    if prior_burst_start_ms is not None:
        burst_of_fix = np.where(start_pos == 0, prior_burst_start_ms, burst_of_fix)
    keep = ~gap
    i0, i1 = idx[:-1][keep], idx[1:][keep]
    if pair_inverse is None:
        dist, heading, arrival = inverse(lon[i0], lat[i0], lon[i1], lat[i1])
    else:
        if pair_inverse[0].size != max(idx.size - 1, 0):
            raise ValueError("pair_inverse needs one row per pair of consecutive good fixes")
        dist, heading, arrival = (a[keep] for a in pair_inverse)
    dt = dt_all[keep]
    speed = np.divide(dist, dt, out=np.zeros_like(dist), where=dt > 0)
    # Previous step's arrival direction, where the previous step joins this one.
    prev_arrival = np.full(i0.size, np.nan)
    if i0.size:
        chained = np.concatenate([[False], i1[:-1] == i0[1:]])
        prev_arrival[1:] = np.where(chained[1:], arrival[:-1], np.nan)
        if i0[0] == idx[0]:
            prev_arrival[0] = prior_arrival_deg
    turn = wrap180(heading - prev_arrival)
    pos_of = np.searchsorted(idx, i0)
    return Steps(i0, i1, dist, dt, speed, heading, arrival, turn, burst_of_fix[pos_of])


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
