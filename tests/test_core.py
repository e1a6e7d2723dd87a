"""Unit and property tests of the core: geodesy, steps, quality flags, countries, zones and
the reducer's independence of arrival order."""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import orjson
import pytest
import shapely
from geographiclib.geodesic import Geodesic
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from collarstream.core import quality, silence
from collarstream.core import track as track_mod
from collarstream.core.countries import CountryLayer, bow_deg
from collarstream.core.geodesy import densify, forward, inverse
from collarstream.core.steps import (
    STEP_COLUMNS,
    compute_steps,
    compute_steps_many,
    max_gap_seconds,
    wrap180,
)
from collarstream.core.track import (
    Context,
    FixBatch,
    TrackConfig,
    TrackState,
    advance,
    advance_many,
    silent_collar_alert,
)
from collarstream.core.zones import UrbanFence, Zone, latch_levels
from collarstream.fences import (
    border_lines,
    default_urban_path,
    load_countries,
    load_fence_file,
    load_protected_areas,
)
from collarstream.timefmt import iso, parse_ms

GEOD = Geodesic.WGS84
H4_MS = 4 * 3600 * 1000
T0 = parse_ms("2025-05-01T00:00:00Z")
COUNTRIES = load_countries()  # ~0.5-1 s: once per module
ALMATY = load_fence_file(default_urban_path())


def _a(*v: float) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


# ----------------------------------------------------------------------------- geodesy

lats = st.floats(-90, 90)
lons = st.floats(-180, 180)


@st.composite
def point_pairs(draw: st.DrawFn) -> tuple[float, float, float, float]:
    lon0, lat0 = draw(lons), draw(lats)
    kind = draw(st.sampled_from(["any", "short", "antipodal"]))
    if kind == "any":
        return lon0, lat0, draw(lons), draw(lats)
    if kind == "short":
        d = st.floats(-1e-3, 1e-3)
        lon1 = ((lon0 + draw(d) + 180.0) % 360.0) - 180.0
        return lon0, lat0, lon1, max(-90.0, min(90.0, lat0 + draw(d)))
    d = st.floats(-0.5, 0.5)
    lon1 = ((lon0 + 180.0 + draw(d) + 180.0) % 360.0) - 180.0
    return lon0, lat0, lon1, max(-90.0, min(90.0, -lat0 + draw(d)))


@given(point_pairs())
@settings(max_examples=500, deadline=None)
def test_inverse_matches_geographiclib(p: tuple[float, float, float, float]) -> None:
    lon0, lat0, lon1, lat1 = p
    dist, dep, arr = inverse(_a(lon0), _a(lat0), _a(lon1), _a(lat1))
    ref = GEOD.Inverse(lat0, lon0, lat1, lon1)
    assert abs(dist[0] - ref["s12"]) < 0.01
    if ref["s12"] == 0.0:
        assert math.isnan(dep[0]) and math.isnan(arr[0])
        return
    assert 0.0 <= dep[0] <= 360.0 and 0.0 <= arr[0] <= 360.0
    # Azimuths are ill-defined at the poles and for (near-)antipodal pairs with several
    # shortest paths; elsewhere they must agree with geographiclib's azi1/azi2 (azi2 is
    # the direction of travel at the end: the arrival azimuth, not the back azimuth).
    if abs(lat0) < 89.9 and abs(lat1) < 89.9 and ref["a12"] < 179.0 and ref["s12"] > 1e-3:
        assert _angle_diff(dep[0], ref["azi1"]) < 1e-6
        assert _angle_diff(arr[0], ref["azi2"]) < 1e-6


