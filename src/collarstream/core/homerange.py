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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.fft as sfft
import shapely
from scipy.signal import fftconvolve
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from collarstream.core.laea import Laea

FloatArray = npt.NDArray[np.float64]
BandwidthMethod = Literal["ref", "lscv", "plugin"]
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


# The projection centre is rounded to this many degrees (~11 km of latitude). Any
# centre gives exact areas (the projection is equal-area everywhere); only shape
# distortion, ~(d / 2R)² at distance d from the centre, depends on it: for a range of
# 50 km seen from a centre up to 6 km off, under 2e-5. (Rounding let an animal keep one
# cached pyproj pair as its range drifted; with core.laea a new centre costs
# microseconds, and the rounding stays so that results stay as they were.)
_CENTRE_STEP_DEG = 0.1


def _snap_centre(deg: float) -> float:
    return round(round(deg / _CENTRE_STEP_DEG) * _CENTRE_STEP_DEG, 9)


def equal_area_laea(lon: npt.ArrayLike, lat: npt.ArrayLike) -> Laea:
    """The projection `equal_area_projection` uses for these fixes, as a `core.laea.Laea`
    (for `core.laea.forward_many`)."""
    lon_a, lat_a = _as_float_pair(lon, lat, "lon and lat")
    ok = np.isfinite(lon_a) & np.isfinite(lat_a)
    if not ok.any():
        raise ValueError("need at least one finite fix to centre the projection")
    if np.any(np.abs(lat_a[ok]) > 90.0):
        raise ValueError("latitude outside [-90, 90]")
    lon0, lat0 = _spherical_centre(lon_a[ok], lat_a[ok])
    return Laea(_snap_centre(lon0), _snap_centre(lat0))


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

    The centre is rounded to 0.1°. The projection is `core.laea.Laea` (numpy, PROJ's
    formulas, within a micrometre of pyproj's forward): a new centre costs ~4 µs where
    two pyproj Transformers cost ~8 ms, which in catch-ups (an excursion reference per
    animal per day, wherever the animal went) was ~8 % of the reducer's time.
    """
    proj = equal_area_laea(lon, lat)

    def forward(lon_in: npt.ArrayLike, lat_in: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        x, y = proj.forward(np.asarray(lon_in, np.float64), np.asarray(lat_in, np.float64))
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def inverse(x_in: npt.ArrayLike, y_in: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        lo, la = proj.inverse(np.asarray(x_in, np.float64), np.asarray(y_in, np.float64))
        return np.asarray(lo, dtype=np.float64), np.asarray(la, dtype=np.float64)

    return forward, inverse


# --------------------------------------------------------------------------------- MCP


def _check_xy(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    xa, ya = _as_float_pair(x, y, "x and y")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError("x and y must be finite (drop missing fixes first)")
    return xa, ya


def mcp(x: npt.ArrayLike, y: npt.ArrayLike, percent: float = 100.0) -> shapely.Polygon:
    """Minimum convex polygon of the ``percent`` % of fixes closest to the centroid.

    adehabitatHR convention (``mcp.r``: ``cdg <- apply(xy, 2, mean)``; ``di <= quantile(di,
    percent/100)``): the centre is the arithmetic **mean** of *all* fixes (not the median,
    and not recomputed after dropping), a fix is kept when its distance to it is <= the
    ``percent/100`` quantile of all distances (linear interpolation, R type 7), so ties at
    the cut-off are all kept. amt's ``hr_mcp`` takes the same quantile of *squared*
    distances from ``colMeans``; the interpolated cut lies between the same two order
    statistics either way, so the kept fixes are identical.

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
class BandwidthChoice:
    """A kernel bandwidth and how it was chosen.

    ``method`` is ``"ref"``, ``"lscv"``, ``"plugin"`` or ``"fixed"`` (a number was given).
    For ``"lscv"``, ``h_grid`` and ``score`` hold the searched bandwidths and their LSCV
    criterion, and ``at_edge`` is True when the minimum is the first or last grid value
    (adehabitatHR: "The algorithm did not converge within the specified range of hlim"):
    the true minimiser lies outside the range, typically h -> 0 for tracks with repeated
    or very clumped fixes.
    """

    h: float
    method: Literal["ref", "lscv", "plugin", "fixed"]
    at_edge: bool = False
    h_grid: FloatArray = field(default_factory=lambda: np.empty(0))
    score: FloatArray = field(default_factory=lambda: np.empty(0))


class BandwidthWarning(UserWarning):
    """The LSCV minimum is at the edge of the searched bandwidth range."""


@dataclass(frozen=True)
class KdeGrid:
    """Kernel density on a regular grid.

    ``density[i, j]`` is the density (1/m² if x, y are metres) at ``(xs[j], ys[i])``;
    cells are square with side ``xs[1] - xs[0]``; ``bandwidth`` is the kernel sd used and
    ``selection`` says how it was chosen.
    """

    xs: FloatArray
    ys: FloatArray
    density: FloatArray
    bandwidth: float
    selection: BandwidthChoice | None = None

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


def _linear_bin(
    xa: FloatArray,
    ya: FloatArray,
    w: FloatArray,
    x0: float,
    y0: float,
    cell: float,
    nx: int,
    ny: int,
) -> FloatArray:
    """Linear binning: each fix's weight split bilinearly onto its cell's 4 corner nodes."""
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
    return np.bincount(idx, weights=wts, minlength=nx * ny).reshape(ny, nx)


# ----------------------------------------------------------------- bandwidth selection
#
# Both data-driven selectors need sums over all pairs of fixes, Σ_ij K(x_i - x_j), for
# radial Gaussian-type kernels K. On linearly binned counts c that is Σ_Δ A(Δ) K(Δ) with
# A the autocorrelation of c, computed once by FFT; every bandwidth then costs one small
# matrix product (separable Gaussians) or one kernel evaluation over the lag window,
# instead of the O(n²) pair loop adehabitatHR runs. Binning error is O((cell / h)²).

# Cells per smallest searched LSCV bandwidth: the binned criterion matches the exact one
# to ~1e-3 relative at h = 2 cells (measured in tests/test_homerange.py).
_LSCV_CELLS_PER_HMIN = 2.0
# Bins along the longer axis for the plug-in pilot estimates (pilots are >= ~0.1 σ, i.e.
# several cells even for 10^7 fixes).
_PLUGIN_BINS = 400


def _pair_autocorrelation(
    xa: FloatArray, ya: FloatArray, cell: float, max_lag_m: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(A, lag_y, lag_x): A[i, j] ≈ Σ_pairs (incl. i = j) at lag (lag_y[i], lag_x[j]) m."""
    x0, y0 = float(xa.min()), float(ya.min())
    nx = max(2, math.ceil(float(np.ptp(xa)) / cell) + 2)
    ny = max(2, math.ceil(float(np.ptp(ya)) / cell) + 2)
    counts = _linear_bin(xa, ya, np.ones(xa.size), x0, y0, cell, nx, ny)
    wx = min(nx - 1, math.ceil(max_lag_m / cell))
    wy = min(ny - 1, math.ceil(max_lag_m / cell))
    # Padding to n + w keeps lags up to w free of circular wrap-around.
    ly, lx = sfft.next_fast_len(ny + wy), sfft.next_fast_len(nx + wx, real=True)
    f = sfft.rfft2(counts, s=(ly, lx))
    full = sfft.irfft2(f.real**2 + f.imag**2, s=(ly, lx))
    iy = np.r_[ly - wy : ly, 0 : wy + 1]
    ix = np.r_[lx - wx : lx, 0 : wx + 1]
    lags_y = cell * np.arange(-wy, wy + 1, dtype=np.float64)
    lags_x = cell * np.arange(-wx, wx + 1, dtype=np.float64)
    return full[np.ix_(iy, ix)], lags_y, lags_x


def _binned_self_moments(xa: FloatArray, ya: FloatArray, cell: float) -> FloatArray:
    """Moments giving each fix's pairing with *itself* after linear binning.

    A fix at fractional offset t from its left node puts 1 - t and t on two nodes, so its
    self-pairs along x sit at lag 0 with weight a = (1 - t)² + t² and at lag ±cell with
    total weight b = 2 t (1 - t); in 2-D the weights multiply. Returns
    [Σ a_x a_y, Σ (a_x b_y + b_x a_y), Σ b_x b_y] over the fixes (origin at the minimum,
    the same anchor ``_pair_autocorrelation`` bins from).
    """
    tx = np.mod((xa - xa.min()) / cell, 1.0)
    ty = np.mod((ya - ya.min()) / cell, 1.0)
    ax, bx = (1 - tx) ** 2 + tx**2, 2 * tx * (1 - tx)
    ay, by = (1 - ty) ** 2 + ty**2, 2 * ty * (1 - ty)
    return np.array([ax @ ay, ax @ by + bx @ ay, bx @ by])


def _binned_self_sum(moments: FloatArray, cell: float, s: FloatArray) -> FloatArray:
    """The i = j part of ``_gauss_pair_sums`` for sd ``s``, removed exactly.

    Subtracting n φ_s(0) instead (the usual binned-LSCV shortcut) leaves an error of
    O((cell/s)²) n φ_s(0), which dominates the criterion at small h where its two halves
    nearly cancel; the exact binned self term removes it (checked in the tests).
    """
    e = np.exp(-0.5 * (cell / s) ** 2)
    g0_sq = 1.0 / (2.0 * math.pi * s * s)
    return g0_sq * (moments[0] + moments[1] * e + moments[2] * e * e)


def _gauss_pair_sums(
    a: FloatArray, lags_y: FloatArray, lags_x: FloatArray, s: FloatArray
) -> FloatArray:
    """Σ_Δ A(Δ) φ_s(Δ) for each sd in ``s`` (φ_s: isotropic bivariate normal density)."""
    gx = np.exp(-0.5 * (lags_x[:, None] / s) ** 2) / (math.sqrt(2 * math.pi) * s)
    gy = np.exp(-0.5 * (lags_y[:, None] / s) ** 2) / (math.sqrt(2 * math.pi) * s)
    return np.einsum("ik,ik->k", gy, a @ gx)


def lscv_score(pairs_h: FloatArray, pairs_h2: FloatArray, h: FloatArray, n: int) -> FloatArray:
    """adehabitatHR's LSCV criterion from off-diagonal pair sums (any units).

    ``pairs_h[k] = Σ_{i≠j} φ_h(x_i - x_j)`` and ``pairs_h2`` the same with sd √2·h, where
    φ_s is the bivariate normal density with covariance s² I. adehabitatHR's ``CVmise``
    (Worton 1995) computes ``1/(π h² n) + (2 Σ_{i<j}[e^{-d²/4h²} - 4 e^{-d²/2h²}] - 3n) /
    (4π h² n²)``, which simplifies to ``1/(4π h² n) + (pairs_h2 - 2 pairs_h) / n²``:
    the unbiased LSCV with n² in place of n(n - 1) in the leave-one-out term.
    """
    return 1.0 / (4.0 * math.pi * h * h * n) + (pairs_h2 - 2.0 * pairs_h) / float(n) ** 2


def lscv_bandwidth(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    hlim: tuple[float, float] = (0.1, 1.5),
    n_h: int = 100,
    max_bins: int = 1024,
) -> BandwidthChoice:
    """Least-squares cross-validation bandwidth, as adehabitatHR ``kernelUD(h="LSCV")``.

    Like adehabitatHR, the criterion (see ``lscv_score``) is evaluated at ``n_h`` = 100
    bandwidths evenly spaced over ``hlim × h_ref`` (default 0.1-1.5 h_ref) and the
    smallest value wins (no refinement: the answer is a grid value, as in R). If that is
    the first or last grid value the result has ``at_edge=True`` and a ``BandwidthWarning``
    is emitted, as adehabitatHR warns; widen ``hlim`` or use another selector.

    Pair sums come from linearly binned fixes (cell = h_min / 2, coarser only if that
    would need more than ``max_bins`` bins along the longer axis) and an FFT
    autocorrelation: O(n + bins² log bins + n_h · lags²) instead of adehabitatHR's O(n²)
    pair loop. Tested against the exact unbinned criterion: same minimiser to within one
    grid step (1.4 % of h_ref). Raises ValueError for < 2 fixes, coincident fixes, or a
    bad ``hlim``.
    """
    xa, ya = _check_xy(x, y)
    lo, hi = float(hlim[0]), float(hlim[1])
    if not (0.0 < lo < hi and math.isfinite(hi)) or n_h < 2:
        raise ValueError(f"need 0 < hlim[0] < hlim[1] and n_h >= 2, got {hlim}, {n_h}")
    href = reference_bandwidth(xa, ya)
    if href <= 0.0:
        raise ValueError("all fixes coincide: no bandwidth can be cross-validated")
    h = np.linspace(lo * href, hi * href, n_h)
    extent = max(float(np.ptp(xa)), float(np.ptp(ya)))
    cell = max(h[0] / _LSCV_CELLS_PER_HMIN, extent / (max_bins - 1))
    a, lags_y, lags_x = _pair_autocorrelation(
        xa, ya, cell, _KERNEL_CUTOFF_BW * math.sqrt(2.0) * h[-1]
    )
    n = xa.size
    self_moments = _binned_self_moments(xa, ya, cell)
    h2 = math.sqrt(2.0) * h
    pairs_h = _gauss_pair_sums(a, lags_y, lags_x, h) - _binned_self_sum(self_moments, cell, h)
    pairs_h2 = _gauss_pair_sums(a, lags_y, lags_x, h2) - _binned_self_sum(self_moments, cell, h2)
    score = lscv_score(pairs_h, pairs_h2, h, n)
    k = int(np.argmin(score))
    at_edge = k in (0, n_h - 1)
    if at_edge:
        warnings.warn(
            f"LSCV minimum at the edge of the search range (h = {h[k]:.4g}, hlim = {hlim} "
            "x h_ref): the algorithm did not converge within hlim; try to widen it",
            BandwidthWarning,
            stacklevel=2,
        )
    return BandwidthChoice(float(h[k]), "lscv", at_edge, h, score)


def _laplacian_power_kernel(r2: FloatArray, g: float, power: int) -> FloatArray:
    """Δ^power of the isotropic bivariate normal density with sd g, at squared radius r2.

    With u = r²/g²: Δφ = φ (u - 2)/g², Δ²φ = φ (u² - 8u + 8)/g⁴,
    Δ³φ = φ (u³ - 18u² + 72u - 48)/g⁶ (checked against finite differences in the tests).
    """
    u = r2 / (g * g)
    phi = np.exp(-0.5 * u) / (2.0 * math.pi * g * g)
    if power == 2:
        return phi * (u * u - 8.0 * u + 8.0) / g**4
    if power == 3:
        return phi * (((u - 18.0) * u + 72.0) * u - 48.0) / g**6
    raise ValueError("power must be 2 or 3")


def _psi_hat(
    a: FloatArray, lags_y: FloatArray, lags_x: FloatArray, g: float, p: int, n: int
) -> float:
    """ψ̂ = n⁻² Σ_ij Δ^p L_g(x_i - x_j), diagonal included (Wand & Jones 1994)."""
    r2 = lags_y[:, None] ** 2 + lags_x[None, :] ** 2
    return float(np.sum(a * _laplacian_power_kernel(r2, g, p))) / float(n) ** 2


def plugin_bandwidth(
    x: npt.ArrayLike, y: npt.ArrayLike, bins: int = _PLUGIN_BINS
) -> BandwidthChoice:
    """Two-stage direct plug-in bandwidth for the isotropic kernel H = h² I.

    The AMISE of a bivariate Gaussian KDE with H = h² I is 1/(4π n h²) + h⁴ ψ₄ / 4 with
    ψ₄ = ∫ (Δf)²; its minimiser is h = (2π n ψ₄)^(-1/6). ψ₄ is estimated by a kernel
    functional estimator whose pilot bandwidth cancels the leading bias, which needs ψ₆;
    ψ₆ is estimated the same way from a normal-reference ψ₈ (two stages, the scheme of
    Wand & Jones 1994 that ks::Hpi uses, here restricted to a scalar h because our kernel
    is isotropic: it equals ks::Hpi.diag only when the two axes have the same spread).
    With σ² = (var x + var y) / 2 the normal-reference values are ψ₄ = 1/(2π σ⁶),
    ψ₆ = -3/(2π σ⁸), ψ₈ = 6/(π σ¹⁰), so for normal data h → σ n^(-1/6) = h_ref.
    Pair sums are binned (``bins`` along the longer axis) and FFT-autocorrelated as in
    ``lscv_bandwidth``. Raises ValueError for < 2 or coincident fixes.
    """
    xa, ya = _check_xy(x, y)
    href = reference_bandwidth(xa, ya)
    if href <= 0.0:
        raise ValueError("all fixes coincide: no plug-in bandwidth")
    n = xa.size
    sigma = href * n ** (1.0 / 6.0)
    extent = max(float(np.ptp(xa)), float(np.ptp(ya)))
    cell = extent / (max(bins, 8) - 1)
    a, lags_y, lags_x = _pair_autocorrelation(xa, ya, cell, 2.0 * extent)
    psi8 = 6.0 / (math.pi * sigma**10)
    # Pilot for ψ₆: n⁻¹ Δ³L_g(0) + g²/2 ψ₈ = 0 with Δ³L_g(0) = -48 / (2π g⁸).
    g6 = (48.0 / (math.pi * n * psi8)) ** 0.1
    psi6 = _psi_hat(a, lags_y, lags_x, g6, 3, n)
    if not psi6 < 0.0:  # ψ₆ = -∫|∇Δf|² < 0; a non-negative estimate is numerical noise
        psi6 = -3.0 / (2.0 * math.pi * sigma**8)
    # Pilot for ψ₄: n⁻¹ Δ²L_g(0) + g²/2 ψ₆ = 0 with Δ²L_g(0) = 8 / (2π g⁶).
    g4 = (-8.0 / (math.pi * n * psi6)) ** 0.125
    psi4 = _psi_hat(a, lags_y, lags_x, g4, 2, n)
    if not psi4 > 0.0:
        psi4 = 1.0 / (2.0 * math.pi * sigma**6)
    return BandwidthChoice(float((2.0 * math.pi * n * psi4) ** (-1.0 / 6.0)), "plugin")


def select_bandwidth(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    bandwidth: float | BandwidthMethod = "ref",
    weights: npt.ArrayLike | None = None,
    hlim: tuple[float, float] = (0.1, 1.5),
) -> BandwidthChoice:
    """Resolve ``bandwidth`` ("ref", "lscv", "plugin" or metres) to a ``BandwidthChoice``.

    Weights are supported by "ref" and fixed bandwidths only (ValueError otherwise).
    """
    xa, ya = _check_xy(x, y)
    if isinstance(bandwidth, str):
        if bandwidth not in ("ref", "lscv", "plugin"):
            raise ValueError(
                f'bandwidth must be "ref", "lscv", "plugin" or a positive number, got {bandwidth!r}'
            )
        if bandwidth != "ref" and weights is not None:
            raise ValueError(f'weights are not supported with bandwidth="{bandwidth}"')
        if bandwidth == "lscv":
            return lscv_bandwidth(xa, ya, hlim)
        if bandwidth == "plugin":
            return plugin_bandwidth(xa, ya)
        h = reference_bandwidth(xa, ya, weights)
        if h <= 0.0:
            raise ValueError("all fixes coincide: the reference bandwidth is 0")
        return BandwidthChoice(h, "ref")
    h = float(bandwidth)
    if not (math.isfinite(h) and h > 0.0):
        raise ValueError(f"bandwidth must be positive and finite, got {bandwidth!r}")
    return BandwidthChoice(h, "fixed")


def kde_grid(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    bandwidth: float | BandwidthMethod = "ref",
    grid_size: int = 256,
    weights: npt.ArrayLike | None = None,
    hlim: tuple[float, float] = (0.1, 1.5),
    exact: bool = False,
) -> KdeGrid:
    """Fixed-kernel UD on a grid by linear binning + FFT convolution.

    ``exact=True`` sums the Gaussians at the nodes instead (no binning error; the kernel
    is separable, so it is one (ny x n) @ (n x nx) product): cheaper than the FFT for a
    few hundred fixes, the size of a month of 4-hourly fixes. It is summed in single
    precision (a float32 grid, a few 1e-7 of the peak density off the float64 sum: far below
    what any isopleth or bandwidth choice moves), at half the time.

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

    ``bandwidth``: metres, or ``"ref"`` (h_ref, adehabitatHR ``"href"``), ``"lscv"``
    (``lscv_bandwidth`` over ``hlim`` × h_ref, adehabitatHR ``"LSCV"``; may emit a
    ``BandwidthWarning``) or ``"plugin"`` (``plugin_bandwidth``). ``selection`` on the
    result records the choice.

    Raises ValueError for fewer than 2 fixes, non-finite input, a non-positive bandwidth,
    coincident fixes with a data-driven bandwidth, weights with "lscv"/"plugin", or
    grid_size < 8.
    """
    xa, ya = _check_xy(x, y)
    if xa.size < 2:
        raise ValueError("need at least 2 fixes for a KDE")
    if grid_size < 8:
        raise ValueError(f"grid_size must be >= 8, got {grid_size}")
    w = _normalised_weights(weights, xa.size)
    choice = select_bandwidth(xa, ya, bandwidth, weights, hlim)
    h = choice.h
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

    if exact:
        # Single precision, offsets from the grid's first node (so no large coordinates
        # are rounded): half the time of float64 for the exponentials and the product.
        def gauss(nodes: FloatArray, at: FloatArray, origin: float) -> FloatArray:
            u = ((nodes - origin) / h).astype(np.float32)
            d = u[None, :] - ((at - origin) / h).astype(np.float32)[:, None]
            d *= d
            d *= np.float32(-0.5)
            return np.exp(d, out=d)  # (n, nodes)

        ey = gauss(ys, ya, y0)
        ey *= (w / (2.0 * math.pi * h * h)).astype(np.float32)[:, None]
        density = ey.T @ gauss(xs, xa, x0)  # (ny, nx)
        return KdeGrid(xs=xs, ys=ys, density=density, bandwidth=h, selection=choice)
    binned = _linear_bin(xa, ya, w, x0, y0, cell, nx, ny)

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
    return KdeGrid(xs=xs, ys=ys, density=density, bandwidth=h, selection=choice)


def _check_levels(levels: Sequence[float]) -> list[float]:
    out = [float(p) for p in levels]
    for p in out:
        if not 0.0 < p < 100.0:
            raise ValueError(f"KDE isopleth levels must be in (0, 100), got {p}")
    return out


_BLOCK = 256


def _thresholds(density: FloatArray, levels: Sequence[float]) -> list[float]:
    # One descending sort serves every level. np.cumsum is a scalar loop (~3 ns a node,
    # as long as the sort): the cumulative mass is found by blocks instead (vectorized
    # block sums, their cumulative sum, then one block summed node by node per level).
    d = np.sort(density, axis=None)[::-1]
    n = d.size
    pad = -n % _BLOCK
    blocks = np.concatenate([d, np.zeros(pad, d.dtype)]).reshape(-1, _BLOCK)
    before = np.cumsum(blocks.sum(axis=1, dtype=np.float64))
    total = float(before[-1])
    if not total > 0.0:
        raise ValueError("the density grid is empty")
    out = []
    for p in levels:
        # First node at which the descending cumulative mass reaches p % of the total.
        target = p / 100.0 * total
        b = min(int(np.searchsorted(before, target)), before.size - 1)
        start = float(before[b - 1]) if b else 0.0
        within = start + np.cumsum(blocks[b], dtype=np.float64)
        k = min(b * _BLOCK + int(np.searchsorted(within, target)), n - 1)
        nxt = float(d[k + 1]) if k + 1 < n else 0.0
        out.append(0.5 * (float(d[k]) + nxt))
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
    """One home-range estimate. ``area_km2`` is measured in the equal-area projection.

    ``bandwidth_method`` is how a KDE's bandwidth was chosen ("ref", "lscv", "plugin",
    "fixed"; None for MCPs; for AKDE the movement model, see ``core.akde``);
    ``bandwidth_at_edge`` is True when an LSCV minimum sat at the edge of the searched
    range (see ``BandwidthChoice``).
    """

    method: Literal["mcp", "kde", "akde"]
    level: float
    area_km2: float
    geometry_lonlat: BaseGeometry
    n_fixes: int
    bandwidth_m: float | None
    bandwidth_method: str | None = None
    bandwidth_at_edge: bool = False
    # AKDE only (bandwidth_method is then the movement model, "ou" or "iid"): the
    # position autocorrelation time and span / tau (see akde.MovementModel).
    tau_s: float | None = None
    range_crossings: float | None = None


def geojson_geometry(geom: BaseGeometry) -> dict[str, Any]:
    """GeoJSON of a range, as `shapely.geometry.mapping` gives it (lists for tuples),
    ring by ring with numpy instead of a Python iteration over every vertex (a home
    range's four polygons have thousands; `mapping` was a fifth of an estimate)."""
    z = bool(geom.has_z)

    def rings(poly: shapely.Polygon) -> list[Any]:
        return [
            shapely.get_coordinates(r, include_z=z).tolist()
            for r in (poly.exterior, *poly.interiors)
        ]

    if isinstance(geom, shapely.Polygon):
        return {"type": "Polygon", "coordinates": [] if geom.is_empty else rings(geom)}
    if isinstance(geom, shapely.MultiPolygon):
        return {"type": "MultiPolygon", "coordinates": [rings(p) for p in geom.geoms]}
    return dict(shapely.geometry.mapping(geom))


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
    bandwidth: float | BandwidthMethod = "ref",
    hlim: tuple[float, float] = (0.1, 1.5),
    t_ms: npt.ArrayLike | None = None,
) -> list[HomeRange]:
    """MCP and KDE home ranges of one animal's fixes; with their times ``t_ms``, also
    the AKDE (``core.akde``) at the KDE levels.

    Fixes with a NaN lon or lat (failed GPS fixes) are dropped; ``n_fixes`` counts the rest.
    With fewer than ``MIN_FIXES`` (5) usable fixes the result is ``[]``: no estimate, rather
    than an area of 0 that would read as a real, tiny range. If all fixes coincide the MCPs
    are empty polygons (area 0) and the KDE entries are omitted (no bandwidth exists).
    ``bandwidth`` and ``hlim`` go to ``kde_grid`` ("ref" by default: cheap and stable for
    the live reducer; "lscv" may warn, see ``lscv_bandwidth``).
    Output order: MCPs in ``mcp_levels`` order, then KDEs in ``kde_levels`` order, then
    AKDEs (omitted when the fixes span no area, or when the track is shorter than one
    autocorrelation time and so shows no range; fixes at a time already seen are
    dropped for it, the first kept).
    Polygon edges are densified to <= 1/200 of the range's extent (>= 1 m) before the
    inverse projection; longitudes may exceed ±180 near the antimeridian (see
    ``equal_area_projection``). Raises ValueError for ±inf or |lat| > 90.
    """
    lon_a, lat_a = _as_float_pair(lon, lat, "lon and lat")
    if np.any(np.isinf(lon_a)) or np.any(np.isinf(lat_a)):
        raise ValueError("lon/lat must not be infinite")
    ok = ~(np.isnan(lon_a) | np.isnan(lat_a))
    lon_a, lat_a = lon_a[ok], lat_a[ok]
    t_a = None if t_ms is None else np.asarray(t_ms, np.int64)[ok]
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
        grid = kde_grid(x, y, bandwidth, grid_size, hlim=hlim)
        sel = grid.selection
        for p, geom in grid_isopleths(grid, kde_levels).items():
            out.append(
                HomeRange(
                    "kde",
                    p,
                    geom.area / 1e6,
                    _to_lonlat(geom, inverse, max_seg),
                    n,
                    grid.bandwidth,
                    None if sel is None else sel.method,
                    False if sel is None else sel.at_edge,
                )
            )
    if kde_levels and t_a is not None:
        out += _akde_ranges(t_a, x, y, kde_levels, grid_size, inverse, max_seg)
    return out


def _akde_ranges(
    t_ms: npt.NDArray[np.int64],
    x: FloatArray,
    y: FloatArray,
    levels: Sequence[float],
    grid_size: int,
    inverse: Projector,
    max_seg: float,
) -> list[HomeRange]:
    from collarstream.core.akde import akde

    order = np.argsort(t_ms, kind="stable")
    first = np.concatenate([[True], np.diff(t_ms[order]) > 0])
    keep = order[first]
    try:
        est = akde(t_ms[keep] / 1000.0, x[keep], y[keep], grid_size)
    except ValueError:
        return []  # too few fixes, or no area
    m = est.model
    if not m.shows_a_range:
        return []  # a journey, not a range (migrating cuckoos)
    return [
        HomeRange(
            "akde",
            p,
            geom.area / 1e6,
            _to_lonlat(geom, inverse, max_seg),
            int(keep.size),
            est.bandwidth_m,
            m.kind,
            False,
            m.tau_s,
            m.range_crossings,
        )
        for p, geom in est.isopleths(tuple(_check_levels(levels))).items()
    ]


_MS_PER_DAY = 86_400_000


def home_ranges_window(
    t_ms: npt.ArrayLike,
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    window_days: float = 30.0,
    through_ms: int | None = None,
    **kw: Any,
) -> list[HomeRange]:
    """Home ranges of the fixes in the ``window_days`` before ``through_ms``.

    The window is ``through_ms - window_days`` (exclusive) to ``through_ms`` (inclusive),
    so consecutive windows tile time without sharing a fix. ``through_ms`` defaults to
    the time of the last fix with a finite position. Input need not be sorted. Keyword
    arguments go to ``home_ranges`` (levels, grid_size, bandwidth, hlim); the same
    ``MIN_FIXES`` rule applies, so a window with < 5 fixes gives ``[]``. Sliding the window
    (e.g. monthly ``through_ms``) shows a range shift that the whole-track range smears
    over both areas. Raises ValueError for mismatched lengths or window_days <= 0.
    """
    t = np.asarray(t_ms, dtype=np.int64).ravel()
    lon_a, lat_a = _as_float_pair(lon, lat, "lon and lat")
    if t.size != lon_a.size:
        raise ValueError(f"t_ms and lon must have the same length, got {t.size}, {lon_a.size}")
    if not (math.isfinite(window_days) and window_days > 0.0):
        raise ValueError(f"window_days must be positive, got {window_days}")
    if through_ms is None:
        located = np.isfinite(lon_a) & np.isfinite(lat_a)
        if not located.any():
            return []
        through_ms = int(t[located].max())
    start = through_ms - round(window_days * _MS_PER_DAY)
    sel = (t > start) & (t <= through_ms)
    return home_ranges(lon_a[sel], lat_a[sel], **kw)
