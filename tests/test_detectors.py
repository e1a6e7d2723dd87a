"""Detectors: border approach, protected areas, home-range excursions, immobility, silent
collars and proximity. Synthetic edge cases, the split-point property each suffix-
recomputable detector promises the reducer, and checks on the real tracks."""

from __future__ import annotations

import collections
import importlib.resources
import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS, Transformer

from collarstream.core import approach as approach_mod
from collarstream.core import excursion as excursion_mod
from collarstream.core.approach import (
    Approach,
    ApproachCarry,
    BorderLines,
    approach,
    border_distance,
)
from collarstream.core.areas import (
    ProtectedAreas,
    area_transitions,
    columns_membership,
    membership_runs,
)
from collarstream.core.areas import membership as area_membership
from collarstream.core.countries import CountryLayer
from collarstream.core.episodes import latch_runs
from collarstream.core.excursion import (
    Cache,
    ReferenceRange,
    edge_nodes,
    excursions,
    excursions_many,
    prune_cache,
    reference_range,
)
from collarstream.core.geodesy import forward, inverse
from collarstream.core.immobility import ImmobilityCarry, immobility, immobility_many
from collarstream.core.laea import Laea
from collarstream.core.proximity import close_pairs, close_to
from collarstream.core.silence import silences, silent_collars, usual_delay_ms
from collarstream.core.steps import compute_steps
from collarstream.core.suffix import Suffix
from collarstream.fences import load_countries
from collarstream.movebank import read_movebank_csv
from collarstream.timefmt import parse_ms

T0 = parse_ms("2025-05-01T00:00:00Z")
H_MS = 3_600_000
DAY_MS = 24 * H_MS
COUNTRIES = load_countries()
LINES = BorderLines.from_layer(COUNTRIES, ("KAZ", "KGZ", "UZB", "CHN", "TKM", "TJK"))
# Reference ranges on a grid in metres from (0, 0): test points go in as lon/lat.
_AT_ORIGIN = Laea(0.0, 0.0)


def _toy() -> tuple[CountryLayer, BorderLines]:
    """A west of B along lon 1 (land border); A's west edge at lon 0 is coast."""
    a, b = shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)
    layer = CountryLayer(["AAA", "BBB"], ["A", "B"], np.array([a, b], object))
    return layer, BorderLines.from_layer(layer)


TOY, TOY_LINES = _toy()


def _west_of_border(d_m: list[float], lat: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Points d_m metres west of the A|B border (negative: inside B)."""
    lon, la = forward(np.ones(len(d_m)), np.full(len(d_m), lat), 270.0, np.asarray(d_m))
    return lon, la


def _toy_approach(d_m: list[float], heading: list[float], **kw: float) -> Approach:
    lon, lat = _west_of_border(d_m)
    return approach(TOY_LINES, lon, lat, np.asarray(heading, float), TOY.locate(lon, lat), **kw)


# ------------------------------------------------------------------ border approach


def test_border_lines_are_land_borders_only() -> None:
    assert len(TOY_LINES) % 2 == 0  # each piece once per side; no coast
    codes = {
        (TOY.codes[a], TOY.codes[b])
        for a, b in zip(TOY_LINES.country, TOY_LINES.neighbour, strict=True)
    }
    assert codes == {("AAA", "BBB"), ("BBB", "AAA")}
    # Near A's coast (lon 0) and far from lon 1: no border within 50 km.
    lon, lat = np.array([0.01]), np.array([0.5])
    d = border_distance(TOY_LINES, lon, lat, TOY.locate(lon, lat), 50_000)
    assert np.isinf(d.dist_m[0]) and d.neighbour[0] == -1


def test_distance_azimuth_and_point_to_a_meridian_border() -> None:
    lon, lat = _west_of_border([4_000.0, 20_000.0])
    d = border_distance(TOY_LINES, lon, lat, TOY.locate(lon, lat), 50_000)
    # At the equator the nearest point of a meridian is due east, at the same latitude.
    np.testing.assert_allclose(d.dist_m, [4_000.0, 20_000.0], rtol=1e-5)
    np.testing.assert_allclose(d.azimuth_deg, 90.0, atol=0.01)
    np.testing.assert_allclose(d.lon, 1.0, atol=1e-7)
    back, _, _ = inverse(lon, lat, d.lon, d.lat)
    np.testing.assert_allclose(back, d.dist_m, rtol=1e-9)  # the reported point is that far
    assert [TOY.codes[k] for k in d.neighbour] == ["BBB", "BBB"]


def test_approach_enters_near_and_toward_and_leaves_beyond_hysteresis() -> None:
    r = _toy_approach([8000, 6000, 4500, 3000, 5800, 6500], [90, 90, 90, 90, 270, 270])
    assert r.start.tolist() == [2] and r.end.tolist() == [5]
    assert not r.end_crossed.any()
    # Turning away at 5.8 km keeps the episode: within 5 km + 1 km hysteresis.
    assert r.active.tolist() == [False, False, True, True, True, False]


def test_heading_away_from_the_border_is_no_approach() -> None:
    r = _toy_approach([4000, 3000, 2000, 4000], [270, 270, 180, np.nan])
    assert r.start.size == 0 and not r.active.any()
    # Sideways (along the border, 90 degrees off) is outside the 60-degree cone too.
    assert not r.toward.any()


def test_jitter_at_the_threshold_does_not_flap() -> None:
    d = [5100, 4950, 5050, 4980, 5400, 4900, 5600, 5200]
    r = _toy_approach(d, [90.0] * len(d))
    assert r.start.tolist() == [1] and r.end.size == 0


def test_crossing_ends_the_episode_and_never_starts_one() -> None:
    r = _toy_approach([3000, 1000, -500, -2000, 1500], [90, 90, 90, 270, 270])
    # In B, 2 km from A and heading back west: an approach to A (neighbour A), which the
    # crossing back into A ends.
    assert r.start.tolist() == [0, 3] and r.end.tolist() == [2, 4]
    assert r.end_crossed.tolist() == [True, True]
    assert TOY.codes[r.distance.neighbour[3]] == "AAA"


def test_carry_none_is_a_fresh_track() -> None:
    r = _toy_approach([3000], [90])
    assert r.start.tolist() == [0]


@st.composite
def toy_tracks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    n = draw(st.integers(2, 25))
    d = draw(st.lists(st.floats(-8000, 9000), min_size=n, max_size=n))
    h = draw(st.lists(st.one_of(st.just(np.nan), st.floats(0, 360)), min_size=n, max_size=n))
    lat = draw(st.lists(st.floats(0.2, 0.8), min_size=n, max_size=n))
    lon, la = forward(np.ones(n), np.asarray(lat), 270.0, np.asarray(d))
    return lon, la, np.asarray(h), draw(st.integers(1, n - 1))


@settings(max_examples=60, deadline=None)
@given(toy_tracks())
def test_approach_suffix_with_carry_equals_whole(
    track: tuple[np.ndarray, np.ndarray, np.ndarray, int],
) -> None:
    lon, lat, h, r = track
    c = TOY.locate(lon, lat)
    whole = approach(TOY_LINES, lon, lat, h, c)
    part = approach(
        TOY_LINES,
        lon[r:],
        lat[r:],
        h[r:],
        c[r:],
        ApproachCarry(bool(whole.active[r - 1]), int(c[r - 1])),
    )
    assert part.active.tolist() == whole.active[r:].tolist()
    assert (part.start + r).tolist() == whole.start[whole.start >= r].tolist()
    assert (part.end + r).tolist() == whole.end[whole.end >= r].tolist()


def _brute_distance(lon: float, lat: float, country: int) -> float:
    """Geodesic minimum to the country's border pieces densified to ~20 m in lon/lat."""
    mine = np.flatnonzero(LINES.country == country)
    box = shapely.box(lon - 1.5, lat - 1, lon + 1.5, lat + 1)
    near = mine[shapely.intersects(LINES.pieces[mine], box)]
    dense = shapely.segmentize(LINES.pieces[near], 0.0002)
    pts = shapely.get_coordinates(dense)
    d, _, _ = inverse(np.full(len(pts), lon), np.full(len(pts), lat), pts[:, 0], pts[:, 1])
    return float(d.min())


def test_distance_matches_brute_force_geodesic_near_kazakh_borders() -> None:
    rng = np.random.default_rng(7)
    # Points scattered around the KAZ-KGZ, KAZ-CHN and KAZ-UZB borders.
    lon = np.concatenate(
        [rng.uniform(74, 79, 40), rng.uniform(80, 82, 20), rng.uniform(66, 69, 20)]
    )
    lat = np.concatenate(
        [rng.uniform(42.4, 43.6, 40), rng.uniform(44, 46, 20), rng.uniform(40.5, 42.5, 20)]
    )
    c = COUNTRIES.locate(lon, lat)
    d = border_distance(LINES, lon, lat, c, 60_000)
    checked = 0
    for k in np.flatnonzero(np.isfinite(d.dist_m)):
        ref = _brute_distance(float(lon[k]), float(lat[k]), int(c[k]))
        assert d.dist_m[k] <= ref + 0.5  # never farther than a real border point
        assert d.dist_m[k] == pytest.approx(ref, rel=0.005, abs=1.0)
        checked += 1
    assert checked > 30


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-180, 180),
    st.floats(-85, 85),
    st.lists(st.tuples(st.floats(0, 360), st.floats(0, 50_000)), min_size=1, max_size=20),
)
def test_near_frame_is_within_its_bound_of_the_exact_frame(
    lon: float, lat: float, rays: list[tuple[float, float]]
) -> None:
    az, dist = (np.array(c) for c in zip(*rays, strict=True))
    plon, plat = forward(np.full(az.size, lon), np.full(az.size, lat), az, dist)
    pts = np.column_stack([plon, plat])
    x, y, err = approach_mod._near_frame(np.full(az.size, lon), np.full(az.size, lat), pts)
    ex, ey = approach_mod._frame(np.full(az.size, lon), np.full(az.size, lat), pts)
    assert np.all(np.hypot(x - ex, y - ey) <= err)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([2_000.0, 6_000.0, 60_000.0]))
