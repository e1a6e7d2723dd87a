"""Immobility: a collar that has not moved for days (possible death or a dropped collar).

Fix i is *immobile* when the good fixes in [t_i - min_duration, t_i]
  * number at least ``min_fixes`` (>= 3),
  * actually cover the window: the earliest is at or before
    t_i - min_duration + coverage_tolerance (a collar silent for most of the window
    proves nothing), and
  * all lie within ``radius_m`` of fix i itself.
Fix i, not the window median, is the centre: the test is then causal (decided when fix i
arrives, from fixes already in hand) and exact with a running maximum, and a bad fix i
only makes the test fail (never pass) -- the safe side for a "possible death" alarm.

An episode starts on the first immobile fix (its *anchor*) and ends on the first later
fix farther than ``release_m`` from the anchor (the all-clear). The ending fix cannot
start another episode; the next immobile fix after it can.

Distances are chords between ECEF points: at these ranges (metres to a few hundred)
chord and geodesic differ by far under a millimetre, and no projection is involved.

Defaults (snow leopards, Persian leopard; GPS only, no activity sensor):
  * radius_m = 100: stationary collar fixes scatter with a 95 % radius of ~30-50 m
    (more in rugged terrain); the distance between two such fixes is sqrt(2) times one
    fix's error and "all" fixes of a window must pass, so a dead collar needs ~2x the
    95 % error. Smaller radii turn deaths into missed alarms.
  * min_duration = 48 h with >= 3 fixes: leopards rest most of the day and stay at a kill
    for days (Fox & Chundawat 1988 saw a snow leopard 5 days at one kill; Snow Leopard
    Trust cluster work: 3+ fixes at one site), but a live cat moves between carcass and
    bed sites, which usually exceeds 100 m within two days. Vendor accelerometer
    mortality timers are user-set (VECTRONIC: e.g. 24 h, up to 140 h); GPS-only needs
    longer. Expect some alarms at kills: they are "possible death" and clear themselves
    when the cat moves on.
  * release_m = 150 m: a Schmitt margin over radius_m, so one noisy fix of a dead
    collar does not give a false all-clear.
  * coverage_tolerance = 6 h: one and a half 4-hourly fix intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collarstream.core.laea import A_M, FLATTENING
from collarstream.core.suffix import Suffix

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

RADIUS_M = 100.0
RELEASE_M = 150.0
MIN_DURATION_S = 48 * 3600.0
MIN_FIXES = 3
COVERAGE_TOLERANCE_S = 6 * 3600.0

_E2 = FLATTENING * (2.0 - FLATTENING)  # WGS84 e²


def ecef(lon: FloatArray, lat: FloatArray) -> FloatArray:
    """(n, 3) Earth-centred coordinates (m) on the WGS84 ellipsoid's surface, in closed
    form: bitwise what PROJ's EPSG:4979 -> EPSG:4978 gives (100,000 random points),
    without a Transformer call's fixed cost."""
    lam = np.radians(np.asarray(lon, np.float64))
    phi = np.radians(np.asarray(lat, np.float64))
    sin_phi, cos_phi = np.sin(phi), np.cos(phi)
    n = A_M / np.sqrt(1.0 - _E2 * sin_phi * sin_phi)
    return np.column_stack(
        [n * cos_phi * np.cos(lam), n * cos_phi * np.sin(lam), n * (1.0 - _E2) * sin_phi]
    ).reshape(-1, 3)


def immobile_fixes(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    radius_m: float = RADIUS_M,
    min_duration_s: float = MIN_DURATION_S,
    min_fixes: int = MIN_FIXES,
    coverage_tolerance_s: float = COVERAGE_TOLERANCE_S,
    start: int = 0,
) -> BoolArray:
    """Immobility of fixes [start:] of a time-sorted track (fixes before `start` are the
    history their windows need: pass at least min_duration of it).

    Vectorized over fixes; the one loop runs over lags (1, 2, ... up to the longest
    window), each step a numpy pass over the fixes still undecided, which shrink fast:
    a moving animal fails at lag 1 or 2.
    """
    t = np.asarray(t_ms, np.int64)
    idx = np.arange(start, t.size)
    return _immobile_rows(
        t, lon, lat, idx, radius_m, min_duration_s, min_fixes, coverage_tolerance_s
    )


def _immobile_rows(
    t: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    idx: IntArray,
    radius_m: float,
    min_duration_s: float,
    min_fixes: int,
    coverage_tolerance_s: float,
) -> BoolArray:
    """`immobile_fixes` of the fixes at `idx` (ascending)."""
    if min_fixes < 3:
        raise ValueError("min_fixes must be >= 3")
    lo = np.searchsorted(t, t[idx] - round(min_duration_s * 1000), side="left")
    covered = t[lo] <= t[idx] - round((min_duration_s - coverage_tolerance_s) * 1000)
    sel = np.flatnonzero(covered & (idx - lo + 1 >= min_fixes))
    cand, lo_c = idx[sel], lo[sel]
    out = np.zeros(idx.size, dtype=bool)
    if cand.size == 0:
        return out
    base = int(lo_c.min())  # positions of the fixes the windows reach, and no others
    p = ecef(lon[base : int(cand.max()) + 1], lat[base : int(cand.max()) + 1])
    ok = np.ones(cand.size, dtype=bool)
    lag = 1
    live = np.flatnonzero(ok)
    while live.size:
        i, j = cand[live], cand[live] - lag
        d = np.linalg.norm(p[i - base] - p[j - base], axis=1)
        ok[live[d > radius_m]] = False
        live = live[(d <= radius_m) & (j > lo_c[live])]
        lag += 1
    out[sel[ok]] = True
    return out