def test_azimuth_conventions() -> None:
    # Along the equator eastwards, and up a meridian northwards.
    _, dep, arr = inverse(_a(10.0, 30.0), _a(0.0, -10.0), _a(20.0, 30.0), _a(0.0, 10.0))
    np.testing.assert_allclose(dep, [90.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(arr, [90.0, 0.0], atol=1e-9)
    # Eastwards along 45N: the geodesic bends poleward, leaving north of east and
    # arriving south of east, symmetrically. A back azimuth would be ~270.
    _, dep, arr = inverse(_a(0.0), _a(45.0), _a(10.0), _a(45.0))
    assert 80.0 < dep[0] < 90.0 < arr[0] < 100.0
    assert dep[0] + arr[0] == pytest.approx(180.0, abs=1e-9)
    # Southwards: 180 at both ends; westwards along the equator: 270.
    _, dep, arr = inverse(_a(77.0, 5.0), _a(43.0, 0.0), _a(77.0, 4.0), _a(42.0, 0.0))
    np.testing.assert_allclose(dep, [180.0, 270.0], atol=1e-9)
    np.testing.assert_allclose(arr, [180.0, 270.0], atol=1e-9)
    # Zero-length: no direction.
    dist, dep, arr = inverse(_a(77.0), _a(43.0), _a(77.0), _a(43.0))
    assert dist[0] == 0.0 and np.isnan(dep[0]) and np.isnan(arr[0])


def test_forward_inverts_inverse() -> None:
    lon1, lat1 = forward(_a(77.0), _a(43.0), _a(200.0), _a(12_345.0))
    dist, dep, _ = inverse(_a(77.0), _a(43.0), lon1, lat1)
    assert dist[0] == pytest.approx(12_345.0, abs=1e-6)
    assert dep[0] == pytest.approx(200.0, abs=1e-9)


@given(point_pairs(), st.floats(50.0, 5e5))
@settings(max_examples=200, deadline=None)
def test_densify_ends_exact_and_spacing_equal(
    p: tuple[float, float, float, float], max_seg: float
) -> None:
    lon0, lat0, lon1, lat1 = p
    ref = GEOD.Inverse(lat0, lon0, lat1, lon1)
    assume(ref["a12"] < 179.0)  # a unique shortest geodesic
    lon, lat, off = densify(_a(77.0, lon0), _a(43.0, lat0), _a(77.1, lon1), _a(43.1, lat1), max_seg)
    assert off[0] == 0 and off[-1] == lon.size
    for i, (a0, b0, a1, b1) in enumerate([(77.0, 43.0, 77.1, 43.1), (lon0, lat0, lon1, lat1)]):
        s = slice(off[i], off[i + 1])
        plon, plat = lon[s], lat[s]
        assert plon[-1] == a1 and plat[-1] == b1  # exactly the recorded end point
        assert _angle_diff(plon[0], a0) < 1e-9 and abs(plat[0] - b0) < 1e-9
        seg, _, _ = inverse(plon[:-1], plat[:-1], plon[1:], plat[1:])
        total, _, _ = inverse(_a(a0), _a(b0), _a(a1), _a(b1))
        assert seg.size == max(1, math.ceil(total[0] / max_seg))
        np.testing.assert_allclose(seg, total[0] / seg.size, atol=1e-6)
        assert (seg <= max_seg + 1e-6).all()


def test_densify_start_points_exact() -> None:
    lon, lat, off = densify(
        _a(77.0, 10.123456789), _a(43.0, -20.3), _a(77.3, 11.0), _a(42.1, -20.0), 1000.0
    )
    assert lon[off[1]] == 10.123456789 and lat[off[1]] == -20.3


# ----------------------------------------------------------------------------- steps


def _reference_steps(
    t_ms: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    good: np.ndarray,
    max_gap_s: float,
    prior_arrival: float = math.nan,
    prior_burst: int | None = None,
) -> list[dict[str, Any]]:
    """One geographiclib call per row, the way an analyst would write it (`prior_*`: the
    step before the first fix, its arrival direction and burst)."""
    out: list[dict[str, Any]] = []
    idx = [i for i in range(t_ms.size) if good[i]]
    burst = prior_burst if prior_burst is not None else t_ms[idx[0]] if idx else 0
    prev: dict[str, Any] | None = {"arrival": prior_arrival}
    for a, b in itertools.pairwise(idx):
        dt = (t_ms[b] - t_ms[a]) / 1000.0
        if dt > max_gap_s:
            burst, prev = t_ms[b], None
            continue
        g = GEOD.Inverse(lat[a], lon[a], lat[b], lon[b])
        moved = g["s12"] > 0
        heading = g["azi1"] % 360.0 if moved else math.nan
        arrival = g["azi2"] % 360.0 if moved else math.nan
        turn = math.nan
        if prev is not None and not math.isnan(prev["arrival"]) and moved:
            turn = (heading - prev["arrival"]) % 360.0
            turn = turn - 360.0 if turn > 180.0 else turn
        row = {
            "i0": a,
            "i1": b,
            "dist": g["s12"],
            "dt": dt,
            "speed": g["s12"] / dt,
            "heading": heading,
            "arrival": arrival,
            "turn": turn,
            "burst": burst,
        }
        out.append(row)
        prev = row
    return out


@st.composite
def tracks(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(2, 30))
    dts = draw(
        st.lists(
            st.sampled_from([600, 3600, 4 * 3600, 14400 + 1, 43200, 86400 * 3]),
            min_size=n - 1,
            max_size=n - 1,
        )
    )
    t = T0 + 1000 * np.concatenate([[0], np.cumsum(dts)]).astype(np.int64)
    lon = 77.0 + np.asarray(draw(st.lists(st.floats(-0.3, 0.3), min_size=n, max_size=n)))
    lat = 43.0 + np.asarray(draw(st.lists(st.floats(-0.3, 0.3), min_size=n, max_size=n)))
    # Some fixes revisit the previous place exactly: zero-length steps.
    for i in draw(st.lists(st.integers(1, n - 1), max_size=3)):
        lon[i], lat[i] = lon[i - 1], lat[i - 1]
    good = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return t, lon, lat, good


@given(tracks())
@settings(max_examples=300, deadline=None)
def test_steps_match_per_row_geographiclib(track: tuple[np.ndarray, ...]) -> None:
    t, lon, lat, good = track
    max_gap = 3 * 4 * 3600.0
    got = compute_steps(t, lon, lat, good, max_gap)
    _assert_like_reference(got, _reference_steps(t, lon, lat, good, max_gap))


def _assert_like_reference(got: Any, ref: list[dict[str, Any]]) -> None:
    assert len(got) == len(ref)
    for j, r in enumerate(ref):
        assert (got.i0[j], got.i1[j]) == (r["i0"], r["i1"])
        assert abs(got.dist_m[j] - r["dist"]) < 0.01
        assert got.dt_s[j] == r["dt"]
        assert got.speed_mps[j] == pytest.approx(r["speed"], abs=1e-6)
        assert got.burst_start_ms[j] == r["burst"]
        # The direction of a step of a few nanometres (hypothesis draws fixes 1e-15°
        # apart) is rounding noise in either library: compared from a millimetre up.
        short = r["dist"] < 1e-3
        noise = {"heading": short, "turn": short or (j > 0 and ref[j - 1]["dist"] < 1e-3)}
        for key, ours in (("heading", got.heading_deg[j]), ("turn", got.turn_deg[j])):
            if math.isnan(r[key]):
                assert math.isnan(ours), (key, j)
            elif not noise[key]:
                assert _angle_diff(ours, r[key]) < 1e-6, (key, j)
        if not math.isnan(got.turn_deg[j]):
            assert -180.0 < got.turn_deg[j] <= 180.0


@given(
    st.lists(
        st.tuples(tracks(), st.one_of(st.just(math.nan), st.floats(0, 360)), st.booleans()),
        max_size=5,
    ),
    st.floats(3600.0, 4 * 86400.0),
)
@settings(max_examples=150, deadline=None)
def test_steps_of_many_tracks_equal_each_tracks_own(
    rows: list[tuple[tuple[np.ndarray, ...], float, bool]], max_gap: float
) -> None:
    """The reducer computes every animal's steps in one compute_steps_many pass, tracks
    laid end to end: no step may join two tracks, and each track's steps (carried
    arrival and burst included) must be bit for bit its own compute_steps."""
    t_all, sizes, gaps, arrivals, bursts, pairs, want = [], [], [], [], [], [], []
    for k, ((t, lon, lat, good), arrival, carries) in enumerate(rows):
        idx = np.flatnonzero(good)
        gap = max_gap * (k + 1)  # each track its own
        burst = int(T0) - 3_600_000 * k if carries else None
        want.append(compute_steps(t, lon, lat, good, gap, arrival, burst))
        _assert_like_reference(want[-1], _reference_steps(t, lon, lat, good, gap, arrival, burst))
        t_all.append(t[idx])
        sizes.append(idx.size)
        gaps.append(gap)
        arrivals.append(arrival)
        bursts.append(burst if burst is not None else (int(t[idx[0]]) if idx.size else 0))
        pairs.append(inverse(lon[idx[:-1]], lat[idx[:-1]], lon[idx[1:]], lat[idx[1:]]))
    t_cat = np.concatenate(t_all) if rows else np.empty(0, np.int64)
    pair_cat = tuple(
        np.concatenate([p[c] for p in pairs]) if rows else np.empty(0) for c in range(3)
    )
    got = compute_steps_many(t_cat, sizes, gaps, pair_cat, arrivals, bursts)
    ends = np.cumsum(sizes, dtype=np.int64)
    for (_, _, _, good), w, a, b in zip(
        (r[0] for r in rows), want, ends - sizes, ends, strict=True
    ):
        mine = (got.i0 >= a) & (got.i0 < b)
        idx = np.flatnonzero(good)
        np.testing.assert_array_equal(idx[got.i0[mine] - a], w.i0)
        np.testing.assert_array_equal(idx[got.i1[mine] - a], w.i1)
        for name in STEP_COLUMNS:
            np.testing.assert_array_equal(getattr(got, name)[mine], getattr(w, name), name)
    assert np.all(got.i1 <= np.repeat(ends, sizes)[got.i0] - 1)  # never across tracks


@given(tracks())
@settings(max_examples=200, deadline=None)
def test_steps_from_given_pair_geodesics_are_the_same(track: tuple[np.ndarray, ...]) -> None:
    # The reducer hands compute_steps the geodesics of consecutive good fixes, computed
    # for all animals at once: the steps must be those it computes itself, bit for bit.
    t, lon, lat, good = track
    idx = np.flatnonzero(good)
    pairs = inverse(lon[idx[:-1]], lat[idx[:-1]], lon[idx[1:]], lat[idx[1:]])
    own = compute_steps(t, lon, lat, good, 3 * 4 * 3600.0, 12.5, int(T0))
    given_ = compute_steps(t, lon, lat, good, 3 * 4 * 3600.0, 12.5, int(T0), pair_inverse=pairs)
    for name in own.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(given_, name), getattr(own, name), err_msg=name)
    if idx.size > 1:
        with pytest.raises(ValueError, match="consecutive good fixes"):
            compute_steps(t, lon, lat, good, 3600.0, pair_inverse=tuple(a[1:] for a in pairs))


def test_steps_units_and_bursts() -> None:
    # 1 degree of latitude at the equator is 110574.389 m; in an hour that is 30.7 m/s.
    t = T0 + np.array([0, 3600, 7200, 7200 + 86400, 7200 + 90000], dtype=np.int64) * 1000
    lon = _a(0.0, 0.0, 1.0, 1.0, 1.0)
    lat = _a(0.0, 1.0, 1.0, 2.0, 3.0)
    s = compute_steps(t, lon, lat, np.ones(5, bool), max_gap_s=3 * 3600)
    assert list(s.i0) == [0, 1, 3] and list(s.i1) == [1, 2, 4]  # the day-long gap splits
    assert s.dist_m[0] == pytest.approx(110_574.389, abs=1e-3)
    assert s.dt_s[0] == 3600.0 and s.speed_mps[0] == pytest.approx(s.dist_m[0] / 3600, rel=1e-12)
    assert s.heading_deg[0] == pytest.approx(0.0, abs=1e-9)
    assert s.turn_deg[1] == pytest.approx(90.0, abs=0.02)  # north, then east: right turn
    assert math.isnan(s.turn_deg[0]) and math.isnan(s.turn_deg[2])  # burst starts
    assert list(s.burst_start_ms) == [t[0], t[0], t[3]]
    assert wrap180(_a(180.0, -180.0, 190.0, -190.0, 540.0)).tolist() == [180, 180, -170, 170, 180]


def test_max_gap_from_schedule_or_median() -> None:
    t = np.array([0, 3600, 7200, 7200 + 86400], dtype=np.int64) * 1000
    assert max_gap_seconds(t, 4 * 3600.0, 3.0) == 3 * 4 * 3600.0
    assert max_gap_seconds(t, None, 3.0) == 3 * 3600.0


# ----------------------------------------------------------------------------- quality

PROFILE = quality.Profile("leopard", max_speed_mps=5.0, fix_interval_s=4 * 3600)


def _flags(
    t: list[int],
    lon: list[float],
    lat: list[float],
    hdop: list[float] | None = None,
    sats: list[float] | None = None,
) -> np.ndarray:
    n = len(t)
    return quality.static_flags(
        np.asarray(t, np.int64),
        _a(*lon),
        _a(*lat),
        _a(*(hdop or [1.0] * n)),
        _a(*(sats or [8.0] * n)),
        PROFILE,
    )


def test_duplicates_keep_the_best_hdop() -> None:
    f = _flags(
        [0, 5, 5, 5, 9],
        [77.0] * 5,
        [43.0, 43.01, 43.02, 43.03, 43.0],
        hdop=[1.0, 3.0, 1.1, 2.0, 1.0],
    )
    assert [bool(x & quality.DUPLICATE) for x in f] == [False, True, False, True, False]
    # A located fix beats a failed one however good the failed one's HDOP; NaN HDOP ranks last.
    f = _flags([5, 5, 5], [math.nan, 77.0, 77.0], [math.nan, 43.0, 43.1], hdop=[0.5, math.nan, 4.0])
    assert [bool(x & quality.DUPLICATE) for x in f] == [True, True, False]


def test_missing_poor_hdop_and_few_satellites() -> None:
    f = _flags(
        [0, 1, 2, 3, 4, 5, 6],
        [math.nan, 77.0, 0.0, 0.0, 77.0, 77.0, 77.0],
        [43.0, math.nan, 0.0, 10.0, 43.0, 43.0, 43.0],
        hdop=[1.0, 1.0, 1.0, 1.0, 10.0, 10.5, 1.0],
        sats=[8, 8, 8, 8, 3, 8, 2],
    )
    assert [bool(x & quality.MISSING_COORDS) for x in f] == [1, 1, 1, 0, 0, 0, 0]
    assert [bool(x & quality.POOR_HDOP) for x in f] == [0, 0, 0, 0, 0, 1, 0]
    assert [bool(x & quality.FEW_SATELLITES) for x in f] == [0, 0, 0, 0, 0, 0, 1]
    assert quality.flag_names(int(quality.POOR_HDOP | quality.DUPLICATE)) == [
        "duplicate",
        "poor-hdop",
    ]


def test_single_outlier_is_flagged_not_its_neighbours() -> None:
    n = 9
    t = T0 + np.arange(n, dtype=np.int64) * H4_MS
    lon = 77.0 + 0.01 * np.arange(n)
    lat = np.full(n, 43.0)
    lat[4] = 44.0  # 111 km away and back in 4 h each way: 7.7 m/s > 5
    out = quality.speed_outliers(t, lon, lat, np.ones(n, bool), PROFILE.max_speed_mps)
    assert out.tolist() == [i == 4 for i in range(n)]
    # The reducer flags it too, and makes no step to or from it.
    ctx = Context(None, (), PROFILE, config=TrackConfig(home_range_every_days=None))
    state, ev = advance(
        TrackState.new("a"), FixBatch(t, lon, lat, np.ones(n), np.full(n, 8.0), t), ctx
    )
    assert state.flags.tolist() == [
        int(quality.IMPOSSIBLE_SPEED) if i == 4 else 0 for i in range(n)
    ]
    assert [e["start-location-lat"] for e in ev] == [43.0] * (n - 2)


def test_newest_outlier_is_provisional() -> None:
    t = T0 + np.arange(4, dtype=np.int64) * H4_MS
    lon, lat = _a(77.0, 77.01, 77.02, 77.03), _a(43.0, 43.0, 43.0, 44.0)
    out = quality.speed_outliers(t, lon, lat, np.ones(4, bool), 5.0)
    assert out.tolist() == [False, False, False, True]
    # The next fix confirms the jump was real (the animal stays there): no longer flagged.
    t5 = T0 + np.arange(5, dtype=np.int64) * H4_MS
    out = quality.speed_outliers(t5, _a(*lon, 77.04), _a(*lat, 44.0), np.ones(5, bool), 5.0)
    assert not out[3]


_PROFILES = (
    PROFILE,
    quality.Profile("strict", max_speed_mps=0.5, max_hdop=2.0, min_satellites=5, min_fix_type=3),
    quality.Profile("no-tolerance", max_speed_mps=20.0, near_duplicate_s=0.0),
)


def _static_by_loop(rows: list[tuple[float, ...]], p: quality.Profile) -> list[int]:
    """`static_flags`' documented rules, one fix and one group at a time."""

    def fin(v: float) -> bool:
        return math.isfinite(v)

    def missing(r: tuple[float, ...]) -> bool:
        return not (fin(r[1]) and fin(r[2])) or (r[1] == 0.0 and r[2] == 0.0)

    def rank(i: int) -> tuple[float, ...]:
        _, _, _, hdop, sats, ftype = rows[i]
        return (
            missing(rows[i]),
            -(ftype if fin(ftype) else 0.0),
            hdop if fin(hdop) else 1e9,
            -(sats if fin(sats) else 0.0),
            i,
        )

    flags = [0] * len(rows)
    for i, (_, _, _, hdop, sats, ftype) in enumerate(rows):
        flags[i] |= int(quality.MISSING_COORDS) * missing(rows[i])
        flags[i] |= int(quality.POOR_HDOP) * (fin(hdop) and hdop > p.max_hdop)
        flags[i] |= int(quality.FEW_SATELLITES) * (fin(sats) and sats < p.min_satellites)
        flags[i] |= int(quality.POOR_FIX_TYPE) * (fin(ftype) and ftype < p.min_fix_type)

    def groups(joined: Any) -> list[list[int]]:
        out: list[list[int]] = []
        for i in range(len(rows)):
            if out and joined(rows[out[-1][-1]][0], rows[i][0]):
                out[-1].append(i)
            else:
                out.append([i])
        return out

    for g in groups(lambda a, b: a == b):
        for i in set(g) - {min(g, key=rank)}:
            flags[i] |= int(quality.DUPLICATE)
    tol = int(p.near_duplicate_s * 1000)
    if tol > 0:
        for g in groups(lambda a, b: b - a < tol):
            for i in set(g) - {min(g, key=rank)}:
                flags[i] |= int(quality.NEAR_DUPLICATE) * (not flags[i] & quality.DUPLICATE)
    return flags


def _outliers_by_loop(
    t: list[int], lon: list[float], lat: list[float], max_mps: float
) -> list[bool]:
    """`speed_outliers`' documented rule over one track's candidates, fix by fix."""
    n = len(t)
    fast = []
    for k in range(n - 1):
        (d, _, _), dt = inverse([lon[k]], [lat[k]], [lon[k + 1]], [lat[k + 1]]), t[k + 1] - t[k]
        fast.append(bool(d[0] > max_mps * max(dt / 1000.0, 1e-3)))
    bad = [k > 0 and k < n - 1 and fast[k - 1] and fast[k] for k in range(n)]
    if n >= 2:
        bad[-1] = fast[-1]
    if n >= 3:
        bad[0] = fast[0] and not fast[1]
    return bad


_QUALITY_ROW = st.tuples(
    st.integers(0, 40),  # time step from the previous fix, in 10 s units (0: same instant)
    st.sampled_from([77.0, 77.001, 77.2, 0.0, math.nan]),
    st.sampled_from([43.0, 43.001, 43.5, 0.0]),
    st.sampled_from([0.8, 2.5, 12.0, math.nan]),
    st.sampled_from([2.0, 4.0, 8.0, math.nan]),
    st.sampled_from([1.0, 2.0, 3.0, math.nan]),
)


@settings(max_examples=300, deadline=None)
@given(
    tracks=st.lists(
        st.tuples(st.integers(0, 2), st.lists(_QUALITY_ROW, max_size=9)), min_size=1, max_size=5
    ),
    start=st.integers(0, 1_000_000) | st.just(T0),
)
def test_many_tracks_flagged_together_as_each_alone(
    tracks: list[tuple[int, list[tuple[Any, ...]]]], start: int
) -> None:
    """`static_flags_many` and `speed_outliers_many` judge each track as the rules say for
    it alone, with its own profile: no duplicate, chain or speed pair spans two tracks,
    though the tracks overlap in time (each starts at `start`)."""
    profiles = [_PROFILES[k] for k, _ in tracks]
    per = []
    for _, steps in tracks:
        t = (start + np.cumsum([10_000 * k for k, *_ in steps], dtype=np.int64)).tolist()
        per.append([(ti, *row[1:]) for ti, row in zip(t, steps, strict=True)])
    rows = [r for track in per for r in track]
    cols = [np.asarray([r[j] for r in rows], np.int64 if j == 0 else np.float64) for j in range(6)]
    bounds = np.cumsum([0] + [len(track) for track in per])
    got = quality.static_flags_many(*cols, bounds, profiles).tolist()
    want = [f for track, p in zip(per, profiles, strict=True) for f in _static_by_loop(track, p)]
    assert got == want
    candidate = np.asarray(got) == 0
    out = quality.speed_outliers_many(
        cols[0], cols[1], cols[2], candidate, bounds, [p.max_speed_mps for p in profiles]
    )
    for k, p in enumerate(profiles):
        idx = bounds[k] + np.flatnonzero(candidate[bounds[k] : bounds[k + 1]])
        bad = _outliers_by_loop(
            cols[0][idx].tolist(), cols[1][idx].tolist(), cols[2][idx].tolist(), p.max_speed_mps
        )
        assert out[bounds[k] : bounds[k + 1]].tolist() == [
            i in set(idx[bad].tolist()) for i in range(bounds[k], bounds[k + 1])
        ]


# ----------------------------------------------------------------------------- countries


def _code(lon: float, lat: float, layer: CountryLayer = COUNTRIES) -> str | int:
    k = int(layer.locate(_a(lon), _a(lat))[0])
    return layer.codes[k] if k >= 0 else -1


def test_locate_known_points() -> None:
    assert _code(76.95, 43.24) == "KAZ"  # Almaty
    assert _code(74.59, 42.87) == "KGZ"  # Bishkek
    assert _code(58.38, 37.95) == "TKM"  # Ashgabat
    assert _code(50.5, 42.0) == -1  # Caspian Sea
    assert COUNTRIES.locate(_a(math.nan), _a(43.0)).tolist() == [-1]


def test_crossing_kaz_to_kgz_is_on_the_border() -> None:
    x = COUNTRIES.crossings(_a(77.0), _a(43.0), _a(77.0), _a(42.9))
    assert len(x) == 1
    assert (COUNTRIES.codes[x.from_idx[0]], COUNTRIES.codes[x.to_idx[0]]) == ("KAZ", "KGZ")
    assert (x.order[0], x.count[0]) == (0, 1)
    assert 0.0 < x.frac[0] < 1.0
    kaz = COUNTRIES.polygons[COUNTRIES.codes.index("KAZ")]
    kgz = COUNTRIES.polygons[COUNTRIES.codes.index("KGZ")]
    p = shapely.Point(x.lon[0], x.lat[0])
    assert kaz.boundary.distance(p) < 1e-6 and kgz.boundary.distance(p) < 1e-6
    # On the step (a meridian), at the fraction of its length.
    assert x.lon[0] == pytest.approx(77.0, abs=1e-9)
    d, _, _ = inverse(_a(77.0), _a(43.0), _a(77.0), _a(x.lat[0]))
    total, _, _ = inverse(_a(77.0), _a(43.0), _a(77.0), _a(42.9))
    assert d[0] / total[0] == pytest.approx(x.frac[0], abs=1e-6)
    # Just before it is Kazakhstan, just after Kyrgyzstan.
    assert _code(77.0, x.lat[0] + 1e-4) == "KAZ" and _code(77.0, x.lat[0] - 1e-4) == "KGZ"


def test_crossing_through_a_third_country_in_order() -> None:
    assert _code(64.0, 41.0) == "UZB" and _code(59.6, 36.3) == "IRN"
    x = COUNTRIES.crossings(_a(64.0), _a(41.0), _a(59.6), _a(36.3))
    pairs = [
        (COUNTRIES.codes[a], COUNTRIES.codes[b]) for a, b in zip(x.from_idx, x.to_idx, strict=True)
    ]
    assert pairs == [("UZB", "TKM"), ("TKM", "IRN")]
    assert x.order.tolist() == [0, 1] and x.count.tolist() == [2, 2]
    assert 0.0 < x.frac[0] < x.frac[1] < 1.0


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-180, 180),
    st.floats(-85, 85),
    st.floats(-10, 10),
    st.floats(-10, 10),
)
def test_bow_bound_holds_for_densified_geodesics(
    lon0: float, lat0: float, dlon: float, dlat: float
) -> None:
    # CountryLayer.crossings densifies only steps whose straight lon/lat segment is
    # within bow_deg of a border piece: every densified point must be that close to it.
    lat1 = min(max(lat0 + dlat, -85.0), 85.0)
    lon1 = lon0 + dlon  # unwrapped: the straight segment the screen builds
    assume(abs(dlon) + abs(lat1 - lat0) > 1e-9)  # GEOS has no distance to a 0-length line
    x, y, _ = densify(_a(lon0), _a(lat0), _a(((lon1 + 180) % 360) - 180), _a(lat1), 5000.0)
    x = lon0 + ((x - lon0 + 180) % 360 - 180)  # the same unwrapped longitudes
    seg = shapely.LineString([(lon0, lat0), (lon1, lat1)])
    far = shapely.distance(seg, shapely.points(x, y)).max()
    assert far <= bow_deg(_a(lon0), _a(lat0), _a(lon1), _a(lat1))[0]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.01, 0.1, 1.0, 8.0]))
