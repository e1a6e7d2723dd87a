"""CountryLayer.locate (a FenceIndex underneath) against shapely, point by point.

Two references: the plain definition (the lowest index whose polygon contains_xy the
point, -1 for none) and the STRtree implementation locate had before, kept here verbatim.
Points are drawn where disagreements would hide: exactly on shared border vertices, on
axis-parallel edges, a few ulps off a vertex, along edges, far away, NaN and infinite.
"""

from __future__ import annotations

import functools
import itertools
import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely import STRtree, box

from collarstream.core.countries import CountryLayer
from collarstream.fences import load_countries

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

CENTRAL_ASIA = (45.0, 34.0, 90.0, 56.0)  # lon0, lat0, lon1, lat1: the clipped layer's box
REAL_LAYERS = (
    "ne-10m-admin0-central-asia-full.geojson",
    "ne-10m-admin0-central-asia-clipped.geojson",
)


# ------------------------------------------------------------------------------ references


def reference(layer: CountryLayer, lon: FloatArray, lat: FloatArray) -> IntArray:
    """The definition: lowest k whose polygon contains_xy the point; -1 where none."""
    x = np.asarray(lon, np.float64).reshape(-1)
    y = np.asarray(lat, np.float64).reshape(-1)
    out = np.full(x.size, -1, dtype=np.int64)
    for k in reversed(range(len(layer))):  # lowest last, so it wins
        poly = layer.polygons[k]
        if poly is not None:
            out[shapely.contains_xy(poly, x, y)] = k
    return out


def strtree_locate(layer: CountryLayer, lon: FloatArray, lat: FloatArray) -> IntArray:
    """CountryLayer.locate as it was before FenceIndex (commit 113727e), verbatim."""
    polygons, tree = layer.polygons, STRtree(layer.polygons)
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    out = np.full(lon.size, -1, dtype=np.int64)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return out
    x, y = lon[ok], lat[ok]
    hit_pt, hit_poly = tree.query(shapely.points(x, y))
    sub = np.full(x.size, -1, dtype=np.int64)
    order = np.lexsort((hit_pt, hit_poly))
    hit_pt, hit_poly = hit_pt[order], hit_poly[order]
    bounds = np.flatnonzero(np.diff(hit_poly, prepend=-1, append=-1))
    for start, end in itertools.pairwise(bounds):
        k, pts = int(hit_poly[start]), hit_pt[start:end]
        inside = pts[shapely.contains_xy(polygons[k], x[pts], y[pts])]
        sub[inside] = np.where((sub[inside] == -1) | (sub[inside] > k), k, sub[inside])
    out[ok] = sub
    return out


def assert_same(layer: CountryLayer, x: FloatArray, y: FloatArray) -> None:
    got = layer.locate(x, y)
    assert got.dtype == np.int64 and got.shape == (x.size,)
    for name, want in (
        ("reference", reference(layer, x, y)),
        ("strtree", strtree_locate(layer, x, y)),
    ):
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (
            f"{bad.size} of {x.size} points differ from {name}, first: "
            + ", ".join(f"({x[i]!r}, {y[i]!r}) got {got[i]} want {want[i]}" for i in bad[:5])
        )


# ---------------------------------------------------------------------------- border points


class Borders:
    """A layer's vertices and edges, for drawing points on and near its borders."""

    def __init__(self, layer: CountryLayer) -> None:
        rings = shapely.get_rings(shapely.get_parts(layer.polygons))
        xy, ring_of = shapely.get_coordinates(rings, return_index=True)
        same = ring_of[1:] == ring_of[:-1]
        self.vertices = xy
        self.a, self.b = xy[:-1][same], xy[1:][same]
        axis = (self.a[:, 0] == self.b[:, 0]) | (self.a[:, 1] == self.b[:, 1])
        self.axis_a, self.axis_b = self.a[axis], self.b[axis]
        # Vertices of two or more countries: the tripoints and shared border vertices.
        every, country_of = shapely.get_coordinates(layer.polygons, return_index=True)
        pairs = np.unique(np.column_stack([every, country_of]), axis=0)
        uniq, counts = np.unique(pairs[:, :2], axis=0, return_counts=True)
        self.shared = uniq[counts >= 2]

    def all_border_points(self) -> tuple[FloatArray, FloatArray]:
        """Every vertex, each nudged 1 ulp in 8 directions, and every edge midpoint."""
        v = self.vertices
        pts = [v, (self.a + self.b) / 2]
        for dx, dy in itertools.product((-1, 0, 1), repeat=2):
            if dx or dy:
                pts.append(np.column_stack([_ulps(v[:, 0], dx), _ulps(v[:, 1], dy)]))
        p = np.concatenate(pts)
        return p[:, 0].copy(), p[:, 1].copy()


