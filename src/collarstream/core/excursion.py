"""Home-range excursions: leaving the animal's own recent range, and coming back.

Reference range, chosen so the answer depends on the track alone (not on when or in
what order fixes arrived): a fix on UTC day D is judged against the 95 % KDE
(``homerange.home_ranges``, reference bandwidth) of the good fixes in
[D - 30 days, D). The reference exists only with at least ``min_fixes`` such fixes; on
days without one the excursion state is held (nothing set, nothing reset).

Membership is the protected-area latch (``areas``): home from the first fix inside the
range, away from the first fix farther than hysteresis_m outside it. Away = excursion.
The range is read off the KDE grid, not off a contour polygon (``ReferenceRange``): a
fix is inside when the density interpolated at it reaches the 95 % threshold (the
superlevel set is what the isopleth encloses), and within the hysteresis while its
distance to the nearest inside grid node is at most hysteresis_m (measured only for the
fixes not inside, against the inside set's edge nodes: no distance transform of the
grid). That is the same set as the polygon up to a fraction of a grid cell (tens to a
few hundred metres at 128 nodes), and costs well under 1 ms a reference instead of
~3 ms (contouring, a projection back to lon/lat, buffering): in replays and catch-ups
of many animals, with a reference per animal per day, references were a third of the
reducer's time.

References are memoized in a caller-owned dict keyed by (period start, digest of the
reference fixes), so the reducer's repeated suffix recomputations reuse them, and a
late fix that changes a period's reference changes its key. The cache is a pure memo
(dropping it changes nothing but time); prune it with ``prune_cache``. It should live
per worker, not in a Faust table.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collarstream.core.episodes import latch_runs
from collarstream.core.homerange import equal_area_laea, kde_grid
from collarstream.core.homerange import isopleth_threshold as _isopleth_threshold
from collarstream.core.laea import Laea, forward_many
from collarstream.core.suffix import Suffix

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


@dataclass(frozen=True, eq=False)
class ReferenceRange:
    """The LEVEL % KDE superlevel set of a reference period, on the KDE's grid."""

    proj: Laea  # lon/lat -> the grid's equal-area metres
    x0: float
    y0: float
    cell: float
    density: FloatArray  # (ny, nx), density[j, i] at (x0 + i cell, y0 + j cell)
    level: float  # density threshold of the LEVEL % isopleth
    edge: IntArray  # (k, 2) (i, j) of the inside nodes with an outside node among their 8
    hysteresis_m: float

    def masks(self, lon: FloatArray, lat: FloatArray) -> tuple[BoolArray, BoolArray]:
        """Per fix: inside the range, and within hysteresis_m of an inside node."""
        lon = np.asarray(lon, np.float64)
        return masks_many([self], [lon.size], lon, np.asarray(lat, np.float64))


