"""Proximity of two collared animals: fixes of different animals close in space and time.

Batch: ``close_pairs`` over many animals' fixes. Each fix becomes a 4-vector (ECEF
x, y, z in metres, time scaled so max_dt_s spans within_m); a cKDTree per animal and a
Chebyshev (p = inf) ball query between the trees of each pair of animals keeps every
pair with |dx|, |dy|, |dz| <= within_m and |dt| <= max_dt_s -- a superset of the answer,
since a chord is never longer than the geodesic. Candidates are then checked exactly:
|dt| <= max_dt_s and the geodesic (pyproj Geod) <= within_m, both inclusive.

Live: ``close_to`` checks one new fix against the latest fix of every other animal.
Cross-animal by nature: it cannot live in the per-animal reducer (see the report).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from collarstream.core.geodesy import inverse
from collarstream.core.immobility import ecef

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Leopards that share a kill or mate come within metres; 500 m and 1 h catches an
# encounter between fixes hours apart without pairing neighbours on adjacent ridges.
WITHIN_M = 500.0
MAX_DT_S = 3600.0
# The tree radius is padded so float rounding cannot drop a pair at exactly within_m.
_PAD = 1.0 + 1e-9


@dataclass(frozen=True)
class Pairs:
    """Fix index pairs (i < j, different animals), their distance and time apart."""

    i: IntArray
    j: IntArray
    dist_m: FloatArray
    dt_s: FloatArray

    def __len__(self) -> int:
        return int(self.i.size)


def close_pairs(
    animal: IntArray,
    t_ms: IntArray,
    lon: FloatArray,
    lat: FloatArray,
    within_m: float = WITHIN_M,
    max_dt_s: float = MAX_DT_S,
) -> Pairs:
    """Every pair of fixes of different animals within max_dt_s and within_m (inclusive).

    Any order of input; pairs are sorted by (i, j). Order-independent by construction: a
    pair depends only on its two fixes.
    """
    animal = np.asarray(animal, np.int64)
    t = np.asarray(t_ms, np.int64)
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    scale = within_m / max_dt_s if max_dt_s > 0 else 0.0
    pts = np.column_stack([ecef(lon, lat), (t - (t.min() if t.size else 0)) / 1000.0 * scale])
    ids = np.unique(animal)
    members = [np.flatnonzero(animal == a) for a in ids]
    trees = [cKDTree(pts[m]) for m in members]
    ii: list[IntArray] = []
    jj: list[IntArray] = []
    for a in range(ids.size):
        for b in range(a + 1, ids.size):
            sdm = trees[a].sparse_distance_matrix(
                trees[b], within_m * _PAD + 1e-6, p=np.inf, output_type="ndarray"
            )
            ii.append(members[a][sdm["i"]])
            jj.append(members[b][sdm["j"]])
    i = np.concatenate(ii) if ii else np.empty(0, np.int64)
    j = np.concatenate(jj) if jj else np.empty(0, np.int64)
    i, j = np.minimum(i, j), np.maximum(i, j)
    dt = np.abs(t[j] - t[i]) / 1000.0
    d, _, _ = inverse(lon[i], lat[i], lon[j], lat[j])
    keep = (dt <= max_dt_s) & (d <= within_m)
    i, j, d, dt = i[keep], j[keep], d[keep], dt[keep]
    order = np.lexsort((j, i))
    return Pairs(i[order], j[order], d[order], dt[order])


def close_to(
    lon: float,
    lat: float,
    t_ms: int,
    other_lon: FloatArray,
    other_lat: FloatArray,
    other_t_ms: IntArray,
    within_m: float = WITHIN_M,
    max_dt_s: float = MAX_DT_S,
) -> tuple[IntArray, FloatArray]:
    """Live form: which of the other animals' latest fixes are close to a new fix.

    Returns (indices into the other_* arrays, geodesic distances). The caller passes the
    latest fix of every *other* animal. Same inclusive tests as ``close_pairs``, so a
    live alert and a replayed pair agree.
    """
    olon, olat = np.asarray(other_lon, np.float64), np.asarray(other_lat, np.float64)
    ot = np.asarray(other_t_ms, np.int64)
    d, _, _ = inverse(np.full(olon.size, lon), np.full(olon.size, lat), olon, olat)
    ok = (np.abs(ot - t_ms) / 1000.0 <= max_dt_s) & (d <= within_m)
    idx = np.flatnonzero(ok)
    return idx.astype(np.int64), d[idx]
