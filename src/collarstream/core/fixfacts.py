"""What the context says about each fix and each step, for many fixes at once.

Every fact here is a pure function of one position (or of one step's two ends): the
country a fix is in, the nearest land border of that country, the raw urban-zone and
protected-area levels (before hysteresis, which is sequential and per animal), and the
border crossings along the geodesic between two fixes. The reducer needs them for the
fixes it recomputes. Asked one animal at a time, each costs a fixed ~0.1-0.4 ms in
small-array overheads (STRtree queries, pyproj calls), which was most of a live
single-fix advance; `core.track.advance_many` asks once for every animal of a
micro-batch and hands each its rows. Purity is what makes that exact: a fact does not
depend on which other fixes share the call.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from collarstream.core.approach import BorderDistance, BorderLines, border_distance
from collarstream.core.areas import ProtectedAreas, inside_masks
from collarstream.core.countries import CountryLayer, Crossings, no_crossings
from collarstream.core.frozen import evolve
from collarstream.core.zones import UrbanFence

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
LevelArray = npt.NDArray[np.int8]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PointFacts:
    """Per fix (rows): country index (-1: none), the own country's nearest land border
    (None without border lines), raw urban-zone levels (enter, stay; a column per
    fence) and raw protected-area masks (enter, stay; a column per area)."""

    country: IntArray
    border: BorderDistance | None
    zone_enter: LevelArray
    zone_stay: LevelArray
    area_enter: BoolArray
    area_stay: BoolArray

    def rows(self, lo: int, hi: int) -> PointFacts:
        border = None if self.border is None else _rows(self.border, lo, hi)
        return evolve(_rows(self, lo, hi, skip=("border",)), border=border)


def _rows(columns: Any, lo: int, hi: int, skip: tuple[str, ...] = ()) -> Any:
    """Rows [lo, hi) of a dataclass whose fields are arrays of one row per item."""
    return evolve(
        columns,
        **{n: getattr(columns, n)[lo:hi] for n in _field_names(type(columns)) if n not in skip},
    )


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """`dataclasses.fields` builds its tuple anew on every call (~10 µs; three calls per
    animal per reduce call)."""
    return tuple(f.name for f in fields(cls))


def point_facts(
    lon: FloatArray,
    lat: FloatArray,
    countries: CountryLayer | None,
    borders: BorderLines | None,
    border_max_m: float,
    urban: Sequence[UrbanFence],
    areas: ProtectedAreas | None,
) -> PointFacts:
    """The facts of every fix (lon, lat), in one vectorized pass per kind."""
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    n = lon.size
    country = (
        countries.locate(lon, lat) if countries is not None and n else np.full(n, -1, np.int64)
    )
    border = None
    if countries is not None and borders is not None:
        border = border_distance(borders, lon, lat, country, border_max_m)
    zone_enter = np.zeros((n, len(urban)), np.int8)
    zone_stay = np.zeros((n, len(urban)), np.int8)
    for f, fence in enumerate(urban):
        if n:
            zone_enter[:, f], zone_stay[:, f] = fence.raw_levels(lon, lat)
    k = len(areas) if areas is not None else 0
    area_enter = np.zeros((n, k), bool)
    area_stay = np.zeros((n, k), bool)
    if areas is not None and n:
        for a, fence in enumerate(areas.fences):
            area_enter[:, a], area_stay[:, a] = inside_masks(fence, lon, lat)
    return PointFacts(country, border, zone_enter, zone_stay, area_enter, area_stay)


def step_crossings(
    countries: CountryLayer | None,
    lon0: FloatArray,
    lat0: FloatArray,
    lon1: FloatArray,
    lat1: FloatArray,
) -> Crossings:
    """Border crossings along every step (rows ordered by step, as CountryLayer's)."""
    if countries is None or np.size(lon0) == 0:
        return no_crossings()
    return countries.crossings(lon0, lat0, lon1, lat1)


def crossing_rows(x: Crossings, lo: int, hi: int) -> Crossings:
    """The crossings of steps [lo, hi), renumbered from 0."""
    a, b = np.searchsorted(x.step, [lo, hi])
    rows = _rows(x, int(a), int(b))
    return evolve(rows, step=rows.step - lo)
