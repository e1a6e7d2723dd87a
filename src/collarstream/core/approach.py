"""Border approach: a fix within N km of its country's land border, heading toward it.

Only land borders count: the lines two countries of the layer share (not coast, not a
lake shore, not the artificial edge of a clipped layer). ``BorderLines`` holds them,
cut into short pieces and indexed, each piece labelled with the country on this side
and the neighbour across it.

Distance. For each fix the candidate pieces inside a lon/lat box of half-size
``max_m`` are expanded into segments, and every segment end is mapped into the fix's own
azimuthal equidistant frame with an exact geodesic inverse (x = d sin az, y = d cos az).
The nearest point of each segment to the origin is then found in that frame and mapped
back with a geodesic forward, so the reported distance *is* the geodesic distance from
the fix to the reported border point (to nanometres). The only approximation is the
shape of the border between two vertices (straight in the frame rather than straight in
lon/lat, as Natural Earth draws it): with 10m vertices a few km apart the reported
distance is within 0.1 % (and 1 m) of the brute-force geodesic minimum; the tests hold
it to 0.5 %. Fixes with no border within ``max_m`` get ``inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from shapely import STRtree

from collarstream.core.countries import CountryLayer, chunk_runs
from collarstream.core.episodes import Transitions, latch_runs
from collarstream.core.geodesy import forward, inverse, search_box_deg
from collarstream.core.laea import A_M, FLATTENING
from collarstream.core.steps import wrap180

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# A heading is only a direction of travel when the step is longer than GPS scatter: a
# resting animal's 20 m jitter points anywhere (seen on the real cuckoo stopover).
MIN_STEP_M = 100.0
# Pieces of this many segments keep the STRtree selective along long borders.
PIECE_SEGMENTS = 16
MAX_SEGMENT_DEG = 0.01
# A leopard walks 1-5 km of straight-line distance a day: 5 km gives about a day's
# warning before a crossing. A judgement for the demo, not a published threshold.
WITHIN_M = 5_000.0
# Far above GPS error (tens of metres) and a few hours of travel: one fix wobbling around
# the 5 km line cannot end and restart an episode.
HYSTERESIS_M = 1_000.0
# "Toward" = the step's heading within +-60 degrees of the direction to the border.
CONE_DEG = 60.0


@dataclass(frozen=True)
class BorderLines:
    """Land borders of a CountryLayer, one labelled copy per side."""

    pieces: npt.NDArray[np.object_]
    country: IntArray  # layer index of the country on this side
    neighbour: IntArray  # layer index of the country across
    coords: FloatArray  # all piece vertices, (m, 2) lon/lat
    offset: IntArray  # piece k owns coords[offset[k]:offset[k + 1]]
    tree: STRtree

    @staticmethod
    def from_layer(layer: CountryLayer, codes: tuple[str, ...] | None = None) -> BorderLines:
        """Shared border lines of every pair of touching countries (or only pairs with one
        of `codes`). Natural Earth outlines share vertices exactly along land borders, so
        the intersection of two boundaries is the border line; points where outlines only
        touch (tripoints) are dropped."""
        polys = layer.polygons
        bounds = shapely.boundary(polys)
        a, b = layer.tree.query(polys, predicate="intersects")
        keep = a < b
        if codes is not None:
            wanted = np.isin(np.asarray(layer.codes), codes)
            keep &= wanted[a] | wanted[b]
        a, b = a[keep], b[keep]
        shared = shapely.line_merge(shapely.intersection(bounds[a], bounds[b]))
        parts, pair = shapely.get_parts(shared, return_index=True)
        linear = shapely.get_type_id(parts) == 1  # LineString; points are tripoints
        # Vertices at most 0.01 degree (~1 km) apart: between two vertices the border is
        # taken as straight in each fix's frame, which sags < 0.1 m from any other reading
        # of "straight" over 1 km.
        parts, pair = shapely.segmentize(parts[linear], MAX_SEGMENT_DEG), pair[linear]
        coords, line_of = shapely.get_coordinates(parts, return_index=True)
        return _pieces(coords, line_of, a[pair], b[pair])

    def __len__(self) -> int:
        return int(self.pieces.size)


def _pieces(
    coords: FloatArray, line_of: IntArray, country: IntArray, neighbour: IntArray
) -> BorderLines:
    """Lines cut into pieces of PIECE_SEGMENTS segments sharing end vertices; every piece
    appears twice, once labelled from each side (tree entry k and k + n share coords)."""
    if line_of.size == 0:
        return _no_lines()
    vertex, piece, line_of_pc = chunk_runs(line_of, PIECE_SEGMENTS)
    pieces = shapely.linestrings(coords[vertex], indices=piece)
    side = (country[line_of_pc], neighbour[line_of_pc])
    both = np.concatenate([pieces, pieces])
    return BorderLines(
        pieces=both,
        country=np.concatenate([side[0], side[1]]),
        neighbour=np.concatenate([side[1], side[0]]),
        coords=coords[vertex],
        offset=np.concatenate([[0], np.cumsum(np.bincount(piece))]),
        tree=STRtree(both),
    )


def _no_lines() -> BorderLines:
    e = np.empty(0, dtype=np.int64)
    return BorderLines(
        np.empty(0, dtype=object),
        e,
        e,
        np.empty((0, 2)),
        np.zeros(1, np.int64),
        STRtree(np.empty(0, dtype=object)),
    )


@dataclass(frozen=True)
class BorderDistance:
    """Per fix: geodesic distance to the nearest land border of its own country, the
    neighbour across that point, the point, and the azimuth from the fix toward it."""

    dist_m: FloatArray  # inf when no border within max_m, or the fix is in no country
    neighbour: IntArray  # -1 where dist_m is inf
    azimuth_deg: FloatArray  # [0, 360); NaN where dist_m is inf or 0
    lon: FloatArray
    lat: FloatArray


def border_distance(
    lines: BorderLines, lon: FloatArray, lat: FloatArray, country: IntArray, max_m: float
) -> BorderDistance:
    """Nearest point of the fix's own country's land border, searched within max_m.

    `country` is the layer index per fix (CountryLayer.locate); a fix in no country (-1)
    has no border. Pure per fix: any subset of fixes gives the same rows.
    """
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    country = np.asarray(country, np.int64)
    n = lon.size
    out = BorderDistance(
        np.full(n, np.inf),
        np.full(n, -1, np.int64),
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.full(n, np.nan),
    )
    if n == 0 or len(lines) == 0:
        return out
    dlat, dlon = search_box_deg(lat, max_m)
    boxes = shapely.box(lon - dlon, lat - dlat, lon + dlon, lat + dlat)
    fix, pc = lines.tree.query(boxes)
    same = (country[fix] == lines.country[pc]) & (country[fix] >= 0)
    fix, pc = fix[same], pc[same]
    if fix.size == 0:
        return out
    pc_row = pc % (lines.pieces.size // 2)  # both labelled copies share coordinates
    nseg = lines.offset[pc_row + 1] - lines.offset[pc_row] - 1
    # Each vertex of a (fix, piece) pair once (a segment's end is the next one's start).
    nv = nseg + 1
    first_v = np.cumsum(nv) - nv
    vert_pair = np.repeat(np.arange(fix.size), nv)
    v = lines.offset[pc_row][vert_pair] + np.arange(nv.sum()) - first_v[vert_pair]
    last_v = np.zeros(vert_pair.size, dtype=bool)
    last_v[first_v + nv - 1] = True
    i0 = np.flatnonzero(~last_v)  # each segment by its first vertex
    # Exact geodesics to every vertex were most of this function's time. A local plane
    # (`_near_frame`) gives each segment's distance to within a bound first; only
    # segments that may be a fix's nearest get the exact frame (the same nearest point
    # as computing every one: a segment left out is farther than one kept).
    ax, ay, err = _near_frame(lon[fix[vert_pair]], lat[fix[vert_pair]], lines.coords[v])
    approx = _segment_distance(ax[i0], ay[i0], ax[i0 + 1], ay[i0 + 1])[0]
    slack = np.maximum(err[i0], err[i0 + 1])
    f = fix[vert_pair[i0]]
    reach = np.full(n, np.inf)
    np.minimum.at(reach, f, approx + slack)
    maybe = approx - slack <= np.minimum(reach[f], max_m)
    i0 = i0[maybe]
    if i0.size == 0:
        return out
    need = np.zeros(vert_pair.size, dtype=bool)
    need[i0] = need[i0 + 1] = True
    xv, yv = np.full(vert_pair.size, np.nan), np.full(vert_pair.size, np.nan)
    xv[need], yv[need] = _frame(
        lon[fix[vert_pair[need]]], lat[fix[vert_pair[need]]], lines.coords[v[need]]
    )
    seg_pair = vert_pair[i0]
    f = fix[seg_pair]
    d, cx, cy = _segment_distance(xv[i0], yv[i0], xv[i0 + 1], yv[i0 + 1])
    order = np.lexsort((d, f))
    first = order[np.concatenate([[True], f[order][1:] != f[order][:-1]])]
    first = first[d[first] <= max_m]
    rows = f[first]
    dist = d[first]
    az = np.mod(np.degrees(np.arctan2(cx[first], cy[first])), 360.0)
    plon, plat = forward(lon[rows], lat[rows], az, dist)
    out.dist_m[rows] = dist
    out.neighbour[rows] = lines.neighbour[pc[seg_pair[first]]]
    out.azimuth_deg[rows] = np.where(dist > 0, az, np.nan)
    out.lon[rows], out.lat[rows] = plon, plat
    return out


def _segment_distance(
    x0: FloatArray, y0: FloatArray, x1: FloatArray, y1: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Distance from the origin to each segment, and the segment's nearest point."""
    dx, dy = x1 - x0, y1 - y0
    dd = dx * dx + dy * dy
    t = np.clip(np.divide(-(x0 * dx + y0 * dy), dd, out=np.zeros_like(dd), where=dd > 0), 0, 1)
    cx, cy = x0 + t * dx, y0 + t * dy
    return np.hypot(cx, cy), cx, cy