def test_border_distance_screen_keeps_the_nearest_segment(seed: int, max_m: float) -> None:
    # Segments are screened on a local plane before the exact frame; with the screen's
    # bound made infinite every segment gets the exact frame. Both give the same rows.
    rng = np.random.default_rng(seed)
    lon = np.concatenate([rng.uniform(74, 79, 60), rng.uniform(66, 82, 60)])
    lat = np.concatenate([rng.uniform(42.4, 43.6, 60), rng.uniform(40, 47, 60)])
    c = COUNTRIES.locate(lon, lat)
    got = border_distance(LINES, lon, lat, c, max_m)
    near_frame = approach_mod._near_frame
    try:
        approach_mod._near_frame = lambda *a: (*near_frame(*a)[:2], np.full(len(a[2]), np.inf))
        want = border_distance(LINES, lon, lat, c, max_m)
    finally:
        approach_mod._near_frame = near_frame
    for name in ("dist_m", "neighbour", "azimuth_deg", "lon", "lat"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


# ------------------------------------------------------------------ protected areas


def _bundled_areas() -> tuple[ProtectedAreas, dict]:
    text = importlib.resources.files("collarstream") / "data" / "protected-areas-approx.geojson"
    fc = json.loads(text.read_text(encoding="utf-8"))
    return ProtectedAreas.from_geojson(fc), fc


def test_bundled_protected_areas_are_labelled_approximate() -> None:
    areas, fc = _bundled_areas()
    assert areas.ids == ("ile-alatau-np", "ustyurt-reserve")
    for feat in fc["features"]:
        assert feat["properties"]["approximate"] is True
        assert "approximate" in feat["properties"]["name"]
    m = areas.membership(np.array([77.1, 76.92, 56.0, 60.0]), np.array([43.05, 43.25, 44.6, 44.6]))
    # In the park south of Almaty; central Almaty is not in it; in Ustyurt; nowhere.
    assert m.inside.tolist() == [[True, False], [False, False], [False, True], [False, False]]


def _square_areas(h: float = 500.0) -> ProtectedAreas:
    fc = {
        "features": [
            {
                "properties": {"id": "sq", "name": "square", "hysteresis_m": h},
                "geometry": shapely.geometry.mapping(shapely.box(0, 0, 1, 1)),
            }
        ]
    }
    return ProtectedAreas.from_geojson(fc)


def test_area_jitter_at_the_edge_does_not_flap_and_exit_enter_fire_once() -> None:
    # Metres outside the east edge (negative = inside): jitter, then out, then back in.
    d = [-300, 40, -20, 60, 300, -10, 800, 1200, 400, -50, 100]
    lon, lat = _west_of_border([-x for x in d])
    m = _square_areas().membership(lon, lat)
    assert m.exit_fix.tolist() == [6] and m.enter_fix.tolist() == [9]


@given(
    cols=st.integers(1, 4).flatmap(
        lambda k: st.lists(
            st.tuples(
                st.lists(st.booleans(), min_size=k, max_size=k),
                st.lists(st.booleans(), min_size=k, max_size=k),
            ),
            min_size=1,
            max_size=30,
        ).map(lambda rows: (k, rows))
    ),
    carry=st.one_of(st.none(), st.lists(st.booleans(), min_size=4, max_size=4)),
)
@settings(max_examples=300, deadline=None)
def test_areas_at_once_equal_area_by_area(cols, carry) -> None:
    """columns_membership (all areas in one pass) is `membership` column by column:
    inside, and exits and enters in the same (area, then fix) order; raw masks, so
    "enter without stay" rows are covered too."""
    k, rows = cols
    enter = np.array([r[0] for r in rows], dtype=bool)
    stay = np.array([r[1] for r in rows], dtype=bool)
    c = None if carry is None else carry[:k]
    got = columns_membership(enter, stay, c)
    want_rows: list[list[np.ndarray]] = [[], [], [], []]
    for a in range(k):
        col, exits, enters = area_membership(enter[:, a], stay[:, a], None if c is None else c[a])
        np.testing.assert_array_equal(got.inside[:, a], col)
        want_rows[0].append(exits)
        want_rows[1].append(np.full(exits.size, a))
        want_rows[2].append(enters)
        want_rows[3].append(np.full(enters.size, a))
    for have, want in zip(
        (got.exit_fix, got.exit_area, got.enter_fix, got.enter_area), want_rows, strict=True
    ):
        assert have.tolist() == np.concatenate(want).tolist()


def test_area_first_fix_is_not_news_without_carry() -> None:
    lon, lat = _west_of_border([-5000.0])
    m = _square_areas().membership(lon, lat)
    assert m.exit_fix.size == 0 and not m.inside[0, 0]
    m = _square_areas().membership(lon, lat, carry=(True,))
    assert m.exit_fix.tolist() == [0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-2000, 2000), min_size=2, max_size=30), st.data())
