"""Benchmarks of the spatial core, each against a baseline measured in the same run.

    python bench/bench_core.py [--fixes N] [--repeats K] [--mpd-fixes M]

Prints medians over K repeats and the ratio against the baseline:
  steps       compute_steps (vectorized)        vs a per-row geographiclib loop
  steps/mpd   compute_steps on M fixes          vs movingpandas add_speed + add_direction
              on the same M fixes (time of those two calls only; the GeoDataFrame and
              Trajectory are built beforehand, outside the timer)
  steps/mpd+  the same, movingpandas timed including GeoDataFrame + Trajectory build
  membership  CountryLayer.locate (FenceIndex)  vs a per-point shapely loop
  crossings   CountryLayer.crossings            (steps/s; no baseline in this run)
  reducer     core.track.advance, whole track   fixes/s through the whole core
  reducer/12  advance in uploads of 12 fixes    fixes/s as the live agent calls it
  reducer/all advance_many: 200 animals, one fix each per call, every detector on
                                                vs advance one animal at a time (the
                                                worker's way until session 4)
  kde512      kde_grid + 50/95 % isopleths, 100k fixes, 512x512 grid, h_ref
                                                vs scipy gaussian_kde on the same 512x512
                                                nodes (run on 1,000 fixes, scaled x100:
                                                its cost is linear in the number of fixes)
  kde-lscv    lscv_bandwidth on 100k fixes      (100 bandwidths, binned; no baseline:
                                                adehabitatHR's O(n²) loop is R, not here)
  kde-plugin  plugin_bandwidth on 100k fixes    (no baseline)
The steps loop and the scipy baseline run on a subsample and are scaled per item;
movingpandas runs on exactly the fixes compute_steps gets in its row. Noisy 2-core
machines: quote medians and ratios, not single runs.

The default run (1M fixes, 5 repeats, movingpandas on 50k) takes a few minutes.
``--fixes 10000000`` works for steps (≈ 2-3 GB peak: ten float64/int64 arrays of 10M
plus geodesic temporaries); ``--mpd-fixes`` above ~200k makes movingpandas' per-row
geodesics take minutes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import shapely

from collarstream.core.countries import CountryLayer
from collarstream.core.homerange import (
    grid_isopleths,
    kde_grid,
    lscv_bandwidth,
    plugin_bandwidth,
    reference_bandwidth,
)
from collarstream.core.quality import PROFILES
from collarstream.core.steps import compute_steps
from collarstream.core.track import (
    Context,
    FixBatch,
    TrackConfig,
    TrackState,
    advance,
    advance_many,
)
from collarstream.fences import (
    border_lines,
    default_urban_path,
    load_countries,
    load_fence_file,
    load_protected_areas,
)


def timed(fn: Callable[[], object], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def walk(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4-hourly random walk in the Ile-Alatau foothills (lon, lat, t_ms)."""
    rng = np.random.default_rng(seed)
    lon = 77.0 + np.cumsum(rng.normal(0, 0.01, n))
    lat = 43.0 + np.cumsum(rng.normal(0, 0.01, n))
    lon = 77.0 + (lon - 77.0) % 0.6 - 0.3  # fold back so it stays near the city and border
    lat = 43.0 + (lat - 43.0) % 0.6 - 0.3
    t = 1_772_323_200_000 + np.arange(n, dtype=np.int64) * 4 * 3_600_000
    return lon, lat, t


def row(name: str, n: int, secs: float, base: float | None, unit: str = "fixes") -> None:
    rate = n / secs
    ratio = f"{base / secs:8.1f}x" if base is not None else "        -"
    print(f"{name:<12} {n:>10,} {unit:<7} {secs * 1e3:10.2f} ms {rate:14,.0f}/s {ratio}")


