"""The per-animal reducer: the one place where a track's history meets new fixes.

    state, events = advance(state, batch, ctx)

The live Faust agent keeps `state` in a table, the replay tool in a dict; both call
this function, so a replay gives the steps, alerts and home ranges the live system
gave. Events are a function of the time-sorted, de-duplicated track, not of arrival
order: a late fix is slotted into place, the events around it are recomputed, and the
difference against what was already emitted goes out as new events, corrections
(same id, new content) and withdrawals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from collarstream.core import approach as approach_mod
from collarstream.core import excursion as excursion_mod
from collarstream.core import fixfacts, quality
from collarstream.core import immobility as immobility_mod
from collarstream.core import silence as silence_mod
from collarstream.core.areas import (
    AreaMembership,
    ProtectedAreas,
    area_transitions,
    membership_runs,
    quiet_membership,
)
from collarstream.core.countries import CountryLayer, Crossings
from collarstream.core.frozen import evolve
from collarstream.core.geodesy import inverse
from collarstream.core.steps import STEP_COLUMNS, Steps, compute_steps_many, max_gap_seconds
from collarstream.core.suffix import Suffix
from collarstream.core.zones import UrbanFence, latch_levels
from collarstream.timefmt import iso, iso_many

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Event = dict[str, Any]

# Good fixes recomputed before the first changed one: the step into it, and the events
# anchored at that fix, start there. (Flags that a change reaches back to are found by
# comparing them, see `advance`.) 0 breaks the arrival-order property test.
CONTEXT_FIXES = 1
# Good fixes kept before the eviction cut, so a late fix there is still judged (speed
# outliers) against real neighbours.
EVICT_CONTEXT_FIXES = 3

# Columns of TrackState.det.
DET_APPROACH, DET_COUNTRY, DET_AWAY, DET_IMMOBILE_SINCE, DET_AREAS = 0, 1, 2, 3, 4
WEEK_MS = 7 * 86_400_000
# Memo of excursion reference ranges, keyed by content (see core.excursion): pure.
_EXCURSION_CACHE: excursion_mod.Cache = {}


@dataclass(frozen=True)
class FixBatch:
    """New fixes of one animal, any order, duplicates allowed."""

    t_ms: IntArray
    lon: FloatArray
    lat: FloatArray
    hdop: FloatArray
    sats: FloatArray
    received_ms: IntArray
    tag: str = ""
    # GPS fix type (1 no fix, 2 = 2-D, 3 = 3-D); None or NaN where the collar does not say.
    fix_type: FloatArray | None = None

    @staticmethod
    def empty() -> FixBatch:
        f, i = np.empty(0), np.empty(0, dtype=np.int64)
        return FixBatch(i, f, f, f, f, i)

    def fix_types(self) -> FloatArray:
        if self.fix_type is None:
            return np.full(self.t_ms.size, np.nan)
        return np.asarray(self.fix_type, dtype=np.float64)


@dataclass(frozen=True)
class TrackConfig:
    window_days: float = 60.0
    max_fixes: int = 5000
    # Home ranges are computed at fixed UTC boundaries of data time (every 7 days from
    # the epoch, a Thursday), over the fixes before the boundary: once when the first
    # fix after it arrives, again (as a correction, same id) if a late fix changes it.
    # A function of the sorted track, so live and replay agree. None: never.
    home_range_every_days: float | None = 7.0
    # The windows each home range covers: a recent one, so a shift of range shows,
    # and the whole retained track (window_days).
    home_range_windows_days: tuple[float, ...] = (30.0,)
    home_range_min_fixes: int = 20
    home_range_grid: int = 128
    # Also the AKDE (core.akde): the work items then carry the fix times.
    home_range_akde: bool = False


@dataclass(frozen=True)
class Detectors:
    """Thresholds of the episode alerts (see each module for the reasoning)."""

    approach_within_m: float = approach_mod.WITHIN_M
    approach_hysteresis_m: float = approach_mod.HYSTERESIS_M
    approach_cone_deg: float = approach_mod.CONE_DEG
    immobility: bool = True
    immobile_radius_m: float = immobility_mod.RADIUS_M
    immobile_release_m: float = immobility_mod.RELEASE_M
    immobile_hours: float = immobility_mod.MIN_DURATION_S / 3600.0
    excursions: bool = True
    excursion_reference_days: int = excursion_mod.REFERENCE_DAYS
    # The reference range is re-estimated at weekly boundaries, like the published ones.
    excursion_period_days: int = 7
    # A collar is silent after this many schedule intervals without a usable fix.
    silent_periods: float = silence_mod.PERIODS


@dataclass(frozen=True)
class Context:
    """What a track is judged against: fences, species profiles, limits."""

    countries: CountryLayer | None
    urban: tuple[UrbanFence, ...] = ()
    profile: quality.Profile = quality.PROFILES["default"]
    profiles: Mapping[str, quality.Profile] = field(default_factory=dict)
    config: TrackConfig = TrackConfig()
    # Border lines for approach alerts (None: no approach alerts); protected areas.
    borders: approach_mod.BorderLines | None = None
    areas: ProtectedAreas | None = None
    detectors: Detectors = Detectors()

    def profile_for(self, animal: str) -> quality.Profile:
        return self.profiles.get(animal, self.profile)


def new_dets(n: int, width: int) -> npt.NDArray[np.int64]:
    """Episode state of fixes no detector has seen: no country, not immobile."""
    d = np.zeros((n, width), np.int64)
    d[:, DET_COUNTRY] = -1
    d[:, DET_IMMOBILE_SINCE] = -1
    return d


@dataclass(frozen=True)
class TrackState:
    """One animal's recent track (sorted by time) and what was emitted from it."""

    animal: str
    tag: str
    t_ms: IntArray
    lon: FloatArray
    lat: FloatArray
    hdop: FloatArray
    sats: FloatArray
    received_ms: IntArray
    flags: npt.NDArray[np.uint16]
    zone: npt.NDArray[np.int8]  # (n, n_fences) level after each fix
    burst_ms: IntArray  # burst start time of each good fix
    arrival_deg: FloatArray  # arrival azimuth of the step ending at each fix
    # Event id -> (anchor time, content digest), in anchor order (`_diff` reads the ids
    # a recomputation can touch back from the end; `_evict` drops them from the front).
    emitted: dict[str, tuple[int, str]]
    fix_type: FloatArray | None = None  # None: all unknown (NaN)
    # Episode state after each good fix, the carry of a recomputation: columns DET_*,
    # then one per protected area (inside). None: no rows yet.
    det: npt.NDArray[np.int64] | None = None

    def dets(self, n_areas: int) -> npt.NDArray[np.int64]:
        width = DET_AREAS + n_areas
        if self.det is None or self.det.shape[1] != width:
            return new_dets(self.t_ms.size, width)
        return self.det

    def fix_types(self) -> FloatArray:
        if self.fix_type is None:
            return np.full(self.t_ms.size, np.nan)
        return self.fix_type

    @staticmethod
    def new(animal: str, n_fences: int = 0) -> TrackState:
        f, i = np.empty(0), np.empty(0, dtype=np.int64)
        return TrackState(
            animal,
            "",
            i,
            f,
            f,
            f,
            f,
            i,
            np.empty(0, np.uint16),
            np.empty((0, n_fences), np.int8),
            i,
            f,
            {},
        )

    def __len__(self) -> int:
        return int(self.t_ms.size)


def advance(state: TrackState, batch: FixBatch, ctx: Context) -> tuple[TrackState, list[Event]]:
    """Fold a batch of fixes into the track; return the new state and the events."""
    return advance_many([(state, batch)], ctx)[0]