def test_area_suffix_with_carry_equals_whole(d: list[float], data: st.DataObject) -> None:
    r = data.draw(st.integers(1, len(d) - 1))
    lon, lat = _west_of_border(d)
    areas = _square_areas()
    whole = areas.membership(lon, lat)
    part = areas.membership(lon[r:], lat[r:], carry=(bool(whole.inside[r - 1, 0]),))
    assert part.inside.tolist() == whole.inside[r:].tolist()
    assert (part.exit_fix + r).tolist() == whole.exit_fix[whole.exit_fix >= r].tolist()
    assert (part.enter_fix + r).tolist() == whole.enter_fix[whole.enter_fix >= r].tolist()


# ------------------------------------------------------------------ home-range excursion


def _resident(days: int, per_day: int = 4, seed: int = 1) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n = days * per_day
    t = T0 + np.arange(n, dtype=np.int64) * (DAY_MS // per_day)
    # Uniform on a 2 km disc: no tail beyond the 95 % isopleth + hysteresis.
    lon, lat = forward(
        np.full(n, 77.0),
        np.full(n, 43.0),
        rng.uniform(0, 360, n),
        2000.0 * np.sqrt(rng.uniform(0, 1, n)),
    )
    return t, lon, lat


def _with_trip(days: int = 40) -> tuple[np.ndarray, ...]:
    t, lon, lat = _resident(days + 4)
    trip = slice(days * 4 + 1, days * 4 + 6)  # five fixes 25 km north, then home again
    lon[trip], lat[trip] = forward(lon[trip], lat[trip], 0.0, 25_000.0)
    return t, lon, lat


def test_excursion_exit_and_return_against_the_30_day_range() -> None:
    t, lon, lat = _with_trip()
    cache: Cache = {}
    ex = excursions(t, lon, lat, cache=cache)
    # Day 8 is the first whose 30-day window holds >= 30 fixes (8 days x 4).
    assert int(np.flatnonzero(ex.judged)[0]) == 8 * 4 and ex.judged[8 * 4 :].all()
    assert ex.exit.tolist() == [40 * 4 + 1] and ex.back.tolist() == [40 * 4 + 6]
    n_keys = len(cache)
    again = excursions(t, lon, lat, start=150, carry=bool(ex.away[149]), cache=cache)
    assert len(cache) == n_keys  # every reference reused
    assert again.exit.tolist() == ex.exit.tolist()
    prune_cache(cache, int(t[-1]))
    assert len(cache) <= 1


@given(seed=st.integers(0, 2**32 - 1), spread_deg=st.sampled_from([0.003, 0.01, 0.03]))
@settings(max_examples=25, deadline=None)
def test_reference_range_is_the_direct_95_kde_and_its_hysteresis(
    seed: int, spread_deg: float
) -> None:
    """ReferenceRange against a KDE summed directly: our own LAEA (plain-mean centre),
    h_ref by formula, the 95 % threshold from a 400 x 400 node grid. Query points whose
    direct density is clear of the threshold (by 5 %) agree on "inside"; points clearly
    inside the hysteresis band (< hysteresis - 1.5 cells) or beyond it (> hysteresis +
    1.5 cells; distance to the nearest fine node above the threshold) agree on "stay"."""
    rng = np.random.default_rng(seed)
    n = 180
    lon = 77.0 + np.cumsum(rng.normal(0, spread_deg, n))
    lat = 43.0 + np.cumsum(rng.normal(0, spread_deg * 0.7, n))
    t = T0 + np.arange(n, dtype=np.int64) * (DAY_MS // 6)
    ref = reference_range(t, lon, lat, int(t[-1]) + 1)
    assert ref is not None
    crs = CRS.from_proj4(f"+proj=laea +lat_0={lat.mean()} +lon_0={lon.mean()} +datum=WGS84")
    proj = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = (np.asarray(v) for v in proj.transform(lon, lat))
    h = math.sqrt(0.5 * (np.var(x, ddof=1) + np.var(y, ddof=1))) * n ** (-1 / 6)

    def density(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        d2 = (px[:, None] - x) ** 2 + (py[:, None] - y) ** 2
        return np.exp(-0.5 * d2 / h**2).sum(axis=1) / (2 * math.pi * h * h * n)

    gx, gy = np.meshgrid(
        np.linspace(x.min() - 4 * h, x.max() + 4 * h, 400),
        np.linspace(y.min() - 4 * h, y.max() + 4 * h, 400),
    )
    fine = np.concatenate(
        [
            density(a, b)
            for a, b in zip(
                np.array_split(gx.ravel(), 40), np.array_split(gy.ravel(), 40), strict=True
            )
        ]
    )
    d = np.sort(fine)[::-1]
    thr = float(d[np.searchsorted(np.cumsum(d) / d.sum(), 0.95)])
    px = rng.uniform(x.min() - 3 * h, x.max() + 3 * h, 3000)
    py = rng.uniform(y.min() - 3 * h, y.max() + 3 * h, 3000)
    qlon, qlat = proj.transform(px, py, direction="INVERSE")
    enter, stay = ref.masks(np.asarray(qlon), np.asarray(qlat))
    dq = density(px, py)
    clear = np.abs(dq / thr - 1.0) > 0.05
    assert clear.sum() > 2000
    np.testing.assert_array_equal(enter[clear], (dq >= thr)[clear])
    top_x, top_y = gx.ravel()[fine >= thr], gy.ravel()[fine >= thr]
    out = dq < thr
    dist = np.array(
        [np.hypot(top_x - a, top_y - b).min() for a, b in zip(px[out], py[out], strict=True)]
    )
    band = 1.5 * ref.cell + 1.5 * (gx[0, 1] - gx[0, 0])
    near, far = dist < ref.hysteresis_m - band, dist > ref.hysteresis_m + band
    assert stay[out][near].all() and not stay[out][far].any()


def _random_range(rng: np.random.Generator, blobs: int) -> ReferenceRange:
    """A range on a random grid of Gaussian blobs, in metres from (0, 0), 100 m cells."""
    ny, nx = int(rng.integers(8, 40)), int(rng.integers(8, 40))
    jj, ii = np.mgrid[0:ny, 0:nx]
    density = np.zeros((ny, nx))
    for _ in range(blobs):
        cx, cy, r = rng.uniform(0, nx), rng.uniform(0, ny), rng.uniform(1, 8)
        density += np.exp(-((ii - cx) ** 2 + (jj - cy) ** 2) / (2 * r * r))
    level = float(rng.uniform(0.2, 0.9)) * density.max()
    inside = density >= level
    hyst = float(rng.uniform(50, 1500))
    return ReferenceRange(_AT_ORIGIN, 0.0, 0.0, 100.0, density, level, edge_nodes(inside), hyst)


@given(seed=st.integers(0, 2**32 - 1), blobs=st.integers(1, 4))
@settings(max_examples=200, deadline=None)
def test_hysteresis_measured_to_edge_nodes_is_to_every_inside_node(seed: int, blobs: int) -> None:
    """ReferenceRange.masks measures a point's distance only to the inside set's edge
    nodes: for every point not inside, that is its distance to the nearest inside node
    of all (brute force), holes and several patches included."""
    rng = np.random.default_rng(seed)
    ref = _random_range(rng, blobs)
    ny, nx = ref.density.shape
    cell, hyst, inside = ref.cell, ref.hysteresis_m, ref.density >= ref.level
    lon, lat = _AT_ORIGIN.inverse(
        rng.uniform(-5, nx + 5, 400) * cell, rng.uniform(-5, ny + 5, 400) * cell
    )
    enter, stay = ref.masks(lon, lat)
    px, py = _AT_ORIGIN.forward(lon, lat)  # the grid's metres, as the masks see them
    nodes_j, nodes_i = np.nonzero(inside)
    d = np.hypot(px[:, None] / cell - nodes_i, py[:, None] / cell - nodes_j).min(axis=1) * cell
    out = ~enter
    assert out.any()
    np.testing.assert_array_equal(stay[out], d[out] <= hyst)
    assert stay[enter].all()


@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(0, 30), max_size=5))
@settings(max_examples=50, deadline=None)
def test_masks_of_many_ranges_equal_each_ranges_own(seed: int, sizes: list[int]) -> None:
    """masks_many judges consecutive runs of fixes against their own ranges in one pass;
    each run must get exactly what its range's masks give it (inside, and within the
    hysteresis)."""
    rng = np.random.default_rng(seed)
    refs = [_random_range(rng, 2) for _ in sizes]
    x = np.concatenate([rng.uniform(-5, 45, k) * 100.0 for k in sizes]) if sizes else []
    y = np.concatenate([rng.uniform(-5, 45, k) * 100.0 for k in sizes]) if sizes else []
    lon, lat = _AT_ORIGIN.inverse(np.asarray(x, float), np.asarray(y, float))
    enter, stay = excursion_mod.masks_many(refs, sizes, lon, lat)
    ends = np.cumsum(sizes, dtype=int)
    for ref, a, b in zip(refs, ends - sizes, ends, strict=True):
        e, s_ = ref.masks(lon[a:b], lat[a:b])
        np.testing.assert_array_equal(enter[a:b], e)
        np.testing.assert_array_equal(stay[a:b], s_)


def test_hysteresis_counts_a_node_whose_only_outside_neighbour_is_diagonal() -> None:
    """A point near an inside node q whose one outside neighbour is diagonal (bilinear
    density below the level there) is 0.57 cells from q: within a 0.6-cell hysteresis.
    Edge nodes by 4 neighbours would miss q and measure 0.72 cells."""
    density = np.full((6, 6), 1.05)
    density[3, 3] = 0.0  # q = node (i=2, j=2); the hole is its diagonal neighbour
    ref = ReferenceRange(
        _AT_ORIGIN,
        0.0,
        0.0,
        1.0,
        density,
        1.0,
        edge_nodes(density >= 1.0),
        0.6,
    )
    enter, stay = ref.masks(*_AT_ORIGIN.inverse(np.array([2.4]), np.array([2.4])))
    assert not enter[0] and stay[0]


def test_reference_needs_enough_fixes_and_is_keyed_by_content() -> None:
    t, lon, lat = _resident(10, per_day=2)
    assert reference_range(t, lon, lat, int(t[-1] // DAY_MS * DAY_MS)) is None
    t, lon, lat = _resident(35)
    cache: Cache = {}
    day = int(t[-1] // DAY_MS * DAY_MS)
    a = reference_range(t, lon, lat, day, cache)
    lon2 = lon.copy()
    lon2[-10] += 0.001  # a corrected fix inside the window: a new reference
    b = reference_range(t, lon2, lat, day, cache)
    assert a is not None and b is not None and a is not b and len(cache) == 2


def test_excursion_suffix_with_carry_equals_whole() -> None:
    """From every fix on, carried in from the fix before: what the whole track says,
    including a suffix that starts at the exit or the return itself."""
    t, lon, lat = _with_trip()
    cache: Cache = {}
    whole = excursions(t, lon, lat, cache=cache)
    assert whole.exit.size and whole.back.size  # (the trip is there to be cut at)
    for r in range(1, t.size):
        part = excursions(t, lon, lat, start=r, carry=bool(whole.away[r - 1]), cache=cache)
        assert part.away.tolist() == whole.away[r:].tolist(), r
        assert part.exit.tolist() == whole.exit[whole.exit >= r].tolist(), r
        assert part.back.tolist() == whole.back[whole.back >= r].tolist(), r


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 60), st.booleans()), max_size=5))
def test_excursions_of_many_animals_equal_one_by_one(
    animals: list[tuple[int, int, bool]],
) -> None:
    """The reducer judges all animals of a batch in one `excursions_many` call (one
    projection and interpolation pass over all their fixes): each must get exactly what
    `excursions` gives it alone, whatever its start, carry and neighbours."""
    tracks = []
    for seed, back, carry in animals:
        t, lon, lat = _with_trip()
        if seed > 1:  # another animal, elsewhere, with its own trip
            lon, lat = lon + seed, lat - seed / 2
        start = max(t.size - back, 0)
        tracks.append(Suffix(t, lon, lat, start, carry if start else None))
    together = excursions_many(tracks, {})
    for tr, got in zip(tracks, together, strict=True):
        alone = excursions(tr.t_ms, tr.lon, tr.lat, tr.start, tr.carry, {})
        for name in ("away", "judged", "exit", "back"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone, name), name)
    if any(t.start < t.t_ms.size - 20 for t in tracks):  # (the trip is ~24 fixes back)
        assert any(got.exit.size for got in together)


