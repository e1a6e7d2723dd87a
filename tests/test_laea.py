"""collarstream.core.laea against pyproj's +proj=laea, GeographicLib areas, and itself.

Points are drawn as (azimuth, distance <= 2,000 km) from the centre, so they wrap across
the antimeridian and over the poles exactly as an animal's fixes would.

Two tolerances need a word:

* Within a few hundred metres of a pole both PROJ's forward and ours lose digits
  (cos β = sqrt(1 - sin² β) of a sin β near 1): ~5e-3 m² / distance-to-pole each.
  ``_pole_slack_m`` allows for that and is < 1e-6 m farther than 20 km from a pole.
* PROJ <= 9.6 inverts the authalic latitude with Snyder's 3-term series, off by up to
  1.42e-8°; PROJ >= 9.7 and laea.py use Karney's exact series. The inverse is checked
  against pyproj's inverse with the tolerance of the installed PROJ, and against
  pyproj's *forward* (exact in every version) to 1e-9°.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import numpy.typing as npt
import pyproj
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pyproj import CRS, Geod, Transformer

from collarstream.core.laea import (
    _ES,
    _QP,
    A_M,
    Laea,
    authalic_from_geographic,
    forward_many,
    geographic_from_authalic,
)

FloatArray = npt.NDArray[np.float64]

WGS84 = Geod(ellps="WGS84")
PROJ_VERSION = tuple(int(p) for p in pyproj.proj_version_str.split(".")[:2])
# Max error of PROJ <= 9.6's 3-term authalic series (1.42e-8°, at 20.7° N/S), rounded up.
INVERSE_VS_PYPROJ_DEG = 1e-10 if PROJ_VERSION >= (9, 7) else 1.5e-8
FORWARD_TOL_M = 1e-6
INVERSE_TOL_DEG = 1e-9
ROUND_TRIP_TOL_DEG = 1e-11
M_PER_DEG = 110_000.0  # a lower bound on a degree of arc, for turning metres into degrees

PROPS = settings(max_examples=300, deadline=None)

centre_lon = st.floats(-180.0, 180.0)
centre_lat = st.floats(-85.0, 85.0)
# For comparisons with pyproj: PROJ keeps 15 significant digits of lat_0 / lon_0 and turns
# |value| < ~1e-8 into 0, so centres on a 1e-6° grid (0.1 m; the caller snaps to 0.1°)
# mean the same centre to both.
pyproj_lon = centre_lon.map(lambda v: round(v, 6))
pyproj_lat = centre_lat.map(lambda v: round(v, 6))
offsets = st.lists(
    st.tuples(st.floats(-180.0, 180.0), st.floats(0.0, 2_000_000.0)), min_size=1, max_size=40
)


@functools.lru_cache(maxsize=64)
def _pyproj_pair(lon0: float, lat0: float) -> tuple[Transformer, Transformer]:
    crs = CRS.from_proj4(f"+proj=laea +lat_0={lat0!r} +lon_0={lon0!r} +datum=WGS84 +units=m")
    fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    inv = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return fwd, inv


def _around(
    lon0: float, lat0: float, offs: list[tuple[float, float]]
) -> tuple[FloatArray, FloatArray]:
    az, dist = np.array(offs, dtype=np.float64).T
    lon, lat, _ = WGS84.fwd(np.full(az.size, lon0), np.full(az.size, lat0), az, dist)
    return np.asarray(lon), np.asarray(lat)


def _pole_slack_m(lat: FloatArray) -> FloatArray:
    """Allowance for the pole's ill-conditioning: 0.1 m² / distance (>= 0.1 m) to a pole
    (hypothesis found 8.5e-5 m at 357 m from the south pole; both PROJ and we lose digits)."""
    to_pole_m = (90.0 - np.abs(lat)) * M_PER_DEG
    return 0.1 / np.maximum(to_pole_m, 0.1)


def _centre_slack_m(lat0: float) -> float:
    """Allowance for PROJ's own error at a centre near a pole: cos β1 = sqrt(1 - sin² β1)
    loses digits as 1 / cos² φ0 there (PROJ is 0.4 m off at 2,000 km for lat0 = 89.999°;
    laea.py takes β1 from a series). Under 2e-7 m for |lat0| <= 85°; 0 in PROJ's polar mode.
    """
    if abs(lat0) == 90.0:
        return 0.0
    return 1.5e-9 / math.cos(math.radians(lat0)) ** 2


def _angle_err_deg(
    lon: FloatArray, lat: FloatArray, lon_ref: FloatArray, lat_ref: FloatArray
) -> FloatArray:
    """Per point, the larger of the latitude error and the east-west error (as arc)."""
    dlon = (lon - lon_ref + 180.0) % 360.0 - 180.0
    return np.maximum(np.abs(lat - lat_ref), np.abs(dlon) * np.cos(np.radians(lat_ref)))


# ------------------------------------------------------------------------ against pyproj


@PROPS
@given(pyproj_lon, pyproj_lat, offsets)
@example(179.95, -16.8, [(90.0, 50_000.0), (-90.0, 50_000.0), (80.0, 2_000_000.0)])
@example(-180.0, 60.0, [(90.0, 1_000.0), (-90.0, 1_000.0), (0.0, 2_000_000.0)])
@example(10.0, 85.0, [(0.0, 556_000.0), (0.0, 2_000_000.0), (180.0, 2_000_000.0)])
def test_forward_matches_pyproj(lon0: float, lat0: float, offs: list) -> None:
    lon, lat = _around(lon0, lat0, offs)
    x, y = Laea(lon0, lat0).forward(lon, lat)
    xp, yp = _pyproj_pair(lon0, lat0)[0].transform(lon, lat)
    err = np.hypot(x - xp, y - yp)
    tol = FORWARD_TOL_M + _pole_slack_m(lat) + _centre_slack_m(lat0)
    assert np.all(err <= tol), err.max()


@PROPS
@given(pyproj_lon, pyproj_lat, offsets)
@example(179.95, -16.8, [(90.0, 50_000.0), (-90.0, 50_000.0), (80.0, 2_000_000.0)])
@example(0.0, 20.0, [(0.0, 77_500.0), (180.0, 77_500.0)])  # 20.7° N/S: PROJ 9.6's worst
def test_inverse_recovers_points_pyproj_projected(lon0: float, lat0: float, offs: list) -> None:
    lon, lat = _around(lon0, lat0, offs)
    fwd, inv = _pyproj_pair(lon0, lat0)
    xp, yp = fwd.transform(lon, lat)
    lo, la = Laea(lon0, lat0).inverse(xp, yp)
    slack = _pole_slack_m(lat) / M_PER_DEG
    err = _angle_err_deg(lo, la, lon, lat)
    assert np.all(err <= INVERSE_TOL_DEG + slack), err.max()
    # ... and agrees with pyproj's own inverse to the accuracy of the installed PROJ.
    lo_p, la_p = inv.transform(xp, yp)
    err_p = _angle_err_deg(lo, la, np.asarray(lo_p), np.asarray(la_p))
    assert np.all(err_p <= INVERSE_VS_PYPROJ_DEG + slack), err_p.max()
    # Unwrapped around lon0, never more than half a turn away.
    assert np.all(np.abs(lo - lon0) <= 180.0)


@pytest.mark.parametrize("lat0", [90.0, -90.0, 0.0, -1e-12, 89.999, -89.9])
@pytest.mark.parametrize("lon0", [0.0, -135.0, 180.0])
def test_special_aspects_match_pyproj(lon0: float, lat0: float) -> None:
    """PROJ's polar and equatorial modes come out of the same formulas here; near-polar
    centres are where PROJ's own centre constants lose digits (``_centre_slack_m``).
    """
    rng = np.random.default_rng(7)
    offs = list(zip(rng.uniform(-180, 180, 500), rng.uniform(0, 2e6, 500), strict=True))
    lon, lat = _around(lon0, lat0, offs)
    p = Laea(lon0, lat0)
    fwd, inv = _pyproj_pair(lon0, lat0)
    x, y = p.forward(lon, lat)
    xp, yp = fwd.transform(lon, lat)
    slack = _pole_slack_m(lat) + _centre_slack_m(lat0)
    assert np.all(np.hypot(x - xp, y - yp) <= FORWARD_TOL_M + slack)
    lo, la = p.inverse(x, y)
    err = _angle_err_deg(lo, la, lon, lat)
    assert np.all(err <= ROUND_TRIP_TOL_DEG + _pole_slack_m(lat) / M_PER_DEG)
    lo_p, la_p = inv.transform(xp, yp)
    lo, la = p.inverse(xp, yp)
    err_p = _angle_err_deg(lo, la, np.asarray(lo_p), np.asarray(la_p))
    assert np.all(err_p <= INVERSE_VS_PYPROJ_DEG + slack / M_PER_DEG)


def test_antimeridian_centre_keeps_longitudes_continuous() -> None:
    p = Laea(179.95, -16.8)
    lon = np.array([179.9, 179.99, -179.99, -179.9, -179.5])
    lat = np.array([-16.8, -16.9, -16.7, -16.8, -17.0])
    x, y = p.forward(lon, lat)
    xp, yp = _pyproj_pair(179.95, -16.8)[0].transform(lon, lat)
    np.testing.assert_allclose(x, xp, rtol=0, atol=FORWARD_TOL_M)
    np.testing.assert_allclose(y, yp, rtol=0, atol=FORWARD_TOL_M)
    assert np.all(np.hypot(x, y) < 100_000)  # neighbours, not 38,000 km apart
    lo, la = p.inverse(x, y)
    np.testing.assert_allclose(lo, [179.9, 179.99, 180.01, 180.1, 180.5], rtol=0, atol=1e-11)
    np.testing.assert_allclose(la, lat, rtol=0, atol=1e-11)


# ---------------------------------------------------------------------- self-consistency


@PROPS
@given(centre_lon, st.floats(-90.0, 90.0), offsets)
def test_round_trip(lon0: float, lat0: float, offs: list) -> None:
    lon, lat = _around(lon0, lat0, offs)
    p = Laea(lon0, lat0)
    lo, la = p.inverse(*p.forward(lon, lat))
    err = _angle_err_deg(lo, la, lon, lat)
    assert np.all(err <= ROUND_TRIP_TOL_DEG + _pole_slack_m(lat) / M_PER_DEG), err.max()
    assert np.all(np.abs(lo - lon0) <= 180.0)


@PROPS
@given(centre_lon, st.floats(-90.0, 90.0))
@example(0.0, 1e-10)
@example(0.0, 90.0 - 1e-10)
def test_centre_maps_to_origin_and_back(lon0: float, lat0: float) -> None:
    p = Laea(lon0, lat0)
    # Like PROJ, a centre within 1e-10 rad of the equator or a pole is put on it.
    phi0 = abs(math.radians(lat0))
    snapped = phi0 < 1e-10 or abs(phi0 - math.pi / 2) < 1e-10
    x, y = p.forward(lon0, lat0)
    slack = float(_pole_slack_m(np.array(lat0)))
    assert math.hypot(float(x), float(y)) <= (1e-3 if snapped else 1e-8 + slack)
    lo, la = p.inverse(0.0, 0.0)
    assert float(la) == pytest.approx(lat0, abs=1e-8 if snapped else 1e-12)
    if abs(lat0) < 90.0 - 1e-8:  # at a pole every longitude is the centre
        assert float(lo) == pytest.approx(lon0, abs=1e-12)


def test_authalic_series_match_snyder_q() -> None:
    """Karney's series agree with Snyder 3-11/3-12 to rounding (a mistyped coefficient
    shows). Beyond ±80° asin(q / qp) itself loses digits, so the grid stops there.
    """
    phi = np.radians(np.linspace(-80.0, 80.0, 20_001))
    e = math.sqrt(_ES)
    es_sin = e * np.sin(phi)
    q = (1 - _ES) * (np.sin(phi) / (1 - es_sin**2) + np.arctanh(es_sin) / e)
    beta = np.arcsin(q / _QP)
    np.testing.assert_allclose(geographic_from_authalic(beta), phi, rtol=0, atol=2e-15)
    np.testing.assert_allclose(authalic_from_geographic(phi), beta, rtol=0, atol=2e-15)
    # At the poles, where q is no reference, both series are the identity.
    for pole in (-math.pi / 2, math.pi / 2):
        assert float(geographic_from_authalic(pole)) == pytest.approx(pole, abs=1e-15)
        assert float(authalic_from_geographic(pole)) == pytest.approx(pole, abs=1e-15)


# --------------------------------------------------------------------------- equal area


def _geodesic_quad(
    lon: float, lat: float, heading: float, side_m: float, per_edge: int
) -> tuple[FloatArray, FloatArray]:
    """A quadrilateral with geodesic sides of side_m, densified with per_edge points."""
    lon1, lat1, back1 = WGS84.fwd(lon, lat, heading, side_m)
    lon3, lat3, _ = WGS84.fwd(lon, lat, heading + 90.0, side_m)
    lon2, lat2, _ = WGS84.fwd(lon1, lat1, back1 + 270.0, side_m)
    corners = [(lon, lat), (lon1, lat1), (lon2, lat2), (lon3, lat3)]
    lons: list[float] = []
    lats: list[float] = []
    for (lon_a, lat_a), (lon_b, lat_b) in zip(corners, corners[1:] + corners[:1], strict=True):
        lons.append(lon_a)
        lats.append(lat_a)
        for lon_i, lat_i in WGS84.npts(lon_a, lat_a, lon_b, lat_b, per_edge):
            lons.append(lon_i)
            lats.append(lat_i)
    return np.array(lons), np.array(lats)


def _shoelace_m2(x: FloatArray, y: FloatArray) -> float:
    x, y = x - x[0], y - y[0]  # relative to a vertex: no cancellation at 2,000 km out
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@PROPS
@given(
    centre_lon,
    centre_lat,
    st.floats(-180.0, 180.0),
    st.floats(0.0, 2_000_000.0),
    st.floats(0.0, 360.0),
    st.floats(100.0, 20_000.0),
)
def test_projected_area_equals_geodesic_area(
    lon0: float, lat0: float, az: float, dist: float, heading: float, side_m: float
) -> None:
    """A quadrilateral up to 2,000 km out keeps its GeographicLib area to 1e-6 (measured
    <= 2e-8). Blind to D by design (x * D, y / D keeps areas): the pyproj tests see it.
    """
    lon, lat, _ = WGS84.fwd(lon0, lat0, az, dist)
    qlon, qlat = _geodesic_quad(lon, lat, heading, side_m, per_edge=8)
    geodesic, _ = WGS84.polygon_area_perimeter(qlon, qlat)
    x, y = Laea(lon0, lat0).forward(qlon, qlat)
    assert _shoelace_m2(x, y) == pytest.approx(abs(geodesic), rel=1e-6)


# ----------------------------------------------------------------- edges and bad input


@pytest.mark.parametrize(
    ("lon0", "lat0"), [(10.0, 52.0), (0.0, 0.0), (-120.0, 90.0), (180.0, -70.0)]
)
def test_non_finite_and_out_of_domain_give_nan_without_warnings(lon0: float, lat0: float) -> None:
    p = Laea(lon0, lat0)
    antipode = (lon0 + 180.0, -lat0)
    lon = np.array([np.nan, lon0, np.inf, lon0, lon0, antipode[0], lon0 + 2.0])
    lat = np.array([lat0, np.nan, lat0, -np.inf, 90.5, antipode[1], lat0 - 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, y = p.forward(lon, lat)
        # NaN / inf in, |lat| > 90, the antipode: NaN, and only those.
        assert np.isnan(x[:6]).all() and np.isnan(y[:6]).all()
        assert np.isfinite(x[6]) and np.isfinite(y[6])
        outside = 2.1 * A_M  # beyond the image of the ellipsoid (semi-axes ~2.0 a)
        xs = np.array([np.nan, 0.0, np.inf, outside, 0.0, -np.inf, 1000.0])
        ys = np.array([0.0, np.nan, 0.0, 0.0, -np.inf, np.inf, 1000.0])
        lo, la = p.inverse(xs, ys)
        assert np.isnan(lo[:6]).all() and np.isnan(la[:6]).all()
        assert np.isfinite(lo[6]) and np.isfinite(la[6])


def test_shapes_broadcast_and_empty() -> None:
    p = Laea(-60.0, -30.0)
    x, y = p.forward(-60.0, -30.0)
    assert x.shape == () and y.shape == () and x.dtype == np.float64
    x, y = p.forward(np.zeros((3, 4)) - 60.0, np.linspace(-31.0, -29.0, 4))
    assert x.shape == (3, 4) and y.shape == (3, 4)
    _, la = p.inverse(x, y)
    np.testing.assert_allclose(la[0], np.linspace(-31.0, -29.0, 4), rtol=0, atol=1e-12)
    e = np.empty(0)
    assert p.forward(e, e)[0].shape == (0,) and p.inverse(e, e)[1].shape == (0,)


@pytest.mark.parametrize(
    ("lon0", "lat0"), [(0.0, 90.0001), (0.0, -91.0), (np.nan, 0.0), (0.0, np.inf)]
)
def test_bad_centre_raises(lon0: float, lat0: float) -> None:
    with pytest.raises(ValueError):
        Laea(lon0, lat0)


def test_frozen_value_object() -> None:
    p = Laea(1.0, 2.0)
    assert p == Laea(1.0, 2.0) and hash(p) == hash(Laea(1.0, 2.0))
    assert repr(p) == "Laea(lon0=1.0, lat0=2.0)"
    with pytest.raises(AttributeError):
        p.lon0 = 3.0  # type: ignore[misc]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(centre_lon, centre_lat, st.integers(0, 5)), min_size=1, max_size=6),
    st.integers(0, 2**32 - 1),
)
def test_forward_many_is_each_projections_forward_bitwise(
    runs: list[tuple[float, float, int]], seed: int
) -> None:
    """The reducer projects every animal's fixes through its own range's projection in
    one call; each point must come out exactly as its own projection puts it (the
    excursion verdict of a fix must not depend on which animals share its batch)."""
    rng = np.random.default_rng(seed)
    projs = [Laea(lon0, lat0) for lon0, lat0, _ in runs]
    counts = [k for _, _, k in runs]
    lon = np.concatenate([lon0 + rng.uniform(-3, 3, k) for lon0, _, k in runs])
    lat = np.concatenate([np.clip(lat0 + rng.uniform(-3, 3, k), -90, 90) for _, lat0, k in runs])
    x, y = forward_many(projs, counts, lon, lat)
    ends = np.cumsum(counts)
    for p, a, b in zip(projs, ends - counts, ends, strict=True):
        xp, yp = p.forward(lon[a:b], lat[a:b])
        np.testing.assert_array_equal(x[a:b], xp)
        np.testing.assert_array_equal(y[a:b], yp)
