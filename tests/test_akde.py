"""AKDE (core.akde) against what is known exactly: simulated Ornstein-Uhlenbeck tracks
(true parameters and true range known), brute-force pair sums, the textbook IID MISE
and its asymptotic optimum; and on real fishers, what autocorrelation must do to a KDE.

Tolerances come from the simulation design: parameter recovery on tracks spanning
hundreds of autocorrelation times (sampling error a few per cent), range areas averaged
over 30 tracks (standard error ~3 % of the truth). No published AKDE values exist for
the shared datasets, so ctmm's own numbers could not be compared; ctmm also debiases
(AKDEc), which this 2015 estimator does not (see core.akde).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collarstream.config import ConfigError, from_env
from collarstream.core import akde as ak
from collarstream.core.homerange import (
    equal_area_projection,
    grid_isopleths,
    home_ranges,
    kde_grid,
)
from collarstream.core.track import (
    Context,
    FixBatch,
    TrackConfig,
    TrackState,
    advance,
    compute_home_range,
)
from collarstream.movebank import read_movebank_csv

SIGMA = np.array([[4.0e6, 1.5e6], [1.5e6, 2.0e6]])  # m², an elongated, tilted range
TRUE_AREA95 = -2 * math.log(0.05) * math.pi * math.sqrt(np.linalg.det(SIGMA))
HOUR = 3600.0


def simulate_ou(
    n: int, dt_s: float, tau_s: float, rng: np.random.Generator, sigma: np.ndarray = SIGMA
) -> tuple[np.ndarray, np.ndarray]:
    """Exact OU transitions at jittered times (±30 % of the schedule)."""
    t = np.concatenate([[0.0], np.cumsum(dt_s * (1 + rng.uniform(-0.3, 0.3, n - 1)))])
    root = np.linalg.cholesky(sigma)
    z = rng.standard_normal((n, 2)) @ root.T
    xy = np.empty((n, 2))
    xy[0] = z[0]
    rho = np.exp(-np.diff(t) / tau_s)
    for k in range(1, n):
        xy[k] = rho[k - 1] * xy[k - 1] + math.sqrt(1 - rho[k - 1] ** 2) * z[k]
    return t, xy


def test_ou_fit_recovers_tau_and_the_range() -> None:
    rng = np.random.default_rng(11)
    t, xy = simulate_ou(3000, 4 * HOUR, 24 * HOUR, rng)  # 500 autocorrelation times
    m = ak.select_model(t, xy[:, 0], xy[:, 1])
    assert m.kind == "ou"
    assert m.tau_s / (24 * HOUR) == pytest.approx(1.0, abs=0.15)
    assert np.linalg.det(m.sigma) / np.linalg.det(SIGMA) == pytest.approx(1.0, abs=0.2)
    assert np.abs(m.mean).max() < 0.3 * math.sqrt(SIGMA[0, 0])
    assert m.range_crossings == pytest.approx((t[-1] - t[0]) / m.tau_s)


def test_independent_fixes_are_mostly_judged_iid() -> None:
    # OU has one parameter more; AICc should prefer IID when fixes are independent
    # (tau a minute against a 4-hour schedule). Expected ~84 % of tracks; asked: 60 %.
    rng = np.random.default_rng(5)
    kinds = [ak.select_model(*_txy(simulate_ou(200, 4 * HOUR, 60.0, rng))).kind for _ in range(20)]
    assert kinds.count("iid") >= 12


def _txy(sim: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, xy = sim
    return t, xy[:, 0], xy[:, 1]


@given(st.integers(3, 120), st.floats(0.05, 3.0), st.floats(0.1, 50.0), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_binned_pair_sum_is_the_exact_double_sum(n: int, h: float, tau_h: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.1, 8.0, n)) * HOUR
    model = ak.MovementModel("ou", np.zeros(2), SIGMA, tau_h * HOUR, 0.0, 0.0, n, t[-1] - t[0])
    lag = np.abs(t[:, None] - t[None, :])
    rho = np.exp(-lag / model.tau_s)
    exact = 0.5 - 2 / (2 + h * h) + np.sum(1 / (2 * h * h + 2 * (1 - rho))) / n**2
    got = ak.mise(h, ak.pair_correlations(t, model))
    assert got == pytest.approx(exact, rel=1e-5, abs=1e-12)


def test_iid_mise_is_the_textbook_one_and_its_optimum_tends_to_n_to_minus_a_sixth() -> None:
    # Normal reference, H = h² Σ, IID (Wand & Jones 1995): the exact MISE, and the
    # AMISE optimum h = n^(-1/6) that the exact optimum approaches as n grows.
    iid = ak.MovementModel("iid", np.zeros(2), SIGMA, 0.0, 0.0, 0.0, 0, 0.0)
    gaps = []
    for n in (100, 1_000, 10_000, 100_000):
        m = ak.MovementModel("iid", np.zeros(2), SIGMA, 0.0, 0.0, 0.0, n, 0.0)
        pairs = ak.pair_correlations(np.arange(n, dtype=float), m)
        for h in (0.2, 0.5, 1.0):
            textbook = 0.5 - 2 / (2 + h * h) + 1 / (2 * n * h * h) + (n - 1) / (n * (2 * h * h + 2))
            assert ak.mise(h, pairs) == pytest.approx(textbook, rel=1e-12)
        gaps.append(ak.akde_bandwidth(np.arange(n, dtype=float), m) / n ** (-1 / 6) - 1)
    assert all(b < a for a, b in itertools.pairwise(gaps))  # closing in
    assert abs(gaps[-1]) < 0.03
    assert iid.range_crossings is None


def test_autocorrelation_widens_the_bandwidth() -> None:
    t = np.arange(400) * 4 * HOUR
    h = [
        ak.akde_bandwidth(t, ak.MovementModel("ou", np.zeros(2), SIGMA, tau, 0, 0, 400, t[-1]))
        for tau in (60.0, 6 * HOUR, 2 * 86400.0, 20 * 86400.0)
    ]
    assert h == sorted(h) and h[-1] > 2 * h[0]


def test_akde_area_tracks_the_true_range_where_the_kde_falls_short() -> None:
    # 360 fixes 4-hourly over 60 days with tau = 5 days: 12 range crossings. The reference
    # KDE hugs what was visited (measured: 0.83 of the true 95 % area on average, sd
    # 0.25); AKDE's bandwidth accounts for the autocorrelation (1.13, sd 0.42: a Gaussian
    # range's KDE area is inflated by about 1 + h², which the 2015 AKDE does not correct).
    # Means over 30 tracks; the standard errors are ~0.05 and ~0.08.
    rng = np.random.default_rng(2024)
    a_ratio, k_ratio = [], []
    for _ in range(30):
        t, xy = simulate_ou(360, 4 * HOUR, 5 * 86400.0, rng)
        est = ak.akde(t, xy[:, 0], xy[:, 1], grid_size=128)
        a_ratio.append(est.isopleths((95.0,))[95.0].area / TRUE_AREA95)
        kde = grid_isopleths(kde_grid(xy[:, 0], xy[:, 1], "ref", 128), (95.0,))[95.0]
        k_ratio.append(kde.area / TRUE_AREA95)
    assert 0.9 < np.mean(a_ratio) < 1.45
    assert np.mean(k_ratio) < 0.9
    assert np.mean(a_ratio) / np.mean(k_ratio) > 1.2
    assert np.mean(np.asarray(a_ratio) > np.asarray(k_ratio)) > 0.8


def test_akde_polygons_sit_on_the_range_and_follow_its_tilt() -> None:
    # Whitening and mapping back: the isopleth is centred on the mean, and elongated
    # along Σ's major axis (about 34° from x for SIGMA), not along x or y.
    rng = np.random.default_rng(8)
    t, xy = simulate_ou(3000, 4 * HOUR, 12 * HOUR, rng)
    xy += np.array([5.0e5, -2.0e5])
    est = ak.akde(t, xy[:, 0], xy[:, 1], grid_size=128)
    poly = est.isopleths((95.0,))[95.0]
    c = np.array(poly.centroid.coords[0])
    assert np.linalg.norm(c - np.array([5.0e5, -2.0e5])) < 0.2 * math.sqrt(SIGMA[1, 1])
    v = np.asarray(poly.exterior.coords) - c
    major = np.linalg.eigh(v.T @ v)[1][:, -1]
    want = np.linalg.eigh(SIGMA)[1][:, -1]
    assert abs(float(major @ want)) > math.cos(math.radians(5))
    # The area is the whitened isopleth's times |Σ|^½, exactly (an affine map).
    z_area = grid_isopleths(est.grid, (95.0,))[95.0].area
    assert poly.area == pytest.approx(z_area * math.sqrt(np.linalg.det(est.model.sigma)))


def test_home_ranges_add_akde_only_with_times() -> None:
    rng = np.random.default_rng(3)
    t, xy = simulate_ou(200, 4 * HOUR, 86400.0, rng)
    lon, lat = 77.0 + xy[:, 0] / 81_000, 43.0 + xy[:, 1] / 111_000
    t_ms = (t * 1000).astype(np.int64)
    plain = home_ranges(lon, lat, grid_size=64)
    with_t = home_ranges(lon, lat, grid_size=64, t_ms=t_ms)
    assert [r.method for r in plain] == ["mcp", "mcp", "kde", "kde"]
    assert [(r.method, r.level) for r in with_t[4:]] == [("akde", 50.0), ("akde", 95.0)]
    a95 = with_t[-1]
    assert a95.bandwidth_method == "ou" and a95.tau_s and a95.range_crossings
    assert a95.area_km2 > with_t[3].area_km2  # wider than the KDE on autocorrelated fixes
    # Input order and repeated instants do not matter (the first fix of an instant kept).
    perm = rng.permutation(t.size)
    again = home_ranges(
        np.r_[lon[perm], lon[:5] + 0.01],
        np.r_[lat[perm], lat[:5]],
        grid_size=64,
        t_ms=np.r_[t_ms[perm], t_ms[:5]],
    )
    assert again[-1].n_fixes == t.size
    assert again[-1].area_km2 == pytest.approx(a95.area_km2, rel=1e-6)
    assert again[-1].tau_s == pytest.approx(a95.tau_s, rel=1e-6)


def test_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        ak.fit_ou(np.array([0.0, 1.0, 1.0, 2.0]), np.arange(4.0), np.arange(4.0) ** 2)
    with pytest.raises(ValueError, match="at least 3"):
        ak.akde(np.array([0.0, 1.0]), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="span an area"):
        ak.fit_iid(np.arange(5.0), 2 * np.arange(5.0))


@pytest.mark.shared_data
def test_fishers_fixes_are_autocorrelated_and_akde_is_wider(shared_data: Path) -> None:
    # Fishers fixed every 2-15 min for weeks: OU beats IID by far, tau is minutes to
    # hours (much shorter than the track), and AKDE's 95 % range is wider than the
    # reference KDE's, as Fleming et al. (2015) found for every autocorrelated track.
    track = read_movebank_csv(shared_data / "tracks-fishers-new-york.csv")
    ok = np.isfinite(track.lon) & np.isfinite(track.lat)
    for animal in ("F1", "M1", "M5"):
        sel = ok & (track.animal == animal)
        order = np.argsort(track.t_ms[sel], kind="stable")
        t_ms = track.t_ms[sel][order]
        lon, lat = track.lon[sel][order], track.lat[sel][order]
        first = np.concatenate([[True], np.diff(t_ms) > 0])
        t_ms, lon, lat = t_ms[first], lon[first], lat[first]
        to_xy, _ = equal_area_projection(lon, lat)
        x, y = to_xy(lon, lat)
        m = ak.select_model(t_ms / 1000.0, x, y)
        assert m.kind == "ou", animal
        assert 60.0 < m.tau_s < 0.2 * m.span_s, animal
        ranges = home_ranges(lon, lat, grid_size=128, t_ms=t_ms)
        kde95 = next(r for r in ranges if r.method == "kde" and r.level == 95.0)
        akde95 = next(r for r in ranges if r.method == "akde" and r.level == 95.0)
        assert akde95.area_km2 > kde95.area_km2, animal


@pytest.mark.shared_data
def test_a_journey_gets_no_akde(shared_data: Path) -> None:
    # Cuckoo B89A08 flies from Mongolia to Iran and back: its OU fit puts tau beyond the
    # track (range crossings < 1). No AKDE: the "range" would be a Gaussian the size of
    # the journey. A resident animal of the same file keeps its AKDE.
    track = read_movebank_csv(shared_data / "tracks-cuckoos-mongolia-icarus.csv")
    ok = np.isfinite(track.lon) & np.isfinite(track.lat)
    got = {}
    for animal in ("B89A08", "B46FBE"):
        sel = ok & (track.animal == animal)
        order = np.argsort(track.t_ms[sel], kind="stable")
        t_ms, lon, lat = (a[sel][order] for a in (track.t_ms, track.lon, track.lat))
        to_xy, _ = equal_area_projection(lon, lat)
        first = np.concatenate([[True], np.diff(t_ms) > 0])
        x, y = to_xy(lon[first], lat[first])
        model = ak.select_model(t_ms[first] / 1000.0, x, y)
        methods = [r.method for r in home_ranges(lon, lat, grid_size=64, t_ms=t_ms)]
        got[animal] = (model.shows_a_range, "akde" in methods)
    assert got == {"B89A08": (False, False), "B46FBE": (True, True)}


def test_weekly_ranges_carry_the_akde_when_configured() -> None:
    # TrackConfig.home_range_akde (COLLARSTREAM_HOME_RANGE_AKDE): the work items carry
    # the fix times and the resolved weekly ranges have AKDE isopleths; off, neither.
    rng = np.random.default_rng(12)
    t, xy = simulate_ou(300, 4 * HOUR, 86400.0, rng, sigma=SIGMA / 100)
    t_ms = 1_767_225_600_000 + (t * 1000).astype(np.int64)
    lon, lat = 77.0 + xy[:, 0] / 81_000, 43.0 + xy[:, 1] / 111_000
    batch = FixBatch(t_ms, lon, lat, np.ones(t.size), np.full(t.size, 8.0), t_ms + 60_000)
    seen = {}
    for akde_on in (False, True):
        cfg = TrackConfig(home_range_grid=64, home_range_akde=akde_on)
        _, events = advance(TrackState.new("SL-1"), batch, Context(None, config=cfg))
        items = [e for e in events if e["type"] == "home-range-due"]
        ranges = [compute_home_range(i)["ranges"] for i in items]
        seen[akde_on] = (
            all("t_ms" in i for i in items),
            all(any(r["method"] == "akde" for r in rs) for rs in ranges),
            len(items),
        )
    assert seen[True][:2] == (True, True) and seen[False][:2] == (False, False)
    assert seen[True][2] == seen[False][2] > 0
    assert from_env({"COLLARSTREAM_HOME_RANGE_AKDE": "true"}).home_range_akde
    with pytest.raises(ConfigError, match=r"^COLLARSTREAM_HOME_RANGE_AKDE: "):
        from_env({"COLLARSTREAM_HOME_RANGE_AKDE": "sometimes"})
