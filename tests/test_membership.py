"""FenceIndex against shapely's own predicates: equal bit for bit, boundary included."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely import MultiPolygon, Polygon, box

from collarstream.core import membership
from collarstream.core.membership import FenceIndex

PREDICATES = ("contains", "intersects")
SHAPELY = {"contains": shapely.contains_xy, "intersects": shapely.intersects_xy}


def expected(fences: list, x: np.ndarray, y: np.ndarray, predicate: str) -> np.ndarray:
    """(M, N) membership from shapely, one fence at a time; None fences contain nothing."""
    out = np.zeros((x.size, len(fences)), dtype=bool)
    for k, fence in enumerate(fences):
        if fence is not None:
            out[:, k] = SHAPELY[predicate](fence, x, y)
    return out


def assert_agrees(fences: list, x: np.ndarray, y: np.ndarray, **kw: float) -> None:
    index = FenceIndex(fences, **kw)
    for predicate in PREDICATES:
        want = expected(fences, x, y, predicate)
        got = index.matrix(x, y, predicate)
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{predicate}: {len(bad)} disagreements, first {bad[:5].tolist()}"
        pt, fence = index.contains(x, y, predicate)
        want_pt, want_fence = np.nonzero(want)
        np.testing.assert_array_equal(pt, want_pt)
        np.testing.assert_array_equal(fence, want_fence)
        first = np.where(want.any(axis=1), want.argmax(axis=1), -1)
        np.testing.assert_array_equal(index.first(x, y, predicate), first)


def on_boundary_points(fences: list, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every vertex, every edge midpoint and random points along the edges."""
    xy = shapely.get_coordinates(shapely.get_rings(shapely.get_parts(fences)))
    a, b = xy[:-1], xy[1:]
    t = rng.random((a.shape[0], 1))
    pts = np.concatenate([xy, (a + b) / 2, a + t * (b - a)])
    return pts[:, 0], pts[:, 1]


def scatter(fences: list, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points over the fences' extent (and a margin), plus boundary points."""
    x0, y0, x1, y1 = shapely.total_bounds(fences)
    mx, my = (x1 - x0) * 0.1 + 1e-9, (y1 - y0) * 0.1 + 1e-9
    ux, uy = rng.uniform(x0 - mx, x1 + mx, n), rng.uniform(y0 - my, y1 + my, n)
    bx, by = on_boundary_points(fences, rng)
    return np.concatenate([ux, bx]), np.concatenate([uy, by])


def star(cx: float, cy: float, radii: np.ndarray, phase: float = 0.0) -> Polygon:
    theta = phase + np.linspace(0, 2 * np.pi, radii.size, endpoint=False)
    return Polygon(np.column_stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)]))


def test_doctests() -> None:
    assert doctest.testmod(membership).failed == 0


def test_holes_multipolygons_and_overlaps() -> None:
    rng = np.random.default_rng(1)
    ring = box(0, 0, 10, 10).difference(box(3, 3, 7, 7))  # square with a square hole
    donut = shapely.Point(5, 5).buffer(4).difference(shapely.Point(5, 5).buffer(2))
    multi = MultiPolygon(
        [box(-2, -2, -1, -1), box(11, 11, 12, 14), star(5, 12, rng.uniform(1, 2, 9))]
    )
    crossing = [box(-3, 4, 14, 6), box(4, -3, 6, 14)]  # a plus sign: edges cross each other
    fences = [ring, donut, multi, *crossing, box(2, 2, 8, 8), ring]  # duplicates overlap fully
    x, y = scatter(fences, 20_000, rng)
    assert_agrees(fences, x, y)


def test_tiny_and_huge_fences_together() -> None:
    rng = np.random.default_rng(2)
    tiny = [star(76.9 + k * 1e-3, 43.2, rng.uniform(1e-7, 3e-7, 12)) for k in range(5)]
    huge = box(-180, -90, 180, 90).difference(box(70, 40, 80, 45))
    fences = [*tiny, huge, shapely.Point(77, 43).buffer(0.5, quad_segs=64)]
    x, y = scatter(fences, 20_000, rng)
    near_tiny = rng.normal(76.9, 3e-7, (2, 5000)) + np.array([[0.0], [43.2 - 76.9]])
    assert_agrees(fences, np.concatenate([x, near_tiny[0]]), np.concatenate([y, near_tiny[1]]))


