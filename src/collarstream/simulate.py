"""Deterministic simulator of eleven satellite-collared leopards in Kazakhstan.

Each animal does a correlated random walk pulled back to a home-range centre (an
Ornstein–Uhlenbeck-like velocity process, hard-limited to the home-range radius), and some
animals follow scripted trips (waypoints) that are the same for every seed, so a demo always
shows, within the first days:

* SL-ALM-01 walking down from Ile-Alatau into Almaty's city limits and back (days 0.55–2.75);
* SL-KUN-01 crossing the Kungey Alatau ridge into Kyrgyzstan and back (days 1.2–2.8);
* PL-KYZ-01, the Persian leopard of Kyzylsai, walking through the Ustyurt reserve into
  Turkmenistan and back (days 0.1–9.6, across the border around day 3.2);
* SL-ZHO-01 crossing into China in the Zhongar Alatau (days 9–11.5).

Fixes on the legs a demo relies on (the approach to a fence, the destination) never fail and
are never outliers. The seed only changes the noise: the wander around the centre, GPS error,
HDOP, failed fixes, outliers, duplicates and upload timing.

The collar model: a fix every 4 h (a few seconds late, as a GPS needs time to fix), batch
uploads every ~12 h per collar at a random phase, ~10 % failed fixes, HDOP mostly 1–3 and
sometimes 5–15 with σ ≈ 5 m × HDOP position error, ~1 % of fixes re-sent in the next upload
and ~0.5 % outliers tens of km off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

from collarstream.movebank import write_movebank_csv
from collarstream.timefmt import format_timestamp, parse_timestamp

__all__ = [
    "ANIMALS",
    "DEFAULT_START_MS",
    "AnimalSpec",
    "AnimalTrack",
    "Upload",
    "Waypoint",
    "iter_fixes",
    "simulate",
    "simulate_to_csv",
    "simulate_tracks",
    "taxa",
]

DEFAULT_START_MS = parse_timestamp("2026-03-01T00:00:00.000Z")

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
FIX_INTERVAL_MS = 4 * HOUR_MS
UPLOAD_INTERVAL_MS = 12 * HOUR_MS

# Collar and movement parameters (rates are per scheduled fix unless stated).
P_FAILED = 0.10
P_DUPLICATE = 0.01
P_OUTLIER = 0.005
P_UPLOAD_MISSED = 0.05  # the satellite uplink fails; the next upload carries both batches
P_BAD_HDOP = 0.12
GPS_SIGMA_M_PER_HDOP = 5.0
OUTLIER_KM = (30.0, 90.0)
STEP_SIGMA_KM = 1.3  # random part of the 4-hourly velocity
PERSISTENCE = 0.55  # velocity autocorrelation between 4-h steps (correlated walk)
PULL = 0.12  # home-range attraction per step, as a fraction of the offset
P_DASH = 0.03  # occasional fast relocation across the home range
TRIP_RAMP_DAYS = 0.25  # the home-range wander fades in/out over this time at trip ends
TRIP_WANDER = 0.05  # fraction of the home-range wander kept while on a scripted trip

_KM_PER_DEG_LAT = 110.57
_KM_PER_DEG_LON_EQ = 111.32

SNOW_LEOPARD = "Panthera uncia"
PERSIAN_LEOPARD = "Panthera pardus tulliana"


@dataclass(frozen=True, slots=True)
class Waypoint:
    """Where a scripted trip puts the animal at ``day`` (days after the simulation start).

    ``reliable`` marks the leg from this waypoint to the next as one the demo relies on
    (the destination, the approach to a fence): its fixes never fail and are never outliers,
    so the crossing shows up whatever the seed.
    """

    day: float
    lon: float
    lat: float
    reliable: bool = False


@dataclass(frozen=True, slots=True)
class AnimalSpec:
    animal: str
    tag: str
    species: str
    place: str
    lon: float  # home-range centre
    lat: float
    range_km: float  # hard limit of the wander around the centre
    height_m: float  # terrain height at the centre
    height_grad_m_per_km_north: float  # crude terrain slope (Ile-Alatau falls to the north)
    trips: tuple[tuple[Waypoint, ...], ...] = ()


def _trip(
    *points: tuple[float, float, float] | tuple[float, float, float, bool],
) -> tuple[Waypoint, ...]:
    return tuple(Waypoint(*p) for p in points)


def _spec(
    animal: str,
    tag: str,
    place: str,
    centre: tuple[float, float],
    range_km: float,
    terrain: tuple[float, float],
    *trips: tuple[Waypoint, ...],
    species: str = SNOW_LEOPARD,
) -> AnimalSpec:
    return AnimalSpec(animal, tag, species, place, *centre, range_km, *terrain, trips=trips)


# Home-range centres were checked against Natural Earth 1:10m admin-0 and OSM's Almaty
# boundary: each is at least range_km + 3 km from any border and from the city limits.
# terrain = (height at the centre in m, slope in m per km northwards).
# fmt: off
ANIMALS: tuple[AnimalSpec, ...] = (
    _spec(
        "SL-ALM-01", "40961", "Ile-Alatau NP", (77.20, 43.00), 4.0, (3500.0, -125.0),
        # Down the Medeu valley at night (UTC+5), a day hidden inside the city limits at the
        # urban edge, back the next night. Distances are to OSM's Almaty boundary.
        _trip(
            (0.55, 77.20, 43.00),  # 18:12 local
            (0.80, 77.15, 43.06, True),  # ~5 km from the city limits
            (0.95, 77.105, 43.105, True),  # hesitates ~0.6 km outside them
            (1.15, 77.103, 43.107),
            (1.30, 77.09, 43.12),  # ~0.5 km inside
            (1.45, 77.03, 43.19, True),  # the urban edge, ~3 km inside
            (1.95, 77.02, 43.195),
            (2.15, 77.08, 43.12),
            (2.45, 77.15, 43.05),
            (2.75, 77.20, 43.00),
        ),
    ),
    _spec("SL-ALM-02", "40962", "Ile-Alatau NP", (77.26, 43.07), 4.0, (3000.0, -60.0)),
    _spec("SL-ALM-03", "40963", "Ile-Alatau NP", (77.33, 42.99), 4.0, (3400.0, -60.0)),
    _spec(
        "SL-KUN-01", "40971", "Kungey Alatau", (77.80, 42.98), 4.0, (3200.0, -40.0),
        _trip(
            (1.20, 77.80, 42.98),
            (1.55, 77.82, 42.87),  # on the ridge, the Kyrgyz border
            (1.75, 77.85, 42.80, True),  # ~9 km into Kyrgyzstan
            (2.25, 77.85, 42.80),
            (2.45, 77.82, 42.87),
            (2.80, 77.80, 42.98),
        ),
    ),
    _spec("SL-KUN-02", "40972", "Kungey Alatau", (78.25, 43.00), 5.0, (3100.0, -40.0)),
    _spec(
        "SL-ZHO-01", "40981", "Zhongar Alatau", (80.25, 45.22), 5.0, (2600.0, -30.0),
        _trip(
            (9.00, 80.25, 45.22),
            (9.60, 80.40, 45.13),  # ~4 km before the Chinese border
            (10.00, 80.60, 45.05, True),  # ~7 km into China
            (10.60, 80.60, 45.05),
            (11.00, 80.40, 45.13),
            (11.50, 80.25, 45.22),
        ),
    ),
    _spec("SL-ZHO-02", "40982", "Zhongar Alatau", (80.02, 45.28), 5.0, (2400.0, -30.0)),
    _spec("SL-SAI-01", "40991", "Sairam-Ugam NP", (70.35, 42.40), 6.0, (2800.0, -30.0)),
    _spec("SL-ALT-01", "41001", "Katon-Karagai NP", (85.75, 49.15), 6.0, (2300.0, 0.0)),
    _spec("SL-ALT-02", "41002", "Katon-Karagai NP", (86.30, 49.10), 6.0, (2500.0, 0.0)),
    _spec(
        "PL-KYZ-01", "41101", "Kyzylsai, Mangystau", (52.85, 43.15), 6.0, (250.0, 0.0),
        # A compressed version of the reported Kyzylsai–Ustyurt–Turkmenistan route: legs of
        # 45–65 km a day, a long but possible pace for a travelling leopard.
        _trip(
            (0.10, 52.85, 43.15),
            (1.90, 54.20, 42.85),  # western Ustyurt reserve
            (2.90, 54.35, 42.45),  # southern edge of the plateau, ~20 km from the border
            (3.50, 54.30, 42.05, True),  # ~20 km into Turkmenistan
            (4.50, 54.15, 41.95, True),
            (5.50, 54.30, 42.05),
            (6.30, 54.35, 42.45),
            (7.60, 54.20, 42.85),
            (9.60, 52.85, 43.15),
        ),
        species=PERSIAN_LEOPARD,
    ),
)
# fmt: on


def taxa() -> dict[str, str]:
    """Animal id -> species, for ``write_movebank_csv``."""
    return {a.animal: a.species for a in ANIMALS}


@dataclass(frozen=True)
class AnimalTrack:
    """Ground truth and observations of one collar, one row per scheduled fix, in time order.

    Tests and benchmarks use it to know which fixes are outliers and where the animal was.
    """

    spec: AnimalSpec
    t_ms: npt.NDArray[np.int64]
    true_lon: npt.NDArray[np.float64]
    true_lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]  # NaN for a failed fix
    lat: npt.NDArray[np.float64]
    hdop: npt.NDArray[np.float64]  # NaN for a failed fix
    sats: npt.NDArray[np.float64]  # NaN for a failed fix
    height_m: npt.NDArray[np.float64]  # NaN for a failed or 2-D fix
    failed: npt.NDArray[np.bool_]
    outlier: npt.NDArray[np.bool_]
    on_trip: npt.NDArray[np.bool_]  # inside a scripted trip's time span


@dataclass(frozen=True)
class Upload:
    """One satellite upload of a collar: the fixes collarstream received at ``received_ms``."""

    received_ms: int
    animal: str
    fixes: list[dict[str, Any]]


# --------------------------------------------------------------------------- geometry


def _km_per_deg_lon(lat: float) -> float:
    return _KM_PER_DEG_LON_EQ * math.cos(math.radians(lat))


def _to_lonlat(
    spec: AnimalSpec, x_km: npt.NDArray[np.float64], y_km: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    # One fixed equirectangular frame per animal: waypoints map back to exactly the
    # coordinates they were given in, which is what the geography guarantees rely on.
    return spec.lon + x_km / _km_per_deg_lon(spec.lat), spec.lat + y_km / _KM_PER_DEG_LAT


def _to_km(spec: AnimalSpec, lon: float, lat: float) -> tuple[float, float]:
    return (lon - spec.lon) * _km_per_deg_lon(spec.lat), (lat - spec.lat) * _KM_PER_DEG_LAT


def _anchor(
    spec: AnimalSpec, day: npt.NDArray[np.float64]
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.bool_],
    npt.NDArray[np.bool_],
]:
    """Scripted position (km from the centre), wander weight, on-trip and reliable-leg masks."""
    ax = np.zeros_like(day)
    ay = np.zeros_like(day)
    weight = np.ones_like(day)
    on_trip = np.zeros(day.shape, dtype=bool)
    reliable = np.zeros(day.shape, dtype=bool)
    for trip in spec.trips:
        days = np.array([w.day for w in trip])
        xy = np.array([_to_km(spec, w.lon, w.lat) for w in trip])
        inside = (day >= days[0]) & (day <= days[-1])
        ax[inside] = np.interp(day[inside], days, xy[:, 0])
        ay[inside] = np.interp(day[inside], days, xy[:, 1])
        ramp = np.clip(np.minimum(day - days[0], days[-1] - day) / TRIP_RAMP_DAYS, 0.0, 1.0)
        weight[inside] = 1.0 - (1.0 - TRIP_WANDER) * ramp[inside]
        on_trip |= inside
        for k, w in enumerate(trip[:-1]):
            if w.reliable:
                reliable |= (day >= w.day) & (day < trip[k + 1].day)
    return ax, ay, weight, on_trip, reliable


# --------------------------------------------------------------------------- model


def _fix_times(rng: np.random.Generator, start_ms: int, days: float) -> npt.NDArray[np.int64]:
    n = math.ceil(days * DAY_MS / FIX_INTERVAL_MS)
    # A GPS fix lands a few seconds to ~1.5 min after the scheduled time (time to fix).
    jitter = rng.integers(3_000, 95_000, size=n)
    return start_ms + np.arange(n, dtype=np.int64) * FIX_INTERVAL_MS + jitter


def _wander(rng: np.random.Generator, n: int, range_km: float) -> npt.NDArray[np.float64]:
    """Offsets (n, 2) km from the anchor: correlated walk pulled back to 0, capped at range_km.

    A sequential recurrence (each step depends on the last), so a loop; n is ~6 per day.
    """
    eps = rng.normal(0.0, STEP_SIGMA_KM, size=(n, 2))
    dash = rng.random(n) < P_DASH
    eps[dash] *= 3.0
    angle = rng.uniform(0.0, 2.0 * math.pi)
    d = np.array([math.cos(angle), math.sin(angle)]) * range_km * math.sqrt(rng.random())
    v = np.zeros(2)
    out = np.empty((n, 2))
    for k in range(n):
        v = PERSISTENCE * v - PULL * d + eps[k]
        d = d + v
        r = math.hypot(d[0], d[1])
        if r > range_km:
            d *= range_km / r
            v *= -0.3  # bounce off the home-range edge instead of sliding along it
        out[k] = d
    return out


def _hdop_and_sats(
    rng: np.random.Generator, n: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    good = rng.lognormal(math.log(1.6), 0.3, size=n).clip(0.7, 4.0)
    bad = rng.uniform(5.0, 15.0, size=n)
    hdop = np.round(np.where(rng.random(n) < P_BAD_HDOP, bad, good), 1)
    # Fewer satellites in view is what makes HDOP large: ~9-10 at HDOP 1, 3 at HDOP >= 10.
    sats = np.clip(np.round(9.5 - 3.0 * np.log(hdop) + rng.normal(0.0, 0.6, n)), 3, 12)
    return hdop, sats


def _simulate_animal(
    spec: AnimalSpec, index: int, seed: int, start_ms: int, days: float
) -> AnimalTrack:
    # Independent streams per animal and per purpose: adding an animal, or changing the
    # upload logic, leaves every other stream's numbers unchanged.
    move_rng, obs_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(2)
    )
    t_ms = _fix_times(move_rng, start_ms, days)
    n = t_ms.shape[0]
    day = (t_ms - start_ms) / DAY_MS
    ax, ay, weight, on_trip, reliable = _anchor(spec, day)
    wander = _wander(move_rng, n, spec.range_km)
    tx = ax + weight * wander[:, 0]
    ty = ay + weight * wander[:, 1]
    true_lon, true_lat = _to_lonlat(spec, tx, ty)

    hdop, sats = _hdop_and_sats(obs_rng, n)
    failed = (obs_rng.random(n) < P_FAILED) & ~reliable
    outlier = (obs_rng.random(n) < P_OUTLIER) & ~failed & ~reliable
    err_km = obs_rng.normal(0.0, 1.0, size=(n, 2)) * (GPS_SIGMA_M_PER_HDOP * hdop / 1000.0)[:, None]
    off_dist = obs_rng.uniform(*OUTLIER_KM, size=n)
    off_angle = obs_rng.uniform(0.0, 2.0 * math.pi, size=n)
    ox = tx + err_km[:, 0] + np.where(outlier, off_dist * np.cos(off_angle), 0.0)
    oy = ty + err_km[:, 1] + np.where(outlier, off_dist * np.sin(off_angle), 0.0)
    lon, lat = _to_lonlat(spec, ox, oy)
    lon = np.where(failed, np.nan, np.round(lon, 7))
    lat = np.where(failed, np.nan, np.round(lat, 7))

    terrain = spec.height_m + spec.height_grad_m_per_km_north * ty
    terrain += 150.0 * np.sin(tx / 3.0) * np.cos(ty / 4.0)  # ridges and gullies
    height = np.round(np.maximum(terrain, 0.0) + obs_rng.normal(0.0, 8.0, n) * hdop, 1)
    height = np.where(failed | (sats < 4), np.nan, height)  # no height from a 2-D fix

    return AnimalTrack(
        spec=spec,
        t_ms=t_ms,
        true_lon=true_lon,
        true_lat=true_lat,
        lon=lon,
        lat=lat,
        hdop=np.where(failed, np.nan, hdop),
        sats=np.where(failed, np.nan, sats),
        height_m=height,
        failed=failed,
        outlier=outlier,
        on_trip=on_trip,
    )


def simulate_tracks(
    seed: int = 7, start_ms: int = DEFAULT_START_MS, days: float = 30.0
) -> dict[str, AnimalTrack]:
    """Ground truth and observations per animal (the data behind :func:`simulate`)."""
    if not days > 0:
        raise ValueError(f"days must be positive, got {days}")
    return {
        spec.animal: _simulate_animal(spec, i, seed, int(start_ms), float(days))
        for i, spec in enumerate(ANIMALS)
    }


# --------------------------------------------------------------------------- uploads


def _nullable(values: npt.NDArray[np.float64]) -> list[float | None]:
    # tolist() gives plain Python floats, which every JSON encoder accepts.
    return [None if math.isnan(x) else x for x in values.tolist()]


def _fix_dicts(track: AnimalTrack) -> list[dict[str, Any]]:
    spec = track.spec
    sats = [None if x is None else int(x) for x in _nullable(track.sats)]
    columns = zip(
        track.t_ms.tolist(),
        _nullable(track.lon),
        _nullable(track.lat),
        _nullable(track.hdop),
        sats,
        _nullable(track.height_m),
        strict=True,
    )
    return [
        {
            "individual-local-identifier": spec.animal,
            "tag-local-identifier": spec.tag,
            "timestamp": format_timestamp(t),
            "location-long": lon,
            "location-lat": lat,
            "gps:hdop": hdop,
            "gps:satellite-count": n_sats,
            "height-above-ellipsoid": height,
            "received-timestamp": "",  # set per upload
        }
        for t, lon, lat, hdop, n_sats, height in columns
    ]


def _uploads_for(track: AnimalTrack, rng: np.random.Generator) -> list[Upload]:
    t_ms = track.t_ms
    last = int(t_ms[-1])
    phase = int(rng.integers(0, UPLOAD_INTERVAL_MS))
    first = int(t_ms[0]) - int(t_ms[0]) % HOUR_MS + phase
    # Enough slots to pass the last fix, plus one for fixes re-sent after it.
    n_up = (last - first) // UPLOAD_INTERVAL_MS + 3
    up_ms = first + np.arange(n_up, dtype=np.int64) * UPLOAD_INTERVAL_MS
    up_ms += rng.integers(-20 * 60_000, 20 * 60_000, size=n_up)  # satellite pass timing
    missed = rng.random(n_up) < P_UPLOAD_MISSED
    keep = ~missed | (up_ms >= last)  # never miss the upload that delivers the last fixes
    up_ms = np.sort(up_ms[keep])
    # A fix is sent with the first upload at least a minute after it was taken.
    which = np.searchsorted(up_ms, t_ms + 60_000, side="left")
    if which.max() >= up_ms.shape[0]:
        up_ms = np.append(up_ms, last + 60_000 + int(rng.integers(0, HOUR_MS)))
    dup = rng.random(t_ms.shape[0]) < P_DUPLICATE

    fixes = _fix_dicts(track)
    batches: dict[int, list[dict[str, Any]]] = {}
    for k, j in enumerate(which.tolist()):
        batches.setdefault(j, []).append(fixes[k])
    resent: dict[int, list[dict[str, Any]]] = {}
    for k in np.flatnonzero(dup).tolist():
        nxt = int(which[k]) + 1
        if nxt < up_ms.shape[0]:
            # An unacknowledged fix is re-sent first in the next upload.
            resent.setdefault(nxt, []).append(fixes[k])

    uploads: list[Upload] = []
    for j in sorted(set(batches) | set(resent)):
        received = int(up_ms[j])
        stamp = format_timestamp(received)
        batch = [{**f, "received-timestamp": stamp} for f in resent.get(j, [])]
        batch += [{**f, "received-timestamp": stamp} for f in batches.get(j, [])]
        uploads.append(Upload(received, track.spec.animal, batch))
    return uploads


def simulate(seed: int = 7, start_ms: int = DEFAULT_START_MS, days: float = 30.0) -> list[Upload]:
    """All collars' uploads, in the order collarstream receives them (``received_ms``).

    Within an upload, re-sent duplicates come first, then new fixes in time order. Uploads of
    different collars interleave, so fixes arrive hours late and out of timestamp order.
    """
    tracks = simulate_tracks(seed, start_ms, days)
    uploads: list[Upload] = []
    for i, spec in enumerate(ANIMALS):
        upload_rng = np.random.default_rng(np.random.SeedSequence([seed, i, 1]))
        uploads.extend(_uploads_for(tracks[spec.animal], upload_rng))
    uploads.sort(key=lambda u: (u.received_ms, u.animal))
    return uploads


def iter_fixes(uploads: Iterable[Upload]) -> Iterator[dict[str, Any]]:
    """The fixes of the uploads, one by one, in arrival order."""
    for upload in uploads:
        yield from upload.fixes


def simulate_to_csv(
    path: str | PathLike[str],
    seed: int = 7,
    days: float = 30.0,
    *,
    start_ms: int = DEFAULT_START_MS,
    include_received: bool = False,
) -> int:
    """Simulate and write the fixes, in arrival order, as a Movebank CSV; return rows written."""
    uploads = simulate(seed=seed, start_ms=start_ms, days=days)
    return write_movebank_csv(
        path,
        iter_fixes(uploads),
        taxa=taxa(),
        study_name="collarstream simulated leopards, Kazakhstan",
        include_received=include_received,
    )