def _ulps(v: FloatArray, n: int) -> FloatArray:
    out = v.copy()
    for _ in range(abs(n)):
        out = np.nextafter(out, np.inf if n > 0 else -np.inf)
    return out


@functools.cache
def world() -> tuple[CountryLayer, Borders]:
    """The Natural Earth layer the package ships (no ../shared/data needed)."""
    layer = load_countries()
    return layer, Borders(layer)


KINDS = ("vertex", "shared", "nudged", "edge", "axis_edge", "uniform", "region", "far", "nan")


@st.composite
def probe_points(draw: st.DrawFn) -> tuple[FloatArray, FloatArray]:
    _, b = world()
    finite = {"allow_nan": False, "allow_infinity": False}
    xs, ys = [], []
    for kind in draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=40)):
        if kind == "vertex":
            x, y = b.vertices[draw(st.integers(0, len(b.vertices) - 1))]
        elif kind == "shared":
            x, y = b.shared[draw(st.integers(0, len(b.shared) - 1))]
        elif kind == "nudged":
            x, y = b.shared[draw(st.integers(0, len(b.shared) - 1))]
            x = _ulps(np.array([x]), draw(st.integers(-3, 3)))[0]
            y = _ulps(np.array([y]), draw(st.integers(-3, 3)))[0]
        elif kind == "edge":
            i = draw(st.integers(0, len(b.a) - 1))
            t = draw(st.floats(0.0, 1.0, **finite))
            x, y = b.a[i] + t * (b.b[i] - b.a[i])
        elif kind == "axis_edge":  # exactly on an edge: the varying coordinate between ends
            i = draw(st.integers(0, len(b.axis_a) - 1))
            (x0, y0), (x1, y1) = b.axis_a[i], b.axis_b[i]
            x = x0 if x0 == x1 else draw(st.floats(min(x0, x1), max(x0, x1), **finite))
            y = y0 if y0 == y1 else draw(st.floats(min(y0, y1), max(y0, y1), **finite))
        elif kind == "uniform":
            x = draw(st.floats(-180.0, 180.0, **finite))
            y = draw(st.floats(-90.0, 90.0, **finite))
        elif kind == "region":
            x = draw(st.floats(CENTRAL_ASIA[0], CENTRAL_ASIA[2], **finite))
            y = draw(st.floats(CENTRAL_ASIA[1], CENTRAL_ASIA[3], **finite))
        elif kind == "far":
            x = draw(st.floats(allow_nan=False))
            y = draw(st.floats(allow_nan=False))
        else:
            x, y = draw(st.sampled_from([(np.nan, 43.0), (76.9, np.nan), (np.nan, np.nan)]))
        xs.append(float(x))
        ys.append(float(y))
    return np.array(xs), np.array(ys)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(probe_points())
def test_world_layer_matches_shapely(points: tuple[FloatArray, FloatArray]) -> None:
    layer, _ = world()
    assert_same(layer, *points)


def test_world_layer_on_every_shared_vertex_and_nearby() -> None:
    layer, b = world()
    pts = [b.shared]
    for dx, dy in itertools.product((-1, 0, 1), repeat=2):
        pts.append(np.column_stack([_ulps(b.shared[:, 0], dx), _ulps(b.shared[:, 1], dy)]))
    p = np.concatenate(pts)
    assert_same(layer, p[:, 0].copy(), p[:, 1].copy())


# --------------------------------------------------------------------- semantics, synthetic


def _layer(*geoms: object) -> CountryLayer:
    n = len(geoms)
    arr = np.empty(n, dtype=object)
    arr[:] = list(geoms)
    return CountryLayer([f"C{i:02d}" for i in range(n)], [str(i) for i in range(n)], arr)