def test_crossings_screened_by_distance_are_all_crossings(seed: int, spread_deg: float) -> None:
    # Steps around Kazakhstan's borders, short and long: screening out the steps far
    # from any border piece changes nothing.
    rng = np.random.default_rng(seed)
    n = 300
    x0, y0 = rng.uniform(50, 90, n), rng.uniform(35, 55, n)
    x1, y1 = x0 + rng.normal(0, spread_deg, n), y0 + rng.normal(0, spread_deg, n)
    got = COUNTRIES.crossings(x0, y0, x1, y1)
    want = COUNTRIES._crossings(x0, y0, x1, y1)
    # (Steps of ~0.1° can all miss the borders: seed 1_750_003_846 drew no crossing.)
    assert len(want) > 0 or spread_deg <= 0.1
    for name in ("step", "order", "count", "from_idx", "to_idx"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    # (Fractions along the step sum over the batch's densified vertices: the same to
    # rounding, whichever other steps are in it. Seed 412 found 4.2e-9 of a ~1,000 km
    # step, 4 mm: allowed up to 1e-8.)
    np.testing.assert_allclose(got.frac, want.frac, rtol=0, atol=1e-8)
    for name in ("lon", "lat"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=1e-9)


def _toy_layer() -> CountryLayer:
    """A with a notch in its south edge, B filling the notch and south of it, C east of A."""
    a = shapely.box(0, 0, 10, 10).difference(shapely.box(4, 0, 6, 1))
    b = shapely.box(4, -5, 6, 1)
    c = shapely.box(10, 0, 12, 10)
    return CountryLayer(["AAA", "BBB", "CCC"], ["A", "B", "C"], np.array([a, b, c], object))


def test_out_and_back_excursion_within_a_step_is_reduced_away() -> None:
    """The geodesic only guesses the route between fixes: leaving A for B's salient and
    coming back to A inside one step is no evidence of a crossing. A step that ends in B
    is; and A -> B -> A -> C within one step is reported as the one crossing A -> C."""
    toy = _toy_layer()
    assert _code(5.0, 0.5, toy) == "BBB"
    x = toy.crossings(_a(1.0, 1.0, 1.0), _a(0.5, 0.5, 0.5), _a(9.0, 5.0, 11.0), _a(0.5, -2.0, 0.5))
    pairs = [
        (int(s), toy.codes[a], toy.codes[b])
        for s, a, b in zip(x.step, x.from_idx, x.to_idx, strict=True)
    ]
    assert pairs == [(1, "AAA", "BBB"), (2, "AAA", "CCC")]
    assert x.lon[1] == pytest.approx(10.0, abs=1e-9)  # A -> C where it enters C


def _cuckoo(shared_data: Path) -> FixBatch:
    rows = []
    with open(shared_data / "tracks-cuckoos-mongolia-icarus.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["individual-local-identifier"] == "B89A08" and r["location-long"]:
                rows.append(
                    (parse_ms(r["timestamp"]), float(r["location-long"]), float(r["location-lat"]))
                )
    t, lon, lat = (np.asarray(c) for c in zip(*rows, strict=True))
    n = t.size
    return FixBatch(
        t.astype(np.int64),
        lon,
        lat,
        np.full(n, np.nan),
        np.full(n, np.nan),
        t.astype(np.int64),
        "B89A08",
    )


CUCKOO_ROUTE = [
    "Mongolia",
    "Russia",
    "Mongolia",
    "People's Republic of China",
    "Kazakhstan",
    "Kyrgyzstan",
    "Uzbekistan",
    "Turkmenistan",
    "Iran",
]


@pytest.mark.shared_data
@pytest.mark.parametrize("layer_file", [None, "ne-10m-admin0-central-asia-full.geojson"])
def test_cuckoo_b89a08_country_sequence(shared_data: Path, layer_file: str | None) -> None:
    layer = COUNTRIES if layer_file is None else load_countries(shared_data / layer_file)
    ctx = Context(
        layer,
        (),
        quality.Profile("cuckoo", 70.0, fix_interval_s=86400),
        config=TrackConfig(window_days=10000, home_range_every_days=None),
    )
    _, ev = advance(TrackState.new("B89A08"), _cuckoo(shared_data), ctx)
    alerts = sorted(
        (e for e in ev if e.get("kind") == "border-crossing"),
        key=lambda e: (e["details"]["step-start-timestamp"], e["details"]["order"]),
    )
    seq = [alerts[0]["details"]["from"]["name"]] + [a["details"]["to"]["name"] for a in alerts]
    for prev, nxt in itertools.pairwise(alerts):
        assert prev["details"]["to"]["code"] == nxt["details"]["from"]["code"]
    if layer_file is None:
        assert seq[: len(CUCKOO_ROUTE)] == CUCKOO_ROUTE  # then on to Africa
    else:
        assert seq == CUCKOO_ROUTE  # the 18 Central Asian units end in Iran
    by_day = {}
    for a in alerts:
        by_day.setdefault(a["details"]["step-start-timestamp"][:10], []).append(a["details"])
    (kgz_uzb,) = by_day["2021-10-02"]
    assert (kgz_uzb["from"]["code"], kgz_uzb["to"]["code"], kgz_uzb["path"]) == (
        "KGZ",
        "UZB",
        "geodesic",
    )
    oct3 = by_day["2021-10-03"]
    assert [(d["from"]["code"], d["to"]["code"], d["order"], d["count"]) for d in oct3] == [
        ("UZB", "TKM", 0, 2),
        ("TKM", "IRN", 1, 2),
    ]
    assert oct3[0]["crossing-timestamp"] < oct3[1]["crossing-timestamp"]
    # The collar was silent over western China: that crossing is a gap, not a geodesic.
    gaps = [a["details"] for a in alerts if a["details"]["path"] == "gap"]
    assert [(d["from"]["code"], d["to"]["code"]) for d in gaps] == [("CHN", "KAZ")]


def test_russian_country_names_are_readable() -> None:
    assert COUNTRIES.names_ru[COUNTRIES.codes.index("KAZ")] == "Казахстан"


# ----------------------------------------------------------------------------- zones


def _square_fence(hysteresis_m: float = 250.0) -> UrbanFence:
    city = shapely.box(76.90, 43.20, 76.96, 43.24)
    return UrbanFence("Square", "sq", city, (Zone("within 1 km", 1000.0, "warning"),), hysteresis_m)


def _east_of_square(d_m: list[float]) -> tuple[np.ndarray, np.ndarray]:
    n = len(d_m)
    return forward(np.full(n, 76.96), np.full(n, 43.22), np.full(n, 90.0), _a(*d_m))


def _urban_alerts(fence: UrbanFence, lon: np.ndarray, lat: np.ndarray) -> list[dict[str, Any]]:
    ctx = Context(None, (fence,), PROFILE, config=TrackConfig(home_range_every_days=None))
    t = T0 + np.arange(lon.size, dtype=np.int64) * H4_MS
    n = lon.size
    _, ev = advance(
        TrackState.new("a", 1), FixBatch(t, lon, lat, np.ones(n), np.full(n, 8.0), t), ctx
    )
    return [e for e in ev if e.get("kind") == "urban-edge"]


def test_jitter_at_the_zone_edge_raises_one_alert() -> None:
    fence = _square_fence()
    jitter = [1000.0 + (50.0 if i % 2 else -50.0) for i in range(30)]
    lon, lat = _east_of_square([3000.0, 2000.0, 1200.0, *jitter])
    alerts = _urban_alerts(fence, lon, lat)
    assert [(a["details"]["transition"], a["details"]["level"]) for a in alerts] == [("enter", 1)]
    # Out clearly past edge + hysteresis (1250 m) and back in: a second entry.
    lon, lat = _east_of_square([3000.0, *jitter, 1400.0, 1600.0, *jitter])
    alerts = _urban_alerts(fence, lon, lat)
    assert [a["details"]["transition"] for a in alerts] == ["enter", "exit", "enter"]
    # Without hysteresis the same jitter would flood.
    lon, lat = _east_of_square([3000.0, *jitter])
    assert len(_urban_alerts(_square_fence(0.0), lon, lat)) == len(jitter)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5)) | st.just((math.nan, 0.0)),
        min_size=1,
        max_size=40,
    )
)
def test_urban_levels_skip_only_fixes_outside_every_zone(
    offsets: list[tuple[float, float]],
) -> None:
    # raw_levels projects only the fixes in a lon/lat box around the widest zone; the
    # levels are those of projecting every fix (fixes from the city's centre out to
    # ~50 km, through every zone edge).
    fence = ALMATY[0]
    c = fence.geometry.centroid
    lon = np.array([c.x + dx for dx, _ in offsets])
    lat = np.array([c.y + dy for _, dy in offsets])
    x, y = fence._to_xy.transform(lon, lat)
    enter, stay = fence.raw_levels(lon, lat)
    for k, (e, s) in enumerate(zip(fence._enter, fence._stay, strict=True)):
        assert np.array_equal(enter >= k + 1, shapely.contains_xy(e, x, y))
        assert np.array_equal(stay >= k + 1, shapely.contains_xy(s, x, y))