def advance_many(
    items: Sequence[tuple[TrackState, FixBatch]], ctx: Context
) -> list[tuple[TrackState, list[Event]]]:
    """`advance` for many animals (one item each), with the same results: what the
    context says about each recomputed fix and step (country, border, zones, areas,
    crossings; `core.fixfacts`), the steps, excursions, immobility and silence gaps
    are found in one vectorized pass each over all of them (`_find`), not in one small
    call per animal per kind: a live animal brings one or two fixes a call, and numpy's
    fixed cost per call would be most of the work."""
    plans = _plans(items, ctx)
    found = iter(_find([p for p in plans if p is not None], ctx))
    out = []
    for (state, _), plan in zip(items, plans, strict=True):
        if plan is None:
            out.append((state, []))
            continue
        merged, r = plan.state, plan.r
        merged, events = _recompute(plan, ctx, next(found))
        events += _home_ranges(merged, int(merged.t_ms[r]), ctx.config)
        merged, events = _diff(merged, events, anchor_from=int(merged.t_ms[r]))
        out.append((_evict(merged, ctx.config), events))
    return out


class _Plan(NamedTuple):
    """A merged track and what of it to recompute: from fix r on, whose good fixes are
    gi (the track's good fixes are `good`; gi is its tail)."""

    state: TrackState
    r: int
    gi: IntArray
    profile: quality.Profile
    good: IntArray

    @property
    def start(self) -> int:
        """Position of gi's first fix among the good fixes."""
        return self.good.size - self.gi.size

    @property
    def prior(self) -> IntArray:
        """The good fixes before the recomputed ones."""
        return self.good[: self.start]


def _plans(items: Sequence[tuple[TrackState, FixBatch]], ctx: Context) -> list[_Plan | None]:
    """Merge and flag (all animals' flags in one pass, `_flags_many`); per animal the fix
    to recompute from and the good fixes from there on. None: nothing new."""
    merges = [_merge(state, batch) for state, batch in items]
    fresh = [(m, first, ctx.profile_for(m.animal)) for m, first in merges if first is not None]
    flagged = iter(zip(fresh, _flags_many(fresh), strict=True))
    out: list[_Plan | None] = []
    for _, first_new in merges:
        if first_new is None:
            out.append(None)
            continue
        (merged, _, profile), flags = next(flagged)
        # Old fixes hold their old flags in `merged`, new ones 0xFFFF: both count as changed.
        changed = np.flatnonzero(merged.flags != flags)
        start = min(first_new, int(changed[0])) if changed.size else first_new
        merged = evolve(merged, flags=flags)
        good_idx = np.flatnonzero(flags == 0)
        # Recompute from a few good fixes back; over-inclusion is harmless (diffed below).
        k = int(np.searchsorted(good_idx, start)) - CONTEXT_FIXES
        r = int(good_idx[max(k, 0)]) if good_idx.size else start
        r = min(r, start)
        out.append(_Plan(merged, r, good_idx[np.searchsorted(good_idx, r) :], profile, good_idx))
    return out


@dataclass(frozen=True)
class _Facts:
    """One animal's share of a facts pass: rows aligned with its recomputed good fixes
    `gi`, crossings of the pairs (gi[p], gi[p + 1]) numbered by p."""

    points: fixfacts.PointFacts
    pairs: Crossings
    # geodesy.inverse of each pair (distance, departure and arrival azimuths).
    pair_inverse: tuple[FloatArray, FloatArray, FloatArray]


def _facts(plans: Sequence[_Plan], ctx: Context) -> Iterator[_Facts]:
    """The facts of every plan's recomputed good fixes and consecutive pairs, computed
    together, then handed out plan by plan in order."""
    gis = [p.gi for p in plans]
    pts = _bounds([gi.size for gi in gis])
    prs = _bounds([max(gi.size - 1, 0) for gi in gis])
    lon = np.concatenate([p.state.lon[p.gi] for p in plans]) if plans else np.empty(0)
    lat = np.concatenate([p.state.lat[p.gi] for p in plans]) if plans else np.empty(0)
    d = ctx.detectors
    points = fixfacts.point_facts(
        lon,
        lat,
        ctx.countries,
        ctx.borders,
        d.approach_within_m + d.approach_hysteresis_m,
        ctx.urban,
        ctx.areas,
    )
    # Pairs within each plan only: drop the first point of each plan as a pair end and
    # the last as a pair start.
    some = np.diff(pts) > 0
    starts = np.ones(lon.size, bool)
    starts[pts[1:][some] - 1] = False
    ends = np.ones(lon.size, bool)
    ends[pts[:-1][some]] = False
    x0, y0, x1, y1 = lon[starts], lat[starts], lon[ends], lat[ends]
    pairs = fixfacts.step_crossings(ctx.countries, x0, y0, x1, y1)
    geo = inverse(x0, y0, x1, y1)
    for k in range(len(plans)):
        a, b = int(prs[k]), int(prs[k + 1])
        yield _Facts(
            points.rows(int(pts[k]), int(pts[k + 1])),
            fixfacts.crossing_rows(pairs, a, b),
            (geo[0][a:b], geo[1][a:b], geo[2][a:b]),
        )


class _Found(NamedTuple):
    """What the batch passes found about one plan's recomputed good fixes."""

    facts: _Facts
    steps: Steps
    continues: bool  # the first fix continues the burst of the good fix before it
    away: excursion_mod.Excursions | None
    still: _Still | None
    gaps: bool  # a gap a silence or a withdrawn timer silence may hold (`_gap_screen`)
    near: _Near | None  # border approach
    areas: AreaMembership | None  # protected areas


def _find(plans: Sequence[_Plan], ctx: Context) -> list[_Found]:
    facts = list(_facts(plans, ctx))
    suffixes = _suffixes(plans, ctx)
    steps = _steps(plans, facts)
    return [
        _Found(f, st, cont, away, still, gaps, near, areas)
        for f, (st, cont), away, still, gaps, near, areas in zip(
            facts,
            steps,
            _excursions(suffixes, ctx),
            _immobility(suffixes, ctx),
            _gap_screen(plans, ctx),
            _approaches(plans, facts, steps, suffixes, ctx),
            _areas(plans, facts, suffixes, ctx),
            strict=True,
        )
    ]


class _Near(NamedTuple):
    """A plan's border-approach state per recomputed good fix (`_approaches`), the fixes
    where an episode starts, and the heading arriving at each (NaN: none)."""

    active: npt.NDArray[np.bool_]
    start: IntArray
    heading_deg: FloatArray


def _approaches(
    plans: Sequence[_Plan],
    facts: Sequence[_Facts],
    steps: Sequence[tuple[Steps, bool]],
    suffixes: Sequence[tuple[Suffix[Any], IntArray | None]],
    ctx: Context,
) -> list[_Near | None]:
    """Border-approach episodes of every plan's recomputed good fixes, all animals in one
    pass (`core.approach.approach_many`), each carried in from the episode state after
    the good fix before them; None without countries and borders."""
    borders = [f.points.border for f in facts]
    if ctx.countries is None or not plans or any(b is None for b in borders):
        return [None] * len(plans)  # (facts have border distances when there are borders)
    bounds = _bounds([p.gi.size for p in plans])
    heading = np.full(int(bounds[-1]), np.nan)
    step_m = np.full(int(bounds[-1]), np.nan)
    for lo, p, (st, _) in zip(bounds[:-1].tolist(), plans, steps, strict=True):
        at = lo + np.searchsorted(p.gi, st.i1)
        heading[at], step_m[at] = st.arrival_deg, st.dist_m
    rows = [row for _, row in suffixes]
    d = ctx.detectors
    _, active, before, _ = approach_mod.approach_many(
        heading,
        step_m,
        np.concatenate([f.points.country for f in facts]),
        np.concatenate([b.dist_m for b in borders]),
        np.concatenate([b.azimuth_deg for b in borders]),
        bounds,
        np.array([row is not None and bool(row[DET_APPROACH]) for row in rows], bool),
        np.array(
            [approach_mod.NO_CARRY if row is None else int(row[DET_COUNTRY]) for row in rows],
            np.int64,
        ),
        d.approach_within_m,
        d.approach_hysteresis_m,
        d.approach_cone_deg,
    )
    starts = np.flatnonzero(active & ~before)
    cut = np.searchsorted(starts, bounds).tolist()
    return [
        _Near(active[lo:hi], starts[a:b] - lo, heading[lo:hi])
        for lo, hi, a, b in zip(
            bounds[:-1].tolist(), bounds[1:].tolist(), cut[:-1], cut[1:], strict=True
        )
    ]