def test_axis_aligned_edges_and_cell_centres_on_edges() -> None:
    # With cell_size 1 the grid starts one cell below the fences' minimum, so the edges at
    # x or y = .5 run through cell centres: every such pair must fall back to shapely.
    fences = [
        box(0, 0, 10.5, 10.5),
        box(2.5, 2.5, 4, 8.5),
        box(0, 0, 10.5, 10.5).exterior.buffer(0),
    ]
    fences[2] = box(5, 5, 7.5, 7.5)
    grid = np.arange(-1, 12, 0.25)
    gx, gy = np.meshgrid(grid, grid)
    assert_agrees(fences, gx.ravel(), gy.ravel(), cell_size=1.0)
    assert_agrees(fences, gx.ravel(), gy.ravel())


def test_cell_size_and_chunking_do_not_change_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    fences = [star(*rng.uniform(0, 5, 2), rng.uniform(0.5, 2, 200)) for _ in range(12)]
    x, y = scatter(fences, 5000, rng)
    want = FenceIndex(fences).contains(x, y)
    monkeypatch.setattr(membership, "CHUNK_TESTS", 97)
    for cell_size in (0.003, 0.05, 0.4, 5.0, 100.0):
        got = FenceIndex(fences, cell_size=cell_size).contains(x, y)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert_agrees(fences, x, y, cell_size=0.05)


def test_degenerate_inputs() -> None:
    empty = FenceIndex([])
    assert len(empty) == 0
    pt, fence = empty.contains([1.0, np.nan], [2.0, 3.0])
    assert pt.size == fence.size == 0
    np.testing.assert_array_equal(empty.first([1.0], [2.0]), [-1])
    assert empty.matrix([1.0], [2.0]).shape == (1, 0)

    fences = [None, Polygon(), box(0, 0, 1, 1), MultiPolygon()]
    index = FenceIndex(fences)
    x = np.array([0.5, np.nan, 0.5, np.inf, -np.inf, 0.5, 1e300])
    y = np.array([0.5, 0.5, np.nan, 0.5, 0.5, np.inf, 0.5])
    np.testing.assert_array_equal(index.first(x, y, "intersects"), [2, -1, -1, -1, -1, -1, -1])
    assert index.contains(np.array([]), np.array([]))[0].size == 0

    single = FenceIndex([box(3, 3, 3, 3)])  # a polygon collapsed to a point: no area
    np.testing.assert_array_equal(single.first([3.0, 3.1], [3.0, 3.0]), [-1, -1])


def test_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="fence 1"):
        FenceIndex([box(0, 0, 1, 1), shapely.LineString([(0, 0), (1, 1)])])
    index = FenceIndex([box(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="predicate"):
        index.contains([0.5], [0.5], predicate="within")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ"):
        index.contains([0.5, 0.6], [0.5])


@st.composite
def star_fences(draw: st.DrawFn) -> list[Polygon]:
    fences = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(3, 40))
        cx = draw(st.floats(40, 90))
        cy = draw(st.floats(35, 55))
        scale = draw(st.sampled_from([1e-5, 1e-3, 0.1, 2.0]))
        radii = draw(st.lists(st.floats(0.1, 1.0), min_size=n, max_size=n))
        fences.append(star(cx, cy, scale * np.array(radii), draw(st.floats(0, 6.3))))
    return fences


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fences=star_fences(), seed=st.integers(0, 2**32 - 1), cell_size=st.sampled_from([None, 0.01])
)
def test_random_star_polygons_match_shapely(
    fences: list[Polygon], seed: int, cell_size: float | None
) -> None:
    rng = np.random.default_rng(seed)
    x, y = scatter(fences, 2000, rng)
    assert_agrees(fences, x, y, cell_size=cell_size)


def test_central_asia_countries_match_shapely(shared_data: Path) -> None:
    path = shared_data / "ne-10m-admin0-central-asia-full.geojson"
    if not path.exists():
        pytest.skip(f"{path.name} is absent from ../shared/data")
    import geopandas

    countries = list(geopandas.read_file(path).geometry.make_valid())
    rng = np.random.default_rng(4)
    x, y = rng.uniform(45.0, 90.0, 200_000), rng.uniform(34.0, 56.0, 200_000)
    bx, by = on_boundary_points(countries, rng)
    pick = rng.choice(bx.size, 20_000, replace=False)
    assert_agrees(countries, np.concatenate([x, bx[pick]]), np.concatenate([y, by[pick]]))