# ------------------------------------------------------------------ immobility


def test_ecef_is_projs_geocentric_conversion() -> None:
    from collarstream.core.immobility import ecef

    rng = np.random.default_rng(11)
    lon, lat = rng.uniform(-180, 180, 5000), rng.uniform(-90, 90, 5000)
    to_ecef = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    want = np.column_stack(to_ecef.transform(lon, lat, np.zeros_like(lon)))
    np.testing.assert_allclose(ecef(lon, lat), want, rtol=0, atol=1e-6)


def _dead_after(
    moving: int, still_h: float, every_h: float = 4.0, jitter_m: float = 20.0
) -> tuple[np.ndarray, ...]:
    """A walk of `moving` fixes 2 km apart, then a collar lying still, then walking on."""
    rng = np.random.default_rng(3)
    n_still = int(still_h / every_h) + 1
    n = moving + n_still + 3
    t = T0 + np.arange(n, dtype=np.int64) * int(every_h * H_MS)
    step = np.r_[np.full(moving, 2000.0), np.zeros(n_still), np.full(3, 2000.0)]
    lon, lat = forward(np.full(n, 77.0), np.full(n, 43.0), 90.0, np.cumsum(step))
    jit = np.r_[np.zeros(moving), rng.uniform(0, jitter_m, n_still), np.zeros(3)]
    lon, lat = forward(lon, lat, rng.uniform(0, 360, n), jit)
    return t, lon, lat