def _areas(
    plans: Sequence[_Plan],
    facts: Sequence[_Facts],
    suffixes: Sequence[tuple[Suffix[Any], IntArray | None]],
    ctx: Context,
) -> list[AreaMembership | None]:
    """Protected-area membership of every plan's recomputed good fixes, all animals in
    one pass (`core.areas.membership_runs`), each carried in from the membership after
    the good fix before them; None without areas."""
    if ctx.areas is None or not len(ctx.areas) or not plans:
        return [None] * len(plans)
    bounds = _bounds([p.gi.size for p in plans])
    cols = slice(DET_AREAS, DET_AREAS + len(ctx.areas))
    inside, before = membership_runs(
        np.concatenate([f.points.area_enter for f in facts]),
        np.concatenate([f.points.area_stay for f in facts]),
        bounds,
        [None if row is None else tuple(bool(v) for v in row[cols]) for _, row in suffixes],
    )
    changed = np.flatnonzero((inside != before).any(axis=1))
    cut = np.searchsorted(changed, bounds).tolist()
    out = []
    for lo, hi, a, b in zip(
        bounds[:-1].tolist(), bounds[1:].tolist(), cut[:-1], cut[1:], strict=True
    ):
        if a == b:
            out.append(quiet_membership(inside[lo:hi]))
        else:
            out.append(area_transitions(inside[lo:hi], before[lo:hi]))
    return out


def _gap_screen(plans: Sequence[_Plan], ctx: Context) -> list[bool]:
    """Per plan: whether `_silence_events` can have anything to say, screened for all
    plans at once. It speaks of a pair of consecutive good fixes (from the one before
    gi on) farther apart than the silence limit, or closer, but with every later fix
    received after the timer would have fired, usual delivery delay included
    (`_unsupported_timer_silences`): the same conditions, here in one pass. (Without
    the delay every fix of a replayed or long-delayed track passed the screen, and
    the per-animal check was ~9 % of the reducer's time.) Plans without a schedule
    have no silences."""
    periods = ctx.detectors.silent_periods
    w = silence_mod.DELAY_FIXES
    t_parts, rec_parts, sizes, leads, limits = [], [], [], [], []
    for p in plans:
        lo = max(p.start - 1, 0)  # the good fix before gi
        if p.profile.fix_interval_s is None or p.good.size - lo < 2:
            lo = first = p.good.size
        else:
            first = max(lo - (w - 1), 0)  # the delay looks back over w fixes
        seq = p.good[first:]
        t_parts.append(p.state.t_ms[seq])
        rec_parts.append(p.state.received_ms[seq])
        sizes.append(seq.size)
        leads.append(lo - first)
        limits.append(int(silence_mod.limit_ms(p.profile.fix_interval_s or 0.0, periods)))
    if not any(sizes):
        return [False] * len(plans)
    t, rec = np.concatenate(t_parts), np.concatenate(rec_parts)
    size = np.asarray(sizes, np.int64)
    seg = np.repeat(np.arange(size.size), size)
    # Lifting each later plan by more than any span of receipts (or delays) keeps the
    # others out of its suffix minimum and its window maximum.
    lift = seg * (1 << 45)
    after = np.minimum.accumulate((rec + lift)[::-1])[::-1] - lift  # earliest receipt from here on
    lag = np.maximum(rec - t, 0) + lift
    padded = np.concatenate([np.zeros(w - 1, np.int64), lag])
    delay = np.lib.stride_tricks.sliding_window_view(padded, w).max(axis=1) - lift
    at = np.arange(t.size) - np.repeat(np.cumsum(size) - size, size)  # place in its plan
    pair = np.flatnonzero((np.diff(seg) == 0) & (at[:-1] >= np.repeat(leads, size)[:-1]))
    limit = np.repeat(np.asarray(limits, np.int64), size)[pair]
    hit = (t[pair + 1] - t[pair] > limit) | (after[pair + 1] > t[pair] + limit + delay[pair])
    flagged = np.zeros(size.size, bool)
    flagged[seg[pair[hit]]] = True
    return flagged.tolist()


def _suffixes(plans: Sequence[_Plan], ctx: Context) -> list[tuple[Suffix[Any], IntArray | None]]:
    """Each plan's good fixes as the episode detectors take them (judged from its gi on),
    with the episode state (`det` row) after the good fix before gi, if any."""
    n_areas = len(ctx.areas) if ctx.areas else 0
    out = []
    for p in plans:
        s, good = p.state, p.good
        row = s.dets(n_areas)[good[p.start - 1]] if p.start else None
        out.append((Suffix(s.t_ms[good], s.lon[good], s.lat[good], p.start), row))
    return out


def _excursions(
    suffixes: Sequence[tuple[Suffix[Any], IntArray | None]], ctx: Context
) -> list[excursion_mod.Excursions | None]:
    """Excursion state of every plan's recomputed good fixes (`_episode_events`), all
    animals judged together (`core.excursion.excursions_many`); None when switched off."""
    d = ctx.detectors
    if not d.excursions:
        return [None] * len(suffixes)
    tracks = [evolve(g, carry=None if row is None else bool(row[DET_AWAY])) for g, row in suffixes]
    out = excursion_mod.excursions_many(
        tracks,
        _EXCURSION_CACHE,
        days=d.excursion_reference_days,
        period_ms=d.excursion_period_days * 86_400_000,
    )
    if len(_EXCURSION_CACHE) > 4096:
        _EXCURSION_CACHE.clear()
    return list(out)


# Immobility of a plan's recomputed fixes and the episode open before them.
_Still = tuple[immobility_mod.ImmobilityCarry | None, immobility_mod.Immobility]


def _immobility(
    suffixes: Sequence[tuple[Suffix[Any], IntArray | None]], ctx: Context
) -> list[_Still | None]:
    """Immobility of every plan's recomputed good fixes (`_episode_events`), all animals
    judged together (`core.immobility.immobility_many`); None when switched off."""
    d = ctx.detectors
    if not d.immobility:
        return [None] * len(suffixes)
    tracks = []
    for g, row in suffixes:
        since = -1 if row is None else int(row[DET_IMMOBILE_SINCE])
        carry = None
        if since >= 0:
            # The open episode's anchor is a good fix before the recomputed range.
            k = int(np.searchsorted(g.t_ms[: g.start], since))
            if k < g.start and g.t_ms[k] == since:
                carry = immobility_mod.ImmobilityCarry(since, float(g.lon[k]), float(g.lat[k]))
        tracks.append(evolve(g, carry=carry))
    out = immobility_mod.immobility_many(
        tracks, d.immobile_radius_m, d.immobile_release_m, d.immobile_hours * 3600.0
    )
    return [(tr.carry, im) for tr, im in zip(tracks, out, strict=True)]


_IMPOSSIBLE = np.uint16(quality.IMPOSSIBLE_SPEED)
_STATIC = np.uint16(~quality.IMPOSSIBLE_SPEED & 0xFFFF)  # every flag but the speed one
# How far back from the recomputed flags `_flags_many` first looks for good fixes.
_LOOK_BACK = 32


