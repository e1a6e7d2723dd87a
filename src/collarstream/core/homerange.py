"""Home ranges per animal: minimum convex polygons and kernel density isopleths.

Conventions follow adehabitatHR / amt so numbers are comparable with the R ecosystem:

* ``mcp``: the ``percent`` % of fixes closest to the arithmetic centroid of *all* fixes,
  then their convex hull (adehabitatHR ``mcp``; R quantile type 7 == numpy "linear").
* ``kde_*``: fixed isotropic bivariate Gaussian kernel, reference bandwidth
  ``h_ref = sqrt(0.5 * (var x + var y)) * n^(-1/6)`` (adehabitatHR ``kernelUD(h="href")``),
  isopleth p % = highest-density region holding p % of the grid's probability mass.

All area work happens in a Lambert azimuthal equal-area projection centred on the fixes
(``equal_area_projection``); only ``home_ranges`` touches lon/lat. Everything is pure:
arrays in, arrays / shapely geometries out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS, Transformer
from scipy.signal import fftconvolve
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

FloatArray = npt.NDArray[np.float64]
Projector = Callable[[npt.ArrayLike, npt.ArrayLike], tuple[FloatArray, FloatArray]]

#: Fewer fixes than this and ``home_ranges`` returns nothing: a KDE or a 95 % MCP of
#: four points is noise, and h_ref's n^(-1/6) is meaningless at that size.
MIN_FIXES = 5

# The grid extends this many bandwidths beyond the fixes so that < 1e-4 of the kernel mass
# of an edge fix falls outside (1 - Phi(4) = 3e-5 per side).
_MARGIN_BW = 4.0
# The kernel is truncated at this many bandwidths: exp(-36 / 2) = 1.5e-8 of the peak, far
# below binning error, and it keeps the FFT small when h spans few cells.
_KERNEL_CUTOFF_BW = 6.0


# --------------------------------------------------------------------------- projection


def _as_float_pair(a: npt.ArrayLike, b: npt.ArrayLike, names: str) -> tuple[FloatArray, FloatArray]:
    a_arr = np.asarray(a, dtype=np.float64).ravel()
    b_arr = np.asarray(b, dtype=np.float64).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"{names} must have the same length, got {a_arr.size} and {b_arr.size}")
    return a_arr, b_arr


def _spherical_centre(lon: FloatArray, lat: FloatArray) -> tuple[float, float]:
    """Direction of the mean unit vector: a centre that has no antimeridian or pole seam."""
    lam, phi = np.radians(lon), np.radians(lat)
    cx = float(np.mean(np.cos(phi) * np.cos(lam)))
    cy = float(np.mean(np.cos(phi) * np.sin(lam)))
    cz = float(np.mean(np.sin(phi)))
    norm = math.sqrt(cx * cx + cy * cy + cz * cz)
    if norm < 1e-9:
        raise ValueError("fixes are spread evenly around the globe; no meaningful centre")
    lat0 = math.degrees(math.asin(max(-1.0, min(1.0, cz / norm))))
    # At a pole the longitude is arbitrary; atan2(0, 0) = 0 is as good as any.
    lon0 = math.degrees(math.atan2(cy, cx))
    return lon0, lat0


def equal_area_projection(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[Projector, Projector]:
    """Lambert azimuthal equal-area projection centred on the fixes.

    Returns ``(forward, inverse)``: vectorized callables ``(lon, lat) -> (x, y)`` in metres
    and ``(x, y) -> (lon, lat)`` in degrees (WGS84 ellipsoid, ``+proj=laea``).

    The centre is the normalised mean of the fixes' unit vectors, i.e. a circular mean of
    longitude weighted by cos(lat), so a range straddling 180° is centred at 180°, not at 0°.
    ``inverse`` returns longitudes unwrapped to ``lon_0 ± 180``: a polygon that crosses the
    antimeridian comes back with longitudes such as 180.5 instead of tearing across the
    globe; split it downstream if a consumer needs [-180, 180].

    Non-finite fixes are ignored for the centre. Raises ValueError if no finite fix
    remains, a latitude is outside [-90, 90], or the fixes have no meaningful centre
    (mean unit vector ~ 0, e.g. points spread evenly around a great circle).
    """
    lon_a, lat_a = _as_float_pair(lon, lat, "lon and lat")
    ok = np.isfinite(lon_a) & np.isfinite(lat_a)
    if not ok.any():
        raise ValueError("need at least one finite fix to centre the projection")
    if np.any(np.abs(lat_a[ok]) > 90.0):
        raise ValueError("latitude outside [-90, 90]")
    lon0, lat0 = _spherical_centre(lon_a[ok], lat_a[ok])
    crs = CRS.from_proj4(
        f"+proj=laea +lat_0={lat0:.12f} +lon_0={lon0:.12f} +datum=WGS84 +units=m +no_defs"
    )
    fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    inv = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def forward(lon_in: npt.ArrayLike, lat_in: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        x, y = fwd.transform(np.asarray(lon_in, np.float64), np.asarray(lat_in, np.float64))
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def inverse(x_in: npt.ArrayLike, y_in: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        lo, la = inv.transform(np.asarray(x_in, np.float64), np.asarray(y_in, np.float64))
        lo = np.asarray(lo, dtype=np.float64)
        lo = lon0 + (np.mod(lo - lon0 + 180.0, 360.0) - 180.0)
        return lo, np.asarray(la, dtype=np.float64)

    return forward, inverse


# --------------------------------------------------------------------------------- MCP


def _check_xy(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    xa, ya = _as_float_pair(x, y, "x and y")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError("x and y must be finite (drop missing fixes first)")
    return xa, ya


def mcp(x: npt.ArrayLike, y: npt.ArrayLike, percent: float = 100.0) -> shapely.Polygon:
    """Minimum convex polygon of the ``percent`` % of fixes closest to the centroid.

    adehabitatHR convention: the centroid is the arithmetic mean of *all* fixes, a fix is
    kept when its distance to it is <= the ``percent/100`` quantile of all distances
    (linear interpolation, R type 7), so ties at the cut-off are all kept.

    Edge cases: with no fixes, or when the kept fixes are fewer than 3 or collinear, the
    hull has no area and an **empty** Polygon is returned (area 0), never a Point or a
    LineString, so callers can always read ``.area`` and test ``.is_empty``.
    The exterior is counter-clockwise; its vertices are the extreme fixes to within
    ~1e-12 of the extent (see the snapping note in the body). Raises ValueError for
    percent outside (0, 100] or non-finite coordinates.
    """
    if not 0.0 < percent <= 100.0:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    xa, ya = _check_xy(x, y)
    if xa.size == 0:
        return shapely.Polygon()
    if percent < 100.0:
        dist = np.hypot(xa - xa.mean(), ya - ya.mean())
        keep = dist <= np.quantile(dist, percent / 100.0)
        xa, ya = xa[keep], ya[keep]
    if xa.size < 3:
        return shapely.Polygon()
    # GEOS's orientation predicates underflow on sub-normal coordinate differences (the
    # property test found a fix at y = 5e-324 flipping a hull). Centre, then snap to 2^-40
    # of the extent (~1e-12 relative, far below any fix precision), so every non-zero
    # difference is >= that step; translate the hull back afterwards.
    cx, cy = float(xa.mean()), float(ya.mean())
    step = max(float(np.ptp(xa)), float(np.ptp(ya))) * 2.0**-40
    if step == 0.0:
        return shapely.Polygon()
    u = np.round((xa - cx) / step) * step
    v = np.round((ya - cy) / step) * step
    # The hull of a LineString through the fixes is the hull of its vertices, and building
    # one LineString is ~10x faster than a MultiPoint of n Point objects.
    hull = shapely.convex_hull(shapely.linestrings(np.column_stack([u, v])))
    if not isinstance(hull, shapely.Polygon) or hull.area == 0.0:
        return shapely.Polygon()
    hull = shapely.transform(hull, lambda c: c + np.array([cx, cy]))
    return orient(hull, sign=1.0)


# --------------------------------------------------------------------------------- KDE


@dataclass(frozen=True)
class KdeGrid:
    """Kernel density on a regular grid.

    ``density[i, j]`` is the density (1/m² if x, y are metres) at ``(xs[j], ys[i])``;
    cells are square with side ``xs[1] - xs[0]``; ``bandwidth`` is the kernel sd used.
    """

    xs: FloatArray
    ys: FloatArray
    density: FloatArray
    bandwidth: float

    @property
    def cell_area(self) -> float:
        return float((self.xs[1] - self.xs[0]) * (self.ys[1] - self.ys[0]))


def reference_bandwidth(
    x: npt.ArrayLike, y: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float:
    """h_ref = sqrt(0.5 * (var x + var y)) * n^(-1/6)  (adehabitatHR ``h = "href"``).

    Variances use ddof=1 like R's ``var``. With ``weights`` the variances are weighted
    (reliability weights) and n is Kish's effective sample size (Σw)² / Σw².
    Returns 0.0 when all fixes coincide; raises ValueError for fewer than 2 fixes.
    """
    xa, ya = _check_xy(x, y)
    if xa.size < 2:
        raise ValueError("need at least 2 fixes for a reference bandwidth")
    w = _normalised_weights(weights, xa.size)
    if w is None:
        var = 0.5 * (np.var(xa, ddof=1) + np.var(ya, ddof=1))
        n_eff = float(xa.size)
    else:
        n_eff = 1.0 / float(np.sum(w * w))
        if n_eff <= 1.0:
            raise ValueError("weights put all mass on a single fix")
        mx, my = float(w @ xa), float(w @ ya)
        # Unbiased weighted variance with reliability weights: divide by 1 - Σw² (Σw = 1).
        corr = 1.0 / (1.0 - float(np.sum(w * w)))
        var = 0.5 * corr * float(w @ ((xa - mx) ** 2 + (ya - my) ** 2))
    return float(math.sqrt(var) * n_eff ** (-1.0 / 6.0))


def _normalised_weights(weights: npt.ArrayLike | None, n: int) -> FloatArray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != n:
        raise ValueError(f"weights must have one value per fix ({n}), got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w < 0.0):
        raise ValueError("weights must be finite and non-negative")
    total = float(w.sum())
    if total <= 0.0:
        raise ValueError("weights must not all be zero")
    return w / total


def _resolve_bandwidth(
    x: FloatArray, y: FloatArray, bandwidth: float | Literal["ref"], w: FloatArray | None
) -> float:
    if isinstance(bandwidth, str):
        if bandwidth != "ref":
            raise ValueError(f'bandwidth must be "ref" or a positive number, got {bandwidth!r}')
        h = reference_bandwidth(x, y, w)
        if h <= 0.0:
            raise ValueError("all fixes coincide: the reference bandwidth is 0")
        return h
    h = float(bandwidth)
    if not (math.isfinite(h) and h > 0.0):
        raise ValueError(f"bandwidth must be positive and finite, got {bandwidth!r}")
    return h


def kde_grid(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    bandwidth: float | Literal["ref"] = "ref",
    grid_size: int = 256,
    weights: npt.ArrayLike | None = None,
) -> KdeGrid:
    """Fixed-kernel UD on a grid by linear binning + FFT convolution.

    The grid has square cells, ``grid_size`` nodes along the longer side of the bounding
    box of the fixes extended by 4 bandwidths on every side (so the grid holds ≈ 1 of the
    mass), and proportionally fewer along the shorter side. Each fix's weight is spread
    over the 4 surrounding nodes bilinearly (``np.bincount``), then convolved with the
    isotropic Gaussian sampled at node offsets (truncated at 6 h). Cost is O(n + G log G),
    independent of n beyond the binning pass.

    Accuracy: binning error is O((cell/h)²), ≈ 0.05 (cell/h)² of the peak density; keep
    h ≳ 3 cells (true for h_ref unless a few far outliers stretch the box). For h below a
    cell the result is the binned histogram, lightly blurred, rather than a Gaussian KDE,
    but it still integrates to 1 (the sampled kernel is normalised to unit mass). Tiny
    negative FFT round-off is clipped to 0.

    Raises ValueError for fewer than 2 fixes, non-finite input, a non-positive bandwidth,
    coincident fixes with ``bandwidth="ref"``, or grid_size < 8.
    """
    xa, ya = _check_xy(x, y)
    if xa.size < 2:
        raise ValueError("need at least 2 fixes for a KDE")
    if grid_size < 8:
        raise ValueError(f"grid_size must be >= 8, got {grid_size}")
    w = _normalised_weights(weights, xa.size)
    h = _resolve_bandwidth(xa, ya, bandwidth, w)
    if w is None:
        w = np.full(xa.size, 1.0 / xa.size)

    pad = _MARGIN_BW * h
    x_lo, x_hi = float(xa.min()) - pad, float(xa.max()) + pad
    y_lo, y_hi = float(ya.min()) - pad, float(ya.max()) + pad
    cell = max(x_hi - x_lo, y_hi - y_lo) / (grid_size - 1)
    # The shorter axis gets just enough nodes, centred on the data, to keep cells square.
    nx = max(2, min(grid_size, math.ceil((x_hi - x_lo) / cell - 1e-9) + 1))
    ny = max(2, min(grid_size, math.ceil((y_hi - y_lo) / cell - 1e-9) + 1))
    x0 = 0.5 * (x_lo + x_hi) - 0.5 * (nx - 1) * cell
    y0 = 0.5 * (y_lo + y_hi) - 0.5 * (ny - 1) * cell
    xs = x0 + cell * np.arange(nx, dtype=np.float64)
    ys = y0 + cell * np.arange(ny, dtype=np.float64)

    # Linear binning: the 4 bilinear weights of each fix onto its cell's corners.
    fx = (xa - x0) / cell
    fy = (ya - y0) / cell
    ix = np.clip(np.floor(fx).astype(np.intp), 0, nx - 2)
    iy = np.clip(np.floor(fy).astype(np.intp), 0, ny - 2)
    tx = fx - ix
    ty = fy - iy
    base = iy * nx + ix
    idx = np.concatenate([base, base + 1, base + nx, base + nx + 1])
    wts = np.concatenate(
        [w * (1 - tx) * (1 - ty), w * tx * (1 - ty), w * (1 - tx) * ty, w * tx * ty]
    )
    binned = np.bincount(idx, weights=wts, minlength=nx * ny).reshape(ny, nx)

    # Separable Gaussian sampled at node offsets; odd length so mode="same" stays centred.
    half_x = min(nx - 1, math.ceil(_KERNEL_CUTOFF_BW * h / cell))
    half_y = min(ny - 1, math.ceil(_KERNEL_CUTOFF_BW * h / cell))
    gx = np.exp(-0.5 * (np.arange(-half_x, half_x + 1) * (cell / h)) ** 2)
    gy = np.exp(-0.5 * (np.arange(-half_y, half_y + 1) * (cell / h)) ** 2)
    kernel = np.outer(gy, gx)
    # Normalise the sampled kernel to unit mass. For h >= 1 cell its Riemann sum already
    # equals 2π h² / cell² to ~1e-8 (the sum of a sampled Gaussian converges
    # exponentially), so this changes nothing there; for h << cell it keeps the grid's
    # mass at 1 instead of blowing up by (cell / h)².
    kernel /= kernel.sum() * cell * cell
    density = np.maximum(fftconvolve(binned, kernel, mode="same"), 0.0)
    return KdeGrid(xs=xs, ys=ys, density=density, bandwidth=h)


def _check_levels(levels: Sequence[float]) -> list[float]:
    out = [float(p) for p in levels]
    for p in out:
        if not 0.0 < p < 100.0:
            raise ValueError(f"KDE isopleth levels must be in (0, 100), got {p}")
    return out


def _thresholds(density: FloatArray, levels: Sequence[float]) -> list[float]:
    # One descending sort serves every level.
    d = np.sort(density.ravel())[::-1]
    total = float(d.sum())
    if total <= 0.0:
        raise ValueError("the density grid is empty")
    mass = np.cumsum(d) / total
    out = []
    for p in levels:
        k = min(int(np.searchsorted(mass, p / 100.0)), d.size - 1)
        nxt = d[k + 1] if k + 1 < d.size else 0.0
        out.append(0.5 * float(d[k] + nxt))
    return out


def isopleth_threshold(grid: KdeGrid, level: float) -> float:
    """Density value whose super-level set holds ``level`` % of the grid's mass.

    Mass is normalised by the grid total (adehabitatHR ``getvolumeUD`` does the same), so
    the small mass beyond the grid margin does not shift the isopleths. The returned value
    lies halfway between the last included and the first excluded sorted node density,
    which keeps contour lines off the grid nodes. Raises ValueError for a level outside
    (0, 100) or an all-zero grid.
    """
    return _thresholds(grid.density, _check_levels([level]))[0]


def _marching_squares(
    xs: FloatArray, ys: FloatArray, z: FloatArray, level: float
) -> shapely.MultiPolygon:
    """Region {z >= level} bounded by linearly interpolated contours (marching squares).

    The field is padded with a ring of zeros (level > 0) so every contour closes. Each
    crossing point is computed once per grid edge and shared by the two cells on that
    edge, so segments meet bit-exactly and every vertex has degree 2: ``line_merge``
    yields disjoint simple rings. Saddles are resolved by the cell-centre mean, which
    keeps regions for higher levels nested inside those for lower levels. Nesting depth
    (how many other rings enclose a ring) decides shell (even) vs hole (odd).
    """
    cell = float(xs[1] - xs[0])
    zp = np.pad(z, 1, constant_values=0.0)
    xp = np.concatenate([[xs[0] - cell], xs, [xs[-1] + cell]])
    yp = np.concatenate([[ys[0] - cell], ys, [ys[-1] + cell]])
    nx = zp.shape[1]
    inside = zp >= level

    def crossing(za: FloatArray, zb: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (level - za) / (zb - za)
        # Clip away from the nodes so two edges never produce the same point.
        return np.clip(np.nan_to_num(f, nan=0.5), 1e-9, 1.0 - 1e-9)

    # Horizontal edges (i, j)-(i, j+1) and vertical edges (i, j)-(i+1, j) that are cut.
    h_cut = inside[:, :-1] != inside[:, 1:]
    v_cut = inside[:-1, :] != inside[1:, :]
    hi, hj = np.nonzero(h_cut)
    vi, vj = np.nonzero(v_cut)
    hx = xp[hj] + cell * crossing(zp[hi, hj], zp[hi, hj + 1])
    hy = yp[hi]
    vx = xp[vj]
    vy = yp[vi] + cell * crossing(zp[vi, vj], zp[vi + 1, vj])
    px = np.concatenate([hx, vx])
    py = np.concatenate([hy, vy])
    if px.size == 0:
        return shapely.MultiPolygon()
    # Point id per edge (-1 = not cut).
    h_id = np.full(h_cut.shape, -1, dtype=np.intp)
    h_id[hi, hj] = np.arange(hi.size)
    v_id = np.full(v_cut.shape, -1, dtype=np.intp)
    v_id[vi, vj] = hi.size + np.arange(vi.size)

    # Per cell (i, j): edges bottom, right, top, left.
    bottom, top = h_id[:-1, :], h_id[1:, :]
    left, right = v_id[:, :-1], v_id[:, 1:]
    edges = np.stack([bottom, right, top, left], axis=-1).reshape(-1, 4)
    n_cut = (edges >= 0).sum(axis=1)

    # Ordinary cells: exactly two cut edges -> one segment between them.
    two = edges[n_cut == 2]
    two = np.sort(two, axis=1)[:, 2:]
    # Saddles: four cut edges -> two segments; pairing by the cell-centre mean.
    sad = np.nonzero(n_cut == 4)[0]
    seg_list = [two]
    if sad.size:
        ci, cj = np.divmod(sad, nx - 1)
        centre_in = (zp[ci, cj] + zp[ci, cj + 1] + zp[ci + 1, cj] + zp[ci + 1, cj + 1]) >= (
            4.0 * level
        )
        bl_in = inside[ci, cj]
        # bl & tr inside with a connected centre, or br & tl inside with a separated one,
        # cut off the br and tl corners: (bottom, right) + (left, top).
        cut_br_tl = bl_in == centre_in
        e = edges[sad]
        b_, r_, t_, l_ = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
        seg_a = np.where(cut_br_tl[:, None], np.column_stack([b_, r_]), np.column_stack([l_, b_]))
        seg_b = np.where(cut_br_tl[:, None], np.column_stack([l_, t_]), np.column_stack([t_, r_]))
        seg_list += [seg_a, seg_b]
    segs = np.concatenate(seg_list)

    coords = np.stack([np.column_stack([px[segs[:, k]], py[segs[:, k]]]) for k in (0, 1)], axis=1)
    merged = shapely.line_merge(shapely.multilinestrings(shapely.linestrings(coords)))
    parts = shapely.get_parts(merged)
    # Every vertex has degree 2, so all parts are closed; the filter is only a safety net.
    parts = parts[shapely.is_closed(parts)]
    if parts.size == 0:
        return shapely.MultiPolygon()
    ring_xy, ring_idx = shapely.get_coordinates(parts, return_index=True)
    rings = np.atleast_1d(shapely.linearrings(ring_xy, indices=ring_idx))
    polys = shapely.polygons(rings)
    # Depth = number of other rings strictly containing this ring's first vertex (rings are
    # disjoint, so one vertex decides). A vertex on its own ring is not "within" it.
    probe = shapely.get_point(rings, 0)
    tree = shapely.STRtree(polys)
    pt_idx, poly_idx = tree.query(probe, predicate="within")
    depth = np.bincount(pt_idx, minlength=rings.size)
    shells = np.nonzero(depth % 2 == 0)[0]
    holes_of: dict[int, list[int]] = {int(s): [] for s in shells}
    hole_pairs = depth[pt_idx] % 2 == 1
    # A hole's parent is the enclosing ring exactly one level shallower.
    parent_ok = hole_pairs & (depth[poly_idx] == depth[pt_idx] - 1)
    for hole, parent in zip(pt_idx[parent_ok], poly_idx[parent_ok], strict=True):
        holes_of[int(parent)].append(int(hole))
    # Exterior counter-clockwise, holes clockwise (RFC 7946): geodesic area tools such as
    # pyproj's Geod.geometry_area_perimeter sign areas by orientation.
    out = [
        orient(shapely.Polygon(rings[s], [rings[k] for k in holes_of[int(s)]]), sign=1.0)
        for s in shells
    ]
    return shapely.MultiPolygon(out)


def grid_isopleths(
    grid: KdeGrid, levels: Sequence[float] = (50.0, 95.0)
) -> dict[float, BaseGeometry]:
    """Isopleth polygons of an existing grid: ``{level: Polygon | MultiPolygon}``.

    Region for p % = {density >= isopleth_threshold(grid, p)}, contoured with marching
    squares on the node values, so boundaries are piecewise linear with vertices on grid
    edges (area error well under one cell along the boundary). Disjoint patches come back
    as a MultiPolygon, interior unused areas as holes. A single patch is returned as a
    Polygon. Exteriors are counter-clockwise and holes clockwise.
    """
    out: dict[float, BaseGeometry] = {}
    ps = _check_levels(levels)
    for p, t in zip(ps, _thresholds(grid.density, ps), strict=True):
        region = _marching_squares(grid.xs, grid.ys, grid.density, t)
        out[p] = region.geoms[0] if len(region.geoms) == 1 else region
    return out


def kde_isopleths(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    levels: Sequence[float] = (50.0, 95.0),
    bandwidth: float | Literal["ref"] = "ref",
    grid_size: int = 256,
    weights: npt.ArrayLike | None = None,
) -> dict[float, BaseGeometry]:
    """KDE home-range isopleths ``{level: geometry}`` in the units of x, y.

    See ``kde_grid`` for the estimator and ``grid_isopleths`` for the contouring.
    Levels are percentages in (0, 100); 100 % is not defined for a Gaussian kernel.
    """
    return grid_isopleths(kde_grid(x, y, bandwidth, grid_size, weights), levels)


# --------------------------------------------------------------------------- top level


@dataclass(frozen=True)
class HomeRange:
    """One home-range estimate. ``area_km2`` is measured in the equal-area projection."""

    method: Literal["mcp", "kde"]
    level: float
    area_km2: float
    geometry_lonlat: BaseGeometry
    n_fixes: int
    bandwidth_m: float | None


def _to_lonlat(geom: BaseGeometry, inverse: Projector, max_seg: float) -> BaseGeometry:
    if geom.is_empty:
        return geom
    # Densify first: a straight edge in the projection is a curve in lon/lat.
    dense = shapely.segmentize(geom, max_seg)

    def inv(xy: FloatArray) -> FloatArray:
        lo, la = inverse(xy[:, 0], xy[:, 1])
        return np.column_stack([lo, la])

    return shapely.transform(dense, inv)


def home_ranges(
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    mcp_levels: Sequence[float] = (100.0, 95.0),
    kde_levels: Sequence[float] = (50.0, 95.0),
    grid_size: int = 256,
) -> list[HomeRange]:
    """MCP and reference-bandwidth KDE home ranges of one animal's fixes.

    Fixes with a NaN lon or lat (failed GPS fixes) are dropped; ``n_fixes`` counts the rest.
    With fewer than ``MIN_FIXES`` (5) usable fixes the result is ``[]``: no estimate, rather
    than an area of 0 that would read as a real, tiny range. If all fixes coincide the MCPs
    are empty polygons (area 0) and the KDE entries are omitted (h_ref = 0).
    Output order: MCPs in ``mcp_levels`` order, then KDEs in ``kde_levels`` order.
    Polygon edges are densified to <= 1/200 of the range's extent (>= 1 m) before the
    inverse projection; longitudes may exceed ±180 near the antimeridian (see
    ``equal_area_projection``). Raises ValueError for ±inf or |lat| > 90.
    """
    lon_a, lat_a = _as_float_pair(lon, lat, "lon and lat")
    if np.any(np.isinf(lon_a)) or np.any(np.isinf(lat_a)):
        raise ValueError("lon/lat must not be infinite")
    ok = ~(np.isnan(lon_a) | np.isnan(lat_a))
    lon_a, lat_a = lon_a[ok], lat_a[ok]
    n = int(lon_a.size)
    if n < MIN_FIXES:
        return []
    forward, inverse = equal_area_projection(lon_a, lat_a)
    x, y = forward(lon_a, lat_a)
    extent = math.hypot(float(np.ptp(x)), float(np.ptp(y)))
    max_seg = max(extent / 200.0, 1.0)

    out: list[HomeRange] = []
    for p in mcp_levels:
        poly = mcp(x, y, p)
        out.append(
            HomeRange("mcp", float(p), poly.area / 1e6, _to_lonlat(poly, inverse, max_seg), n, None)
        )
    if kde_levels and reference_bandwidth(x, y) > 0.0:
        grid = kde_grid(x, y, "ref", grid_size)
        for p, geom in grid_isopleths(grid, kde_levels).items():
            out.append(
                HomeRange(
                    "kde",
                    p,
                    geom.area / 1e6,
                    _to_lonlat(geom, inverse, max_seg),
                    n,
                    grid.bandwidth,
                )
            )
    return out