def test_immobility_starts_after_48h_and_clears_on_moving() -> None:
    t, lon, lat = _dead_after(5, 72.0)
    r = immobility(t, lon, lat)
    first_still = 4  # the last moving fix is where the collar stopped
    # Immobile once 48 h of fixes all lie within 100 m of the current one.
    assert r.start.tolist() == [first_still + 12]
    assert r.end.tolist() == [t.size - 3]  # the first fix 2 km away: all clear
    assert r.active[first_still + 12 : t.size - 3].all() and r.carry is None


def test_immobility_needs_the_window_covered() -> None:
    t, lon, lat = _dead_after(5, 72.0)
    keep = np.r_[np.arange(5), np.arange(14, t.size)]  # a 36 h silence in the middle
    r = immobility(t[keep], lon[keep], lat[keep])
    # The first fix whose 48 h window starts with a fix (within 6 h) comes later.
    assert r.start.size == 1
    i = int(r.start[0])
    assert t[keep][i] - t[keep][0] >= 48 * H_MS
    # A short stop (24 h) never alarms.
    t, lon, lat = _dead_after(5, 24.0)
    assert immobility(t, lon, lat).start.size == 0


def test_immobility_jitter_beyond_radius_is_not_immobile() -> None:
    t, lon, lat = _dead_after(5, 72.0, jitter_m=300.0)
    assert immobility(t, lon, lat).start.size == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 25), st.floats(20, 160))
def test_immobility_suffix_with_carry_equals_whole(r: int, jitter: float) -> None:
    t, lon, lat = _dead_after(5, 72.0, jitter_m=jitter)
    whole = immobility(t, lon, lat)
    head = immobility(t[:r], lon[:r], lat[:r])
    part = immobility(t, lon, lat, start=r, carry=head.carry)
    assert part.active.tolist() == whole.active[r:].tolist()
    assert part.start.tolist() == whole.start[whole.start >= r].tolist()
    assert part.end.tolist() == whole.end[whole.end >= r].tolist()
    assert isinstance(head.carry, ImmobilityCarry | None)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 30), st.floats(20, 160), st.integers(0, 3), st.sampled_from([0, 5])
        ),
        min_size=1,
        max_size=5,
    )
)
def test_immobility_of_many_animals_equals_one_by_one(
    animals: list[tuple[int, float, int, int]],
) -> None:
    """All animals of a batch go through one `immobility_many` pass, laid end to end on
    one time axis: no window may reach into another animal's fixes, and each must get
    exactly what `immobility` gives it alone (carry included)."""
    tracks = []
    for r, jitter, shift_days, moving in animals:
        # (moving 0: still from its first fix, where no window is covered for 48 h)
        t, lon, lat = _dead_after(moving, 72.0, jitter_m=jitter)
        t = t + shift_days * DAY_MS  # overlapping and disjoint times across animals
        r = min(r, t.size)
        head = immobility(t[:r], lon[:r], lat[:r])
        tracks.append(Suffix(t, lon, lat, r, head.carry))
    together = immobility_many(tracks)
    for tr, got in zip(tracks, together, strict=True):
        alone = immobility(tr.t_ms, tr.lon, tr.lat, tr.start, tr.carry)
        for name in ("immobile", "active", "start", "end"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone, name), name)
        assert got.carry == alone.carry
    # (Immobile through fix 18 at least: moving 0 lies still on fixes 0-18 and walks
    # from 19; moving 5 lies still on 4-23. Hypothesis found r = 19 with moving 0.)
    if any(r < 19 and j < 50 for r, j, _, _ in animals):
        assert any(got.active.any() for got in together)


# ------------------------------------------------------------------ silence


