"""Country membership and border crossings along geodesic steps, vectorized.

A step is densified along its geodesic (chords short enough that chord and geodesic
differ by millimetres), intersected with the border lines through an STRtree, and each
stretch between two intersections is assigned the country of its midpoint. A change of
country between stretches is a crossing; its point is the intersection itself and its
time is interpolated along the step at constant speed. A stretch in no country (sea,
a lake, a gap between two national outlines) is not a country: the animal is reported
as crossing from the last country to the next one, at the point where it entered it.
Excursions out of a country and back within one step are reduced away (see _collapse).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from shapely import STRtree

from collarstream.core.geodesy import densify, forward, inverse
from collarstream.core.membership import FenceIndex

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Chords of 500 m sag under 1 cm from the geodesic: crossings are placed to the metre.
DENSIFY_M = 500.0
# Border lines are cut into pieces of this many vertices so the tree prunes well.
EDGE_CHUNK = 32
_POLYGONAL = (3, 6)  # shapely type ids of Polygon, MultiPolygon
# Steps up to this many degrees of longitude are screened by `bow_deg` (longer ones,
# and any across the antimeridian, are always densified).
MAX_BOW_STEP_DEG = 10.0


def bow_deg(lon0: FloatArray, lat0: FloatArray, lon1: FloatArray, lat1: FloatArray) -> FloatArray:
    """A bound, in degrees, on how far a step's geodesic (and so its densified chords)
    strays from the straight lon/lat segment between its ends.

    A geodesic bows from the straight lon/lat line by second-order terms in the step's
    extent, d = |Δλ| + |Δφ| radians: on the sphere about sin(2φ) Δλ² / 16 in latitude,
    and in longitude a term that grows as 1 / cos φ toward the poles. d² / (4 cos² φ),
    φ the ends' larger |latitude| plus d, bounds both with room to spare (the
    ellipsoid's flattening changes them by far less). `tests/test_core.py` holds the
    densified geodesics of random steps up to 10° in each direction, up to 85° of
    latitude, to it. Meant for steps within MAX_BOW_STEP_DEG of longitude and 85° of
    latitude.
    """
    d = np.radians(np.abs(lon1 - lon0)) + np.radians(np.abs(lat1 - lat0))
    phi = np.minimum(np.radians(np.maximum(np.abs(lat0), np.abs(lat1))) + d, np.radians(89.0))
    return np.degrees(d * d / (4.0 * np.cos(phi) ** 2)) + 1e-9


@dataclass(frozen=True)
class Crossings:
    """One row per crossing, ordered by step then by position along the step."""

    step: IntArray
    order: IntArray
    count: IntArray
    frac: FloatArray
    lon: FloatArray
    lat: FloatArray
    from_idx: IntArray
    to_idx: IntArray

    def __len__(self) -> int:
        return int(self.step.size)


class CountryLayer:
    """Country polygons with ISO 3166-1 alpha-3 codes, indexed for points and lines."""

    def __init__(
        self,
        codes: list[str],
        names: list[str],
        polygons: npt.NDArray[np.object_],
        names_ru: list[str] | None = None,
    ) -> None:
        if not (len(codes) == len(names) == len(polygons)):
            raise ValueError("codes, names and polygons must have the same length")
        self.codes = tuple(codes)
        self.names = tuple(names)
        self.names_ru = tuple(names_ru) if names_ru else self.names
        self.polygons = np.asarray(polygons, dtype=object)
        shapely.prepare(self.polygons)
        self.tree = STRtree(self.polygons)
        self.edges = _border_pieces(self.polygons)
        self.edge_tree = STRtree(self.edges)
        # Built on first locate(): 0.1-0.4 s on Natural Earth layers, while the STRtrees
        # above build lazily and the constructor otherwise takes milliseconds.
        self._fences: FenceIndex | None = None
        # make_valid can turn a broken outline into a GeometryCollection (polygons plus
        # stray lines), which FenceIndex does not take: those are tested one by one.
        types = shapely.get_type_id(self.polygons)
        self._other = np.flatnonzero((types != -1) & ~np.isin(types, _POLYGONAL))

    def __len__(self) -> int:
        return len(self.codes)

    def locate(self, lon: FloatArray, lat: FloatArray) -> IntArray:
        """Index of the country containing each point, -1 where none (or coordinates NaN).

        Containment is shapely.contains_xy's: a point exactly on a border (an edge or a
        vertex of the outline) is in no country and gets -1, shared border or not. Where
        outlines overlap, the point gets the lower index, deterministically.
        """
        x = np.asarray(lon, np.float64).reshape(-1)
        y = np.asarray(lat, np.float64).reshape(-1)
        out = self._fence_index().first(x, y, predicate="contains")
        for k in self._other.tolist():
            x0, y0, x1, y1 = shapely.bounds(self.polygons[k])
            near = np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
            inside = near[shapely.contains_xy(self.polygons[k], x[near], y[near])]
            out[inside] = np.where((out[inside] == -1) | (out[inside] > k), k, out[inside])
        return out

    def _fence_index(self) -> FenceIndex:
        """The polygons' FenceIndex (other geometries as empty slots), built once.

        Two threads racing on the first call may both build it; either result is the same.
        """
        if self._fences is None:
            fences = self.polygons.copy()
            fences[self._other] = None
            self._fences = FenceIndex(fences)
        return self._fences

    def crossings(
        self, lon0: FloatArray, lat0: FloatArray, lon1: FloatArray, lat1: FloatArray
    ) -> Crossings:
        """Every border crossing along each step's geodesic, in order along the step.

        Only the steps that come near a border piece (`near_edges`) are densified and
        intersected: the same crossings, without the geodesics of the many steps far
        from any border."""
        lon0, lat0 = np.asarray(lon0, np.float64), np.asarray(lat0, np.float64)
        lon1, lat1 = np.asarray(lon1, np.float64), np.asarray(lat1, np.float64)
        near = self.near_edges(lon0, lat0, lon1, lat1)
        if near.size == 0:
            return no_crossings()
        if near.size == lon0.size:
            return self._crossings(lon0, lat0, lon1, lat1)
        found = self._crossings(lon0[near], lat0[near], lon1[near], lat1[near])
        return dataclasses.replace(found, step=near[found.step])

    def near_edges(
        self, lon0: FloatArray, lat0: FloatArray, lon1: FloatArray, lat1: FloatArray
    ) -> IntArray:
        """Sorted indices of the steps whose geodesic may touch a border piece: the
        straight lon/lat segment within `bow_deg` of one, or a step too long or too near
        a pole for that bound (and a step with a NaN end), always."""
        dlon = np.abs(lon1 - lon0)
        wide = ~(dlon <= MAX_BOW_STEP_DEG) | ~(np.maximum(np.abs(lat0), np.abs(lat1)) <= 85.0)
        segs = shapely.linestrings(
            np.stack([np.column_stack([lon0, lat0]), np.column_stack([lon1, lat1])], axis=1)
        )
        hit, _ = self.edge_tree.query(
            segs, predicate="dwithin", distance=np.where(wide, 0.0, bow_deg(lon0, lat0, lon1, lat1))
        )
        mark = wide.copy()
        mark[hit] = True
        return np.flatnonzero(mark)

    def _crossings(
        self, lon0: FloatArray, lat0: FloatArray, lon1: FloatArray, lat1: FloatArray
    ) -> Crossings:
        n = lon0.size
        dlon, dlat, offsets = densify(lon0, lat0, lon1, lat1, DENSIFY_M)
        step_of_vertex = np.repeat(np.arange(n), np.diff(offsets))
        lines = shapely.linestrings(np.column_stack([dlon, dlat]), indices=step_of_vertex)
        line_i, edge_i = self.edge_tree.query(lines, predicate="intersects")
        if line_i.size == 0:
            return no_crossings()
        hits = shapely.intersection(lines[line_i], self.edges[edge_i])
        coords, which = shapely.get_coordinates(hits, return_index=True)
        step = line_i[which]
        frac = _fraction_along(lines, dlon, dlat, offsets, step, coords)
        return self._transitions(lon0, lat0, lon1, lat1, step, frac, coords)

    def _transitions(
        self,
        lon0: FloatArray,
        lat0: FloatArray,
        lon1: FloatArray,
        lat1: FloatArray,
        step: IntArray,
        frac: FloatArray,
        coords: FloatArray,
    ) -> Crossings:
        # Breakpoints sorted per step; tripoints and shared vertices give near-equal
        # fractions, merged here.
        order = np.lexsort((frac, step))
        step, frac, coords = step[order], frac[order], coords[order]
        keep = np.concatenate([[True], (step[1:] != step[:-1]) | (np.diff(frac) > 1e-9)])
        step, frac, coords = step[keep], frac[keep], coords[keep]
        first_in_step = np.concatenate([[True], step[1:] != step[:-1]])
        last_in_step = np.concatenate([step[1:] != step[:-1], [True]])
        prev_frac = np.where(first_in_step, 0.0, np.concatenate([[0.0], frac[:-1]]))
        # Stretch before each breakpoint, then the final stretch of each step.
        mid_step = np.concatenate([step, step[last_in_step]])
        mid_frac = np.concatenate([(prev_frac + frac) / 2.0, (frac[last_in_step] + 1.0) / 2.0])
        dist, az, _ = inverse(lon0[mid_step], lat0[mid_step], lon1[mid_step], lat1[mid_step])
        mlon, mlat = forward(lon0[mid_step], lat0[mid_step], az, dist * mid_frac)
        country = self.locate(mlon, mlat)
        before = country[: step.size]
        after = np.empty(step.size, dtype=np.int64)
        after[:-1] = before[1:]
        after[last_in_step] = country[step.size :]
        return _collapse(step, frac, coords, before, after)


def _collapse(
    step: IntArray, frac: FloatArray, coords: FloatArray, before: IntArray, after: IntArray
) -> Crossings:
    """Reduce each step's stretches to the crossings the track must have made.

    Stretches in no country are bridged. Between two fixes the route is unknown and
    the geodesic only a guess, so an excursion that leaves a country and returns to it
    within the step (A -> B -> A) is not evidence of a crossing and is reduced away,
    repeatedly (a stack). What remains is the start country, any countries the route
    must pass through, and the end country, each entered at the breakpoint where the
    surviving entry happened.
    """
    rows: list[tuple[int, float, float, float, int, int]] = []
    bounds = np.flatnonzero(np.concatenate([[True], step[1:] != step[:-1], [True]]))
    for a, b in itertools.pairwise(bounds):
        stack: list[tuple[int, int]] = []  # (country, breakpoint index that entered it)
        for j in range(a - 1, b):
            c = int(before[a]) if j < a else int(after[j])
            if c == -1 or (stack and stack[-1][0] == c):
                continue
            if len(stack) >= 2 and stack[-2][0] == c:
                stack.pop()
            else:
                stack.append((c, j))
        for (c_from, _), (c_to, j) in itertools.pairwise(stack):
            rows.append((int(step[j]), float(frac[j]), *map(float, coords[j]), c_from, c_to))
    if not rows:
        return no_crossings()
    st = np.array([r[0] for r in rows], dtype=np.int64)
    _, first, counts = np.unique(st, return_index=True, return_counts=True)
    return Crossings(
        step=st,
        order=np.arange(st.size) - np.repeat(first, counts),
        count=np.repeat(counts, counts).astype(np.int64),
        frac=np.array([r[1] for r in rows]),
        lon=np.array([r[2] for r in rows]),
        lat=np.array([r[3] for r in rows]),
        from_idx=np.array([r[4] for r in rows], dtype=np.int64),
        to_idx=np.array([r[5] for r in rows], dtype=np.int64),
    )


def _fraction_along(
    lines: npt.NDArray[np.object_],
    dlon: FloatArray,
    dlat: FloatArray,
    offsets: IntArray,
    step: IntArray,
    coords: FloatArray,
) -> FloatArray:
    """Fraction of the step's geodesic length at which each intersection point lies.

    Densified vertices are equally spaced along the geodesic, so the fraction is
    (segment index + position inside the segment) / number of segments; the position
    inside one short chord is linear in degrees to well under a metre.
    """
    seg = np.hypot(np.diff(dlon), np.diff(dlat))
    seg[offsets[1:-1] - 1] = 0.0  # the pseudo-segments joining one step to the next
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    d = shapely.line_locate_point(lines[step], shapely.points(coords))
    base = cum[offsets[step]]
    nseg = np.diff(offsets)[step] - 1
    # Segment k of the step: the last vertex whose distance along the line is <= d.
    key = cum + np.repeat(np.arange(offsets.size - 1), np.diff(offsets)) * 1e6
    k = np.searchsorted(key, base + d + step * 1e6, side="right") - 1 - offsets[step]
    k = np.clip(k, 0, nseg - 1)
    a = offsets[step] + k
    within = np.divide(base + d - cum[a], seg[a], out=np.zeros(step.size), where=seg[a] > 0)
    return (k + np.clip(within, 0.0, 1.0)) / nseg


def _border_pieces(polygons: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Every ring cut into short linestrings sharing their end vertices."""
    rings = shapely.get_rings(shapely.get_parts(polygons))
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    vertex, piece, _ = chunk_runs(ring_of, EDGE_CHUNK)
    return shapely.linestrings(coords[vertex], indices=piece)