@st.composite
def latch_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int]:
    k = draw(st.integers(1, 4))
    n = draw(st.integers(0, 40))
    enter = draw(st.lists(st.integers(0, k), min_size=n, max_size=n))
    # The stay zone of a level contains its enter zone: stay >= enter.
    stay = [draw(st.integers(e, k)) for e in enter]
    return np.asarray(enter, np.int8), np.asarray(stay, np.int8), draw(st.integers(0, k)), k


@given(latch_inputs())
@settings(max_examples=500, deadline=None)
def test_latch_levels_equals_the_loop(args: tuple[np.ndarray, np.ndarray, int, int]) -> None:
    enter, stay, prior, k = args
    expected, level = [], prior
    for e, s in zip(enter.tolist(), stay.tolist(), strict=True):
        level = max(e, min(level, s))
        expected.append(level)
    assert latch_levels(enter, stay, prior, k).tolist() == expected


@pytest.mark.shared_data
def test_real_almaty_boundary_as_urban_fence(shared_data: Path, tmp_path: Path) -> None:
    osm = json.loads((shared_data / "almaty-city-osm.geojson").read_text(encoding="utf-8"))
    fence_doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": osm["features"][0]["geometry"],
                "properties": {
                    "kind": "urban-edge",
                    "id": "almaty-osm",
                    "name": "Almaty (OSM)",
                    "zones": [
                        {"name": "within 5 km", "distance_m": 5000, "severity": "info"},
                        {"name": "within 1 km", "distance_m": 1000, "severity": "warning"},
                        {"name": "inside", "distance_m": 0, "severity": "critical"},
                    ],
                },
            }
        ],
    }
    path = tmp_path / "almaty.geojson"
    path.write_text(json.dumps(fence_doc), encoding="utf-8")
    (fence,) = load_fence_file(path)
    city = shapely.geometry.shape(osm["features"][0]["geometry"])
    # From the mountains south-east of the city towards its centre, 500 m a fix.
    start, centre = (77.2, 43.0), (76.92, 43.25)
    dist, az, _ = inverse(_a(start[0]), _a(start[1]), _a(centre[0]), _a(centre[1]))
    steps = np.arange(0.0, dist[0], 500.0)
    lon, lat = forward(
        np.full(steps.size, start[0]),
        np.full(steps.size, start[1]),
        np.full(steps.size, az[0]),
        steps,
    )
    assert not city.contains(shapely.Point(lon[0], lat[0]))
    assert city.contains(shapely.Point(lon[-1], lat[-1]))
    alerts = _urban_alerts(fence, lon, lat)
    got = [(a["details"]["zone"], a["severity"], a["details"]["level"]) for a in alerts]
    assert got == [
        ("within 5 km", "info", 1),
        ("within 1 km", "warning", 2),
        ("inside", "critical", 3),
    ]
    # The "inside" alert is raised at the first fix inside the OSM polygon.
    inside = [city.contains(shapely.Point(x, y)) for x, y in zip(lon, lat, strict=True)]
    assert alerts[2]["location-lat"] == pytest.approx(lat[inside.index(True)], abs=1e-7)