def test_silence_starts_when_the_timer_would_fire_and_ends_at_the_next_fix() -> None:
    h4 = 4 * 3600
    t = T0 + np.array([0, 4, 8, 20, 24, 40, 44], dtype=np.int64) * H_MS
    s = silences(t, h4)
    # 8 -> 20 is exactly 3 intervals: not a silence. 24 -> 40 is.
    assert s.after.tolist() == [4]
    assert s.start_ms.tolist() == [t[4] + 12 * H_MS] and s.end_ms.tolist() == [t[5]]
    open_ = silences(t, h4, now_ms=int(t[-1] + 13 * H_MS))
    assert open_.after.tolist() == [4, 6] and open_.end_ms[-1] == -1


def test_live_timer_waits_for_a_collars_usual_delivery_delay() -> None:
    """Twice-daily uploads deliver fixes up to 12 h old: by the wall clock the newest fix
    in hand is often more than 3 intervals old just before an upload. The timer waits
    the collar's usual delay on top, and the silence still starts where it started."""
    h4 = 4 * 3600
    t = T0 + np.arange(12, dtype=np.int64) * 4 * H_MS
    received = (t // (12 * H_MS) + 1) * 12 * H_MS + 30 * 60_000  # 12-hourly uploads
    delay = usual_delay_ms(t, received)
    assert delay == 12 * H_MS + 30 * 60_000 - 0  # a fix taken just after an upload
    before_upload = int(received[-1] + 11 * H_MS)  # 12 h of wall clock: no news, yet
    silent, since = silent_collars(t[-1:], np.array([h4]), before_upload, delay_ms=delay)
    assert not silent[0] and since[0] == t[-1] + 12 * H_MS
    assert silent_collars(t[-1:], np.array([h4]), before_upload)[0][0]  # without: false alarm
    late = int(t[-1] + 12 * H_MS + delay + 1)
    assert silent_collars(t[-1:], np.array([h4]), late, delay_ms=delay)[0][0]


def test_silence_suffix_with_prior_fix() -> None:
    t = T0 + np.array([0, 4, 30, 34, 60], dtype=np.int64) * H_MS
    whole = silences(t, 4 * 3600)
    part = silences(t[2:], 4 * 3600, prior_ms=int(t[1]))
    assert (part.after + 2).tolist() == whole.after[whole.after >= 1].tolist()
    assert part.start_ms.tolist() == whole.start_ms[whole.after >= 1].tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=20), st.integers(0, 1300))
def test_live_timer_agrees_with_replay(gaps_h: list[int], now_h: int) -> None:
    """At any moment, the timer calls a collar silent iff replay has a silence open then."""
    t = T0 + np.cumsum([0, *gaps_h]).astype(np.int64) * H_MS
    now = int(T0 + now_h * H_MS)
    seen = t[t <= now]
    if seen.size == 0:
        return
    mask, since = silent_collars(np.array([seen[-1]]), np.array([4 * 3600.0]), now)
    s = silences(t, 4 * 3600, now_ms=int(t[-1]) + 10**12)
    end = np.where(s.end_ms == -1, np.iinfo(np.int64).max, s.end_ms)
    # Silent strictly after its start, until (not at) the next fix.
    open_now = ((s.start_ms < now) & (now < end)).any()
    assert bool(mask[0]) == bool(open_now)
    if mask[0]:
        assert since[0] in s.start_ms


# ------------------------------------------------------------------ proximity


def test_proximity_exactly_at_within_m_is_close() -> None:
    lon2, lat2 = forward(np.array([77.0]), np.array([43.0]), 33.0, 500.0)
    d, _, _ = inverse(np.array([77.0]), np.array([43.0]), lon2, lat2)
    lon = np.array([77.0, lon2[0], 77.0])
    lat = np.array([43.0, lat2[0], 43.0])
    t = np.array([0, 3_600_000, 0], dtype=np.int64)
    animal = np.array([1, 2, 1])
    p = close_pairs(animal, t, lon, lat, float(d[0]), 3600.0)
    assert list(zip(p.i.tolist(), p.j.tolist(), strict=True)) == [
        (0, 1),
        (1, 2),
    ]  # not (0, 2): same animal
    assert close_pairs(animal, t, lon, lat, float(d[0]) - 1e-6, 3600.0).i.size == 0
    assert close_pairs(animal, t, lon, lat, float(d[0]), 3599.999).i.size == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(0, 10_000))
