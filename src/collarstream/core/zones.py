"""Urban-edge fences: graded zones around a city, entered with hysteresis.

Zone k of a fence is the city buffered by its distance (5 km, 1 km, 0 = the city
itself). An animal's level is the number of zones it is in. To rise to a level a fix
must be inside that zone; to fall below it, the fix must be outside the zone widened by
`hysteresis_m`. GPS jitter along a zone edge (a few tens of metres, up to ~100 m at
poor HDOP) therefore cannot flip the level back and forth: a Schmitt trigger per zone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

FloatArray = npt.NDArray[np.float64]
LevelArray = npt.NDArray[np.int8]


# AEQD centres are rounded to this many degrees (~11 km). Distances from the centre are
# true; across the fence the tangential scale is off by ~rho^2 / 6R^2, so a centre up to
# 6 km off the centroid moves a 5 km buffer of a 30 km city by a few centimetres. Coarse
# rounding lets fences built on the fly (weekly excursion references) share transformers.
AEQD_STEP_DEG = 0.1


def aeqd_at(lon: float, lat: float) -> Transformer:
    """Cached lon/lat -> AEQD metres transformer near (lon, lat)."""
    return _aeqd(
        round(round(lat / AEQD_STEP_DEG) * AEQD_STEP_DEG, 6),
        round(round(lon / AEQD_STEP_DEG) * AEQD_STEP_DEG, 6),
    )


@functools.lru_cache(maxsize=1024)
def _aeqd(lat0: float, lon0: float) -> Transformer:
    """lon/lat -> azimuthal equidistant metres at (lat0, lon0). Building one costs ~4 ms,
    so callers round the centre (`aeqd_at`) and the transformers are cached (pyproj
    transformers are thread-safe since 3.1)."""
    crs = CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


@dataclass(frozen=True)
class Zone:
    name: str
    distance_m: float
    severity: str = "warning"


@dataclass(frozen=True)
class UrbanFence:
    """A city polygon (lon/lat) with zones ordered outermost first."""

    name: str
    id: str
    geometry: BaseGeometry
    zones: tuple[Zone, ...]
    hysteresis_m: float = 250.0
    _enter: tuple[BaseGeometry, ...] = field(init=False, repr=False, compare=False)
    _stay: tuple[BaseGeometry, ...] = field(init=False, repr=False, compare=False)
    _to_xy: Transformer = field(init=False, repr=False, compare=False)
    # lon/lat box around the widest zone (west, south, east, north): fixes outside it are
    # in no zone, and are not projected.
    _box: tuple[float, float, float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.zones:
            raise ValueError(f"fence {self.name!r}: needs at least one zone")
        dists = [z.distance_m for z in self.zones]
        if any(d < 0 for d in dists) or dists != sorted(dists, reverse=True):
            raise ValueError(f"fence {self.name!r}: zone distances must be >= 0, outermost first")
        c = self.geometry.centroid
        # Azimuthal equidistant at the city: distances from it are true to < 0.1 % at 50 km.
        to_xy = aeqd_at(c.x, c.y)
        city = shapely.transform(
            self.geometry, lambda a: np.column_stack(to_xy.transform(a[:, 0], a[:, 1]))
        )
        enter = tuple(city.buffer(z.distance_m) if z.distance_m else city for z in self.zones)
        stay = tuple(city.buffer(z.distance_m + self.hysteresis_m) for z in self.zones)
        for g in (*enter, *stay):
            shapely.prepare(g)
        object.__setattr__(self, "_enter", enter)
        object.__setattr__(self, "_stay", stay)
        object.__setattr__(self, "_to_xy", to_xy)
        # The widest stay zone's vertices in lon/lat, and a margin of 0.01° (~1 km) for
        # its edges, straight in metres and so slightly bowed in degrees (by far less).
        ex, ey = shapely.get_coordinates(stay[0]).T
        vlon, vlat = to_xy.transform(ex, ey, direction="INVERSE")
        box = (min(vlon) - 0.01, min(vlat) - 0.01, max(vlon) + 0.01, max(vlat) + 0.01)
        object.__setattr__(self, "_box", tuple(float(v) for v in box))

    def raw_levels(self, lon: FloatArray, lat: FloatArray) -> tuple[LevelArray, LevelArray]:
        """Per fix: the deepest zone it is in, and the deepest zone it may stay in."""
        lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
        enter = np.zeros(lon.size, dtype=np.int8)
        stay = np.zeros(lon.size, dtype=np.int8)
        west, south, east, north = self._box
        near = np.flatnonzero((lon >= west) & (lon <= east) & (lat >= south) & (lat <= north))
        if near.size == 0:
            return enter, stay
        x, y = self._to_xy.transform(lon[near], lat[near])
        e_near, s_near = enter[near], stay[near]
        for k, (e, s) in enumerate(zip(self._enter, self._stay, strict=True)):
            e_near[shapely.contains_xy(e, x, y)] = k + 1
            s_near[shapely.contains_xy(s, x, y)] = k + 1
        enter[near], stay[near] = e_near, s_near
        return enter, stay

    def levels(self, lon: FloatArray, lat: FloatArray, prior: int = 0) -> LevelArray:
        """Hysteresis-filtered level after each fix of a time-sorted track."""
        enter, stay = self.raw_levels(lon, lat)
        return latch_levels(enter, stay, prior, len(self.zones))


# Up to this many fixes latch_levels runs the recurrence in Python (see there).
_LOOP_MAX = 8


def latch_levels(enter: LevelArray, stay: LevelArray, prior: int, n_zones: int) -> LevelArray:
    """level_i = max(enter_i, min(level_{i-1}, stay_i)), without a Python loop.

    Each zone is a set/reset latch: set by a fix inside it, reset by a fix outside its
    widened edge. The latch holds whichever happened last; `prior` is the state before
    the first fix.
    """
    n = enter.size
    if n <= _LOOP_MAX:
        # A few fixes (the live case): the recurrence itself, in exact integers, is
        # cheaper than a dozen numpy calls. Clipped to [0, n_zones] as the sum below is.
        level_i, out = min(max(int(prior), 0), n_zones), []
        for e, s in zip(enter.tolist(), stay.tolist(), strict=True):
            level_i = max(min(e, n_zones), min(level_i, s), 0)
            out.append(level_i)
        return np.asarray(out, dtype=np.int8)
    idx = np.arange(n)
    level = np.zeros(n, dtype=np.int8)
    for k in range(1, n_zones + 1):
        last_set = np.maximum.accumulate(np.where(enter >= k, idx, -1))
        last_reset = np.maximum.accumulate(np.where(stay < k, idx, -1))
        held = np.where((last_set == -1) & (last_reset == -1), prior >= k, last_set > last_reset)
        level += held.astype(np.int8)
    return level
