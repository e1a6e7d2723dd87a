"""Benchmarks of the spatial core, each against a baseline measured in the same run.

    python bench/bench_core.py [--fixes N] [--repeats K]

Prints medians over K repeats and the ratio against the baseline:
  steps       compute_steps (vectorized)        vs a per-row geographiclib loop
  membership  CountryLayer.locate (STRtree)     vs a per-point shapely loop
  crossings   CountryLayer.crossings            (steps/s; no baseline in this run)
  reducer     core.track.advance, whole track   fixes/s through the whole core
  reducer/12  advance in uploads of 12 fixes    fixes/s as the live agent calls it
  kde         home_ranges on 100k fixes         vs scipy gaussian_kde on a 128x128 grid
Baselines run on a subsample and are scaled per item; noisy 2-core machines: quote
medians and ratios, not single runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import shapely

from collarstream.core.countries import CountryLayer
from collarstream.core.homerange import home_ranges
from collarstream.core.quality import PROFILES
from collarstream.core.steps import compute_steps
from collarstream.core.track import Context, FixBatch, TrackConfig, TrackState, advance
from collarstream.fences import default_urban_path, load_countries, load_fence_file


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
            state, _ = advance(state, FixBatch(t[s], lon[s], lat[s], hdop[s], nan[s], t[s]),
                               ctx)

    secs = timed(run, repeats)
    row("reducer" if upload is None else f"reducer/{upload}", n, secs, None)


def bench_kde(n: int, repeats: int) -> None:
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(5)
    lon = 77.0 + rng.normal(0, 0.05, n)
    lat = 43.0 + rng.normal(0, 0.04, n)
    secs = timed(lambda: home_ranges(lon, lat, grid_size=128), repeats)
    m = min(n, 5_000)
    xs, ys = np.meshgrid(np.linspace(76.8, 77.2, 128), np.linspace(42.85, 43.15, 128))

    def scipy_grid() -> None:
        gaussian_kde(np.vstack([lon[:m], lat[:m]]))(np.vstack([xs.ravel(), ys.ravel()]))

    base = timed(scipy_grid, 1) * (n / m)  # gaussian_kde is O(n x grid)
    row("kde", n, secs, base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixes", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    layer = load_countries()
    ctx = Context(layer, load_fence_file(default_urban_path()), PROFILES["snow-leopard"],
                  config=TrackConfig(window_days=1e6, max_fixes=10**9,
                                     home_range_every=10**9))
    print(f"{'bench':<12} {'items':>10} {'':<7} {'median':>13} {'rate':>16} {'vs base':>9}")
    bench_steps(args.fixes, args.repeats)
    bench_membership(layer, args.fixes, args.repeats)
    bench_crossings(layer, min(args.fixes, 100_000), args.repeats)
    bench_reducer(ctx, min(args.fixes, 100_000), args.repeats, None)
    bench_reducer(ctx, 5_000, args.repeats, 12)
    bench_kde(100_000, args.repeats)


if __name__ == "__main__":
    main()