def test_close_pairs_equals_brute_force(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    animal = rng.integers(0, 4, n)
    t = rng.integers(0, 4 * 3600, n).astype(np.int64) * 1000
    lon, lat = forward(
        np.full(n, 77.0), np.full(n, 43.0), rng.uniform(0, 360, n), rng.uniform(0, 1500, n)
    )
    p = close_pairs(animal, t, lon, lat, 600.0, 1800.0)
    i, j = np.triu_indices(n, 1)
    d, _, _ = inverse(lon[i], lat[i], lon[j], lat[j])
    ok = (animal[i] != animal[j]) & (np.abs(t[i] - t[j]) <= 1_800_000) & (d <= 600.0)
    assert list(zip(p.i.tolist(), p.j.tolist(), strict=True)) == list(
        zip(i[ok].tolist(), j[ok].tolist(), strict=True)
    )
    # The live form finds the same partners among the other animals' fixes.
    for k in range(n):
        others = np.flatnonzero(animal != animal[k])
        idx, _ = close_to(
            float(lon[k]),
            float(lat[k]),
            int(t[k]),
            lon[others],
            lat[others],
            t[others],
            600.0,
            1800.0,
        )
        expect = {int(b) for a, b in zip(p.i, p.j, strict=True) if a == k} | {
            int(a) for a, b in zip(p.i, p.j, strict=True) if b == k
        }
        assert set(others[idx].tolist()) == expect


# ------------------------------------------------------------------ real data


def _movebank(shared_data: Path, name: str) -> dict[str, tuple[np.ndarray, ...]]:
    tr = read_movebank_csv(shared_data / name)
    out = {}
    for a in np.unique(tr.animal):
        m = (tr.animal == a) & ~np.isnan(tr.lon)
        o = np.argsort(tr.t_ms[m], kind="stable")
        out[str(a)] = (tr.t_ms[m][o], tr.lon[m][o], tr.lat[m][o])
    return out


def _cuckoo(shared_data: Path) -> tuple[np.ndarray, ...]:
    t, lon, lat = _movebank(shared_data, "tracks-cuckoos-mongolia-icarus.csv")["B89A08"]
    keep = np.concatenate([[True], np.diff(t) > 0])
    return t[keep], lon[keep], lat[keep]


@pytest.mark.shared_data
def test_real_cuckoo_approaches_central_asian_borders(shared_data: Path) -> None:
    t, lon, lat = _cuckoo(shared_data)
    steps = compute_steps(t, lon, lat, np.ones(t.size, bool), 3 * 86400.0)
    heading = np.full(t.size, np.nan)
    heading[steps.i1] = steps.heading_deg
    country = COUNTRIES.locate(lon, lat)
    # A bird flies hundreds of km a day: judge it at 100 km, not at a leopard's 5 km.
    kw = {"within_m": 100_000.0, "hysteresis_m": 20_000.0}
    raw = approach(LINES, lon, lat, heading, country, **kw)
    step_m = np.full(t.size, np.nan)
    step_m[steps.i1] = steps.dist_m
    r = approach(LINES, lon, lat, heading, country, step_m=step_m, **kw)
    # Real finding: at an Iranian stopover 57 km from Turkmenistan the bird sits still
    # for days; its 20-200 m GPS "steps" point anywhere, and one points at the border.
    days = [str(np.datetime64(int(t[k]), "ms"))[:10] for k in raw.start]
    assert days == ["2021-10-11"]
    assert COUNTRIES.codes[raw.distance.neighbour[raw.start[0]]] == "TKM"
    assert (raw.distance.dist_m[raw.start] <= 100_000).all() and raw.toward[raw.start].all()
    # Ignoring steps shorter than GPS scatter removes it; nothing else on the route
    # (KGZ 26 km from KAZ heading 67 degrees off the border, UZB heading away) qualifies.
    assert r.start.size == 0
    kgz = int(np.flatnonzero(np.asarray(COUNTRIES.codes)[country] == "KGZ")[0])
    assert r.distance.dist_m[kgz] == pytest.approx(26_390, abs=50)
    assert COUNTRIES.codes[r.distance.neighbour[kgz]] == "KAZ"
    near = np.flatnonzero(np.isfinite(r.distance.dist_m))
    for k in near[:10]:
        ref = _brute_distance(float(lon[k]), float(lat[k]), int(country[k]))
        assert r.distance.dist_m[k] == pytest.approx(ref, rel=0.005, abs=1.0)
    for k in near:
        part = approach(
            LINES,
            lon[k:],
            lat[k:],
            heading[k:],
            country[k:],
            ApproachCarry(bool(raw.active[k - 1]), int(country[k - 1])),
            **kw,
        )
        assert part.active.tolist() == raw.active[k:].tolist()


@pytest.mark.shared_data
def test_real_cuckoo_exits_almaty_region(shared_data: Path) -> None:
    """A real polygon as a stand-in protected area: OSM's Almaty Region, which the cuckoo
    enters from China on 2021-09-29 and leaves toward Kyrgyzstan."""
    fc = json.loads((shared_data / "kz-admin1-osm.geojson").read_text(encoding="utf-8"))
    feats = [f for f in fc["features"] if f["properties"].get("name_en") == "Almaty Region"]
    assert len(feats) == 1
    feats[0]["properties"] = {"id": "almaty-region", "name": "Almaty Region"}
    areas = ProtectedAreas.from_geojson({"features": feats})
    t, lon, lat = _cuckoo(shared_data)
    m = areas.membership(lon, lat)
    assert m.enter_fix.size == 1 and m.exit_fix.size == 1
    enter_day = str(np.datetime64(int(t[m.enter_fix[0]]), "ms"))[:10]
    assert enter_day == "2021-09-29"
    assert m.exit_fix[0] == m.enter_fix[0] + 1 or t[m.exit_fix[0]] <= parse_ms(
        "2021-10-03T00:00:00Z"
    )


@pytest.mark.shared_data
def test_real_fishers_rest_by_day_but_never_look_dead(shared_data: Path) -> None:
    fishers = _movebank(shared_data, "tracks-fishers-new-york.csv")
    found = collections.Counter()
    for name, (t, lon, lat) in fishers.items():
        assert immobility(t, lon, lat).start.size == 0, name  # leopard defaults: 48 h
        r = immobility(
            t,
            lon,
            lat,
            radius_m=100,
            release_m=150,
            min_duration_s=12 * 3600,
            coverage_tolerance_s=3600,
        )
        found[name] = int(r.start.size)
        # Every start is an immobile fix, every end is the first fix beyond 150 m.
        assert r.immobile[r.start].all()
        for s, e in zip(r.start, r.end[: r.start.size], strict=False):
            d, _, _ = inverse(
                lon[s : e + 1],
                lat[s : e + 1],
                np.full(e - s + 1, lon[s]),
                np.full(e - s + 1, lat[s]),
            )
            assert d[-1] > 150 - 1e-6 and (d[:-1] <= 150 + 1e-6).all()
        if t.size > 200:  # split anywhere: same episodes
            k = t.size // 2
            head = immobility(
                t[:k],
                lon[:k],
                lat[:k],
                radius_m=100,
                release_m=150,
                min_duration_s=12 * 3600,
                coverage_tolerance_s=3600,
            )
            tail = immobility(
                t,
                lon,
                lat,
                start=k,
                carry=head.carry,
                radius_m=100,
                release_m=150,
                min_duration_s=12 * 3600,
                coverage_tolerance_s=3600,
            )
            assert tail.start.tolist() == r.start[r.start >= k].tolist()
    assert found["M5"] >= 20 and sum(found.values()) >= 40  # daytime rests of 12 h+


@pytest.mark.shared_data
def test_real_gaps_are_silences(shared_data: Path) -> None:
    fishers = _movebank(shared_data, "tracks-fishers-new-york.csv")
    t = fishers["M3"][0]  # 2-min schedule, a 48 h gap
    s = silences(t, 120.0)
    gaps = np.diff(t)
    assert len(s) == int((gaps > 360_000).sum())
    longest = int(np.argmax(gaps))
    assert longest in s.after
    k = int(np.flatnonzero(s.after == longest)[0])
    assert s.start_ms[k] == t[longest] + 360_000 and s.end_ms[k] == t[longest + 1]
    cougar = _movebank(shared_data, "tracks-cougar-coyote-utah-idaho-sample.csv")["F53"]
    # Missed 4-h fixes give 8-h gaps: one missed fix is not three.
    assert len(silences(cougar[0], 4 * 3600.0)) == 0
    assert len(silences(cougar[0], 4 * 3600.0, periods=1.5)) >= 1


@pytest.mark.shared_data
def test_real_proximity_of_collared_animals(shared_data: Path) -> None:
    utah = _movebank(shared_data, "tracks-cougar-coyote-utah-idaho-sample.csv")
    names = list(utah)
    cat = [np.concatenate([utah[n][c] for n in names]) for c in range(3)]
    animal = np.repeat(np.arange(len(names)), [utah[n][0].size for n in names])
    # The Utah cougar (2014) and the Idaho coyote (2004-05) never met.
    assert len(close_pairs(animal, *cat, within_m=50_000, max_dt_s=86400 * 365)) == 0
    fishers = _movebank(shared_data, "tracks-fishers-new-york.csv")
    names = sorted(fishers)
    cat = [np.concatenate([fishers[n][c] for n in names]) for c in range(3)]
    animal = np.repeat(np.arange(len(names)), [fishers[n][0].size for n in names])
    p = close_pairs(animal, *cat, within_m=500.0, max_dt_s=3600.0)
    who = collections.Counter(
        (names[animal[i]], names[animal[j]]) for i, j in zip(p.i, p.j, strict=True)
    )
    assert set(who) == {("F3", "M3"), ("F1", "M2")}  # the two pairs tracked at the same time
    assert (p.dist_m <= 500.0).all() and (p.dt_s <= 3600.0).all()


@pytest.mark.shared_data
def test_real_excursions(shared_data: Path) -> None:
    cougar = _movebank(shared_data, "tracks-cougar-coyote-utah-idaho-sample.csv")["F53"]
    ex = excursions(*cougar)
    assert not ex.judged.any()  # 10 fixes over 2 days: no 30-day reference, no verdict
    t, lon, lat = _movebank(shared_data, "tracks-fishers-new-york.csv")["M5"]
    cache: Cache = {}
    ex = excursions(t, lon, lat, cache=cache)
    assert ex.judged.any()
    k = int(np.flatnonzero(ex.judged)[0]) + 500
    part = excursions(t, lon, lat, start=k, carry=bool(ex.away[k - 1]), cache=cache)
    assert part.away.tolist() == ex.away[k:].tolist()
    assert part.exit.tolist() == ex.exit[ex.exit >= k].tolist()


_LATCH_TRACK = st.tuples(
    st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()), max_size=8),
    st.tuples(st.booleans(), st.booleans()),  # state before the first fix, per latch
    st.booleans(),  # whether that state is known (a fix before) or not (the first is not news)
)