def _flags_many(
    items: Sequence[tuple[TrackState, int, quality.Profile]],
) -> list[npt.NDArray[np.uint16]]:
    """Quality flags of each merged track (rows of a track before `first_new` hold their
    flags from the last call), recomputed only where new fixes can change them: the same
    as judging the whole track. `static_flags` groups fixes chained closer than the
    near-duplicate tolerance, so static flags are recomputed from the start of the chain
    the first new fix joins; a speed outlier is judged by its neighbouring candidates.
    All tracks' windows are judged together (`quality.static_flags_many`,
    `quality.speed_outliers_many`): a live call brings one fix an animal, and small
    per-animal calls were most of the work."""
    if not items:
        return []
    tracks = [s for s, _, _ in items]
    los = [_chain_start(s.t_ms, first_new, profile) for s, first_new, profile in items]

    def tails(names: Sequence[str], starts: Sequence[int]) -> Iterator[npt.NDArray[Any]]:
        pairs = list(zip(tracks, starts, strict=True))
        for name in names:
            yield np.concatenate([getattr(s, name)[a:] for s, a in pairs])

    static = quality.static_flags_many(
        *tails(("t_ms", "lon", "lat", "hdop", "sats"), los),
        np.concatenate([s.fix_types()[lo:] for s, lo in zip(tracks, los, strict=True)]),
        _bounds([len(s) - lo for s, lo in zip(tracks, los, strict=True)]),
        [p for _, _, p in items],
    )
    # Speed outliers: a candidate is judged on the candidates before and after it (the
    # oldest of the track on the two after it). With three candidates before `lo`, p3 <
    # p2 < p1, only p1 onwards can change; judge from p2 (whose verdict in the window,
    # by the oldest-fix rule, is discarded) so p1 is judged with its true predecessor.
    news, ws, keeps, candidates = [], [], [], []
    at = 0
    for s, lo in zip(tracks, los, strict=True):
        new = static[at : at + len(s) - lo]
        at += len(s) - lo
        before = _last_good(s.flags, lo)
        w, keep = (int(before[-2]), int(before[-1])) if before.size >= 3 else (0, 0)
        news.append(new)
        ws.append(w)
        keeps.append(keep)
        candidates.append(np.concatenate([(s.flags[w:lo] & _STATIC) == 0, new == 0]))
    out = quality.speed_outliers_many(
        *tails(("t_ms", "lon", "lat"), ws),
        np.concatenate(candidates),
        _bounds([c.size for c in candidates]),
        [p.max_speed_mps for _, _, p in items],
    )
    result = []
    at = 0
    for s, lo, new, w, keep in zip(tracks, los, news, ws, keeps, strict=True):
        fast = out[at + keep - w : at + len(s) - w]
        at += len(s) - w
        flags = s.flags.copy()  # before `keep`: as they were, the speed flag included
        flags[keep:lo] &= _STATIC
        flags[lo:] = new
        flags[keep:][fast] |= _IMPOSSIBLE
        result.append(flags)
    return result


def _chain_start(t: IntArray, first_new: int, profile: quality.Profile) -> int:
    """Start of the chain of fixes closer than the near-duplicate tolerance that fix
    `first_new` joins (`quality.static_flags` judges such a chain as a whole)."""
    tol = max(int(profile.near_duplicate_s * 1000), 1)
    if first_new == 0:
        return 0
    if int(t[first_new]) - int(t[first_new - 1]) >= tol:
        return first_new  # the usual case: the new fix starts a chain of its own
    brk = np.flatnonzero(np.diff(t[: first_new + 1]) >= tol)
    return int(brk[-1]) + 1 if brk.size else 0


def _last_good(flags: npt.NDArray[np.uint16], lo: int) -> IntArray:
    """Rows before `lo` without static flags; at least the last three, if there are."""
    near = max(lo - _LOOK_BACK, 0)
    found = near + np.flatnonzero((flags[near:lo] & _STATIC) == 0)
    if found.size >= 3 or near == 0:
        return found
    return np.flatnonzero((flags[:lo] & _STATIC) == 0)


def _bounds(sizes: Sequence[int]) -> IntArray:
    """Row bounds of consecutive parts of the given sizes: [0, s0, s0 + s1, ...]."""
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def _merge(state: TrackState, b: FixBatch) -> tuple[TrackState, int | None]:
    """Insert new fixes in time order. An identical re-send (same time, place, HDOP and
    satellites) is the same fix: it changes nothing, which makes redelivery idempotent."""
    idx = _fresh_rows(state, b)
    if idx.size == 0:
        return state, None
    n_old, n_f = state.t_ms.size, state.zone.shape[1]
    every = idx.size == b.t_ms.size  # (then idx is arange: the batch's own columns)
    new = {
        name: col if every else col[idx]
        for name, col in (
            ("t_ms", b.t_ms),
            ("lon", b.lon),
            ("lat", b.lat),
            ("hdop", b.hdop),
            ("sats", b.sats),
            ("received_ms", b.received_ms),
        )
    }
    t_new = new["t_ms"]
    if n_old == 0 or int(t_new.min()) > int(state.t_ms[-1]):
        # The live case: every new fix is later than the track. The old rows keep their
        # order and the new ones sort among themselves, as the full sort would put them.
        if _in_order(t_new):

            def put(old: np.ndarray, add: np.ndarray) -> np.ndarray:
                return np.concatenate([old, add])

        else:
            sub = _content_order(t_new, new["lon"], new["lat"], new["hdop"], new["sats"])

            def put(old: np.ndarray, add: np.ndarray) -> np.ndarray:
                return np.concatenate([old, add[sub]])

        first_new = n_old
    else:
        order = _content_order(
            *(
                np.concatenate([getattr(state, k), new[k]])
                for k in ("t_ms", "lon", "lat", "hdop", "sats")
            )
        )

        def put(old: np.ndarray, add: np.ndarray) -> np.ndarray:
            return np.concatenate([old, add])[order]

        first_new = int(np.flatnonzero(order >= n_old)[0])
    k = idx.size
    # A track without fix types (all unknown) keeps None until a fix brings one.
    ftype_new = None if b.fix_type is None else b.fix_types()[idx]
    if state.fix_type is None and (ftype_new is None or np.isnan(ftype_new).all()):
        ftype = None
    else:
        ftype_new = np.full(k, np.nan) if ftype_new is None else ftype_new
        ftype = put(state.fix_types(), ftype_new)
        ftype = None if np.isnan(ftype).all() else ftype  # (eviction can leave all NaN)
    merged = TrackState(
        animal=state.animal,
        tag=b.tag or state.tag,
        **{name: put(getattr(state, name), col) for name, col in new.items()},
        flags=put(state.flags, np.full(k, 0xFFFF, np.uint16)),
        zone=put(state.zone, np.zeros((k, n_f), np.int8)),
        burst_ms=put(state.burst_ms, np.zeros(k, np.int64)),
        arrival_deg=put(state.arrival_deg, np.full(k, np.nan)),
        emitted=state.emitted,
        fix_type=ftype,
        det=None if state.det is None else put(state.det, new_dets(k, state.det.shape[1])),
    )
    return merged, first_new


def _content_order(
    t: IntArray, lon: FloatArray, lat: FloatArray, hdop: FloatArray, sats: FloatArray
) -> IntArray:
    """Total order on content, not arrival: time, ties broken by HDOP then position."""
    if _in_order(t):
        return np.arange(t.size)  # already in order, no ties to break (the usual upload)
    return np.lexsort(
        (
            np.nan_to_num(sats, nan=-1),
            np.nan_to_num(lat, nan=999),
            np.nan_to_num(lon, nan=999),
            np.nan_to_num(hdop, nan=1e9),
            t,
        )
    )


def _in_order(t: IntArray) -> bool:
    """Strictly increasing times: the order `_content_order` gives, with no ties."""
    return t.size < 2 or bool((t[1:] > t[:-1]).all())


def _fresh_rows(state: TrackState, b: FixBatch) -> IntArray:
    """Rows of the batch not already in the track (nor earlier in the batch)."""
    # Only rows at the batch's instants can be repeats; the track is sorted by time.
    n = b.t_ms.size
    lo = int(np.searchsorted(state.t_ms, b.t_ms.min())) if n else state.t_ms.size
    # (The live case, every fix later than the track: lo is the end and isin is skipped.)
    n_old = state.t_ms.size
    old = lo + np.flatnonzero(np.isin(state.t_ms[lo:], b.t_ms)) if lo < n_old else _NO_ROWS
    if old.size == 0 and (n < 2 or np.unique(b.t_ms).size == n):
        return np.arange(n, dtype=np.int64)  # no instant seen twice: every row is new
    seen = set(row_keys(state, old))
    fresh = []
    for i, key in enumerate(row_keys(b, np.arange(b.t_ms.size))):
        if key not in seen:
            seen.add(key)
            fresh.append(i)
    return np.asarray(fresh, dtype=np.int64)


