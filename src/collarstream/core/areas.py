"""Protected areas: membership with hysteresis, and its exit / enter transitions.

An animal is *inside* an area from the first fix within its polygon until the first fix
farther than ``hysteresis_m`` outside it: GPS jitter along an edge (tens of metres, a
hand-drawn outline off by more) cannot flap. Each area is an ``UrbanFence`` with a
single zone at distance 0, so the projection, buffering and the latch are the ones the
urban-edge fences already use (``zones.latch_levels``).

Transitions: "exit" (inside -> outside, a warning: the animal has left protection) and
"enter" (outside -> inside, info: back under protection, the all-clear).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from collarstream.core.episodes import latch, latch_runs, transitions
from collarstream.core.zones import UrbanFence, Zone

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Hand-drawn outlines are off by hundreds of metres; 500 m of hysteresis keeps a
# leopard walking along a park edge from toggling exit / enter on every fix.
HYSTERESIS_M = 500.0


def area_fence(name: str, id: str, geometry: Any, hysteresis_m: float) -> UrbanFence:
    """A polygon (lon/lat) as a one-zone fence: enter inside it, leave beyond hysteresis_m."""
    return UrbanFence(name, id, geometry, (Zone("inside", 0.0, "info"),), hysteresis_m)


def inside_masks(
    fence: UrbanFence, lon: FloatArray, lat: FloatArray
) -> tuple[BoolArray, BoolArray]:
    """Per fix: inside the polygon, and inside the polygon widened by the hysteresis."""
    enter, stay = fence.raw_levels(lon, lat)
    return enter > 0, stay > 0


def membership(
    enter: BoolArray, stay: BoolArray, carry: bool | None
) -> tuple[BoolArray, IntArray, IntArray]:
    """(inside per fix, exit fix indices, enter fix indices) from raw masks.

    carry None (no prior fix): the first fix counts as inside when within the widened
    polygon, and makes no transition.
    """
    if enter.size == 0:
        e = np.empty(0, dtype=np.int64)
        return np.empty(0, dtype=bool), e, e.copy()
    prior = bool(stay[0]) if carry is None else carry
    inside = latch(enter, stay, prior)
    tr = transitions(inside, None if carry is None else carry)
    return inside, tr.off, tr.on


@dataclass(frozen=True)
class AreaMembership:
    """inside[:, k]: membership of area k after each fix; exits/enters: (fix, area) rows."""

    inside: npt.NDArray[np.bool_]
    exit_fix: IntArray
    exit_area: IntArray
    enter_fix: IntArray
    enter_area: IntArray


def columns_membership(
    enter: npt.NDArray[np.bool_], stay: npt.NDArray[np.bool_], carry: Sequence[bool] | None
) -> AreaMembership:
    """`membership` of every column of (fixes, areas) masks at once (no loop over
    areas); transitions come area by area, each in fix order, as column-wise calls
    would give them."""
    n, k = enter.shape
    e = np.empty(0, dtype=np.int64)
    if n == 0 or k == 0:
        return AreaMembership(np.zeros((n, k), dtype=bool), e, e.copy(), e.copy(), e.copy())
    inside, prev = membership_runs(
        enter, stay, np.array([0, n]), [None if carry is None else tuple(carry)]
    )
    return area_transitions(inside, prev)


def membership_runs(
    enter: npt.NDArray[np.bool_],
    stay: npt.NDArray[np.bool_],
    bounds: IntArray,
    carry: Sequence[tuple[bool, ...] | None],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """`columns_membership` of many animals' fixes at once (animal m: rows
    bounds[m]:bounds[m + 1], carried in with carry[m]): membership after each fix, and
    before it (`episodes.latch_runs`)."""
    k = enter.shape[1]
    # carry None: the first fix counts as inside when within the widened polygon.
    firsts = zip(bounds[:-1].tolist(), bounds[1:].tolist(), carry, strict=True)
    prior = np.array(
        [(stay[a] if a < b else [False] * k) if c is None else c for a, b, c in firsts],
        dtype=bool,
    ).reshape(len(carry), k)
    news = np.array([c is not None for c in carry], dtype=bool)
    return latch_runs(enter, stay, bounds, prior, news)


def quiet_membership(inside: npt.NDArray[np.bool_]) -> AreaMembership:
    """Membership without a transition (what `area_transitions` finds when nothing
    changed), without looking."""
    e = np.empty(0, dtype=np.int64)
    return AreaMembership(inside, e, e, e, e)


def area_transitions(inside: npt.NDArray[np.bool_], prev: npt.NDArray[np.bool_]) -> AreaMembership:
    """Exits and enters, area by area, each in fix order."""
    exit_area, exit_fix = np.nonzero((~inside & prev).T)
    enter_area, enter_fix = np.nonzero((inside & ~prev).T)
    return AreaMembership(
        inside,
        exit_fix.astype(np.int64),
        exit_area.astype(np.int64),
        enter_fix.astype(np.int64),
        enter_area.astype(np.int64),
    )


@dataclass(frozen=True)
class ProtectedAreas:
    """Protected-area polygons (lon/lat) with ids and names."""

    fences: tuple[UrbanFence, ...]

    @staticmethod
    def from_geojson(collection: Mapping[str, Any]) -> ProtectedAreas:
        """From an already parsed GeoJSON FeatureCollection (the core reads no files).

        Each feature needs properties ``id`` and ``name``; ``hysteresis_m`` is optional.
        """
        fences = []
        for feat in collection["features"]:
            p = feat["properties"]
            geom = shapely.make_valid(shapely.geometry.shape(feat["geometry"]))
            h = float(p.get("hysteresis_m", HYSTERESIS_M))
            fences.append(area_fence(str(p["name"]), str(p["id"]), geom, h))
        return ProtectedAreas(tuple(fences))

    def __len__(self) -> int:
        return len(self.fences)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.fences)

    def membership(
        self,
        lon: FloatArray,
        lat: FloatArray,
        carry: tuple[bool, ...] | None = None,
        masks: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]] | None = None,
    ) -> AreaMembership:
        """Membership of every area after each time-sorted good fix of one animal.

        Contract: with ``carry = tuple(inside[r - 1])`` the result over fixes [r:] equals
        rows [r:] of the whole-track result (transitions shifted by r). ``carry=None``:
        no prior fix (see ``membership``). ``masks``: the fixes' `inside_masks`, a column
        per area (enter, stay), when the caller has them already (core.fixfacts).
        """
        n, k = np.size(lon), len(self.fences)
        if masks is None:
            pairs = [inside_masks(fence, lon, lat) for fence in self.fences]
            enter = np.column_stack([e for e, _ in pairs]) if k else np.zeros((n, 0), bool)
            stay = np.column_stack([s for _, s in pairs]) if k else np.zeros((n, 0), bool)
        else:
            enter, stay = (np.asarray(m, dtype=bool).reshape(n, k) for m in masks)
        return columns_membership(enter, stay, carry)