@given(tracks=st.lists(_LATCH_TRACK, min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_latch_runs_is_the_recurrence_track_by_track(tracks) -> None:
    """`latch_runs` over many tracks at once: per track and latch, state_i = enter_i or
    (state_(i-1) and (stay_i or enter_i)) from the track's own prior, and the state
    before the first fix is the prior only when known."""
    rows = [r for fixes, _, _ in tracks for r in fixes]
    enter = np.array([[r[0], r[1]] for r in rows], dtype=bool).reshape(len(rows), 2)
    stay = np.array([[r[2], r[3]] for r in rows], dtype=bool).reshape(len(rows), 2)
    bounds = np.cumsum([0] + [len(fixes) for fixes, _, _ in tracks])
    prior = np.array([p for _, p, _ in tracks], dtype=bool)
    news = np.array([k for _, _, k in tracks], dtype=bool)
    state, before = latch_runs(enter, stay, bounds, prior, news)
    want_state, want_before = [], []
    for fixes, p, known in tracks:
        s = list(p)
        for i, r in enumerate(fixes):
            new = [r[a] or (s[a] and (r[2 + a] or r[a])) for a in range(2)]
            want_before.append(s if i or known else new)
            want_state.append(new)
            s = new
    assert state.tolist() == want_state
    assert before.tolist() == want_before


@given(
    tracks=st.lists(
        st.tuples(
            st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=8),
            st.none() | st.tuples(st.booleans(), st.booleans()),
        ),
        min_size=1,
        max_size=5,
    )
)
@settings(max_examples=200, deadline=None)
def test_areas_of_many_animals_at_once_as_each_alone(tracks) -> None:
    """`membership_runs` over several animals' fixes equals `columns_membership` of each
    animal alone, with its own carry (None: the first fix is not news)."""
    rows = [r for fixes, _ in tracks for r in fixes]
    enter = np.array([[r[0], r[1]] for r in rows], dtype=bool).reshape(len(rows), 2)
    stay = np.array([[r[2], r[0] or r[2]] for r in rows], dtype=bool).reshape(len(rows), 2)
    bounds = np.cumsum([0] + [len(fixes) for fixes, _ in tracks])
    inside, before = membership_runs(enter, stay, bounds, [c for _, c in tracks])
    for k, (_, carry) in enumerate(tracks):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        alone = columns_membership(enter[lo:hi], stay[lo:hi], carry)
        got = area_transitions(inside[lo:hi], before[lo:hi])
        for name in ("inside", "exit_fix", "exit_area", "enter_fix", "enter_area"):
            assert getattr(got, name).tolist() == getattr(alone, name).tolist(), name


@given(
    tracks=st.lists(
        st.tuples(
            st.lists(
                st.tuples(
                    st.sampled_from([0.0, 40.0, 90.0, 200.0, math.nan]),  # heading
                    st.sampled_from([50.0, 500.0, math.nan]),  # step length
                    st.integers(-1, 2),  # country
                    st.sampled_from([1_000.0, 6_000.0, 30_000.0, math.inf]),  # to border
                    st.sampled_from([30.0, 100.0, math.nan]),  # azimuth to the border
                ),
                max_size=8,
            ),
            st.booleans(),  # approach active before the first fix
            st.sampled_from([approach_mod.NO_CARRY, -1, 0, 1]),  # country before it
        ),
        min_size=1,
        max_size=5,
    )
)
@settings(max_examples=300, deadline=None)
def test_approach_of_many_animals_at_once_as_each_alone(tracks) -> None:
    """`approach_many` over several animals' fixes equals it over each animal alone: no
    episode, and no change of country, carries over from one animal to the next."""
    cols = [np.array([r[j] for fixes, _, _ in tracks for r in fixes]) for j in range(5)]
    bounds = np.cumsum([0] + [len(fixes) for fixes, _, _ in tracks])
    was = np.array([w for _, w, _ in tracks], dtype=bool)
    came = np.array([c for _, _, c in tracks], dtype=np.int64)
    heading, step, country, dist, az = cols[0], cols[1], cols[2].astype(np.int64), cols[3], cols[4]
    got = approach_mod.approach_many(heading, step, country, dist, az, bounds, was, came)
    for k in range(len(tracks)):
        lo, hi = bounds[k], bounds[k + 1]
        alone = approach_mod.approach_many(
            heading[lo:hi],
            step[lo:hi],
            country[lo:hi],
            dist[lo:hi],
            az[lo:hi],
            np.array([0, hi - lo]),
            was[k : k + 1],
            came[k : k + 1],
        )
        for have, want in zip(got, alone, strict=True):
            assert have[lo:hi].tolist() == want.tolist()
