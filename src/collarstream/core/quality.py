"""Quality flags for fixes: flags, never deletions (Movebank's `visible`, ecoscope's junk).

A flagged fix stays in the track for analysts but never makes a step, an alert or a
home range. Flags are bits so one fix can carry several reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collarstream.core.geodesy import inverse

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FlagArray = npt.NDArray[np.uint16]

DUPLICATE = np.uint16(1)
MISSING_COORDS = np.uint16(2)
POOR_HDOP = np.uint16(4)
FEW_SATELLITES = np.uint16(8)
IMPOSSIBLE_SPEED = np.uint16(16)
POOR_FIX_TYPE = np.uint16(32)
NEAR_DUPLICATE = np.uint16(64)

FLAG_NAMES: dict[int, str] = {
    int(DUPLICATE): "duplicate",
    int(MISSING_COORDS): "missing-coordinates",
    int(POOR_HDOP): "poor-hdop",
    int(FEW_SATELLITES): "few-satellites",
    int(IMPOSSIBLE_SPEED): "impossible-speed",
    int(POOR_FIX_TYPE): "poor-fix-type",
    int(NEAR_DUPLICATE): "near-duplicate",
}


@dataclass(frozen=True)
class Profile:
    """Per-species thresholds. A snow leopard's plausible speed is not a goose's."""

    name: str
    max_speed_mps: float
    max_hdop: float = 10.0
    min_satellites: int = 3
    fix_interval_s: float | None = None
    # A gap longer than this many fix intervals starts a new burst.
    burst_gap_intervals: float = 3.0
    # Fix type below this (2 = 2-D, 3 = 3-D) is flagged; unknown fix types pass.
    min_fix_type: int = 2
    # Fixes of one animal closer in time than this are one fix reported twice (a
    # collar re-sending a fix with a re-stamped time): the best is kept.
    near_duplicate_s: float = 60.0


PROFILES: dict[str, Profile] = {
    # Sustained 18 km/h between fixes hours apart is beyond any large cat's habits.
    "snow-leopard": Profile("snow-leopard", max_speed_mps=5.0, fix_interval_s=4 * 3600),
    "persian-leopard": Profile("persian-leopard", max_speed_mps=5.0, fix_interval_s=4 * 3600),
    # Analysts replay other taxa (birds, bats): permissive, schedule taken from the data.
    "default": Profile("default", max_speed_mps=70.0, near_duplicate_s=1.0),
}


def flag_names(flags: int) -> list[str]:
    """Names of the bits set in one fix's flags, in bit order."""
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


def static_flags(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    hdop: FloatArray,
    sats: FloatArray,
    profile: Profile,
    fix_type: FloatArray | None = None,
) -> FlagArray:
    """Flags a fix earns on its own or among fixes at (nearly) the same instant.

    Input must be sorted by time. Of fixes sharing an instant the best is kept and the
    others are duplicates; fixes closer in time than `profile.near_duplicate_s`
    (chained: a, b, c each within the tolerance of the next) are near duplicates of the
    best among them. Best: has coordinates, then highest fix type, then lowest HDOP,
    then most satellites, then earliest.
    """
    n = t_ms.size
    ftype = np.full(n, np.nan) if fix_type is None else fix_type
    return static_flags_many(t_ms, lon, lat, hdop, sats, ftype, np.array([0, n]), [profile])


def static_flags_many(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    hdop: FloatArray,
    sats: FloatArray,
    fix_type: FloatArray,
    bounds: IntArray,
    profiles: Sequence[Profile],
) -> FlagArray:
    """`static_flags` of many tracks in one pass: track k is rows bounds[k]:bounds[k + 1]
    (each sorted by time), judged with profiles[k]; fix_type NaN where unknown. No two
    tracks' fixes are ever duplicates of each other."""
    n = t_ms.size
    sizes = np.diff(bounds)

    def each(values: Sequence[float]) -> FloatArray:
        return np.repeat(np.asarray(values, np.float64), sizes)

    flags = np.zeros(n, dtype=np.uint16)
    missing = ~np.isfinite(lon) | ~np.isfinite(lat) | ((lon == 0.0) & (lat == 0.0))
    flags[missing] |= MISSING_COORDS
    flags[np.isfinite(hdop) & (hdop > each([p.max_hdop for p in profiles]))] |= POOR_HDOP
    few = np.isfinite(sats) & (sats < each([p.min_satellites for p in profiles]))
    flags[few] |= FEW_SATELLITES
    poor = np.isfinite(fix_type) & (fix_type < each([p.min_fix_type for p in profiles]))
    flags[poor] |= POOR_FIX_TYPE
    if n > 1:
        tols = [int(p.near_duplicate_s * 1000) for p in profiles]
        # Each track lifted above the one before by more than any span of times (and
        # tolerance): an instant, or a chain of close fixes, never spans two tracks.
        span = int(t_ms.max()) - int(t_ms.min()) + max(max(tols), 0) + 1
        t = t_ms + np.repeat(np.arange(sizes.size, dtype=np.int64) * span, sizes)
        score = _quality_order(missing, fix_type, hdop, sats)
        flags[_not_best(t, t, score)] |= DUPLICATE
        if any(tol > 0 for tol in tols):
            tol = np.repeat(np.asarray(tols, np.int64), sizes)
            # (Times are sorted: a track without a tolerance breaks at every fix.)
            breaks = np.concatenate([[True], np.diff(t) >= tol[1:]])
            group = np.cumsum(breaks)
            near = _not_best(group, t, score) & ((flags & DUPLICATE) == 0)
            flags[near] |= NEAR_DUPLICATE
    return flags


