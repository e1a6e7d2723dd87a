"""Quality flags for fixes: flags, never deletions (Movebank's `visible`, ecoscope's junk).

A flagged fix stays in the track for analysts but never makes a step, an alert or a
home range. Flags are bits so one fix can carry several reasons.
"""

from __future__ import annotations

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
    flags = np.zeros(n, dtype=np.uint16)
    missing = ~np.isfinite(lon) | ~np.isfinite(lat) | ((lon == 0.0) & (lat == 0.0))
    flags[missing] |= MISSING_COORDS
    flags[np.isfinite(hdop) & (hdop > profile.max_hdop)] |= POOR_HDOP
    flags[np.isfinite(sats) & (sats < profile.min_satellites)] |= FEW_SATELLITES
    flags[np.isfinite(ftype) & (ftype < profile.min_fix_type)] |= POOR_FIX_TYPE
    if n > 1:
        score = _quality_order(missing, ftype, hdop, sats)
        flags[_not_best(t_ms, t_ms, score)] |= DUPLICATE
        tol = int(profile.near_duplicate_s * 1000)
        if tol > 0:
            breaks = np.concatenate([[True], np.diff(t_ms) >= tol])
            group = np.cumsum(breaks)
            near = _not_best(group, t_ms, score) & ((flags & DUPLICATE) == 0)
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
    idx = np.flatnonzero(candidate)
    out = np.zeros(t_ms.size, dtype=bool)
    if idx.size < 2:
        return out
    dist, _, _ = inverse(lon[idx[:-1]], lat[idx[:-1]], lon[idx[1:]], lat[idx[1:]])
    dt = (t_ms[idx[1:]] - t_ms[idx[:-1]]) / 1000.0
    fast = dist > max_speed_mps * np.maximum(dt, 1e-3)
    bad = np.zeros(idx.size, dtype=bool)
    bad[1:-1] = fast[:-1] & fast[1:]
    bad[-1] = fast[-1]
    if idx.size >= 3:
        bad[0] = fast[0] and not fast[1]
    out[idx[bad]] = True
    return out