_NO_ROWS = np.empty(0, np.int64)


def row_keys(a: TrackState | FixBatch, idx: IntArray) -> list[tuple[Any, ...]]:
    """Identity of each fix: time, position, HDOP, satellites (an identical re-send is the
    same fix). NaN != NaN, so missing values are keyed as a sentinel."""
    cols = [a.t_ms[idx].tolist()] + [
        np.nan_to_num(v[idx], nan=-1e300).tolist() for v in (a.lon, a.lat, a.hdop, a.sats)
    ]
    return list(zip(*cols, strict=True))


def _recompute(plan: _Plan, ctx: Context, found: _Found) -> tuple[TrackState, list[Event]]:
    """Steps, crossings and zone episodes of the track from fix r on (the plan's `gi`:
    the good fixes from r on; `found`: what the batch passes found about them)."""
    s, gi, profile = plan.state, plan.gi, plan.profile
    zone, burst, arrival = s.zone.copy(), s.burst_ms.copy(), s.arrival_deg.copy()
    if gi.size == 0:
        return evolve(s, zone=zone), []
    prior = plan.prior
    first = gi[0]
    facts, steps, continues = found.facts, found.steps, found.continues
    arrival[gi[1:]] = np.nan
    if not continues:
        arrival[first] = np.nan
    arrival[steps.i1] = steps.arrival_deg
    burst[steps.i0] = steps.burst_start_ms
    burst[steps.i1] = steps.burst_start_ms
    in_step = np.zeros(s.flags.size, bool)
    in_step[steps.i0] = True
    in_step[steps.i1] = True
    lone = gi[~in_step[gi]]
    lone = lone[lone != first] if continues else lone  # `first` keeps the burst it continues
    burst[lone] = s.t_ms[lone]
    events = _step_events(s, steps)
    events += _crossing_events(s, steps, gi, ctx.countries, facts)
    pf = facts.points
    for f, fence in enumerate(ctx.urban):
        carry = int(s.zone[prior[-1], f]) if prior.size else 0
        levels = latch_levels(pf.zone_enter[:, f], pf.zone_stay[:, f], carry, len(fence.zones))
        zone[gi, f] = levels
        prev_t = int(s.t_ms[prior[-1]]) if prior.size else None
        events += _zone_events(s, fence, gi, levels, carry, prev_t)
    det = s.dets(len(ctx.areas) if ctx.areas else 0).copy()
    events += _episode_events(s, gi, prior, ctx, det, pf, found)
    if profile.fix_interval_s is not None and found.gaps:
        events += _silence_events(s, gi, prior, profile.fix_interval_s, ctx.detectors)
    return evolve(s, zone=zone, burst_ms=burst, arrival_deg=arrival, det=det), events


def _steps(plans: Sequence[_Plan], facts: Sequence[_Facts]) -> list[tuple[Steps, bool]]:
    """Steps of every plan's recomputed good fixes (`core.steps.compute_steps_many`, all
    animals in one pass), in track indices, and whether the first continues a burst."""
    if not plans:
        return []
    sizes, gaps, arrivals, bursts, conts = [], [], [], [], []
    for p in plans:
        s, gi, profile = p.state, p.gi, p.profile
        max_gap = max_gap_seconds(
            s.t_ms[p.good], profile.fix_interval_s, profile.burst_gap_intervals
        )
        cont = bool(gi.size) and _has_burst(s, gi[0], p.prior, max_gap)
        sizes.append(gi.size)
        gaps.append(max_gap)
        # A track that does not continue a burst starts one at its first fix.
        arrivals.append(float(s.arrival_deg[gi[0]]) if cont else np.nan)
        bursts.append(int(s.burst_ms[gi[0]] if cont else s.t_ms[gi[0]]) if gi.size else 0)
        conts.append(cont)
    dist, azi, arrive = (np.concatenate([f.pair_inverse[k] for f in facts]) for k in range(3))
    t = np.concatenate([p.state.t_ms[p.gi] for p in plans])
    st = compute_steps_many(t, sizes, gaps, (dist, azi, arrive), arrivals, bursts)
    ends = np.cumsum(sizes, dtype=np.int64)
    starts = ends - sizes
    lo, hi = np.searchsorted(st.i0, starts).tolist(), np.searchsorted(st.i0, ends).tolist()
    out = []
    for k, p in enumerate(plans):
        rows, at = slice(lo[k], hi[k]), int(starts[k])
        columns = (getattr(st, name)[rows] for name in STEP_COLUMNS)
        own = Steps(p.gi[st.i0[rows] - at], p.gi[st.i1[rows] - at], *columns)
        out.append((own, conts[k]))
    return out


def _has_burst(s: TrackState, first: int, prior: IntArray, max_gap: float) -> bool:
    """Whether fix `first` continues the burst of the good fix before it."""
    if prior.size == 0:
        return False
    return (s.t_ms[first] - s.t_ms[prior[-1]]) / 1000.0 <= max_gap


def _digest(event: Event) -> str:
    """Content digest (id included: it names the same facts). Sorted keys make it
    independent of construction order; orjson keeps it ~2 µs an event."""
    body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def event_id(prefix: str, *parts: object) -> str:
    """Deterministic id: the same facts give the same id, on any worker, on replay."""
    body = "|".join(str(p) for p in parts).encode()
    return f"{prefix}-{hashlib.sha256(body).hexdigest()[:32]}"


def _diff(s: TrackState, events: list[Event], anchor_from: int) -> tuple[TrackState, list[Event]]:
    """Emit what is new or changed since last time; withdraw what is no longer true.

    `emitted` is kept in anchor order (`TrackState.emitted`), so what a recomputation
    from `anchor_from` can change is a tail of it: found by reading back from the end,
    not by scanning the whole history (per call, a month's track holds hundreds)."""
    current: dict[str, tuple[int, str]] = {}
    out: list[Event] = []
    for ev in events:
        anchor = ev.pop("_anchor")
        digest = _digest(ev)
        eid = ev["id"]
        if current.get(eid, s.emitted.get(eid, (0, "")))[1] != digest:
            out.append(ev)
        # The anchor follows the track even when the event is unchanged: a fix slotted
        # in before it moves it, as the single pass over the whole track would have.
        current[eid] = (anchor, digest)
    lo = min([anchor_from, *(v[0] for v in current.values())])
    tail = []  # (id, (anchor, digest)) with anchor >= lo, newest first
    for eid, v in reversed(s.emitted.items()):
        if v[0] < lo:
            break
        tail.append((eid, v))
    emitted = dict(s.emitted)
    for eid, _ in tail:
        del emitted[eid]
    for eid in current:
        emitted.pop(eid, None)  # (re-added below, at its anchor's place)
    stale = [eid for eid, v in reversed(tail) if v[0] >= anchor_from and eid not in current]
    kept = [(eid, v) for eid, v in tail if v[0] < anchor_from and eid not in current]
    for eid, v in sorted([*kept, *current.items()], key=lambda item: item[1][0]):
        emitted[eid] = v
    for eid in stale:
        out.append(_withdrawal(s, eid))
    return evolve(s, emitted=emitted), out


def _withdrawal(s: TrackState, eid: str) -> Event:
    if eid.startswith("stp-"):
        return {
            "type": "step",
            "id": eid,
            "status": "withdrawn",
            "individual-local-identifier": s.animal,
        }
    return {
        "type": "alert",
        "id": event_id("alr", eid, "withdrawn"),
        "kind": "withdrawal",
        "severity": "info",
        "individual-local-identifier": s.animal,
        "tag-local-identifier": s.tag,
        "withdraws": eid,
        "reason": "a late or corrected fix changed the track; the alert no longer holds",
    }