def chunk_runs(run_of: IntArray, segments: int) -> tuple[IntArray, IntArray, IntArray]:
    """Cut runs of vertices (equal consecutive `run_of` values: rings, lines) into pieces
    of at most `segments` segments, neighbours sharing their end vertex, so an STRtree
    over the pieces prunes well. Returns (vertex index, piece of each vertex, run of
    each piece), for `shapely.linestrings(coords[vertex], indices=piece)`."""
    start = np.flatnonzero(np.concatenate([[True], run_of[1:] != run_of[:-1]]))
    end = np.concatenate([start[1:], [run_of.size]]) - 1  # last vertex of each run
    n_pieces = np.maximum(1, np.ceil((end - start) / segments)).astype(np.int64)
    run_of_piece = np.repeat(np.arange(start.size), n_pieces)
    k = np.arange(n_pieces.sum()) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    p_start = start[run_of_piece] + k * segments
    p_end = np.minimum(p_start + segments, end[run_of_piece])
    length = p_end - p_start + 1
    vertex = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    vertex += np.repeat(p_start, length)
    return vertex, np.repeat(np.arange(length.size), length), run_of_piece


def no_crossings() -> Crossings:
    i, f = np.empty(0, dtype=np.int64), np.empty(0)
    return Crossings(i, i, i, f, f, f, i, i)