def masks_many(
    refs: Sequence[ReferenceRange], counts: Sequence[int], lon: FloatArray, lat: FloatArray
) -> tuple[BoolArray, BoolArray]:
    """`ReferenceRange.masks` of consecutive runs of fixes, each against its own range
    (the first counts[0] fixes against refs[0], ...): the arithmetic in one set of numpy
    passes over all of them, only the grid lookups run by range. The reducer judges
    every animal of a micro-batch in one call: per animal and call it cost ~90 µs, most
    of it fixed costs, when a live animal brings one or two fixes."""
    n = lon.size
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    x, y = forward_many([r.proj for r in refs], counts, lon, lat)
    par = np.repeat(
        [(r.x0, r.y0, r.cell, r.level, r.density.shape[1], r.density.shape[0]) for r in refs],
        counts,
        axis=0,
    ).T
    nx, ny = par[4], par[5]
    fx, fy = (x - par[0]) / par[2], (y - par[1]) / par[2]
    on = (fx >= 0) & (fx <= nx - 1) & (fy >= 0) & (fy <= ny - 1)
    # Cell of each fix, clamped to the grid; fmin / fmax put NaN in a valid cell (its
    # `on` is False and its density NaN, so it is never inside).
    i0 = np.fmax(np.fmin(np.floor(fx), nx - 2), 0).astype(np.int64)
    j0 = np.fmax(np.fmin(np.floor(fy), ny - 2), 0).astype(np.int64)
    tx = np.minimum(np.maximum(fx - i0, 0.0), 1.0)
    ty = np.minimum(np.maximum(fy - j0, 0.0), 1.0)
    rows = np.stack([j0, j0, j0 + 1, j0 + 1])
    cols = np.stack([i0, i0 + 1, i0, i0 + 1])
    corner = np.empty((4, n))
    ends = np.cumsum(counts)
    for r, a, b in zip(refs, ends - counts, ends, strict=True):
        corner[:, a:b] = r.density[rows[:, a:b], cols[:, a:b]]
    at = (
        corner[0] * (1 - tx) * (1 - ty)
        + corner[1] * tx * (1 - ty)
        + corner[2] * (1 - tx) * ty
        + corner[3] * tx * ty
    )
    enter = on & (at >= par[3])
    stay = enter.copy()
    rest = ~enter & np.isfinite(fx) & np.isfinite(fy)
    if rest.any():
        # The nearest inside node of a point not inside is an edge node: one whose 8
        # neighbours are all inside would be nearer by a step toward the point, unless
        # the point is within half a cell of it, in a cell of inside corners, where the
        # bilinear density is at least the level (so the point is inside).
        for r, a, b in zip(refs, ends - counts, ends, strict=True):
            far = a + np.flatnonzero(rest[a:b])
            if far.size == 0:
                continue
            dx = fx[far][:, None] - r.edge[None, :, 0]
            dy = fy[far][:, None] - r.edge[None, :, 1]
            nearest = np.sqrt((dx * dx + dy * dy).min(axis=1)) * r.cell
            stay[far] = nearest <= r.hysteresis_m
    return enter, stay


def edge_nodes(inside: BoolArray) -> IntArray:
    """(i, j) of the True nodes with a False node (or the grid's end) among their 8."""
    ny, nx = inside.shape
    pad = np.zeros((ny + 2, nx + 2), bool)  # (np.pad costs more than all that follows)
    pad[1:-1, 1:-1] = inside
    # All 8 neighbours True: a 3 x 3 minimum, separable (rows, then columns).
    rows = pad[:, :-2] & pad[:, 1:-1] & pad[:, 2:]
    interior = rows[:-2] & rows[1:-1] & rows[2:]
    jj, ii = np.nonzero(inside & ~interior)
    return np.stack([ii, jj], axis=1).astype(np.int64)


def range_raster(
    lon: FloatArray, lat: FloatArray, level: float, grid: int, hysteresis_m: float
) -> ReferenceRange | None:
    """The level % KDE (reference bandwidth) of the fixes as a ReferenceRange; None when
    the fixes have no spread (no bandwidth exists)."""
    proj = equal_area_laea(lon, lat)
    x, y = proj.forward(lon, lat)
    if np.ptp(x) == 0.0 and np.ptp(y) == 0.0:
        return None
    g = kde_grid(x, y, "ref", grid, exact=True)
    thr = _isopleth_threshold(g, level)
    cell = float(g.xs[1] - g.xs[0])
    if not (math.isfinite(thr) and cell > 0):
        return None
    inside = g.density >= np.float64(thr)  # (not rounded to a single-precision density)
    if not inside.any():
        return None
    return ReferenceRange(
        proj,
        float(g.xs[0]),
        float(g.ys[0]),
        cell,
        g.density,
        thr,
        edge_nodes(inside),
        hysteresis_m,
    )