def bench_steps(n: int, repeats: int) -> None:
    from geographiclib.geodesic import Geodesic

    lon, lat, t = walk(n)
    good = np.ones(n, bool)
    secs = timed(lambda: compute_steps(t, lon, lat, good, 12 * 3600.0), repeats)
    m = min(n, 20_000)
    g = Geodesic.WGS84

    def loop() -> None:
        for i in range(m - 1):
            g.Inverse(lat[i], lon[i], lat[i + 1], lon[i + 1])

    base = timed(loop, max(1, repeats // 2)) * (n / m)
    row("steps", n, secs, base)


def bench_membership(layer: CountryLayer, n: int, repeats: int) -> None:
    rng = np.random.default_rng(2)
    lon, lat = rng.uniform(50, 90, n), rng.uniform(36, 55, n)
    secs = timed(lambda: layer.locate(lon, lat), repeats)
    m = min(n, 2_000)
    polys = list(layer.polygons)

    def loop() -> None:
        for i in range(m):
            p = shapely.Point(lon[i], lat[i])
            next((k for k, poly in enumerate(polys) if poly.contains(p)), -1)

    base = timed(loop, 1) * (n / m)
    row("membership", n, secs, base, "points")


def bench_crossings(layer: CountryLayer, n: int, repeats: int) -> None:
    lon, lat, _ = walk(n + 1, seed=3)
    lon = lon + 0.8  # toward the Kyrgyz border in the Kungey Alatau
    lat = lat - 0.1
    secs = timed(lambda: layer.crossings(lon[:-1], lat[:-1], lon[1:], lat[1:]), repeats)
    row("crossings", n, secs, None, "steps")


def bench_reducer(ctx: Context, n: int, repeats: int, upload: int | None) -> None:
    lon, lat, t = walk(n, seed=4)
    nan = np.full(n, np.nan)
    hdop = np.full(n, 1.5)

    def run() -> None:
        state = TrackState.new("SL-BENCH", len(ctx.urban))
        size = upload or n
        for a in range(0, n, size):
            s = slice(a, a + size)
            state, _ = advance(state, FixBatch(t[s], lon[s], lat[s], hdop[s], nan[s], t[s]), ctx)

    secs = timed(run, repeats)
    row("reducer" if upload is None else f"reducer/{upload}", n, secs, None)


def bench_reducer_many(ctx: Context, animals: int, rounds: int, repeats: int) -> None:
    """A micro-batch as the live worker sees it: one new fix for each of many animals."""
    walks = [walk(rounds + 20, seed=100 + a) for a in range(animals)]
    nan1, one = np.full(1, np.nan), np.full(1, 1.5)

    def batch(a: int, k: int) -> FixBatch:
        lon, lat, t = walks[a]
        return FixBatch(t[k : k + 1], lon[k : k + 1], lat[k : k + 1], one, nan1, t[k : k + 1])

    def start() -> list[TrackState]:  # 20 fixes of history each, outside the timer
        states = [TrackState.new(f"SL-{a:03d}", len(ctx.urban)) for a in range(animals)]
        for k in range(20):
            states = [
                s for s, _ in advance_many([(s, batch(a, k)) for a, s in enumerate(states)], ctx)
            ]
        return states

    def together(states: list[TrackState]) -> None:
        for k in range(20, 20 + rounds):
            states = [
                s for s, _ in advance_many([(s, batch(a, k)) for a, s in enumerate(states)], ctx)
            ]

    def alone(states: list[TrackState]) -> None:
        for k in range(20, 20 + rounds):
            states = [advance(s, batch(a, k), ctx)[0] for a, s in enumerate(states)]

    runs_many, runs_one = [], []
    for _ in range(repeats):
        for fn, runs in ((together, runs_many), (alone, runs_one)):
            states = start()
            t0 = time.perf_counter()
            fn(states)
            runs.append(time.perf_counter() - t0)
    row("reducer/all", animals * rounds, statistics.median(runs_many), statistics.median(runs_one))


def bench_steps_movingpandas(m: int, repeats: int) -> None:
    """compute_steps vs movingpandas on the same m fixes (speed m/s + direction)."""
    import warnings

    import geopandas as gpd
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "missing optional dependency" notices
        import movingpandas as mpd

    lon, lat, t = walk(m, seed=6)
    good = np.ones(m, bool)
    ours = timed(lambda: compute_steps(t, lon, lat, good, 12 * 3600.0), repeats)

    def build() -> object:
        gdf = gpd.GeoDataFrame(
            {"t": pd.to_datetime(t, unit="ms")},
            geometry=gpd.points_from_xy(lon, lat),
            crs="EPSG:4326",
        ).set_index("t")
        return mpd.Trajectory(gdf, 1)

    def speed_direction(traj: object) -> None:
        traj.add_speed(overwrite=True, units=("m", "s"))  # type: ignore[attr-defined]
        traj.add_direction(overwrite=True)  # type: ignore[attr-defined]

    mpd_repeats = max(1, min(repeats, 3))  # tens of seconds per run at 100k fixes
    trajs = [build() for _ in range(mpd_repeats)]  # built outside the timer
    it = iter(trajs)
    calls_only = timed(lambda: speed_direction(next(it)), mpd_repeats)
    with_build = timed(lambda: speed_direction(build()), 1)
    row("steps/mpd", m, ours, calls_only)
    row("steps/mpd+", m, ours, with_build)


def bench_kde(n: int, repeats: int, grid: int = 512) -> None:
    """kde_grid + isopleths on a grid x grid lattice vs scipy on the same nodes."""
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(5)
    # Isotropic synthetic fixes in metres: scipy's kernel (data covariance x factor²) is
    # then ≈ h² I, the same kernel as ours up to the sample covariance's anisotropy.
    x, y = rng.normal(0, 2000, (2, n))
    # Two opposite corner fixes make the bounding box square, so the grid is exactly
    # grid x grid nodes (kde_grid gives the shorter side fewer nodes otherwise).
    r = float(max(np.abs(x).max(), np.abs(y).max()))
    x[:2], y[:2] = (-r, r), (-r, r)
    kde_grid(x, y, grid_size=grid)  # warm-up: FFT plans, imports

    def ours() -> None:
        g = kde_grid(x, y, grid_size=grid)
        grid_isopleths(g, (50.0, 95.0))

    secs = timed(ours, repeats)
    g = kde_grid(x, y, grid_size=grid)
    assert g.density.shape == (grid, grid), g.density.shape  # exactly grid x grid nodes
    gx, gy = np.meshgrid(g.xs, g.ys)
    nodes = np.vstack([gx.ravel(), gy.ravel()])
    m = min(n, 1_000)
    sigma = float(np.sqrt(0.5 * (np.var(x, ddof=1) + np.var(y, ddof=1))))
    factor = reference_bandwidth(x, y) / sigma

    def scipy_grid() -> None:
        gaussian_kde(np.vstack([x[:m], y[:m]]), bw_method=factor)(nodes)

    base = timed(scipy_grid, 1) * (n / m)  # gaussian_kde is O(n x nodes)
    row(f"kde{grid}", n, secs, base)


def bench_bandwidths(n: int, repeats: int) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(0, 2000, (2, n))
    row("kde-lscv", n, timed(lambda: lscv_bandwidth(x, y), repeats), None)
    row("kde-plugin", n, timed(lambda: plugin_bandwidth(x, y), repeats), None)


def bench_akde(n: int, repeats: int) -> None:
    """AKDE (model fit, bandwidth, 256² grid, isopleths) of an n-fix 4-hourly track; the
    baseline is the same AKDE with the bandwidth search summing the MISE's n² pair terms
    directly at every trial h, as a straightforward implementation would (the n² pair
    correlations computed once, outside its clock: generous to it)."""
    import math

    from scipy.optimize import minimize_scalar

    from collarstream.core import akde

    rng = np.random.default_rng(9)
    t = np.arange(n) * 4 * 3600.0
    rho = math.exp(-4 / 24)  # tau = 1 day
    xy = np.zeros((n, 2))
    z = rng.normal(0, 2000, (n, 2))
    for k in range(1, n):
        xy[k] = rho * xy[k - 1] + math.sqrt(1 - rho * rho) * z[k]

    def ours() -> None:
        akde.akde(t, xy[:, 0], xy[:, 1]).isopleths((50.0, 95.0))

    secs = timed(ours, repeats)
    model = akde.select_model(t, xy[:, 0], xy[:, 1])
    lag = np.abs(t[:, None] - t[None, :])
    one_minus_rho = -np.expm1(-lag / model.tau_s)
    trials: list[float] = []

    def direct_mise(lh: float) -> float:
        h2 = math.exp(2 * lh)
        t0 = time.perf_counter()
        v = 0.5 - 2 / (2 + h2) + float(np.sum(1 / (2 * h2 + 2 * one_minus_rho))) / n**2
        trials.append(time.perf_counter() - t0)
        return v

    res = minimize_scalar(direct_mise, bounds=(math.log(1e-3), math.log(20)), method="bounded")
    h_ours = akde.akde_bandwidth(t, model)
    assert abs(math.exp(res.x) / h_ours - 1) < 1e-3, (math.exp(res.x), h_ours)
    base = secs - timed(lambda: akde.akde_bandwidth(t, model), repeats) + sum(trials)
    row("akde", n, secs, base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixes", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mpd-fixes", type=int, default=50_000)
    args = ap.parse_args()
    layer = load_countries()
    ctx = Context(
        layer,
        load_fence_file(default_urban_path()),
        PROFILES["snow-leopard"],
        config=TrackConfig(window_days=1e6, max_fixes=10**9, home_range_every_days=None),
    )
    print(f"{'bench':<12} {'items':>10} {'':<7} {'median':>13} {'rate':>16} {'vs base':>9}")
    bench_steps(args.fixes, args.repeats)
    bench_steps_movingpandas(min(args.fixes, args.mpd_fixes), args.repeats)
    bench_membership(layer, args.fixes, args.repeats)
    bench_crossings(layer, min(args.fixes, 100_000), args.repeats)
    bench_reducer(ctx, min(args.fixes, 100_000), args.repeats, None)
    bench_reducer(ctx, 5_000, args.repeats, 12)
    full = replace(ctx, borders=border_lines(layer), areas=load_protected_areas())
    bench_reducer_many(full, 200, 10, args.repeats)
    bench_kde(100_000, args.repeats)
    bench_bandwidths(100_000, args.repeats)
    bench_akde(min(args.fixes, 3_000), args.repeats)


if __name__ == "__main__":
    main()