def test_boundary_points_are_in_no_country_and_overlaps_take_the_lower_index() -> None:
    """contains_xy semantics: on a border (shared or not) -> -1; overlap -> lower index."""
    layer = _layer(box(0, 0, 2, 2), box(2, 0, 4, 2), box(3, 1, 5, 3), box(1, 1, 6, 6))
    x = np.array([1.0, 3.0, 2.0, 2.0, 0.0, 3.5, 4.5, 5.5, 9.0, np.nan, np.inf])
    y = np.array([0.5, 0.5, 1.0, 0.0, 0.0, 1.5, 2.5, 5.5, 9.0, 1.0, 1.0])
    #              A    B   A|B edge, vertex, corner, B&C&D, C&D, D, none, NaN, inf
    assert layer.locate(x, y).tolist() == [0, 1, -1, -1, -1, 1, 2, 3, -1, -1, -1]
    assert_same(layer, x, y)


def test_none_empty_holes_and_geometry_collections() -> None:
    """FenceIndex takes (Multi)Polygons only: the rest is checked one by one, same rule."""
    donut = box(0, 0, 10, 10).difference(box(3, 3, 7, 7))
    collection = shapely.GeometryCollection(
        [box(2, 2, 8, 8), shapely.LineString([(0, 0), (20, 20)]), shapely.Point(5, 5)]
    )
    multi = shapely.MultiPolygon([box(-5, -5, -1, -1), box(4, 4, 6, 6)])
    layer = _layer(None, donut, shapely.Polygon(), collection, multi, box(9, 9, 30, 30))
    assert layer.locate(
        np.array([5.0, 1.0, -3.0, 20.0]), np.array([5.0, 1.0, -3.0, 20.0])
    ).tolist() == [3, 1, 4, 5]
    rng = np.random.default_rng(7)
    b = Borders(layer)
    bx, by = b.all_border_points()
    x = np.concatenate([rng.uniform(-8, 33, 5000), bx, np.arange(0, 21, 0.5)])
    y = np.concatenate([rng.uniform(-8, 33, 5000), by, np.arange(0, 21, 0.5)])
    assert_same(layer, x, y)


def test_input_shapes_and_an_empty_layer() -> None:
    layer, _ = world()
    assert layer.locate(np.array([]), np.array([])).tolist() == []
    assert layer.locate(76.95, 43.24).tolist() == [layer.codes.index("KAZ")]
    assert layer.locate([76.95, np.nan], [43.24, 1.0]).tolist() == [layer.codes.index("KAZ"), -1]
    empty = CountryLayer([], [], np.empty(0, dtype=object))
    assert empty.locate(np.array([1.0, np.nan]), np.array([2.0, 3.0])).tolist() == [-1, -1]


def test_pickles_before_and_after_the_index_is_built() -> None:
    layer = _layer(box(0, 0, 2, 2), box(2, 0, 4, 2))
    x, y = np.array([1.0, 3.0, 2.0]), np.array([1.0, 1.0, 1.0])
    fresh = pickle.loads(pickle.dumps(layer))
    assert fresh.locate(x, y).tolist() == [0, 1, -1]
    assert layer.locate(x, y).tolist() == [0, 1, -1]
    assert pickle.loads(pickle.dumps(layer)).locate(x, y).tolist() == [0, 1, -1]


# ---------------------------------------------------------------------------- real layers


@pytest.mark.parametrize("name", REAL_LAYERS)
def test_real_layer_random_and_border_points(shared_data: Path, name: str) -> None:
    path = shared_data / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    layer = load_countries(path)
    rng = np.random.default_rng(20250501)
    n = 200_000
    x = rng.uniform(CENTRAL_ASIA[0], CENTRAL_ASIA[2], n)
    y = rng.uniform(CENTRAL_ASIA[1], CENTRAL_ASIA[3], n)
    bx, by = Borders(layer).all_border_points()
    x, y = np.concatenate([x, bx]), np.concatenate([y, by])
    assert_same(layer, x, y)
    # A sanity check that the points exercise something: most land in some country.
    assert (layer.locate(x[:n], y[:n]) >= 0).mean() > 0.5