def _step_events(s: TrackState, st: Any) -> list[Event]:
    """Step events, built column-wise: one numpy pass per field, then plain zips."""
    if len(st) == 0:
        return []
    i0, i1 = st.i0, st.i1
    t0, t1 = s.t_ms[i0], s.t_ms[i1]
    iso0, iso1, burst = (_isos(t) for t in (t0, t1, st.burst_start_ms))
    heading = np.round(st.heading_deg, 6) % 360.0
    turn = np.round(st.turn_deg, 6)
    turn = np.where(turn <= -180.0, turn + 360.0, turn)  # (-180, 180], as wrap180
    cols = zip(
        t0.tolist(),
        t1.tolist(),
        iso0,
        iso1,
        s.lon[i0].tolist(),
        s.lat[i0].tolist(),
        s.lon[i1].tolist(),
        s.lat[i1].tolist(),
        np.round(st.dist_m, 4).tolist(),
        st.dt_s.tolist(),
        np.round(st.speed_mps, 6).tolist(),
        [None if h != h else h for h in heading.tolist()],
        [None if a != a else a for a in turn.tolist()],
        burst,
        strict=True,
    )
    animal = s.animal
    return [
        {
            "type": "step",
            "_anchor": a,
            "id": event_id("stp", animal, a, b),
            "status": "current",
            "individual-local-identifier": animal,
            "start-timestamp": ia,
            "end-timestamp": ib,
            "start-location-long": x0,
            "start-location-lat": y0,
            "end-location-long": x1,
            "end-location-lat": y1,
            "distance_m": d,
            "duration_s": dt,
            "speed_mps": v,
            "heading_deg": h,
            "turn_angle_deg": ta,
            "burst-start-timestamp": bs,
        }
        for a, b, ia, ib, x0, y0, x1, y1, d, dt, v, h, ta, bs in cols
    ]


def _isos(t_ms: IntArray) -> list[str]:
    """`iso` of each: per value for a few (a live call's one or two steps), where numpy's
    formatter costs more to set up than it saves."""
    if t_ms.size <= 4:
        return [iso(t) for t in t_ms.tolist()]
    return iso_many(t_ms)


def alert_event(
    animal: str,
    tag: str,
    kind: str,
    severity: str,
    eid: str,
    fix_ms: int,
    received_ms: int,
    lon: float,
    lat: float,
    details: Event,
    anchor: int | None = None,
) -> Event:
    """The alert contract's common fields around `details` (schemas/alert.schema.json);
    every alert kind is built here. `anchor`: the reducer's bookkeeping (see `_diff`)."""
    event: Event = {
        "type": "alert",
        "id": eid,
        "kind": kind,
        "severity": severity,
        "individual-local-identifier": animal,
        "tag-local-identifier": tag,
        "fix-timestamp": iso(fix_ms),
        "received-timestamp": iso(received_ms),
        "fix-age_s": round((received_ms - fix_ms) / 1000.0, 3),
        "location-long": round(float(lon), 7),
        "location-lat": round(float(lat), 7),
        "details": details,
    }
    if anchor is not None:
        event["_anchor"] = anchor
    return event


def _alert(
    s: TrackState,
    i: int,
    kind: str,
    severity: str,
    eid: str,
    anchor: int,
    lon: float,
    lat: float,
    details: Event,
) -> Event:
    t, rec = int(s.t_ms[i]), int(s.received_ms[i])
    return alert_event(s.animal, s.tag, kind, severity, eid, t, rec, lon, lat, details, anchor)


def _country(layer: CountryLayer, k: int) -> dict[str, str]:
    return {"code": layer.codes[k], "name": layer.names[k], "name_ru": layer.names_ru[k]}


def _crossing_events(
    s: TrackState, steps: Any, gi: IntArray, layer: CountryLayer | None, facts: _Facts
) -> list[Event]:
    if layer is None or gi.size < 2:
        return []
    country = facts.points.country
    if len(facts.pairs) == 0 and bool((country[1:] == country[:-1]).all()):
        return []  # no step crosses, and no gap joins two countries (the usual call)
    out: list[Event] = []
    # A step joins consecutive good fixes: pair p = (gi[p], gi[p + 1]) is step j or none.
    p = np.searchsorted(gi, steps.i0)
    if not np.array_equal(gi[p + 1], steps.i1):
        raise AssertionError("a step that does not join consecutive good fixes")
    step_of_pair = np.full(max(gi.size - 1, 0), -1, np.int64)
    step_of_pair[p] = np.arange(p.size)
    x = facts.pairs
    for c in np.flatnonzero(step_of_pair[x.step] >= 0).tolist():
        j = int(step_of_pair[x.step[c]])
        i0, i1 = int(steps.i0[j]), int(steps.i1[j])
        t0, t1 = int(s.t_ms[i0]), int(s.t_ms[i1])
        t_cross = t0 + round(float(x.frac[c]) * (t1 - t0))
        a, b = int(x.from_idx[c]), int(x.to_idx[c])
        eid = event_id("alr", s.animal, "border-crossing", t0, t1, layer.codes[a], layer.codes[b])
        out.append(
            _alert(
                s,
                i1,
                "border-crossing",
                "warning",
                eid,
                t0,
                float(x.lon[c]),
                float(x.lat[c]),
                {
                    "from": _country(layer, a),
                    "to": _country(layer, b),
                    "path": "geodesic",
                    "crossing-timestamp": iso(t_cross),
                    "order": int(x.order[c]),
                    "count": int(x.count[c]),
                    "step-start-timestamp": iso(t0),
                    "step-end-timestamp": iso(t1),
                },
            )
        )
    out += _gap_crossings(s, steps, gi, layer, country)
    return out


def _gap_crossings(
    s: TrackState, steps: Any, gi: IntArray, layer: CountryLayer, country: IntArray
) -> list[Event]:
    """Consecutive good fixes too far apart in time for a step: the route is unknown,
    but a change of country between them is still a crossing (an animal whose collar
    was silent for days and reappears across the border must still be reported).
    `country`: of each fix of `gi`."""
    starts = np.zeros(s.flags.size, bool)
    starts[steps.i0] = True
    is_step = starts[gi[:-1]]
    i0, i1 = gi[:-1][~is_step], gi[1:][~is_step]
    if i0.size == 0:
        return []
    c0, c1 = country[:-1][~is_step], country[1:][~is_step]
    out = []
    for a, b, p, q in zip(c0, c1, i0, i1, strict=True):
        if a == -1 or b == -1 or a == b:
            continue
        t0, t1 = int(s.t_ms[p]), int(s.t_ms[q])
        eid = event_id("alr", s.animal, "border-crossing", t0, t1, layer.codes[a], layer.codes[b])
        out.append(
            _alert(
                s,
                int(q),
                "border-crossing",
                "warning",
                eid,
                t0,
                float(s.lon[q]),
                float(s.lat[q]),
                {
                    "from": _country(layer, int(a)),
                    "to": _country(layer, int(b)),
                    "path": "gap",
                    "crossing-timestamp": None,
                    "order": 0,
                    "count": 1,
                    "step-start-timestamp": iso(t0),
                    "step-end-timestamp": iso(t1),
                },
            )
        )
    return out


