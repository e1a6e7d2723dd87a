"""Home-range excursions: leaving the animal's own recent range, and coming back.

Reference range, chosen so the answer depends on the track alone (not on when or in
what order fixes arrived): a fix on UTC day D is judged against the 95 % KDE
(``homerange.home_ranges``, reference bandwidth) of the good fixes in
[D - 30 days, D). The reference exists only with at least ``min_fixes`` such fixes; on
days without one the excursion state is held (nothing set, nothing reset).

Membership is the protected-area latch (``areas``): home from the first fix inside the
polygon, away from the first fix farther than hysteresis_m outside it. Away = excursion.

KDEs cost ~10 ms; ``excursions`` memoizes them in a caller-owned dict keyed by
(day start, digest of the reference fixes), so the reducer's repeated suffix
recomputations reuse them, and a late fix that changes a day's reference changes its key.
The cache is a pure memo (dropping it changes nothing but time); prune it with
``prune_cache``. It should live per worker, not in a Faust table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collarstream.core.areas import area_fence, inside_masks, membership
from collarstream.core.homerange import home_ranges
from collarstream.core.zones import UrbanFence

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DAY_MS = 86_400_000
REFERENCE_DAYS = 30
# A 95 % isopleth of fewer fixes is mostly bandwidth: 30 fixes is one a day for a month.
MIN_FIXES = 30
LEVEL = 95.0
GRID = 128
# KDE isopleth edges are smooth guesses; 500 m keeps an animal on the edge from flapping.
HYSTERESIS_M = 500.0

Cache = dict[tuple[int, str], UrbanFence | None]


def day_start_ms(t_ms: IntArray, period_ms: int = DAY_MS) -> IntArray:
    """Start of each fix's period (00:00 UTC of its day by default; periods count from
    the epoch, so a 7-day period starts on Thursdays, like the home-range boundaries)."""
    return np.floor_divide(np.asarray(t_ms, np.int64), period_ms) * period_ms


def _digest(t: IntArray, lon: FloatArray, lat: FloatArray) -> str:
    h = hashlib.blake2b(digest_size=12)
    for a in (t, lon, lat):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def reference_range(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    day_ms: int,
    cache: Cache | None = None,
    days: int = REFERENCE_DAYS,
    min_fixes: int = MIN_FIXES,
    hysteresis_m: float = HYSTERESIS_M,
) -> UrbanFence | None:
    """The day's reference: 95 % KDE of good fixes in [day - days, day), as a one-zone
    fence (enter inside, leave beyond hysteresis_m); None with too few fixes."""
    a, b = np.searchsorted(t_ms, [day_ms - days * DAY_MS, day_ms], side="left")
    if b - a < min_fixes:
        return None
    key = (int(day_ms), _digest(t_ms[a:b], lon[a:b], lat[a:b]))
    if cache is not None and key in cache:
        return cache[key]
    ranges = home_ranges(lon[a:b], lat[a:b], mcp_levels=(), kde_levels=(LEVEL,), grid_size=GRID)
    fence = None
    if ranges:
        fence = area_fence("home range", f"home-{day_ms}", ranges[0].geometry_lonlat, hysteresis_m)
    if cache is not None:
        cache[key] = fence
    return fence


def prune_cache(cache: Cache, before_ms: int) -> None:
    """Drop memoized references of days before before_ms (e.g. the evicted window)."""
    for key in [k for k in cache if k[0] < before_ms]:
        del cache[key]


@dataclass(frozen=True)
class Excursions:
    """Rows are fixes [start:]; exit/back index into the full arrays."""

    away: BoolArray
    judged: BoolArray  # False on days without a reference range
    exit: IntArray  # warning: left the home range
    back: IntArray  # info: back inside it


def excursions(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    start: int = 0,
    carry: bool | None = None,
    cache: Cache | None = None,
    days: int = REFERENCE_DAYS,
    min_fixes: int = MIN_FIXES,
    hysteresis_m: float = HYSTERESIS_M,
    period_ms: int = DAY_MS,
) -> Excursions:
    """Excursion state of fixes [start:] of one animal's time-sorted good fixes.

    Pass the whole track in hand (the references need `days` of fixes before `start`).
    Contract: with ``carry = away[start - 1]`` the result over [start:] equals rows
    [start:] of the whole-track result. carry None: no prior fix (not away, and the
    can exit at its first judged fix), i.e. the same as carry False.
    """
    t = np.asarray(t_ms, np.int64)
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    n = t.size - start
    home_set = np.zeros(n, dtype=bool)  # inside the range: sets "home"
    home_keep = np.ones(n, dtype=bool)  # within the widened range (or unjudged): keeps it
    judged = np.zeros(n, dtype=bool)
    day = day_start_ms(t[start:], period_ms)
    bounds = np.flatnonzero(np.concatenate([[True], day[1:] != day[:-1]])) if n else []
    for a, b in zip(bounds, [*list(bounds[1:]), n], strict=True):
        fence = reference_range(t, lon, lat, int(day[a]), cache, days, min_fixes, hysteresis_m)
        if fence is None:
            continue
        enter, stay = inside_masks(fence, lon[start + a : start + b], lat[start + a : start + b])
        home_set[a:b], home_keep[a:b], judged[a:b] = enter, stay, True
    # Unjudged fixes neither set nor reset (home_keep stays True there). Without a carry
    # the animal is taken to be home: an excursion needs evidence, and the first judged
    # fix that is far outside its reference range is one.
    home, exits, backs = membership(home_set, home_keep, True if carry is None else not carry)
    return Excursions(~home, judged, exits + start, backs + start)