_E2 = FLATTENING * (2.0 - FLATTENING)  # WGS84 e²


def _near_frame(
    lon0: FloatArray, lat0: FloatArray, pts: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`_frame` approximated on the tangent plane (the ellipsoid's radii of curvature at
    (lon0, lat0)), and a bound on each point's distance from its exact `_frame` place.

    The plane and the azimuthal equidistant frame agree to second order in ρ / R (ρ the
    point's distance, R the earth's radius); what is left grows as ρ² / R, faster toward
    the poles (tan φ). The bound, 4 ρ² / R (1 + |tan φ|) + 1 m, is many times what
    `tests/test_detectors.py` measures for points up to 50 km away.
    """
    phi = np.radians(np.clip(lat0, -89.9, 89.9))
    w2 = 1.0 - _E2 * np.sin(phi) ** 2
    n_rad = A_M / np.sqrt(w2)
    m_rad = A_M * (1.0 - _E2) / (w2 * np.sqrt(w2))
    dlon = np.mod(pts[:, 0] - lon0 + 180.0, 360.0) - 180.0
    x = np.radians(dlon) * n_rad * np.cos(phi)
    y = np.radians(pts[:, 1] - lat0) * m_rad
    rho2 = x * x + y * y
    return x, y, 4.0 * rho2 / A_M * (1.0 + np.abs(np.tan(phi))) + 1.0


def _frame(lon0: FloatArray, lat0: FloatArray, pts: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Azimuthal equidistant coordinates of pts around (lon0, lat0), by exact geodesics."""
    d, az, _ = inverse(lon0, lat0, pts[:, 0], pts[:, 1])
    a = np.radians(np.nan_to_num(az))
    return d * np.sin(a), d * np.cos(a)


@dataclass(frozen=True)
class ApproachCarry:
    """State after the last good fix before a recomputed range."""

    active: bool
    country: int


@dataclass(frozen=True)
class Approach:
    """Per fix: heading toward the border, in an approach episode; and the episodes."""

    toward: BoolArray
    active: BoolArray
    start: IntArray  # fix indices where an episode starts (alert: neighbour[start])
    end: IntArray  # fix indices where one ends
    end_crossed: BoolArray  # per end: True if it ended because the country changed
    distance: BorderDistance

    @property
    def transitions(self) -> Transitions:
        return Transitions(self.start, self.end)


NO_CARRY = -2  # approach_many's carried country of a track without a fix before


def approach(
    lines: BorderLines,
    lon: FloatArray,
    lat: FloatArray,
    heading_deg: FloatArray,
    country: IntArray,
    carry: ApproachCarry | None = None,
    within_m: float = WITHIN_M,
    hysteresis_m: float = HYSTERESIS_M,
    cone_deg: float = CONE_DEG,
    step_m: FloatArray | None = None,
    min_step_m: float = MIN_STEP_M,
    distance: BorderDistance | None = None,
) -> Approach:
    """Border-approach episodes over time-sorted good fixes of one animal.

    Enter: within `within_m` of the own country's land border and heading toward it
    (|wrap180(heading - azimuth to the border)| <= cone_deg; a NaN heading, at a burst
    start, is never toward; with `step_m`, the length of the step arriving at each fix,
    neither is the heading of a step shorter than min_step_m). Leave: farther than
    within_m + hysteresis_m, in no country,
    or the country changed since the previous fix (the crossing is alerted elsewhere; a
    crossing fix never starts an episode). Heading away while still near does not end an
    episode: the animal is still at the border.

    `distance`: the fixes' border_distance searched within within_m + hysteresis_m, when
    the caller has it already (see core.fixfacts); computed here otherwise.

    Contract: with ``carry = ApproachCarry(active[r-1], country[r-1])`` the result over
    fixes [r:] equals rows [r:] of the whole-track result. ``carry=None`` means no prior
    fix: not active, no crossing at the first fix.
    """
    country = np.asarray(country, np.int64)
    dist = (
        border_distance(lines, lon, lat, country, within_m + hysteresis_m)
        if distance is None
        else distance
    )
    if step_m is None:
        step_m = np.full(country.size, np.inf)
    toward, active, before, crossed = approach_many(
        np.asarray(heading_deg, np.float64),
        np.asarray(step_m, np.float64),
        country,
        dist.dist_m,
        dist.azimuth_deg,
        np.array([0, country.size]),
        np.array([False if carry is None else carry.active]),
        np.array([NO_CARRY if carry is None else carry.country]),
        within_m,
        hysteresis_m,
        cone_deg,
        min_step_m,
    )
    on, off = np.flatnonzero(active & ~before), np.flatnonzero(~active & before)
    return Approach(toward, active, on, off, crossed[off], dist)


def approach_many(
    heading_deg: FloatArray,
    step_m: FloatArray,
    country: IntArray,
    dist_m: FloatArray,
    azimuth_deg: FloatArray,
    bounds: IntArray,
    was_active: BoolArray,
    was_country: IntArray,
    within_m: float = WITHIN_M,
    hysteresis_m: float = HYSTERESIS_M,
    cone_deg: float = CONE_DEG,
    min_step_m: float = MIN_STEP_M,
) -> tuple[BoolArray, BoolArray, BoolArray, BoolArray]:
    """`approach` of many animals' fixes at once (track m: rows bounds[m]:bounds[m + 1],
    carried in with `was_active[m]` and `was_country[m]`, NO_CARRY for none; `dist_m`
    and `azimuth_deg` from each fix's `BorderDistance`): per fix, heading toward the
    border, in an episode, in an episode before it, and crossed."""
    heading = np.where(step_m >= min_step_m, heading_deg, np.nan)
    off = np.abs(wrap180(heading - azimuth_deg))
    toward = (off <= cone_deg) & (dist_m <= within_m)  # NaN compares False
    sizes = np.diff(bounds)
    prev_country = np.empty_like(country)
    prev_country[1:] = country[:-1]
    first = bounds[:-1][sizes > 0]
    carried = np.asarray(was_country, np.int64)[sizes > 0]
    prev_country[first] = np.where(carried == NO_CARRY, country[first], carried)
    crossed = country != prev_country
    stay = (dist_m <= within_m + hysteresis_m) & ~crossed
    enter = toward & ~crossed
    was = np.asarray(was_active, dtype=bool)[:, None]
    active, before = latch_runs(enter[:, None], stay[:, None], bounds, was, np.ones(was.size, bool))
    return toward, active[:, 0], before[:, 0], crossed