def _episode_events(
    s: TrackState,
    gi: IntArray,
    prior: IntArray,
    ctx: Context,
    det: Any,
    pf: fixfacts.PointFacts,
    found: _Found,
) -> list[Event]:
    """Border approach, protected-area, excursion and immobility episodes of good fixes
    `gi` (found for all animals together, `_find`), carried on from the good fix before
    them (`det` holds the per-fix state and is updated in place). Each event is anchored
    at the good fix before it."""
    out: list[Event] = []
    last = int(prior[-1]) if prior.size else None
    prev_t = np.concatenate(
        [[s.t_ms[last] if last is not None else s.t_ms[gi[0]]], s.t_ms[gi[:-1]]]
    )
    d = ctx.detectors
    ex, still = found.away, found.still

    def alert(j: int, kind: str, severity: str, key: object, details: Event) -> None:
        i = int(gi[j])
        eid = event_id("alr", s.animal, kind, key, int(s.t_ms[i]))
        out.append(
            _alert(
                s, i, kind, severity, eid, int(prev_t[j]), float(s.lon[i]), float(s.lat[i]), details
            )
        )

    if found.near is not None and ctx.countries is not None and pf.border is not None:
        country, near, dist = pf.country, found.near, pf.border
        det[gi, DET_APPROACH], det[gi, DET_COUNTRY] = near.active, country
        layer = ctx.countries
        for j in near.start.tolist():
            nb = int(dist.neighbour[j])
            alert(
                j,
                "border-approach",
                "warning",
                layer.codes[nb],
                {
                    "country": _country(layer, int(country[j])),
                    "toward": _country(layer, nb),
                    "distance_m": round(float(dist.dist_m[j]), 1),
                    "within_m": d.approach_within_m,
                    "heading_deg": round(float(near.heading_deg[j]) % 360.0, 3),
                    "bearing-to-border_deg": round(float(dist.azimuth_deg[j]) % 360.0, 3),
                },
            )
    if found.areas is not None and ctx.areas is not None:
        m = found.areas
        det[gi, DET_AREAS : DET_AREAS + len(ctx.areas)] = m.inside
        for fixes, areas, transition in (
            (m.exit_fix, m.exit_area, "exit"),
            (m.enter_fix, m.enter_area, "enter"),
        ):
            for j, k in zip(fixes.tolist(), areas.tolist(), strict=True):
                fence = ctx.areas.fences[k]
                alert(
                    j,
                    "protected-area",
                    "warning" if transition == "exit" else "info",
                    (fence.id, transition),
                    {"fence-id": fence.id, "fence-name": fence.name, "transition": transition},
                )
    start = prior.size  # ex and im index the good fixes, prior then gi
    if ex is not None:
        det[gi, DET_AWAY] = ex.away
        for idx, transition in ((ex.exit, "exit"), (ex.back, "return")):
            for g in idx.tolist():
                alert(
                    g - start,
                    "home-range-excursion",
                    "warning" if transition == "exit" else "info",
                    transition,
                    {
                        "transition": transition,
                        "level": excursion_mod.LEVEL,
                        "reference-days": d.excursion_reference_days,
                    },
                )
    if still is not None:
        carry_i, im = still
        since = int(det[last, DET_IMMOBILE_SINCE]) if last is not None else -1
        # Per fix: the open episode's anchor time, -1 when none.
        anchor = np.full(gi.size, -1, np.int64)
        opened = np.full(gi.size, -1, np.int64)
        opened[im.start - start] = s.t_ms[gi[im.start - start]]
        if carry_i is not None:
            opened[0] = max(opened[0], carry_i.anchor_ms)
        opened = np.maximum.accumulate(opened)
        anchor[im.active] = opened[im.active]
        det[gi, DET_IMMOBILE_SINCE] = anchor
        hours = d.immobile_hours
        for g in im.start.tolist():
            alert(
                g - start,
                "immobility",
                "critical",
                "start",
                {
                    "transition": "start",
                    "radius_m": d.immobile_radius_m,
                    "duration_h": hours,
                    "since-timestamp": iso(int(s.t_ms[gi[g - start]]) - int(hours * 3_600_000)),
                    "reason": "possible mortality or a dropped collar: all fixes within "
                    f"{d.immobile_radius_m:g} m for {hours:g} h",
                },
            )
        for g in im.end.tolist():
            j = g - start
            since_ms = int(anchor[j - 1]) if j > 0 else since
            alert(
                j,
                "immobility",
                "info",
                "end",
                {
                    "transition": "end",
                    "radius_m": d.immobile_radius_m,
                    "duration_h": hours,
                    "since-timestamp": None if since_ms < 0 else iso(since_ms),
                    "reason": "all clear: the animal moved again",
                },
            )
    return out


def _silence_events(
    s: TrackState, gi: IntArray, prior: IntArray, interval_s: float, d: Detectors
) -> list[Event]:
    """Silences that ended in the recomputed range: the start (the moment the live timer
    raised it, same id and content, see `silent_collar_alert`) and the all clear."""
    sil = silence_mod.silences(
        s.t_ms[gi],
        interval_s,
        d.silent_periods,
        prior_ms=int(s.t_ms[prior[-1]]) if prior.size else None,
    )
    out = _unsupported_timer_silences(s, gi, prior, interval_s, d.silent_periods)
    for after in sil.after.tolist():
        last = int(prior[-1]) if after < 0 else int(gi[after])
        nxt = int(gi[after + 1])
        for transition, i in (("start", last), ("end", nxt)):
            out.append(
                silent_collar_alert(
                    s.animal,
                    s.tag,
                    int(s.t_ms[last]),
                    float(s.lon[i]),
                    float(s.lat[i]),
                    int(s.t_ms[i]),
                    int(s.received_ms[i]),
                    interval_s,
                    d.silent_periods,
                    transition,
                )
            )
    return out


def _unsupported_timer_silences(
    s: TrackState, gi: IntArray, prior: IntArray, interval_s: float, periods: float
) -> list[Event]:
    """Withdrawals of silences the live timer raised that the track no longer holds.

    The timer calls a collar silent when its newest good fix L is more than the limit
    (periods x interval) plus its usual delivery delay old (stream.watch). If the next
    good fix after L is within the limit, there was no silence, only a late upload; and
    if every good fix after L arrived after the moment the timer would have fired, it
    did fire, with the id `silent_collar_alert` gives L. That alert is sent again (as
    the timer built it) and withdrawn here.
    Judged from the track alone (fix and receipt times), so a replay withdraws what the
    live system withdrew. The delay is taken over the 12 good fixes up to L in today's
    track, which may hold late ones the timer had not seen: it can only be longer, so
    a withdrawal may be missed, never invented.
    """
    seq = np.concatenate([prior[-1:], gi])  # the good fix before the recomputed ones
    if seq.size < 2:
        return []
    t, rec = s.t_ms[seq], s.received_ms[seq]
    limit = int(silence_mod.limit_ms(interval_s, periods))
    # Earliest receipt among the good fixes after each one (suffix minimum).
    after = np.minimum.accumulate(rec[::-1])[::-1]
    ks = np.flatnonzero((np.diff(t) <= limit) & (after[1:] > t[:-1] + limit))
    if ks.size == 0:
        return []  # the usual case: no gap the timer could have called a silence
    # The usual delay at each candidate: over the good fixes up to it (DELAY_FIXES).
    good = np.concatenate([prior, gi])
    w = silence_mod.DELAY_FIXES
    lag = np.concatenate(
        [np.zeros(w - 1, np.int64), np.maximum(s.received_ms[good] - s.t_ms[good], 0)]
    )
    at = ks + max(prior.size - 1, 0)  # the candidates' positions in `good`
    delay = np.lib.stride_tricks.sliding_window_view(lag, w)[at].max(axis=1)
    out = []
    for k in ks[after[ks + 1] > t[ks] + limit + delay].tolist():
        i, last_ms = int(seq[k]), int(t[k])
        # The alert as the timer raised it (receivers drop the repeat; a replay shows
        # it, as the live receivers saw it), then its withdrawal.
        raised = silent_collar_alert(
            s.animal,
            s.tag,
            last_ms,
            float(s.lon[i]),
            float(s.lat[i]),
            last_ms,
            int(s.received_ms[i]),
            interval_s,
            periods,
            "start",
        )
        gone = _withdrawal(s, raised["id"])
        gone["reason"] = "fixes delivered late fill the gap: the collar was not silent"
        gone["_anchor"] = last_ms
        out += [raised, gone]
    return out


