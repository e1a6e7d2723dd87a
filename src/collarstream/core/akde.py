"""Autocorrelated kernel density home ranges (AKDE, Fleming et al. 2015).

A KDE treats fixes as independent. GPS fixes minutes or hours apart are not: an animal
that spent three days in one valley contributes hundreds of fixes that say little more
than one would. With the reference bandwidth the KDE then hugs the places visited
during the track and underestimates the range the animal uses (strongly so when the
track spans only a few range-crossing times). AKDE fits a continuous-time movement
model to the track and chooses the bandwidth that minimises the mean integrated squared
error of the KDE *for that autocorrelation*.

What is here, exactly:

* **Movement models** (``fit_iid``, ``fit_ou``, ``select_model``): IID Gaussian, and the
  Ornstein-Uhlenbeck position process (a stationary Gaussian range with mean ``mean``,
  covariance ``sigma`` and position autocorrelation ``exp(-lag / tau)``), fitted by exact
  maximum likelihood for irregular sampling. For a given tau the OU likelihood factorises
  into independent innovations, so the mean (GLS) and covariance come in closed form and
  only tau is searched (bounded, on log tau). The model with the lower AICc is kept.
* **Bandwidth** (``akde_bandwidth``): H = h² Σ, h minimising the exact MISE of a Gaussian
  kernel estimate for a Gaussian range whose fixes are correlated as the model says::

      MISE(h) · 2π|Σ|^½ = ½ − 2/(2 + h²) + (1/n²) Σ_ij 1 / (2h² + 2(1 − ρ_ij))

  (ρ_ij the model's correlation between fixes i and j; with ρ_ij = 0 off the diagonal it
  is the textbook IID normal-reference MISE). The n² pair correlations are counted once
  into fine log-spaced bins of 1 − ρ, so each trial h costs a few thousand terms.
* **Density** (``akde``): the data are whitened by Σ^-½, a fixed isotropic bandwidth h KDE
  is computed there on the usual binned-FFT grid (``homerange.kde_grid``), and the
  isopleths are mapped back by the affine map Σ^½ (exact for polygons; areas scale by
  |Σ|^½).

What is not here (ctmm does it, and its numbers will differ from ours): the OUF model
(velocity autocorrelation, which fine-scale GPS tracks need) and model selection among
more than IID/OU; REML/pHREML and the small-sample debiasing of AKDEc (Fleming &
Calabrese 2017), which removes the kernel's variance inflation (for a Gaussian range any
KDE's area is about (1 + h²) times the truth, and AKDE's larger h inflates more);
optimal weights for irregular sampling; telemetry error. So this is the 2015 estimator.
Validated against simulation, where the true range is known (tests/test_akde.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity
from scipy.optimize import minimize_scalar
from shapely.geometry.base import BaseGeometry

from collarstream.core.homerange import KdeGrid, grid_isopleths, kde_grid

FloatArray = npt.NDArray[np.float64]

# The n² pair correlations are counted in this many log-spaced bins of 1 - rho.
PAIR_BINS = 8192
_U_MIN = 1e-12
# Rows of pairs per chunk when counting them (bounds memory to a few MB).
_PAIR_CHUNK = 4_000_000
# Fewer range crossings (span / tau) than this: no range (see MovementModel).
MIN_RANGE_CROSSINGS = 1.0
# Search range of the whitened bandwidth h.
_H_RANGE = (1e-3, 20.0)


@dataclass(frozen=True)
class MovementModel:
    """A stationary Gaussian range and how positions are correlated in time."""

    kind: Literal["iid", "ou"]
    mean: FloatArray  # (2,) metres
    sigma: FloatArray  # (2, 2) stationary covariance, m²
    tau_s: float  # position autocorrelation time (0 for IID)
    log_likelihood: float
    aicc: float
    n: int
    span_s: float  # first to last fix

    @property
    def range_crossings(self) -> float | None:
        """span / tau: roughly how many independent looks at the range the track holds
        (the OU area estimate's effective sample size is of this order). A handful or
        fewer: the range is barely established, whatever the area says. None for IID."""
        return None if self.kind == "iid" else self.span_s / self.tau_s

    @property
    def shows_a_range(self) -> bool:
        """False when the track is shorter than one autocorrelation time (a migration,
        a dispersal): there is no range to estimate, and an AKDE would be a Gaussian
        blown up to the scale of the whole journey."""
        crossings = self.range_crossings
        return crossings is None or crossings >= MIN_RANGE_CROSSINGS

    def correlation(self, lag_s: FloatArray) -> FloatArray:
        if self.kind == "iid":
            return (np.asarray(lag_s) == 0).astype(np.float64)
        return np.exp(-np.abs(np.asarray(lag_s, np.float64)) / self.tau_s)


def _aicc(log_l: float, k: int, n_obs: int) -> float:
    return -2.0 * log_l + 2.0 * k + 2.0 * k * (k + 1) / max(n_obs - k - 1, 1)


def _check(t_s: FloatArray, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    t = np.asarray(t_s, np.float64)
    xy = np.column_stack([np.asarray(x, np.float64), np.asarray(y, np.float64)])
    if t.ndim != 1 or t.size != xy.shape[0]:
        raise ValueError("t, x and y must be 1-D and of one length")
    if t.size < 3:
        raise ValueError("need at least 3 fixes to fit a movement model")
    if not (np.isfinite(t).all() and np.isfinite(xy).all()):
        raise ValueError("t, x and y must be finite")
    if not (np.diff(t) > 0).all():
        raise ValueError("times must be strictly increasing (sort, drop duplicate times)")
    return t, xy


def fit_iid(x: FloatArray, y: FloatArray, span_s: float = 0.0) -> MovementModel:
    """Independent Gaussian fixes, by maximum likelihood."""
    xy = np.column_stack([np.asarray(x, np.float64), np.asarray(y, np.float64)])
    n = xy.shape[0]
    mean = xy.mean(axis=0)
    d = xy - mean
    sigma = d.T @ d / n
    det = float(np.linalg.det(sigma))
    if not det > 0:
        raise ValueError("the fixes do not span an area (collinear or coincident)")
    log_l = -n * math.log(2 * math.pi) - n - 0.5 * n * math.log(det)
    return MovementModel("iid", mean, sigma, 0.0, log_l, _aicc(log_l, 5, 2 * n), n, span_s)


def _ou_profile(t: FloatArray, xy: FloatArray, tau: float) -> tuple[float, FloatArray, FloatArray]:
    """Log-likelihood at tau, with the mean and covariance that maximise it."""
    dt = np.diff(t)
    rho = np.exp(-dt / tau)
    one_m = -np.expm1(-2.0 * dt / tau)  # 1 - rho², accurate when rho is near 1
    w = np.concatenate([[1.0], 1.0 / one_m])  # innovation precision factors
    c = np.concatenate([[1.0], 1.0 - rho])
    a = np.vstack([xy[:1], xy[1:] - rho[:, None] * xy[:-1]])
    mean = (w * c) @ a / float(np.sum(w * c * c))
    e = a - c[:, None] * mean
    n = t.size
    sigma = (e * w[:, None]).T @ e / n
    det = float(np.linalg.det(sigma))
    if not det > 0:
        return -math.inf, mean, sigma
    log_l = -n * math.log(2 * math.pi) - n - 0.5 * n * math.log(det) - float(np.log(one_m).sum())
    return log_l, mean, sigma


def fit_ou(t_s: FloatArray, x: FloatArray, y: FloatArray) -> MovementModel:
    """Ornstein-Uhlenbeck position process by exact maximum likelihood (tau searched on
    a log scale between a tenth of the shortest interval and ten times the span)."""
    t, xy = _check(t_s, x, y)
    lo = math.log(float(np.diff(t).min()) / 10.0)
    hi = math.log((t[-1] - t[0]) * 10.0)
    res = minimize_scalar(
        lambda lt: -_ou_profile(t, xy, math.exp(lt))[0],
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-5},
    )
    tau = math.exp(float(res.x))
    log_l, mean, sigma = _ou_profile(t, xy, tau)
    n = t.size
    span = float(t[-1] - t[0])
    return MovementModel("ou", mean, sigma, tau, log_l, _aicc(log_l, 6, 2 * n), n, span)


def select_model(t_s: FloatArray, x: FloatArray, y: FloatArray) -> MovementModel:
    """IID or OU, whichever has the lower AICc."""
    t, xy = _check(t_s, x, y)
    iid = fit_iid(xy[:, 0], xy[:, 1], float(t[-1] - t[0]))
    ou = fit_ou(t, xy[:, 0], xy[:, 1])
    return ou if ou.aicc < iid.aicc else iid


@dataclass(frozen=True)
class PairCorrelations:
    """Ordered pairs (i != j) counted by 1 - rho in log-spaced bins: `count` per bin and
    `u`, the mean 1 - rho of the pairs in it (so the sum of the convex 1/(2h² + 2u) over
    a bin is off only by its spread within the bin, ~1e-6 relative); and n."""

    n: int
    u: FloatArray
    count: FloatArray


def pair_correlations(t_s: FloatArray, model: MovementModel) -> PairCorrelations:
    """The model's correlations between all pairs of fix times, counted in bins."""
    t = np.asarray(t_s, np.float64)
    n = t.size
    edges = np.geomspace(_U_MIN, 1.0, PAIR_BINS + 1)
    count = np.zeros(PAIR_BINS)
    u_sum = np.zeros(PAIR_BINS)
    if model.kind == "ou":
        rows = max(1, _PAIR_CHUNK // max(n, 1))
        for i0 in range(0, n - 1, rows):
            i1 = min(n - 1, i0 + rows)
            lag = t[None, :] - t[i0:i1, None]  # row i: lags to every j
            upper = np.arange(n)[None, :] > np.arange(i0, i1)[:, None]
            u = -np.expm1(-lag[upper] / model.tau_s)
            k = np.clip(np.searchsorted(edges, np.maximum(u, _U_MIN)) - 1, 0, PAIR_BINS - 1)
            count += np.bincount(k, minlength=PAIR_BINS)
            u_sum += np.bincount(k, weights=u, minlength=PAIR_BINS)
    else:
        count[-1], u_sum[-1] = 1.0, 1.0  # uncorrelated: 1 - rho = 1 for every pair
    u = np.divide(u_sum, count, out=np.sqrt(edges[:-1] * edges[1:]), where=count > 0)
    # (i, j) and (j, i); IID: all n (n - 1) of them at u = 1.
    count = 2.0 * count if model.kind == "ou" else count * n * (n - 1.0)
    return PairCorrelations(n, u, count)


def mise(h: float, pairs: PairCorrelations) -> float:
    """MISE of the whitened KDE with bandwidth h, times 2π|Σ|^½ (see the module doc)."""
    h2 = h * h
    n = pairs.n
    s = n / (2.0 * h2) + float(np.sum(pairs.count / (2.0 * h2 + 2.0 * pairs.u)))
    return 0.5 - 2.0 / (2.0 + h2) + s / (n * n)


def akde_bandwidth(t_s: FloatArray, model: MovementModel) -> float:
    """The whitened bandwidth h minimising the MISE under the model (H = h² Σ)."""
    pairs = pair_correlations(t_s, model)
    lo, hi = (math.log(v) for v in _H_RANGE)
    res = minimize_scalar(
        lambda lh: mise(math.exp(lh), pairs),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return math.exp(float(res.x))


@dataclass(frozen=True)
class Akde:
    """An AKDE: the model, the whitened bandwidth, and the density in whitened space."""

    model: MovementModel
    h: float
    grid: KdeGrid  # in whitened coordinates z = Σ^-½ (xy - mean)
    _root: FloatArray  # Σ^½

    @property
    def bandwidth_m(self) -> float:
        """The isotropic bandwidth of the same kernel area: h |Σ|^¼."""
        return self.h * float(np.linalg.det(self.model.sigma)) ** 0.25

    def isopleths(self, levels: tuple[float, ...] = (50.0, 95.0)) -> dict[float, BaseGeometry]:
        """{level: polygon in the input's metres}, from the whitened grid's isopleths."""
        (a, b), (c, d) = self._root
        mx, my = (float(v) for v in self.model.mean)
        out = {}
        for p, geom in grid_isopleths(self.grid, levels).items():
            out[p] = shapely.affinity.affine_transform(geom, [a, b, c, d, mx, my])
        return out


def akde(t_s: FloatArray, x: FloatArray, y: FloatArray, grid_size: int = 256) -> Akde:
    """The AKDE of a track (times in seconds, strictly increasing; x, y in metres of an
    equal-area projection)."""
    t, xy = _check(t_s, x, y)
    model = select_model(t, xy[:, 0], xy[:, 1])
    h = akde_bandwidth(t, model)
    vals, vecs = np.linalg.eigh(model.sigma)
    root = vecs @ np.diag(np.sqrt(vals)) @ vecs.T
    whiten = vecs @ np.diag(1.0 / np.sqrt(vals)) @ vecs.T
    z = (xy - model.mean) @ whiten.T
    grid = kde_grid(z[:, 0], z[:, 1], h, grid_size)
    return Akde(model, h, grid, root)
