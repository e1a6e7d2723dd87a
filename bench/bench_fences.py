"""Fence membership: FenceIndex against shapely and geopandas, measured in the same run.

    python bench/bench_fences.py [--points N] [--fences 1000] [--vertices 500] [--repeats K]
                                 [--baseline-points B] [--loop-points L]

Fences are noisy circles (radius log-uniform 0.05-1 deg, a few smooth harmonics plus 1 %
jitter, star-shaped so never self-intersecting) scattered over Kazakhstan, overlapping
somewhat; fixes are uniform over the same region. --points 10000000 works (FenceIndex
queries in blocks of 2**20 points; ~1.3 GB peak RSS in all).

What is counted: a "fix-fence test" is one (fix, fence) pair answered, so a method that
answers all pairs for M fixes and N fences in t seconds runs M * N / t tests/s, however
few pairs it actually evaluates. points/s is M / t. Our time is FenceIndex.contains
(all pairs, sorted); build time is reported apart.

Baselines run on subsamples and are scaled per test:
  loop (prepared)    fence.contains(Point) for every fence, per fix, fences prepared
  loop (plain)       the same on unprepared copies of the fences
  strtree            shapely.points + STRtree(points).query(fences, predicate="contains")
  sjoin              geopandas.sjoin(points, fences, predicate="within") incl. points_from_xy
The answer is checked against sjoin's pairs on the baseline subsample. The machine may
be shared: quote medians and ratios from one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import geopandas
import numpy as np
import shapely

from collarstream.core.membership import FenceIndex

# Kazakhstan's bounding box, roughly.
REGION = (46.5, 40.5, 87.5, 55.5)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    runs, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), out


def noisy_circles(n: int, vertices: int, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = REGION
    cx, cy = rng.uniform(x0 + 0.5, x1 - 0.5, n), rng.uniform(y0 + 0.5, y1 - 0.5, n)
    radius = np.exp(rng.uniform(np.log(0.05), np.log(1.0), n))
    theta = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    k = np.arange(1, 6)
    amp = rng.normal(0, 0.08, (n, 5)) / k
    phase = rng.uniform(0, 2 * np.pi, (n, 5))
    wobble = (amp[:, :, None] * np.cos(k[None, :, None] * theta + phase[:, :, None])).sum(1)
    r = radius[:, None] * np.clip(1 + wobble + rng.normal(0, 0.01, (n, vertices)), 0.3, None)
    x = cx[:, None] + r * np.cos(theta) / np.cos(np.radians(cy))[:, None]  # round on the ground
    y = cy[:, None] + r * np.sin(theta)
    return shapely.polygons(np.stack([x, y], axis=-1))


def loop(fences: np.ndarray, x: np.ndarray, y: np.ndarray) -> int:
    hits = 0
    for px, py in zip(x.tolist(), y.tolist(), strict=True):
        p = shapely.Point(px, py)
        for fence in fences:
            hits += fence.contains(p)
    return hits


def strtree(fences: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tree = shapely.STRtree(shapely.points(x, y))
    fence, pt = tree.query(fences, predicate="contains")
    return pt, fence


def sjoin(
    fences: geopandas.GeoDataFrame, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    points = geopandas.GeoDataFrame(geometry=geopandas.points_from_xy(x, y))
    joined = geopandas.sjoin(points, fences, predicate="within")
    return joined.index.to_numpy(), joined["index_right"].to_numpy()


def pair_keys(pt: np.ndarray, fence: np.ndarray, n: int) -> np.ndarray:
    return np.sort(pt.astype(np.int64) * n + fence)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--fences", type=int, default=1000)
    ap.add_argument("--vertices", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline-points", type=int, default=100_000)
    ap.add_argument("--loop-points", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    fences = noisy_circles(args.fences, args.vertices, rng)
    plain = shapely.from_wkb(shapely.to_wkb(fences))  # unprepared copies for the plain loop
    x0, y0, x1, y1 = REGION
    m, n = args.points, args.fences
    x, y = rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)
    print(f"{n} fences x {args.vertices} vertices (valid: {shapely.is_valid(fences).all()}), "
          f"{m:,} fixes; median of {args.repeats} repeats")  # fmt: skip

    build, index = timed(lambda: FenceIndex(fences), 1)
    assert isinstance(index, FenceIndex)
    ours, (pt, fence) = timed(lambda: index.contains(x, y), args.repeats)  # type: ignore[misc]
    print(f"build {build:.2f} s, cell {index.cell_size:.4g} deg, grid {index.shape}; "
          f"{pt.size:,} pairs inside ({pt.size / m:.2f} per fix)")  # fmt: skip
    ours_rate = m * n / ours

    b = min(args.baseline_points, m)
    base_repeats = min(args.repeats, 3)
    gdf = geopandas.GeoDataFrame(geometry=fences)
    lp = min(args.loop_points, m)
    rows = [("FenceIndex.contains", m, ours)]
    for name, k, fn, reps in [
        ("loop (prepared)", lp, lambda: loop(fences, x[:lp], y[:lp]), 1),
        ("loop (plain)", lp, lambda: loop(plain, x[:lp], y[:lp]), 1),
        ("strtree contains", b, lambda: strtree(fences, x[:b], y[:b]), base_repeats),
        ("geopandas sjoin", b, lambda: sjoin(gdf, x[:b], y[:b]), base_repeats),
    ]:
        secs, out = timed(fn, reps)
        rows.append((name, k, secs))
        if name == "geopandas sjoin":
            sj = pair_keys(*out, n)  # type: ignore[misc]
        if name == "strtree contains":
            tr = pair_keys(*out, n)  # type: ignore[misc]

    head = ("method", "fixes", "median", "fixes/s", "tests/s", "ours is")
    print("\n{:<20} {:>10} {:>11} {:>14} {:>16} {:>9}".format(*head))
    for name, k, secs in rows:
        rate = k * n / secs
        ratio = "" if name.startswith("Fence") else f"{ours_rate / rate:8.0f}x"
        print(f"{name:<20} {k:>10,} {secs * 1e3:8.1f} ms {k / secs:14,.0f} {rate:16,.0f} {ratio}")

    sel = pt < b
    mine = pair_keys(pt[sel], fence[sel], n)
    print(f"\nagreement on the first {b:,} fixes: {mine.size:,} pairs ours, {sj.size:,} sjoin, "
          f"{tr.size:,} strtree; identical to sjoin: {np.array_equal(mine, sj)}, "
          f"to strtree: {np.array_equal(mine, tr)}")  # fmt: skip


if __name__ == "__main__":
    main()
