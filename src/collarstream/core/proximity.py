"""Proximity of two collared animals: fixes of different animals close in space and time.

Batch: ``close_pairs`` over many animals' fixes. Each fix becomes a 4-vector (ECEF
x, y, z in metres, time scaled so max_dt_s spans within_m); a cKDTree per animal and a
Chebyshev (p = inf) ball query between the trees of each pair of animals keeps every
pair with |dx|, |dy|, |dz| <= within_m and |dt| <= max_dt_s -- a superset of the answer,
since a chord is never longer than the geodesic. Candidates are then checked exactly:
|dt| <= max_dt_s and the geodesic (pyproj Geod) <= within_m, both inclusive.

Live: ``close_to`` checks one new fix against the latest fix of every other animal.
Cross-animal by nature: it cannot live in the per-animal reducer (see the report).

Encounters: a close pair of fixes is a *detection*, at the time of its later fix. The
detections of one unordered pair of animals form an *encounter* while they keep coming
no more than ``ENCOUNTER_GAP_S`` apart in data time; alerts go out once per encounter,
at its first detection (``core.encounters``), not once per detection. ``encounters``
groups detections (whole tracks in a replay, one new fix's detections live, carrying
each pair's last detection time); ``continue_encounters`` is the live form over the
per-pair carry the proximity agent keeps in a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from collarstream.core.geodesy import inverse, search_box_deg
from collarstream.core.immobility import ecef

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Leopards that share a kill or mate come within metres; 500 m and 1 h catches an
# encounter between fixes hours apart without pairing neighbours on adjacent ridges.
WITHIN_M = 500.0
MAX_DT_S = 3600.0
# One encounter while the pair's detections come at most 26 h apart. On the 4-hourly
# schedule two animals together give a detection every 4 h. Fixes go missing (one collar
# or the other: terrain, a cat lying in a cave) and a mother leaves her cubs for hours to
# hunt; five missed detections in a row leave 24 h between detections on the schedule.
# A detection's time is the later of two fixes up to MAX_DT_S apart and fix times jitter
# by minutes, so that 24 h is really 23-25 h: 26 h (6.5 intervals, never on a schedule
# multiple) keeps five missed detections in one encounter and splits at six or more
# (28 h, at least 27 h), a pair apart for more than a day. A mother with a collared cub
# then raises one alert per animal when they are first seen together, not six a day for
# months; a pair seen together every day raises nothing new. Inclusive: a detection
# exactly ENCOUNTER_GAP_S after the last continues the encounter.
ENCOUNTER_GAP_S = 26 * 3600.0
# prev_ms of a pair with no earlier detection (nothing to continue).
NO_PREVIOUS = int(np.iinfo(np.int64).min)
# The tree radius is padded so float rounding cannot drop a pair at exactly within_m.
_PAD = 1.0 + 1e-9


@dataclass(frozen=True)
class Pairs:
    """Fix index pairs (i < j, different animals), their distance and time apart."""

    i: IntArray
    j: IntArray
    dist_m: FloatArray
    dt_s: FloatArray

    def __len__(self) -> int:
        return int(self.i.size)


def close_pairs(
    animal: IntArray,
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    within_m: float = WITHIN_M,
    max_dt_s: float = MAX_DT_S,
) -> Pairs:
    """Every pair of fixes of different animals within max_dt_s and within_m (inclusive).

    Any order of input; pairs are sorted by (i, j). Order-independent by construction: a
    pair depends only on its two fixes.
    """
    animal = np.asarray(animal, np.int64)
    t = np.asarray(t_ms, np.int64)
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    scale = within_m / max_dt_s if max_dt_s > 0 else 0.0
    pts = np.column_stack([ecef(lon, lat), (t - (t.min() if t.size else 0)) / 1000.0 * scale])
    ids = np.unique(animal)
    members = [np.flatnonzero(animal == a) for a in ids]
    trees = [cKDTree(pts[m]) for m in members]
    ii: list[IntArray] = []
    jj: list[IntArray] = []
    for a in range(ids.size):
        for b in range(a + 1, ids.size):
            sdm = trees[a].sparse_distance_matrix(
                trees[b], within_m * _PAD + 1e-6, p=np.inf, output_type="ndarray"
            )
            ii.append(members[a][sdm["i"]])
            jj.append(members[b][sdm["j"]])
    i = np.concatenate(ii) if ii else np.empty(0, np.int64)
    j = np.concatenate(jj) if jj else np.empty(0, np.int64)
    i, j = np.minimum(i, j), np.maximum(i, j)
    dt = np.abs(t[j] - t[i]) / 1000.0
    d, _, _ = inverse(lon[i], lat[i], lon[j], lat[j])
    keep = (dt <= max_dt_s) & (d <= within_m)
    i, j, d, dt = i[keep], j[keep], d[keep], dt[keep]
    order = np.lexsort((j, i))
    return Pairs(i[order], j[order], d[order], dt[order])


def close_to(
    lon: float,
    lat: float,
    t_ms: int,
    other_lon: FloatArray,
    other_lat: FloatArray,
    other_t_ms: IntArray,
    within_m: float = WITHIN_M,
    max_dt_s: float = MAX_DT_S,
) -> tuple[IntArray, FloatArray]:
    """Live form: which of the other animals' latest fixes are close to a new fix.

    Returns (indices into the other_* arrays, geodesic distances). The caller passes the
    latest fix of every *other* animal. Same inclusive tests as ``close_pairs``, so a
    live alert and a replayed pair agree.
    """
    olon, olat = np.asarray(other_lon, np.float64), np.asarray(other_lat, np.float64)
    ot = np.asarray(other_t_ms, np.int64)
    # Geodesics only to the fixes in time and in a lon/lat box that holds every point
    # within_m away (one per other animal was most of a live batch's proximity work).
    dlat, dlon = search_box_deg(np.asarray(lat, np.float64), within_m)
    near = np.flatnonzero(
        (np.abs(ot - t_ms) / 1000.0 <= max_dt_s)
        & (np.abs(olat - lat) <= dlat)
        & (np.abs(np.mod(olon - lon + 180.0, 360.0) - 180.0) <= dlon)
    )
    d, _, _ = inverse(np.full(near.size, lon), np.full(near.size, lat), olon[near], olat[near])
    ok = d <= within_m
    return near[ok].astype(np.int64), d[ok]


@dataclass(frozen=True)
class Encounters:
    """Detections grouped into encounters.

    Encounters are ordered by pair (lower animal code, then higher), then by time. Every
    detection belongs to exactly one encounter; `first` and `last` index the detections
    passed in (the earliest and the latest of each encounter in this call).
    """

    encounter: IntArray  # per detection: its encounter
    first: IntArray  # per encounter: its first detection (of this call)
    last: IntArray  # per encounter: its last detection (of this call)
    count: IntArray  # per encounter: its detections (of this call)
    new: BoolArray  # per encounter: starts here (False: continues the pair's prev_ms)

    def __len__(self) -> int:
        return int(self.first.size)


def detection_times(t_a_ms: IntArray, t_b_ms: IntArray) -> IntArray:
    """Time of a detection: its later fix (live, the fix whose arrival finds the pair)."""
    return np.maximum(np.asarray(t_a_ms, np.int64), np.asarray(t_b_ms, np.int64))


def encounters(
    animal_a: IntArray,
    animal_b: IntArray,
    t_a_ms: IntArray,
    t_b_ms: IntArray,
    gap_s: float = ENCOUNTER_GAP_S,
    prev_ms: IntArray | None = None,
) -> Encounters:
    """Group detections (close pairs of fixes of animals a and b, at times t_a and t_b)
    into encounters of unordered pairs of animals.

    A detection at time t (``detection_times``) continues its pair's encounter when the
    pair's previous detection is at most gap_s before it, else it starts a new one.
    Detections are ordered by (pair, t, the lower-coded animal's fix time, the other's),
    so the result is the same in any input order; two detections equal in all of that
    are the same two fix times and either may be `first`.

    Live form: `prev_ms`, per detection, is the time of its pair's last detection before
    this call (NO_PREVIOUS: none); only each pair's first detection here uses it. With
    the detections of a time-ordered stream cut into consecutive calls and `prev_ms`
    carried from the calls before, the encounters started (`new`) are those of one call
    over all of them. A detection earlier than prev_ms continues (live, a pair's
    detections do not go back in time: each animal's position only moves forward).
    """
    a, b = np.asarray(animal_a, np.int64), np.asarray(animal_b, np.int64)
    ta, tb = np.asarray(t_a_ms, np.int64), np.asarray(t_b_ms, np.int64)
    if (a == b).any():
        raise ValueError("a detection pairs two different animals")
    swap = a > b
    lo, hi = np.where(swap, b, a), np.where(swap, a, b)
    t_lo, t_hi = np.where(swap, tb, ta), np.where(swap, ta, tb)
    t = detection_times(ta, tb)
    order = np.lexsort((t_hi, t_lo, t, hi, lo))
    lo, hi, t = lo[order], hi[order], t[order]
    n = t.size
    same = np.zeros(n, dtype=bool)
    same[1:] = (lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1])
    prev = np.full(n, NO_PREVIOUS, np.int64)
    if prev_ms is not None:
        prev = np.asarray(prev_ms, np.int64)[order]
    prev[1:] = np.where(same[1:], t[:-1], prev[1:])
    known = prev != NO_PREVIOUS
    gap_ms = round(gap_s * 1000)
    cont = known & (t - np.where(known, prev, t) <= gap_ms)
    begins = ~same | ~cont  # a row group of this call: a new encounter or a continued one
    label = np.cumsum(begins) - 1
    heads = np.flatnonzero(begins)
    tails = np.append(heads[1:], n)[: heads.size] - 1
    encounter = np.empty(n, np.int64)
    encounter[order] = label
    return Encounters(
        encounter,
        order[heads].astype(np.int64),
        order[tails].astype(np.int64),
        (tails - heads + 1).astype(np.int64),
        ~cont[heads],
    )


@dataclass(frozen=True)
class OpenEncounter:
    """A pair's latest encounter, as the live agent carries it (key: the two animals,
    sorted): the fix times of its first detection, in key order, and the time of its
    latest detection. Open while the next detection is within the gap of `last_ms`."""

    start_ms: tuple[int, int]
    last_ms: int


def continue_encounters(
    carry: Mapping[tuple[str, str], OpenEncounter],
    animal_a: Sequence[str],
    animal_b: Sequence[str],
    t_a_ms: IntArray,
    t_b_ms: IntArray,
    gap_s: float = ENCOUNTER_GAP_S,
) -> tuple[BoolArray, dict[tuple[str, str], OpenEncounter]]:
    """Live form of ``encounters`` over named animals: which of these detections start an
    encounter, given each pair's carried encounter, and the carry's changed entries.

    Detections no earlier than the carried ones, any order among themselves; a pair may
    come more than once.
    """
    ta, tb = np.asarray(t_a_ms, np.int64), np.asarray(t_b_ms, np.int64)
    names = sorted({*animal_a, *animal_b})
    code = {name: k for k, name in enumerate(names)}
    ca = np.array([code[x] for x in animal_a], np.int64)
    cb = np.array([code[x] for x in animal_b], np.int64)
    keys = [(x, y) if x < y else (y, x) for x, y in zip(animal_a, animal_b, strict=True)]
    prev = np.array([carry[k].last_ms if k in carry else NO_PREVIOUS for k in keys], dtype=np.int64)
    enc = encounters(ca, cb, ta, tb, gap_s, prev)
    starts = np.zeros(ta.size, dtype=bool)
    starts[enc.first[enc.new]] = True
    t = detection_times(ta, tb)
    out: dict[tuple[str, str], OpenEncounter] = {}
    for f, last, new in zip(enc.first.tolist(), enc.last.tolist(), enc.new.tolist(), strict=True):
        key = keys[f]
        if new:
            first_a = animal_a[f] == key[0]
            start = (int(ta[f]), int(tb[f])) if first_a else (int(tb[f]), int(ta[f]))
            out[key] = OpenEncounter(start, int(t[last]))
        else:  # only a pair's first encounter here can continue; later ones replace it
            was = carry[key]
            out[key] = OpenEncounter(was.start_ms, max(was.last_ms, int(t[last])))
    return starts, out
