"""Location precision: exact, snapped to a grid of N km, or none.

The grid has rows of equal height (`grid_km` of latitude) and, in each row, columns
of equal width as close to `grid_km` as divides the circle, so a cell is about
`grid_km` square anywhere. A coarsened coordinate is the centre of its cell, which
makes coarsening idempotent and lets a test check that a coordinate is no finer than
its grid: `coarsen(*coarsen(x, y, g), g) == coarsen(x, y, g)`.

>>> coarsen(np.array([76.95]), np.array([43.24]), 10.0)[1].round(4).tolist()
[43.2684]
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from collarstream.delivery.model import Precision

FloatArray = npt.NDArray[np.float64]

KM_PER_DEG = 6371.0088 * math.pi / 180.0  # mean Earth radius, IUGG

# Coordinate pairs in our events (alerts, steps, fix records).
_PAIRS = (
    ("location-long", "location-lat"),
    ("start-location-long", "start-location-lat"),
    ("end-location-long", "end-location-lat"),
)


def coarsen(
    lon: npt.ArrayLike, lat: npt.ArrayLike, grid_km: float
) -> tuple[FloatArray, FloatArray]:
    """Centres of the `grid_km` cells holding each point."""
    if not grid_km > 0:
        raise ValueError(f"grid_km must be > 0, got {grid_km!r}")
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)
    dlat = grid_km / KM_PER_DEG
    n_rows = max(1, math.floor(180.0 / dlat))
    dlat = 180.0 / n_rows
    row = np.minimum(np.floor((lat + 90.0) / dlat), n_rows - 1)
    lat_c = -90.0 + (row + 0.5) * dlat
    width_km = 360.0 * KM_PER_DEG * np.cos(np.radians(lat_c))
    n_cols = np.maximum(1.0, np.floor(width_km / grid_km))
    dlon = 360.0 / n_cols
    x = np.mod(lon + 180.0, 360.0)
    col = np.minimum(np.floor(x / dlon), n_cols - 1)
    lon_c = -180.0 + (col + 0.5) * dlon
    return lon_c, lat_c


def _point(lon: float, lat: float, p: Precision) -> tuple[float, float] | None:
    if p.mode == "none":
        return None
    if p.mode == "exact":
        return lon, lat
    x, y = coarsen(np.array([lon]), np.array([lat]), p.grid_km)
    return float(x[0]), float(y[0])


def redact_geometry(geometry: dict[str, Any] | None, p: Precision) -> dict[str, Any] | None:
    """A GeoJSON geometry with every position coarsened (or None when mode is none)."""
    if geometry is None or p.mode == "none":
        return None
    if p.mode == "exact":
        return geometry

    def walk(c: Any) -> Any:
        if isinstance(c, list | tuple) and c and isinstance(c[0], int | float):
            pt = _point(float(c[0]), float(c[1]), p)
            assert pt is not None
            return [pt[0], pt[1]]
        return [walk(x) for x in c]

    out = dict(geometry)
    if "geometries" in out:
        out["geometries"] = [redact_geometry(g, p) for g in out["geometries"]]
    else:
        out["coordinates"] = walk(out["coordinates"])
    return out


def redact_event(event: dict[str, Any], p: Precision) -> dict[str, Any]:
    """A copy of an event (alert, step, fix, home range) with every location at
    precision `p`: coordinate pairs anywhere in it (details included) and GeoJSON
    geometries. Mode none removes them; it never leaves a finer coordinate behind."""
    if p.mode == "exact":
        return event
    out = copy.deepcopy(event)
    _redact_in_place(out, p)
    return out


def _redact_in_place(obj: Any, p: Precision) -> None:
    if isinstance(obj, list):
        for item in obj:
            _redact_in_place(item, p)
        return
    if not isinstance(obj, dict):
        return
    for klon, klat in _PAIRS:
        if klon in obj or klat in obj:
            lon, lat = obj.get(klon), obj.get(klat)
            pt = None if lon is None or lat is None else _point(float(lon), float(lat), p)
            obj[klon], obj[klat] = (None, None) if pt is None else pt
    if isinstance(obj.get("geometry"), dict):
        obj["geometry"] = redact_geometry(obj["geometry"], p)
    if (
        obj.get("type")
        in {"Point", "LineString", "Polygon", "MultiPolygon", "MultiPoint", "MultiLineString"}
        and "coordinates" in obj
    ):
        red = redact_geometry(obj, p)
        obj.clear()
        if red is not None:
            obj.update(red)
    for k, v in obj.items():
        if k != "geometry" and isinstance(v, dict | list):
            _redact_in_place(v, p)


def held_until_ms(fix_ms: int, p: Precision) -> int:
    """When a message about a fix taken at `fix_ms` may go out (delay_h)."""
    return int(fix_ms + p.delay_h * 3_600_000)