@dataclass(frozen=True)
class ImmobilityCarry:
    """The open episode's anchor (time, position) before a recomputed range, or None."""

    anchor_ms: int
    anchor_lon: float
    anchor_lat: float


@dataclass(frozen=True)
class Immobility:
    """Rows are fixes [start:]; start/end/anchor index into the full arrays."""

    immobile: BoolArray
    active: BoolArray
    start: IntArray  # critical "possible death" at these fixes
    end: IntArray  # all-clear at these fixes
    anchor: IntArray  # per start: its anchor = the start fix itself
    carry: ImmobilityCarry | None  # state after the last fix, for the next call


def immobility(
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    start: int = 0,
    carry: ImmobilityCarry | None = None,
    radius_m: float = RADIUS_M,
    release_m: float = RELEASE_M,
    min_duration_s: float = MIN_DURATION_S,
    min_fixes: int = MIN_FIXES,
    coverage_tolerance_s: float = COVERAGE_TOLERANCE_S,
) -> Immobility:
    """Immobility episodes over fixes [start:] of one animal's time-sorted good fixes.

    Contract: with `carry` = the episode open after fix start-1 (``Immobility.carry`` of a
    run that ended there, or None) and at least min_duration of fixes before `start`,
    the result equals rows [start:] of the whole-track result. Loops over episodes, not
    fixes: each episode's end is found by a vectorized distance scan from its anchor.
    """
    track = Suffix(np.asarray(t_ms, np.int64), lon, lat, start, carry)
    return immobility_many(
        [track], radius_m, release_m, min_duration_s, min_fixes, coverage_tolerance_s
    )[0]


def immobility_many(
    tracks: Sequence[Suffix[ImmobilityCarry]],
    radius_m: float = RADIUS_M,
    release_m: float = RELEASE_M,
    min_duration_s: float = MIN_DURATION_S,
    min_fixes: int = MIN_FIXES,
    coverage_tolerance_s: float = COVERAGE_TOLERANCE_S,
) -> list[Immobility]:
    """`immobility` of many animals, the same results. Which fixes are immobile is found
    in one pass over all tracks, laid end to end on one time axis with gaps longer than
    a window between them (so no window reaches into another track); the episode scan
    runs only for tracks with an immobile fix or an open episode, which a moving animal
    never has."""
    if min_fixes < 3:
        raise ValueError("min_fixes must be >= 3")
    dur = round(min_duration_s * 1000)
    ts, lons, lats, rows = [], [], [], []
    at, base = 0, 0
    for tr in tracks:
        t = np.asarray(tr.t_ms, np.int64)
        # Only the windows of fixes [start:] are read: from the first one's start on.
        lo = int(np.searchsorted(t, t[tr.start] - dur)) if tr.start < t.size else t.size
        part = t[lo:]
        if part.size:
            ts.append(part - part[0] + base)
            base += int(part[-1] - part[0]) + dur + 1
        lons.append(np.asarray(tr.lon, np.float64)[lo:])
        lats.append(np.asarray(tr.lat, np.float64)[lo:])
        rows.append(np.arange(at + tr.start - lo, at + part.size))
        at += part.size
    if at:
        imm_all = _immobile_rows(
            np.concatenate(ts),
            np.concatenate(lons),
            np.concatenate(lats),
            np.concatenate(rows),
            radius_m,
            min_duration_s,
            min_fixes,
            coverage_tolerance_s,
        )
    else:
        imm_all = np.zeros(0, bool)
    sizes = np.asarray([r.size for r in rows], np.int64)
    ends = np.cumsum(sizes)
    out = []
    for tr, a, b in zip(tracks, ends - sizes, ends, strict=True):
        imm = imm_all[a:b]
        if tr.carry is None and not imm.any():
            none = np.empty(0, np.int64)
            out.append(Immobility(imm, np.zeros(imm.size, bool), none, none, none, None))
        else:
            out.append(_episodes(tr, imm, release_m))
    return out


def _episodes(tr: Suffix[ImmobilityCarry], imm: BoolArray, release_m: float) -> Immobility:
    """Episodes from the immobile fixes of [start:] and the open one before them."""
    t, lon, lat, start, carry = tr.t_ms, tr.lon, tr.lat, tr.start, tr.carry
    p = ecef(lon[start:], lat[start:])  # p[k - start] is fix k's
    n = t.size
    active = np.zeros(n - start, dtype=bool)
    starts: list[int] = []
    ends: list[int] = []
    pos = start
    anchor = (
        None
        if carry is None
        else ecef(np.array([carry.anchor_lon]), np.array([carry.anchor_lat]))[0]
    )
    state = carry
    while pos < n:
        if anchor is None:
            nxt = np.flatnonzero(imm[pos - start :])
            if nxt.size == 0:
                break
            s = pos + int(nxt[0])
            starts.append(s)
            anchor = p[s - start]
            state = ImmobilityCarry(int(t[s]), float(lon[s]), float(lat[s]))
            pos = s
        far = np.flatnonzero(np.linalg.norm(p[pos - start :] - anchor, axis=1) > release_m)
        e = pos + int(far[0]) if far.size else n
        active[pos - start : e - start] = True
        if e == n:
            break
        ends.append(e)
        anchor, state, pos = None, None, e + 1
    st = np.asarray(starts, dtype=np.int64)
    return Immobility(imm, active, st, np.asarray(ends, dtype=np.int64), st.copy(), state)
