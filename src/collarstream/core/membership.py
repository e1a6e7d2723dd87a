"""Which fences contain which fixes, for many fences at once, vectorized.

A uniform grid is laid over the fences. At build time every (cell, fence) pair is
classified: the closed cell is wholly inside the fence, wholly outside, or touched by one
of its edges (a boundary cell). A fix in an inside cell is answered by lookup. Only fixes
in boundary cells are tested exactly, against the fence's edges that cross the cell's
grid row on the shorter side of the cell, with the ray-crossing rule GEOS itself uses
(RayCrossingCounter: half-open in y, exact equality for vertices and horizontal edges).

Boundary convention: each query takes ``predicate``. ``"contains"`` (the default) answers
as ``shapely.contains_xy`` does, a fix on an edge or vertex is *not* in the fence;
``"intersects"`` answers as ``shapely.intersects_xy``, a fix on the boundary *is* in it.
The answers equal shapely's bit for bit: orientation signs come from a float filter with
Shewchuk's error bound, and the rare (fix, fence) pairs it cannot decide (a fix within
about 1e-15 relative of an edge's line) are handed to shapely itself.

Fences are valid Polygons or MultiPolygons (holes and overlaps between fences are fine;
``shapely.make_valid`` first if unsure); inside means odd winding parity over all rings,
as GEOS's indexed point locator has it. None or empty fences contain nothing; NaN
coordinates are in no fence. Coordinates are any plane, e.g. lon/lat degrees.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import numpy.typing as npt
import shapely

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Predicate = Literal["contains", "intersects"]

# Shewchuk's ccwerrboundA: |det| above this times (|l| + |r|) has the sign of the exact det.
_ERRBOUND = (3.0 + 16.0 * 2.0**-53) * 2.0**-53
# Cells this many median edges wide hold two or three edges of a fence: few exact tests
# per fix, and few enough cells that the inside lists stay small.
EDGES_PER_CELL = 1.0
# Memory caps; the cell size grows until both hold (~8 bytes per cell, ~4 per entry).
MAX_CELLS = 1 << 22
MAX_INSIDE_ENTRIES = 1 << 24
# Exact tests are done this many at a time, so temporaries stay in cache.
CHUNK_TESTS = 1 << 16
# Queries run this many points at a time: memory stays ~0.3 GB for any batch size.
POINT_BLOCK = 1 << 20
_POLYGONAL = (3, 6)  # shapely type ids of Polygon, MultiPolygon


class FenceIndex:
    """N fences indexed once; answers which fences contain each of M points."""

    def __init__(self, fences: npt.ArrayLike, cell_size: float | None = None) -> None:
        """Index `fences` (Polygons/MultiPolygons; None for an empty slot).

        The fences are prepared in place (shapely.prepare), as contains_xy would do.
        `cell_size` overrides the adaptive grid step (same units as the coordinates).
        """
        geoms = np.array(fences, dtype=object).reshape(-1)
        types = shapely.get_type_id(geoms)
        bad = (types != -1) & ~np.isin(types, _POLYGONAL)
        if bad.any():
            raise TypeError(f"fence {int(np.flatnonzero(bad)[0])} is not a (Multi)Polygon")
        shapely.prepare(geoms)
        self.fences = geoms
        ax, ay, bx, by, fence_of = _edges(geoms)
        self._ax, self._ay, self._bx, self._by = ax, ay, bx, by
        self._grid = _Grid.fit(ax, ay, bx, by, _total_area(geoms), cell_size)
        rows = _edge_rows(self._grid, ax, ay, bx, by)
        cells = self._build_boundary(rows, fence_of)
        self._build_inside(cells)
        ptr = np.column_stack([self._in_ptr, self._bd_ptr]).ravel()  # cell c at 2c, 2c + 1
        self._ptr = ptr.astype(np.int32) if ptr[-1] < 2**31 else ptr

    def __len__(self) -> int:
        return int(self.fences.size)

    @property
    def cell_size(self) -> float:
        return self._grid.h

    @property
    def shape(self) -> tuple[int, int]:
        """Grid rows and columns."""
        return self._grid.ny, self._grid.nx

    def contains(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, predicate: Predicate = "contains"
    ) -> tuple[IntArray, IntArray]:
        """All (point index, fence index) pairs with the point in the fence.

        Sorted by point, then fence. Equal to ``shapely.STRtree(fences).query(points,
        predicate="within")`` for "contains", to "intersects" likewise.

        >>> from shapely import box
        >>> FenceIndex([box(0, 0, 2, 2), box(1, 1, 3, 3)]).contains([1.5, 2.0, 9], [1.5, 1.5, 9])
        (array([0, 0, 1]), array([0, 1, 1]))
        """
        x, y = _xy(lon, lat)
        pt, fence = self._pairs(x, y, predicate)
        n = max(len(self), 1)
        key = np.sort(pt * n + fence)
        return key // n, key % n

    def first(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, predicate: Predicate = "contains"
    ) -> IntArray:
        """Lowest index of a fence containing each point, -1 where none.

        >>> from shapely import box
        >>> index = FenceIndex([box(0, 0, 2, 2), box(1, 1, 3, 3)])
        >>> index.first([1.5, 2.0, 9], [1.5, 2.0, 9])
        array([ 0,  1, -1])
        >>> index.first([1.5, 2.0, 9], [1.5, 2.0, 9], predicate="intersects")
        array([ 0,  0, -1])
        """
        x, y = _xy(lon, lat)
        pt, fence = self._pairs(x, y, predicate)
        out = np.full(x.size, len(self), dtype=np.int64)
        np.minimum.at(out, pt, fence)
        out[out == len(self)] = -1
        return out

    def matrix(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, predicate: Predicate = "contains"
    ) -> BoolArray:
        """Dense (M points, N fences) membership; for small N (M x N bytes)."""
        x, y = _xy(lon, lat)
        pt, fence = self._pairs(x, y, predicate)
        out = np.zeros((x.size, len(self)), dtype=bool)
        out[pt, fence] = True
        return out

    # -- query ----------------------------------------------------------------------------

    def _pairs(
        self, x: FloatArray, y: FloatArray, predicate: Predicate
    ) -> tuple[IntArray, IntArray]:
        """All (point, fence) hits, in blocks of points so temporaries stay bounded."""
        if predicate not in ("contains", "intersects"):
            raise ValueError(f"predicate must be 'contains' or 'intersects', got {predicate!r}")
        pts, fences = [], []
        for lo in range(0, max(x.size, 1), POINT_BLOCK):
            pt, fence = self._block_pairs(
                x[lo : lo + POINT_BLOCK], y[lo : lo + POINT_BLOCK], predicate
            )
            pts.append(pt + lo)
            fences.append(fence)
        return np.concatenate(pts), np.concatenate(fences)

    def _block_pairs(
        self, x: FloatArray, y: FloatArray, predicate: Predicate
    ) -> tuple[IntArray, IntArray]:
        cell = self._grid.cells(x, y)
        # Both pointers of a cell share a cache line: one miss per point, not four.
        flat = 2 * cell
        in_lo, bd_lo = self._ptr[flat], self._ptr[flat + 1]
        pt_in, pos = _expand(in_lo, self._ptr[flat + 2] - in_lo)
        fence_in = self._in_fence[pos]
        pt_b, pos = _expand(bd_lo, self._ptr[flat + 3] - bd_lo)
        hit = self._boundary_hits(x, y, pt_b, pos, predicate)
        return np.concatenate([pt_in, pt_b[hit]]), np.concatenate(
            [fence_in, self._bd_fence[pos[hit]]]
        )

    def _boundary_hits(
        self, x: FloatArray, y: FloatArray, pt: IntArray, pair: IntArray, predicate: Predicate
    ) -> BoolArray:
        """Exact membership of each (point, boundary pair), in chunks that stay in cache."""
        hit = np.zeros(pt.size, dtype=bool)
        ends = np.cumsum(self._bd_count[pair])
        cuts = np.searchsorted(
            ends, np.arange(CHUNK_TESTS, ends[-1], CHUNK_TESTS) if ends.size else []
        )
        for lo, hi in itertools.pairwise([0, *cuts.tolist(), pt.size]):
            if hi > lo:
                hit[lo:hi] = self._chunk_hits(x, y, pt[lo:hi], pair[lo:hi], predicate)
        return hit

    def _chunk_hits(
        self, x: FloatArray, y: FloatArray, pt: IntArray, pair: IntArray, predicate: Predicate
    ) -> BoolArray:
        counts = self._bd_count[pair]
        seg, pos = _expand(self._bd_start[pair], counts)
        p = pt[seg]
        px, py = x[p], y[p]
        cx, cy = self._bd_cx[pair][seg], self._bd_cy[pair][seg]
        ax, ay, bx, by = self._e_ax[pos], self._e_ay[pos], self._e_bx[pos], self._e_by[pos]
        s_ref = self._e_side[pos]
        # The path from the point to its cell's centre crosses an edge when each lies
        # strictly on either side of the other; the centre's side was found at build time.
        s_pt, sure_pt = _orient(ax, ay, bx, by, px, py)
        apart = s_pt * s_ref < 0
        t_a, sure_a = _orient(px, py, cx, cy, ax, ay)
        t_b, sure_b = _orient(px, py, cx, cy, bx, by)
        cross = apart & (t_a * t_b < 0) & sure_a & sure_b
        vertex = ((px == ax) & (py == ay)) | ((px == bx) & (py == by))
        unsure = ~sure_pt | (s_ref == 0) | (apart & ~(sure_a & sure_b))
        starts = np.cumsum(counts) - counts
        parity = np.bitwise_xor.reduceat(cross.view(np.uint8), starts).astype(bool)
        on_vertex = np.logical_or.reduceat(vertex, starts)
        hit = (parity != self._bd_in[pair]) & ~on_vertex
        if predicate == "intersects":
            hit |= on_vertex
        ask = np.flatnonzero(np.logical_or.reduceat(unsure, starts) & ~on_vertex)
        if ask.size:
            exact = shapely.contains_xy if predicate == "contains" else shapely.intersects_xy
            fences = self.fences[self._bd_fence[pair[ask]]]
            hit[ask] = exact(fences, x[pt[ask]], y[pt[ask]])
        return hit

    # -- build ----------------------------------------------------------------------------

    def _build_boundary(self, rows: _EdgeRows, fence_of: IntArray) -> IntArray:
        """(cell, fence) pairs touched by an edge: the edges, and the centre's status.

        Returns the cell of each pair (pairs sorted by cell, then fence).
        """
        g, n = self._grid, max(len(self), 1)
        seg, col = _expand(rows.c_lo, rows.c_hi - rows.c_lo + 1)
        edge = rows.edge[seg]
        key = (rows.row[seg] * g.nx + col) * n + fence_of[edge]
        order = np.argsort(key, kind="stable")
        key, edge = key[order], edge[order]
        first = np.concatenate([[True], key[1:] != key[:-1]]) if key.size else key.astype(bool)
        start = np.flatnonzero(first)
        cell, fence = key[start] // n, key[start] % n
        cx = g.x0 + (cell % g.nx + 0.5) * g.h
        cy = g.y0 + (cell // g.nx + 0.5) * g.h
        self._bd_ptr = _ptr(cell, g.ncells)
        self._bd_fence, self._bd_start = fence, start
        self._bd_count = np.diff(np.append(start, key.size))
        self._bd_cx, self._bd_cy = cx, cy
        # A centre on an edge (or too near its line to tell) has no usable status: such
        # an entry makes every query in the pair go to shapely.
        self._bd_in = shapely.contains_xy(self.fences[fence], cx, cy)
        pair = np.cumsum(first) - 1
        ax, ay, bx, by = self._ax[edge], self._ay[edge], self._bx[edge], self._by[edge]
        side, sure = _orient(ax, ay, bx, by, cx[pair], cy[pair])
        self._e_side = np.where(sure, side, 0.0)
        self._e_ax, self._e_ay, self._e_bx, self._e_by = ax, ay, bx, by
        return cell

    def _build_inside(self, cell: IntArray) -> None:
        """Cells wholly inside a fence: the gaps between its boundary cells along a row.

        A gap touches no edge of the fence, so its first cell's centre decides it all.
        Cells before a fence's first boundary cell in a row, or after its last, are out.
        """
        g, n = self._grid, max(len(self), 1)
        key = self._bd_fence * g.ncells + cell  # by fence, then cell: rows run along x
        key.sort()
        fence, cell = key // g.ncells, key % g.ncells
        gap = (fence[1:] == fence[:-1]) & (cell[1:] // g.nx == cell[:-1] // g.nx)
        gap &= np.diff(cell) > 1
        lo, hi, fence = cell[:-1][gap] + 1, cell[1:][gap] - 1, fence[:-1][gap]
        cx = g.x0 + (lo % g.nx + 0.5) * g.h
        cy = g.y0 + (lo // g.nx + 0.5) * g.h
        inside = shapely.contains_xy(self.fences[fence], cx, cy)
        lo, hi, fence = lo[inside], hi[inside], fence[inside]
        seg, cells = _expand(lo, hi - lo + 1)
        key = np.sort(cells * n + fence[seg])
        self._in_ptr = _ptr(key // n, g.ncells)
        self._in_fence = key % n


class _Grid:
    """Square cells of side h from (x0, y0); cell id row * nx + col, ncells for 'none'."""

    def __init__(self, x0: float, y0: float, h: float, nx: int, ny: int) -> None:
        self.x0, self.y0, self.h, self.nx, self.ny = x0, y0, h, nx, ny
        self.ncells = nx * ny
        big = max(abs(x0), abs(y0), abs(x0 + nx * h), abs(y0 + ny * h), 1.0)
        # Build-time ranges are widened by this much, far more than any rounding in
        # cells(): a fix is never placed in a cell that misses an edge through it.
        self.pad = max(h * 1e-6, 64.0 * float(np.spacing(big)))

    @classmethod
    def fit(
        cls,
        ax: FloatArray,
        ay: FloatArray,
        bx: FloatArray,
        by: FloatArray,
        area: float,
        cell_size: float | None,
    ) -> _Grid:
        if ax.size == 0:
            return cls(0.0, 0.0, 1.0, 1, 1)
        xmin, xmax = min(ax.min(), bx.min()), max(ax.max(), bx.max())
        ymin, ymax = min(ay.min(), by.min()), max(ay.max(), by.max())
        w, hgt = xmax - xmin, ymax - ymin
        if cell_size is None:
            step = np.maximum(np.abs(bx - ax), np.abs(by - ay))
            step = step[step > 0]
            h = EDGES_PER_CELL * float(np.median(step)) if step.size else 0.0
            h = max(h, np.sqrt(w * hgt / MAX_CELLS), np.sqrt(area / MAX_INSIDE_ENTRIES))
            h = max(h, (w + hgt) / np.sqrt(MAX_CELLS) / 4)  # thin extents
            h = h if h > 0 else max(w, hgt, 1.0)
        else:
            h = float(cell_size)
        nx, ny = int(w / h) + 3, int(hgt / h) + 3
        if cell_size is not None and nx * ny > 4 * MAX_CELLS:
            raise ValueError(f"cell_size {h} gives {nx * ny} cells, more than {4 * MAX_CELLS}")
        return cls(float(xmin - h), float(ymin - h), h, nx, ny)

    def cells(self, x: FloatArray, y: FloatArray) -> IntArray:
        """Cell of each point; ncells (an empty cell) outside the grid or for NaN."""
        # (A coordinate near the float maximum overflows to inf: outside, like NaN.)
        with np.errstate(over="ignore", invalid="ignore"):
            fx = (x - self.x0) / self.h
            fy = (y - self.y0) / self.h
            ok = (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)
            cell = fy.astype(np.int64) * self.nx + fx.astype(np.int64)
        return np.where(ok, cell, self.ncells)

    def col(self, x: FloatArray) -> IntArray:
        c = np.floor((x - self.x0) / self.h).astype(np.int64)
        return np.clip(c, 0, self.nx - 1)

    def row(self, y: FloatArray) -> IntArray:
        r = np.floor((y - self.y0) / self.h).astype(np.int64)
        return np.clip(r, 0, self.ny - 1)


class _EdgeRows:
    """One entry per (edge, grid row it crosses), with the columns it spans in that row."""

    def __init__(self, edge: IntArray, row: IntArray, c_lo: IntArray, c_hi: IntArray) -> None:
        self.edge, self.row, self.c_lo, self.c_hi = edge, row, c_lo, c_hi


def _edge_rows(
    g: _Grid, ax: FloatArray, ay: FloatArray, bx: FloatArray, by: FloatArray
) -> _EdgeRows:
    r_lo = g.row(np.minimum(ay, by) - g.pad)
    r_hi = g.row(np.maximum(ay, by) + g.pad)
    edge, row = _expand(r_lo, r_hi - r_lo + 1)
    x0, y0, x1, y1 = ax[edge], ay[edge], bx[edge], by[edge]
    band_lo = g.y0 + row * g.h - g.pad
    band_hi = band_lo + g.h + 2 * g.pad
    ylo, yhi = np.maximum(np.minimum(y0, y1), band_lo), np.minimum(np.maximum(y0, y1), band_hi)
    dy = y1 - y0
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(dy != 0, (x1 - x0) / dy, 0.0)
    xa = np.where(dy != 0, x0 + (ylo - y0) * slope, np.minimum(x0, x1))
    xb = np.where(dy != 0, x0 + (yhi - y0) * slope, np.maximum(x0, x1))
    # Clipping only narrows the span; never past the edge's own ends.
    xlo = np.maximum(np.minimum(xa, xb), np.minimum(x0, x1)) - g.pad
    xhi = np.minimum(np.maximum(xa, xb), np.maximum(x0, x1)) + g.pad
    return _EdgeRows(edge, row, g.col(xlo), g.col(xhi))


def _orient(
    ax: FloatArray, ay: FloatArray, bx: FloatArray, by: FloatArray, px: FloatArray, py: FloatArray
) -> tuple[FloatArray, BoolArray]:
    """Sign of orient2d(a, b, p) (+1 with p left of a -> b) and whether it is certain.

    Shewchuk's stage-A filter: the float sign is the exact one when sure; exact zeros
    and near-collinear cases are not sure.
    """
    left = (ax - px) * (by - py)
    right = (ay - py) * (bx - px)
    det = left - right
    return np.sign(det), np.abs(det) > _ERRBOUND * (np.abs(left) + np.abs(right))


def _edges(
    geoms: npt.NDArray[np.object_],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray]:
    """Every ring segment (a -> b) of every fence, with its fence index."""
    parts, fence_of_part = shapely.get_parts(geoms, return_index=True)
    rings, part_of_ring = shapely.get_rings(parts, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    same = ring_of[1:] == ring_of[:-1]
    a, b = xy[:-1][same], xy[1:][same]
    fence = fence_of_part[part_of_ring[ring_of[:-1][same]]].astype(np.int64)
    return (
        np.ascontiguousarray(a[:, 0]),
        np.ascontiguousarray(a[:, 1]),
        np.ascontiguousarray(b[:, 0]),
        np.ascontiguousarray(b[:, 1]),
        fence,
    )


def _total_area(geoms: npt.NDArray[np.object_]) -> float:
    return float(np.nansum(shapely.area(geoms))) if geoms.size else 0.0


def _xy(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(lon, dtype=np.float64).reshape(-1)
    y = np.asarray(lat, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"lon and lat differ in size: {x.size} != {y.size}")
    return x, y


def _ptr(sorted_cells: IntArray, ncells: int) -> IntArray:
    """CSR row pointer over ncells + 1 cells (the last one, 'outside', always empty)."""
    return np.searchsorted(sorted_cells, np.arange(ncells + 2)).astype(np.int64)


def _expand(start: IntArray, count: IntArray) -> tuple[IntArray, IntArray]:
    """For segments [start, start + count): the segment of each element and its value."""
    seg = np.repeat(np.arange(count.size), count)
    offset = start - (np.cumsum(count) - count)
    return seg, np.arange(seg.size) + offset[seg]