def silent_collar_alert(
    animal: str,
    tag: str,
    last_fix_ms: int,
    lon: float,
    lat: float,
    fix_ms: int,
    received_ms: int,
    interval_s: float,
    periods: float,
    transition: str,
) -> Event:
    """A silent-collar alert. "start" is located at the last fix before the silence and
    raised by the live timer (or by replay when the silence has ended: the same id and
    content); "end" at the first fix after it. Pure, so both places build the same."""
    limit_s = round(interval_s * periods, 3)
    start = transition == "start"
    return alert_event(
        animal,
        tag,
        "silent-collar",
        "warning" if start else "info",
        event_id("alr", animal, "silent-collar", transition, last_fix_ms),
        fix_ms,
        received_ms,
        lon,
        lat,
        {
            "transition": transition,
            "last-fix-timestamp": iso(last_fix_ms),
            "expected-interval_s": float(interval_s),
            "periods": float(periods),
            "silent_s": limit_s if start else round((fix_ms - last_fix_ms) / 1000.0, 3),
        },
        anchor=last_fix_ms,
    )


def _zone_events(
    s: TrackState,
    fence: UrbanFence,
    gi: IntArray,
    levels: npt.NDArray[np.int8],
    carry: int,
    prev_t: int | None,
) -> list[Event]:
    """Zone transitions, each anchored at the good fix before it (the step leading in)."""
    prev = np.concatenate([[carry], levels[:-1]])
    out = []
    for j in np.flatnonzero(levels != prev):
        i, lvl, was = int(gi[j]), int(levels[j]), int(prev[j])
        if 0 < lvl < was:
            continue  # moving outwards between zones: quiet until it is out of all of them
        enter = lvl > was
        zone = fence.zones[lvl - 1] if enter else fence.zones[0]
        t = int(s.t_ms[i])
        anchor = int(s.t_ms[gi[j - 1]]) if j > 0 else (t if prev_t is None else prev_t)
        transition = "enter" if enter else "exit"
        eid = event_id("alr", s.animal, "urban-edge", fence.id, transition, lvl, t)
        out.append(
            _alert(
                s,
                i,
                "urban-edge",
                zone.severity if enter else "info",
                eid,
                anchor,
                float(s.lon[i]),
                float(s.lat[i]),
                {
                    "fence-id": fence.id,
                    "fence-name": fence.name,
                    "transition": transition,
                    "zone": zone.name if enter else None,
                    "level": lvl,
                    "levels": len(fence.zones),
                    "previous-level": was,
                },
            )
        )
    return out


def _home_ranges(s: TrackState, anchor_from: int, cfg: TrackConfig) -> list[Event]:
    """Home-range work items at every closed boundary from `anchor_from` on.

    A boundary is closed once a good fix at or after it exists. The reducer does not
    estimate the range itself (a KDE with isopleths costs milliseconds, a step
    microseconds): it emits a `home-range-due` item holding the fixes, and
    `compute_home_range(item)` turns it into the home-range event, inline in a replay,
    off the fix path in the live worker. Items are diffed like any event, so an item
    is re-sent only when a late fix changed the fixes before its boundary.
    """
    if cfg.home_range_every_days is None:
        return []
    good = s.flags == 0
    t = s.t_ms[good]
    if t.size < cfg.home_range_min_fixes:
        return []
    every = int(cfg.home_range_every_days * 86_400_000)
    first = max(anchor_from, int(t[0]) + 1)
    b0 = -(-first // every) * every  # first boundary >= first
    if b0 > t[-1]:
        return []
    lon, lat = s.lon[good], s.lat[good]
    out: list[Event] = []
    for boundary in range(b0, int(t[-1]) + 1, every):
        end = int(np.searchsorted(t, boundary))  # fixes strictly before the boundary
        for window in (*cfg.home_range_windows_days, cfg.window_days):
            begin = int(np.searchsorted(t, boundary - window * 86_400_000))
            if end - begin < cfg.home_range_min_fixes:
                continue
            out.append(
                {
                    "type": "home-range-due",
                    "_anchor": boundary,
                    "id": event_id("hr", s.animal, boundary, window),
                    "individual-local-identifier": s.animal,
                    "boundary_ms": boundary,
                    "window_days": window,
                    "window_start_ms": int(t[begin]),
                    "grid": cfg.home_range_grid,
                    "lon": lon[begin:end],
                    "lat": lat[begin:end],
                    **({"t_ms": t[begin:end]} if cfg.home_range_akde else {}),
                }
            )
    return out


def resolve_home_ranges(events: list[Event]) -> list[Event]:
    """Events with each `home-range-due` item replaced by its home range (replay)."""
    return [compute_home_range(e) if e["type"] == "home-range-due" else e for e in events]


def compute_home_range(item: Event) -> Event:
    """The home-range event of a `home-range-due` work item (pure; any process)."""
    from collarstream.core.homerange import home_ranges

    lon = np.asarray(item["lon"], dtype=np.float64)
    lat = np.asarray(item["lat"], dtype=np.float64)
    t_ms = None if item.get("t_ms") is None else np.asarray(item["t_ms"], dtype=np.int64)
    ranges = home_ranges(lon, lat, grid_size=int(item["grid"]), t_ms=t_ms)
    event = home_range_event(
        item["individual-local-identifier"],
        int(item["boundary_ms"]),
        item["window_days"],
        int(lon.size),
        ranges,
    )
    event["window-start-timestamp"] = iso(int(item["window_start_ms"]))
    return event


def home_range_event(
    animal: str, through_ms: int, window_days: float | None, n: int, ranges: list[Any]
) -> Event:
    """A home-range event: the ranges of the fixes in the `window_days` before
    `through_ms` (None: the whole track)."""
    from collarstream.core.homerange import geojson_geometry

    def entry(r: Any) -> Event:
        out: Event = {
            "method": r.method,
            "level": float(r.level),
            "area_km2": round(float(r.area_km2), 6),
            "bandwidth_m": None if r.bandwidth_m is None else float(r.bandwidth_m),
            "geometry": geojson_geometry(r.geometry_lonlat),
        }
        if r.method == "akde":
            out["movement-model"] = {
                "kind": r.bandwidth_method,
                "tau_s": float(r.tau_s),
                "range-crossings": None if r.range_crossings is None else float(r.range_crossings),
            }
        return out

    return {
        "type": "home-range",
        "id": event_id("hr", animal, through_ms, window_days),
        "individual-local-identifier": animal,
        "computed-through-timestamp": iso(through_ms),
        "window_days": window_days,
        "n_fixes": n,
        "ranges": [entry(r) for r in ranges],
    }


def _evict(s: TrackState, cfg: TrackConfig) -> TrackState:
    """Keep a bounded window; older fixes can no longer be re-slotted live."""
    if s.t_ms.size == 0:
        return s
    horizon = int(s.t_ms[-1] - cfg.window_days * 86_400_000)
    cut = max(int(np.searchsorted(s.t_ms, horizon)), s.t_ms.size - cfg.max_fixes)
    # Keep the last few good fixes before the cut as context for late arrivals.
    good_before = np.flatnonzero(s.flags[:cut] == 0)
    if good_before.size:
        cut = min(cut, int(good_before[-min(EVICT_CONTEXT_FIXES, good_before.size)]))
    if cut <= 0:
        return s
    keep = slice(cut, None)
    t_keep = int(s.t_ms[cut])
    return evolve(
        s,
        t_ms=s.t_ms[keep],
        lon=s.lon[keep],
        lat=s.lat[keep],
        hdop=s.hdop[keep],
        sats=s.sats[keep],
        received_ms=s.received_ms[keep],
        flags=s.flags[keep],
        zone=s.zone[keep],
        burst_ms=s.burst_ms[keep],
        arrival_deg=s.arrival_deg[keep],
        fix_type=None if s.fix_type is None else s.fix_type[keep],
        det=None if s.det is None else s.det[keep],
        emitted=_drop_before(s.emitted, t_keep),
    )


def _drop_before(emitted: dict[str, tuple[int, str]], t_ms: int) -> dict[str, tuple[int, str]]:
    """`emitted` without the ids anchored before t_ms: a prefix, it being in anchor order."""
    old = []
    for eid, v in emitted.items():
        if v[0] >= t_ms:
            break
        old.append(eid)
    if not old:
        return emitted
    kept = dict(emitted)
    for eid in old:
        del kept[eid]
    return kept