# ----------------------------------------------------------------------------- the reducer

# Home ranges at daily boundaries over 2-day windows, so random tracks of a few days
# make them too (and their corrections when a late fix lands before a boundary).
ORDER_CTX = Context(
    COUNTRIES,
    ALMATY,
    PROFILE,
    config=TrackConfig(
        window_days=10000,
        home_range_every_days=1.0,
        home_range_windows_days=(2.0,),
        home_range_min_fixes=5,
    ),
)


@st.composite
def messy_tracks(draw: st.DrawFn) -> list[tuple[int, float, float, float, float, float]]:
    """Fixes near 77E 43N (Almaty fence, KAZ/KGZ border): 4-hourly with jitter, a
    random walk, with duplicates, near duplicates, failed fixes, outliers, poor HDOP,
    few satellites and 2-D fixes (time, lon, lat, hdop, sats, fix type)."""
    n = draw(st.integers(5, 40))
    fixes = []
    t, lon, lat = T0, draw(st.floats(76.85, 77.1)), draw(st.floats(42.9, 43.15))
    for _ in range(n):
        t += H4_MS + draw(st.integers(-30, 30)) * 60_000
        if draw(st.integers(0, 9)) == 0:
            t += 3 * H4_MS  # a gap: a new burst
        lon += draw(st.floats(-0.03, 0.03))
        lat += draw(st.floats(-0.03, 0.03))
        hdop = draw(st.sampled_from([0.9, 1.5, 3.0, 12.0]))
        sats = draw(st.sampled_from([2.0, 5.0, 9.0, math.nan]))
        ftype = draw(st.sampled_from([3.0, 3.0, 2.0, 1.0, math.nan]))
        kind = draw(st.sampled_from(["ok"] * 6 + ["missing", "outlier", "dup", "near"]))
        if kind == "missing":
            fixes.append((t, math.nan, math.nan, hdop, sats, ftype))
        elif kind == "outlier":
            fixes.append((t, lon + 1.5, lat - 1.0, hdop, sats, ftype))
        else:
            fixes.append((t, round(lon, 6), round(lat, 6), hdop, sats, ftype))
            if kind == "dup":  # same instant, another position and HDOP
                fixes.append(
                    (
                        t,
                        round(lon + 0.001, 6),
                        round(lat, 6),
                        draw(st.sampled_from([0.8, 2.0])),
                        7.0,
                        3.0,
                    )
                )
            if kind == "near":  # the same fix re-stamped seconds later
                fixes.append(
                    (
                        t + draw(st.integers(1, 59)) * 1000,
                        round(lon + 0.0002, 6),
                        round(lat, 6),
                        draw(st.sampled_from([0.8, 2.0])),
                        7.0,
                        ftype,
                    )
                )
    return fixes