def _quality_order(
    missing: npt.NDArray[np.bool_], ftype: FloatArray, hdop: FloatArray, sats: FloatArray
) -> tuple[FloatArray, ...]:
    """Sort keys, most significant first, smaller is better."""
    return (
        missing.astype(np.float64),
        -np.nan_to_num(ftype, nan=0.0),
        np.where(np.isfinite(hdop), hdop, 1e9),
        -np.nan_to_num(sats, nan=0.0),
    )


def _not_best(
    group: IntArray, t_ms: IntArray, score: tuple[FloatArray, ...]
) -> npt.NDArray[np.bool_]:
    """Every fix but the best of its group (groups are runs of equal `group` values)."""
    same_as_prev = np.concatenate([[False], group[1:] == group[:-1]])
    if not same_as_prev.any():
        return np.zeros(group.size, dtype=bool)
    order = np.lexsort((np.arange(group.size), t_ms, *reversed(score), group))
    first_of_group = np.concatenate([[True], group[order][1:] != group[order][:-1]])
    keep = np.zeros(group.size, dtype=bool)
    keep[order[first_of_group]] = True
    return ~keep


def speed_outliers(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    candidate: npt.NDArray[np.bool_],
    max_speed_mps: float,
) -> npt.NDArray[np.bool_]:
    """Fixes that imply an impossible speed, judged in context.

    An interior fix is an outlier only if both the speed into it and out of it are
    impossible: its honest neighbour is never blamed. The newest fix is judged on the
    speed into it alone (provisionally: the next fix may clear it); the oldest on the
    speed out of it, and only when the fix after it is confirmed by its own successor.
    """
    bounds = np.array([0, t_ms.size])
    return speed_outliers_many(t_ms, lon, lat, candidate, bounds, [max_speed_mps])


def speed_outliers_many(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    candidate: npt.NDArray[np.bool_],
    bounds: IntArray,
    max_speed_mps: Sequence[float],
) -> npt.NDArray[np.bool_]:
    """`speed_outliers` of many tracks in one pass (track k: rows bounds[k]:bounds[k + 1],
    judged at max_speed_mps[k]); a fix is judged only on candidates of its own track."""
    idx = np.flatnonzero(candidate)
    out = np.zeros(t_ms.size, dtype=bool)
    if idx.size < 2:
        return out
    track = np.searchsorted(bounds, idx, side="right") - 1
    # Consecutive candidates k, k + 1 of one track make pair k.
    same = track[1:] == track[:-1]
    p = np.flatnonzero(same)
    a, b = idx[p], idx[p + 1]
    dist, _, _ = inverse(lon[a], lat[a], lon[b], lat[b])
    dt = (t_ms[b] - t_ms[a]) / 1000.0
    limit = np.asarray(max_speed_mps, np.float64)[track[p]]
    fast = np.zeros(idx.size + 1, dtype=bool)  # fast[k]: pair k (one spare at the end)
    fast[p] = dist > limit * np.maximum(dt, 1e-3)
    has_in = np.concatenate([[False], same])
    has_out = np.concatenate([same, [False]])
    into, out_of = np.concatenate([[False], fast[:-2]]), fast[:-1]
    # The oldest fix of a track with three or more candidates: fast out, not fast after.
    third = np.concatenate([same[1:], [False, False]])
    bad = np.where(
        has_in,
        into & (out_of | ~has_out),  # interior: both ways; newest: the way in
        has_out & third & out_of & ~fast[1:],
    )
    out[idx[bad]] = True
    return out