Cache = dict[tuple[int, str], ReferenceRange | None]


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
) -> ReferenceRange | None:
    """The day's reference: 95 % KDE of good fixes in [day - days, day) (enter inside,
    leave beyond hysteresis_m); None with too few fixes."""
    a, b = np.searchsorted(t_ms, [day_ms - days * DAY_MS, day_ms], side="left")
    if b - a < min_fixes:
        return None
    key = (int(day_ms), _digest(t_ms[a:b], lon[a:b], lat[a:b]))
    if cache is not None and key in cache:
        return cache[key]
    ok = np.isfinite(lon[a:b]) & np.isfinite(lat[a:b])
    ref = (
        range_raster(lon[a:b][ok], lat[a:b][ok], LEVEL, GRID, hysteresis_m)
        if ok.sum() >= 2
        else None
    )
    if cache is not None:
        cache[key] = ref
    return ref


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
    track = Suffix(np.asarray(t_ms, np.int64), lon, lat, start, carry)
    return excursions_many([track], cache, days, min_fixes, hysteresis_m, period_ms)[0]


def excursions_many(
    tracks: Sequence[Suffix[bool]],
    cache: Cache | None = None,
    days: int = REFERENCE_DAYS,
    min_fixes: int = MIN_FIXES,
    hysteresis_m: float = HYSTERESIS_M,
    period_ms: int = DAY_MS,
) -> list[Excursions]:
    """`excursions` of many animals, the same results: every judged fix of every track
    goes through one `masks_many` call."""
    refs: list[ReferenceRange] = []
    runs: list[tuple[int, int, int]] = []  # (track, a, b): rows [a:b] of the track's [start:]
    lons, lats = [], []
    for k, tr in enumerate(tracks):
        t = np.asarray(tr.t_ms, np.int64)
        lon, lat = np.asarray(tr.lon, np.float64), np.asarray(tr.lat, np.float64)
        day = day_start_ms(t[tr.start :], period_ms)
        n = day.size
        if n == 0:
            continue
        bounds = np.flatnonzero(day[1:] != day[:-1]) + 1
        for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), n], strict=True):
            fence = reference_range(t, lon, lat, int(day[a]), cache, days, min_fixes, hysteresis_m)
            if fence is None:
                continue
            refs.append(fence)
            runs.append((k, a, b))
            lons.append(lon[tr.start + a : tr.start + b])
            lats.append(lat[tr.start + a : tr.start + b])
    sizes = [tr.t_ms.size - tr.start for tr in tracks]
    edges = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])  # of each track's rows
    # Unjudged fixes neither set nor reset (keep stays True there).
    sets = np.zeros((int(edges[-1]), 1), dtype=bool)
    keeps = np.ones((int(edges[-1]), 1), dtype=bool)
    judged = np.zeros(int(edges[-1]), dtype=bool)
    if refs:
        counts = [b - a for _, a, b in runs]
        enter, stay = masks_many(refs, counts, np.concatenate(lons), np.concatenate(lats))
        rows = np.concatenate([np.arange(edges[k] + a, edges[k] + b) for k, a, b in runs])
        sets[rows, 0], keeps[rows, 0], judged[rows] = enter, stay, True
    # Home is the latch; without a carry the animal is taken to be home: an excursion
    # needs evidence, and the first judged fix far outside its reference range is one.
    prior = np.array([[True if tr.carry is None else not tr.carry] for tr in tracks], bool)
    home, before = latch_runs(
        sets, keeps, edges, prior.reshape(len(tracks), 1), np.ones(len(tracks), bool)
    )
    home, before = home[:, 0], before[:, 0]
    exits, backs = np.flatnonzero(~home & before), np.flatnonzero(home & ~before)
    ce, cb = np.searchsorted(exits, edges).tolist(), np.searchsorted(backs, edges).tolist()
    out = []
    for k, tr in enumerate(tracks):
        lo, hi = int(edges[k]), int(edges[k + 1])
        shift = tr.start - lo  # rows of the batch -> indices into the track
        out.append(
            Excursions(
                ~home[lo:hi],
                judged[lo:hi],
                exits[ce[k] : ce[k + 1]] + shift,
                backs[cb[k] : cb[k + 1]] + shift,
            )
        )
    return out