def _batch(fixes: list[tuple[float, ...]]) -> FixBatch:
    if not fixes:
        return FixBatch.empty()
    cols = [np.asarray(c) for c in zip(*fixes, strict=True)]
    t = cols[0].astype(np.int64)
    ftype = cols[5].astype(float) if len(cols) > 5 else None
    return FixBatch(
        t,
        cols[1].astype(float),
        cols[2].astype(float),
        cols[3].astype(float),
        cols[4].astype(float),
        t + 120_000,
        "collar-7",
        ftype,
    )


def _replay(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a consumer holds after applying events in order."""
    live: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["type"] == "step" and e["status"] == "withdrawn":
            assert e["id"] in live, "withdraws a step never sent"
            del live[e["id"]]
        elif e["type"] == "alert" and e["kind"] == "withdrawal":
            assert e["withdraws"] in live, "withdraws an alert never sent"
            del live[e["withdraws"]]
        elif e["type"] == "home-range-due":  # its inputs decide the home range
            live[e["id"]] = {**e, "lon": e["lon"].tolist(), "lat": e["lat"].tolist()}
        else:
            live[e["id"]] = e
    return live


@given(track=messy_tracks(), data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_reducer_is_independent_of_arrival_order(
    track: list[tuple[float, ...]], data: st.DataObject
) -> None:
    whole_state, whole = advance(TrackState.new("leo", len(ALMATY)), _batch(track), ORDER_CTX)
    expected = _replay(whole)
    assert expected.keys() == {e["id"] for e in whole}  # one pass emits no corrections
    # Arrival: shuffled, some fixes sent again, cut into uploads.
    arrival = data.draw(st.permutations(track))
    repeats = data.draw(st.lists(st.sampled_from(track), max_size=5))
    arrival = list(arrival) + repeats
    arrival = data.draw(st.permutations(arrival))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(arrival)), max_size=6)))
    bounds = [0, *cuts, len(arrival)]
    state, emitted = TrackState.new("leo", len(ALMATY)), []
    for a, b in itertools.pairwise(bounds):
        state, ev = advance(state, _batch(arrival[a:b]), ORDER_CTX)
        emitted += ev
    kinds = {e.get("kind", e.get("status")) for e in emitted}
    kinds |= {e["type"] for e in emitted}
    for k in sorted(
        k
        for k in kinds
        if k in ("withdrawn", "withdrawal", "border-crossing", "urban-edge", "home-range-due")
    ):
        event(f"emitted {k}")  # --hypothesis-show-statistics: how often each case arises
    assert _replay(emitted) == expected
    # What was emitted, by id, content digest and anchor time.
    assert state.emitted == whole_state.emitted
    for name in ("t_ms", "flags", "received_ms"):
        np.testing.assert_array_equal(getattr(state, name), getattr(whole_state, name), name)
    # Per-fix carry (zone level, burst, arrival azimuth) is read only at good fixes; a fix
    # flagged after it was once good keeps a stale, unread value.
    good = whole_state.flags == 0
    for name in ("zone", "burst_ms"):
        np.testing.assert_array_equal(
            getattr(state, name)[good], getattr(whole_state, name)[good], name
        )
    np.testing.assert_allclose(state.arrival_deg[good], whole_state.arrival_deg[good], atol=1e-9)


# Every detector on: border approach (KAZ/KGZ lines), protected areas (Ile-Alatau lies
# beside Almaty, inside messy_tracks' box), excursions, immobility, silences.
FULL_CTX = Context(
    COUNTRIES,
    ALMATY,
    PROFILE,
    config=ORDER_CTX.config,
    borders=border_lines(COUNTRIES),
    areas=load_protected_areas(),
)


@given(tracks=st.lists(messy_tracks(), min_size=2, max_size=4), data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_advancing_animals_together_equals_one_by_one(
    tracks: list[list[tuple[float, ...]]], data: st.DataObject
) -> None:
    """advance_many finds the context's facts for all animals in one pass: each animal's
    states and events must be exactly those of advancing it alone, batch by batch
    (including batches that bring nothing new and animals with nothing in a round)."""
    names = [f"leo-{k}" for k in range(len(tracks))]
    rounds = data.draw(st.integers(1, 4))
    plan = []  # per round, per animal: its fixes in that round (maybe none, maybe repeats)
    for track in tracks:
        arrival = data.draw(st.permutations(track)) + data.draw(
            st.lists(st.sampled_from(track), max_size=3)
        )
        cuts = sorted(
            data.draw(
                st.lists(st.integers(0, len(arrival)), min_size=rounds - 1, max_size=rounds - 1)
            )
        )
        bounds = [0, *cuts, len(arrival)]
        plan.append([arrival[a:b] for a, b in itertools.pairwise(bounds)])
    alone = {n: TrackState.new(n, len(ALMATY)) for n in names}
    together = dict(alone)
    for r in range(rounds):
        items = [(n, _batch(plan[k][r])) for k, n in enumerate(names) if plan[k][r]]
        results = advance_many([(together[n], b) for n, b in items], FULL_CTX)
        for (n, batch), (state, events) in zip(items, results, strict=True):
            alone[n], expected = advance(alone[n], batch, FULL_CTX)
            # (home-range-due items hold arrays: compared through their JSON)
            assert _json(events) == _json(expected)
            together[n] = state
            for kind in {e["kind"] for e in events if e["type"] == "alert"}:
                event(f"emitted {kind}")
    for n in names:
        a, t = alone[n], together[n]
        assert a.emitted == t.emitted
        for name in ("t_ms", "flags", "zone", "burst_ms", "det"):
            np.testing.assert_array_equal(getattr(a, name), getattr(t, name), name)
        np.testing.assert_array_equal(a.arrival_deg, t.arrival_deg)


@given(tracks=st.lists(messy_tracks(), min_size=1, max_size=3), data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gap_screen_never_hides_a_silence(
    tracks: list[list[tuple[float, ...]]], data: st.DataObject
) -> None:
    """The reducer asks `_silence_events` only about animals whose recomputed fixes hold
    a gap (`_gap_screen`, all animals of a call in one pass). Fixes uploaded late (so
    the live timer would have fired, and the track withdraws it) and gaps, several
    animals, in random batches: the events must be those of asking about every animal."""
    late = st.sampled_from([120_000, 13 * 3_600_000, 30 * 3_600_000])
    rounds = data.draw(st.integers(1, 3))
    per_round: list[list[FixBatch]] = [[] for _ in range(rounds)]
    for track in tracks:
        delay = data.draw(st.lists(late, min_size=len(track), max_size=len(track)))
        cuts = sorted(
            data.draw(
                st.lists(st.integers(0, len(track)), min_size=rounds - 1, max_size=rounds - 1)
            )
        )
        for r, (a, b) in enumerate(itertools.pairwise([0, *cuts, len(track)])):
            batch = _batch(track[a:b])
            received = batch.t_ms + np.asarray(delay[a:b], np.int64)
            per_round[r].append(dataclass_replace(batch, received_ms=received))
    names = [f"leo-{k}" for k in range(len(tracks))]
    screened = {n: TrackState.new(n, len(ALMATY)) for n in names}
    asked = dict(screened)
    every = mock.patch.object(track_mod, "_gap_screen", lambda plans, ctx: [True] * len(plans))
    for batches in per_round:
        got = advance_many(
            [(screened[n], b) for n, b in zip(names, batches, strict=True)], FULL_CTX
        )
        with every:
            want = advance_many(
                [(asked[n], b) for n, b in zip(names, batches, strict=True)], FULL_CTX
            )
        for n, (state, events), (state_all, events_all) in zip(names, got, want, strict=True):
            assert _json(events) == _json(events_all)
            screened[n], asked[n] = state, state_all
            for e in events:
                event(f"emitted {e.get('kind', e['type'])}")


@given(
    tracks=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from([2, 4, 4, 4, 6, 13, 20]),
                st.sampled_from([0, 0, 1, 2, 3, 14, 16, 18, 30]),
            ),
            min_size=2,
            max_size=40,
        ),
        min_size=1,
        max_size=4,
    ),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_gap_screen_is_exactly_the_silence_conditions(
    tracks: list[list[tuple[int, int]]], data: st.DataObject
) -> None:
    """The screen passes a plan exactly when `_silence_events` has something to say of
    it: a gap longer than the limit (periods x interval, here 12 h), or a timer silence
    the track withdraws, which needs every later fix received after the limit plus the
    usual delivery delay (max over the 12 fixes up to it). Gaps and delivery lags in
    hours, drawn across both thresholds; each track half known, half new."""
    ctx = dataclass_replace(FULL_CTX, countries=None, urban=(), borders=None, areas=None)
    plans = []
    for k, track in enumerate(tracks):
        t = T0 + np.cumsum([gap * 3_600_000 for gap, _ in track]).astype(np.int64)
        received = t + np.asarray([lag * 3_600_000 for _, lag in track], np.int64)
        lon, lat = 77.0 + np.arange(t.size) * 1e-3, np.full(t.size, 43.0)
        batch = FixBatch(t, lon, lat, np.ones(t.size), np.full(t.size, 9.0), received)
        cut = data.draw(st.integers(0, t.size - 1) | st.integers(t.size * 2 // 3, t.size - 1))
        state, _ = advance(TrackState.new(f"leo-{k}"), _rows(batch, 0, cut), ctx)
        (plan,) = track_mod._plans([(state, _rows(batch, cut, t.size))], ctx)
        assert plan is not None
        plans.append(plan)
    screened = track_mod._gap_screen(plans, ctx)
    for plan, passed in zip(plans, screened, strict=True):
        said = track_mod._silence_events(plan.state, plan.gi, plan.prior, 4 * 3600, ctx.detectors)
        event(f"passed {passed}")
        assert passed == bool(said)


def _rows(b: FixBatch, lo: int, hi: int) -> FixBatch:
    return FixBatch(
        b.t_ms[lo:hi],
        b.lon[lo:hi],
        b.lat[lo:hi],
        b.hdop[lo:hi],
        b.sats[lo:hi],
        b.received_ms[lo:hi],
    )


_EVICTING_CTX = dataclass_replace(
    FULL_CTX, config=dataclass_replace(FULL_CTX.config, window_days=1.5, max_fixes=8)
)


def _diff_by_scanning(
    s: TrackState, events: list[dict[str, Any]], anchor_from: int
) -> tuple[TrackState, list[dict[str, Any]]]:
    """What `_diff` must do, by definition: every id anchored at or after anchor_from
    and not derived again is withdrawn, found by scanning all of them."""
    emitted = dict(s.emitted)
    out, current = [], set()
    for ev in events:
        anchor = ev.pop("_anchor")
        digest = track_mod._digest(ev)
        current.add(ev["id"])
        if emitted.get(ev["id"], (0, ""))[1] != digest:
            out.append(ev)
        emitted[ev["id"]] = (anchor, digest)
    for eid in [e for e, v in s.emitted.items() if v[0] >= anchor_from and e not in current]:
        del emitted[eid]
        out.append(track_mod._withdrawal(s, eid))
    return dataclass_replace(s, emitted=emitted), out


@given(track=messy_tracks(), data=st.data())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_emitted_ids_stay_in_anchor_order_and_diff_reads_only_its_tail(
    track: list[tuple[float, ...]], data: st.DataObject
) -> None:
    """`_diff` reads back from the end of `emitted` only as far as a recomputation can
    reach, which needs the ids in anchor order. Late and repeated fixes in random
    batches (corrections, withdrawals): after every batch the ids are in anchor order,
    and the events and ids are those of scanning every id."""
    arrival = data.draw(st.permutations(track)) + data.draw(
        st.lists(st.sampled_from(track), max_size=3)
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(arrival)), max_size=4)))
    # With a short window, eviction drops ids from the front of `emitted` as well.
    ctx = data.draw(st.sampled_from([FULL_CTX, _EVICTING_CTX]))
    scanning = (
        mock.patch.object(track_mod, "_diff", _diff_by_scanning),
        mock.patch.object(
            track_mod, "_drop_before", lambda e, t: {k: v for k, v in e.items() if v[0] >= t}
        ),
    )
    tail = scan = TrackState.new("leo", len(ALMATY))
    for a, b in itertools.pairwise([0, *cuts, len(arrival)]):
        batch = _batch(arrival[a:b])
        tail, got = advance(tail, batch, ctx)
        with scanning[0], scanning[1]:
            scan, want = advance(scan, batch, ctx)
        anchors = [v[0] for v in tail.emitted.values()]
        assert anchors == sorted(anchors)
        assert tail.emitted == scan.emitted
        key = lambda e: e["id"]  # noqa: E731 (withdrawals may come in another order)
        assert _json(sorted(got, key=key)) == _json(sorted(want, key=key))
        for e in got:
            event(f"emitted {e.get('kind', e['type'])}")
    if ctx is _EVICTING_CTX and len(tail) < len({f[0] for f in track}):
        event("evicted")


def _json(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(events, option=orjson.OPT_SERIALIZE_NUMPY)


def test_emitted_anchors_are_independent_of_arrival_order() -> None:
    p = (T0, 77.3, 43.0, 1.0, 8.0)  # ~14 km from the Almaty fence: level 0
    q = (T0 + 86_400_000, 77.078125, 43.0625, 1.0, 8.0)  # within 5 km: enter, level 1
    whole, ev = advance(TrackState.new("leo", len(ALMATY)), _batch([p, q]), ORDER_CTX)
    assert [e["details"]["level"] for e in ev if e.get("kind") == "urban-edge"] == [1]
    late, _ = advance(TrackState.new("leo", len(ALMATY)), _batch([q]), ORDER_CTX)
    late, _ = advance(late, _batch([p]), ORDER_CTX)
    assert late.emitted == whole.emitted


def test_silence_in_the_track_equals_what_the_live_timer_raises() -> None:
    t = T0 + np.array([0, 4, 8, 32, 36], dtype=np.int64) * 3_600_000  # 24 h without a fix
    n = t.size
    lon, lat = np.linspace(77.3, 77.31, n), np.full(n, 43.0)
    ctx = Context(None, (), PROFILE, config=TrackConfig(home_range_every_days=None))
    received = t + 60_000
    _, ev = advance(
        TrackState.new("a"), FixBatch(t, lon, lat, np.ones(n), np.full(n, 8.0), received, "c"), ctx
    )
    silent = [e for e in ev if e.get("kind") == "silent-collar"]
    assert [e["details"]["transition"] for e in silent] == ["start", "end"]
    start, end = silent
    assert start["fix-timestamp"] == iso(int(t[2])) and end["fix-timestamp"] == iso(int(t[3]))
    assert end["details"]["silent_s"] == 24 * 3600.0
    # The live timer builds the start from the last fix alone: same id, same content.
    live = silent_collar_alert(
        "a",
        "c",
        int(t[2]),
        float(lon[2]),
        float(lat[2]),
        int(t[2]),
        int(received[2]),
        4 * 3600.0,
        3.0,
        "start",
    )
    live.pop("_anchor")
    assert live == start
    # Exactly three intervals is not yet a silence (strict, as the timer's test).
    t2 = T0 + np.array([0, 12], dtype=np.int64) * 3_600_000
    _, ev2 = advance(
        TrackState.new("b"), FixBatch(t2, lon[:2], lat[:2], np.ones(2), np.full(2, 8.0), t2), ctx
    )
    assert not [e for e in ev2 if e.get("kind") == "silent-collar"]


def _late_upload(
    received_late_ms: int, last_hour: int = 24
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], bool]:
    """A 4-hourly collar (limit 12 h) delivers fixes at 0, 4 and 8 h within a minute;
    the fixes at 12..`last_hour` h come in one upload at `received_late_ms`. Returns the events
    of the first upload, of the late one, of the whole track in one batch (a replay),
    and whether the live timer (stream.watch's rule) had called the collar silent just
    before the upload."""
    hours = np.arange(0, last_hour + 1, 4, dtype=np.int64)
    t = T0 + hours * 3_600_000
    lon, lat = np.linspace(77.3, 77.31, t.size), np.full(t.size, 43.0)
    received = np.where(hours <= 8, t + 60_000, received_late_ms)
    ctx = Context(None, (), PROFILE, config=TrackConfig(home_range_every_days=None))

    def batch(sel: np.ndarray) -> FixBatch:
        n = int(sel.sum())
        return FixBatch(t[sel], lon[sel], lat[sel], np.ones(n), np.full(n, 8.0), received[sel], "c")

    state, first = advance(TrackState.new("a"), batch(hours <= 8), ctx)
    delay = silence.usual_delay_ms(state.t_ms, state.received_ms)
    silent, _ = silence.silent_collars(
        np.array([t[2]]), np.array([4 * 3600.0]), received_late_ms - 1, 3.0, delay
    )
    _, late = advance(state, batch(hours > 8), ctx)
    _, whole = advance(TrackState.new("a"), batch(hours >= 0), ctx)
    return first, late, whole, bool(silent[0])


def test_a_late_upload_withdraws_the_silence_the_timer_raised() -> None:
    # The upload comes 30 h after the 8 h fix: the timer fired at 8 + 12 h (+1 min
    # delay). Its fixes fill the gap, so there was no silence: the reducer withdraws the
    # timer's alert, by the id the timer gave it; a replay of the track does too.
    first, late, whole, fired = _late_upload(T0 + 38 * 3_600_000)
    assert fired and not [e for e in first if e.get("kind") == "silent-collar"]
    t8 = T0 + 8 * 3_600_000
    lon8 = float(np.linspace(77.3, 77.31, 7)[2])
    timer = silent_collar_alert("a", "c", t8, lon8, 43.0, t8, t8 + 60_000, 4 * 3600.0, 3.0, "start")
    timer.pop("_anchor")
    for events in (late, whole):
        gone = [e for e in events if e.get("kind") == "withdrawal"]
        assert [e["withdraws"] for e in gone] == [timer["id"]]
        assert "not silent" in gone[0]["reason"]
        # The timer's alert itself comes first, exactly as the timer built it, so that a
        # replay holds what live receivers saw: the alert, then its withdrawal.
        raised = [e for e in events if e.get("kind") == "silent-collar"]
        assert raised == [timer] and events.index(raised[0]) < events.index(gone[0])
    assert _replay(whole).keys().isdisjoint({timer["id"]})


def test_an_upload_before_the_timer_fires_withdraws_nothing() -> None:
    # The 12 and 16 h fixes arrive at 19 h, before 8 h + limit (12 h) + delay: the timer
    # was quiet, and nothing is withdrawn.
    _, late, whole, fired = _late_upload(T0 + 19 * 3_600_000, last_hour=16)
    assert not fired
    for events in (late, whole):
        assert not [e for e in events if e.get("kind") in ("withdrawal", "silent-collar")]
