"""Movebank CSV reading/writing and the timestamp helpers, on synthetic and real files."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collarstream import timefmt
from collarstream.movebank import (
    MOVEBANK_COLUMNS,
    format_movebank_timestamp,
    format_timestamp,
    parse_timestamp,
    read_movebank_csv,
    write_movebank_csv,
)
from collarstream.simulate import iter_fixes, simulate, taxa

# <repo root>/../shared/data; another engineer will move this to conftest.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

HEADER = (
    "event-id,visible,timestamp,location-long,location-lat,gps:hdop,gps:satellite-count,"
    "sensor-type,individual-taxon-canonical-name,tag-local-identifier,"
    "individual-local-identifier,study-name"
)


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real-data file {path} not found (the shared data folder is absent)")
    return path


def write_text(tmp_path: Path, lines: list[str], newline: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01 00:00:00.000", 0),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.001+00:00", 1),
        ("2026-03-01T04:00:00.000Z", 1_772_337_600_000),
        ("2026-03-01 04:00:00.000", 1_772_337_600_000),
        ("2009-02-11 18:06:13.999", 1_234_375_573_999),
        ("2009-02-11 18:51:51.001", 1_234_378_311_001),
        ("2009-02-11T18:06:13.9", 1_234_375_573_900),
        ("2009-02-11T18:06:13.99", 1_234_375_573_990),
        ("2009-02-11T18:06:13.123456Z", 1_234_375_573_123),
        ("2009-02-11T18:06:13.1235", 1_234_375_573_124),  # rounded, not truncated
        ("2009-02-11T18:06:13.9995", 1_234_375_574_000),  # rounding carries into the second
        ("  2009-02-11 18:06:13.999  ", 1_234_375_573_999),
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_parse_timestamp_accepts(text: str, expected: int) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("2026-03-01 04:00", "unrecognised"),
        ("2026-03-01", "unrecognised"),
        ("01/03/2026 04:00:00", "unrecognised"),
        ("2026-03-01T04:00:00+05:00", "non-UTC offset"),
        ("2026-03-01T04:00:00-00:30", "non-UTC offset"),
        ("2026-02-30 04:00:00.000", "invalid date"),
        ("2026-03-01 24:00:00.000", "invalid date"),
        ("2026-03-01T04:00:00.Z", "unrecognised"),
        # The wire's own form, read by its positions first: impossible values still fail.
        ("2026-02-29T04:00:00.000Z", "invalid date"),
        ("2026-03-01T24:00:00.000Z", "invalid date"),
        ("2026-03-01T04:60:00.000Z", "invalid date"),
        ("2026-03-01T04:00:60.000Z", "invalid date"),
        ("0000-03-01T04:00:00.000Z", "invalid date"),
        ("２026-03-01T04:00:00.000Z", "unrecognised"),  # a fullwidth digit
    ],
)
def test_parse_timestamp_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_timestamp(text)


def test_format_timestamps() -> None:
    assert format_timestamp(1_772_337_600_000) == "2026-03-01T04:00:00.000Z"
    assert format_movebank_timestamp(1_234_375_573_999) == "2009-02-11 18:06:13.999"
    assert format_timestamp(-1) == "1969-12-31T23:59:59.999Z"
    with pytest.raises(ValueError, match="outside"):
        format_timestamp(10**18)


_WIRE_DIGITS = st.text("0123456789", min_size=2, max_size=2)


@given(
    st.text("0123456789", min_size=4, max_size=4),
    st.lists(_WIRE_DIGITS, min_size=5, max_size=5),
    st.text("0123456789", min_size=3, max_size=3),
)
def test_wire_form_read_by_position_as_by_the_general_parser(
    year: str, two: list[str], ms: str
) -> None:
    """Digits anywhere in the wire form (impossible dates and times included): the
    positional reading gives what the general parser gives, value or error."""
    text = f"{year}-{two[0]}-{two[1]}T{two[2]}:{two[3]}:{two[4]}.{ms}Z"

    def outcome(parse: Callable[[str], int]) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            return str(exc)

    assert outcome(parse_timestamp) == outcome(timefmt._parse_general)


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_format_is_what_a_datetime_says(ms: int) -> None:
    """Formatting memoizes each day's date and does the time of day in integers: it must
    say what the datetime of that instant says, before 1970 and before year 1000 too."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    clock = f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}"
    date = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
    assert format_timestamp(ms) == f"{date}T{clock}Z"
    assert format_movebank_timestamp(ms) == f"{date} {clock}"


@given(st.lists(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)))
def test_formatting_many_is_formatting_each(ms: list[int]) -> None:
    """The reducer formats a few timestamps one by one and many with numpy's formatter:
    a step's text must not depend on how many steps a call makes."""
    assert timefmt.iso_many(np.asarray(ms, np.int64)) == [format_timestamp(v) for v in ms]


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_timestamp_round_trip(ms: int) -> None:
    assert parse_timestamp(format_timestamp(ms)) == ms
    assert parse_timestamp(format_movebank_timestamp(ms)) == ms


# --------------------------------------------------------------------------- reading


def sample_rows() -> list[str]:
    return [
        HEADER,
        '1,true,2026-03-01 04:00:00.999,77.05,43.08,1.4,7,gps,Panthera uncia,40961,SL-1,"a, b"',
        "2,true,2026-03-01 08:00:00.001,,,,,gps,Panthera uncia,40961,SL-1,s",  # failed fix
        "3,true,2026-03-01 08:00:00.000,,,,,accessory-measurements,Panthera uncia,40961,SL-1,s",
        '4,false,2026-03-01 12:00:00.000,77.06,43.09,2.0,6,gps,Panthera uncia,40961,SL-1,"multi\n'
        'line, quoted"',
        "5,true,2026-03-01 16:00:00.000,77.07,43.10,,,gps,Panthera uncia,,SL-2,s",
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_read_line_endings_and_quirks(tmp_path: Path, newline: str) -> None:
    track = read_movebank_csv(write_text(tmp_path, sample_rows(), newline))
    assert track.columns == tuple(HEADER.split(","))
    assert len(track) == 4
    assert track.skipped_non_location == 1
    assert track.problems == ()
    # The multi-line record starts on line 5 and the next record on line 7.
    assert track.line.tolist() == [2, 3, 5, 7]
    assert track.animal.tolist() == ["SL-1", "SL-1", "SL-1", "SL-2"]
    assert track.tag.tolist() == ["40961", "40961", "40961", ""]
    assert track.t_ms[0] % 1000 == 999
    assert track.t_ms[1] % 1000 == 1
    assert np.isnan(track.lon[1]) and np.isnan(track.lat[1])  # failed fix kept, not 0,0
    assert track.failed.tolist() == [False, True, False, False]
    assert track.visible.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(track.hdop, [1.4, np.nan, 2.0, np.nan])
    np.testing.assert_array_equal(track.sats, [7, np.nan, 6, np.nan])
    assert np.isnan(track.height_m).all()  # column absent
    assert track.t_ms.dtype == np.int64 and track.line.dtype == np.int64


def test_read_reports_problem_rows(tmp_path: Path) -> None:
    rows = [
        HEADER,
        "1,true,2026-03-01 04:00:00.000,77.05,43.08,1.4,7,gps,P,1,SL-1,s",  # good, line 2
        "2,true,2026-03-01 25:00:00.000,77.05,43.08,1.4,7,gps,P,1,SL-1,s",  # bad time
        "3,true,not a time,77.05,43.08,1.4,7,gps,P,1,SL-1,s",
        "4,true,2026-03-01 04:00:00.000,east,43.08,1.4,7,gps,P,1,SL-1,s",  # bad lon
        "5,true,2026-03-01 04:00:00.000,77.05,93.0,1.4,7,gps,P,1,SL-1,s",  # lat out of range
        "6,true,2026-03-01 04:00:00.000,77.05,,1.4,7,gps,P,1,SL-1,s",  # one coordinate
        "7,true,2026-03-01 04:00:00.000,77.05,43.08,1.4,7,gps,P,1,,s",  # no animal
        "8,true,2026-03-01 04:00:00.000,77.05,43.08",  # short row
        "9,maybe,2026-03-01 04:00:00.000,77.05,43.08,1.4,7,gps,P,1,SL-1,s",
        "10,true,2026-03-01 04:00:00.000,inf,43.08,1.4,7,gps,P,1,SL-1,s",
        "11,true,2026-03-01 04:00:00.000,-181,43.08,1.4,7,gps,P,1,SL-1,s",
        "12,true,2026-03-01T05:00:00Z,77.05,43.08,n/a,7,gps,P,1,SL-1,s",  # kept, warning
        "13,TRUE,2026-03-01 06:00:00.000,NA,NA,,,gps,P,1,SL-1,s",  # R-style missing: failed
    ]
    track = read_movebank_csv(write_text(tmp_path, rows, "\r\n"))
    assert track.line.tolist() == [2, 13, 14]
    reasons = {p.line: p.reason for p in track.problems}
    assert sorted(reasons) == list(range(3, 13))
    assert "bad timestamp" in reasons[3] and "invalid date" in reasons[3]
    assert "unrecognised timestamp" in reasons[4]
    assert "location-long" in reasons[5]
    assert "location-lat out of range" in reasons[6]
    assert "only one" in reasons[7]
    assert "individual-local-identifier" in reasons[8]
    assert "fields" in reasons[9]
    assert "visible" in reasons[10]
    assert "location-long" in reasons[11]
    assert "location-long out of range" in reasons[12]
    assert [(w.line, "gps:hdop" in w.reason) for w in track.warnings] == [(13, True)]
    assert math.isnan(track.hdop[1])
    assert track.t_ms[1] == parse_timestamp("2026-03-01T05:00:00Z")
    assert track.failed.tolist() == [False, False, True]


def test_read_missing_required_column(tmp_path: Path) -> None:
    path = write_text(tmp_path, ["event-id,timestamp,location-long", "1,2026-03-01,1"], "\n")
    with pytest.raises(ValueError, match=r"location-lat.*individual-local-identifier"):
        read_movebank_csv(path)


def test_read_empty_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_movebank_csv(empty)
    track = read_movebank_csv(write_text(tmp_path, [HEADER], "\r"))
    assert len(track) == 0 and track.problems == () and track.t_ms.dtype == np.int64


# --------------------------------------------------------------------------- writing


def test_write_format(tmp_path: Path) -> None:
    fix = {
        "individual-local-identifier": "SL-ALM-01",
        "tag-local-identifier": "40961",
        "timestamp": "2026-03-01T04:00:00.999Z",
        "location-long": None,
        "location-lat": None,
        "gps:hdop": None,
        "gps:satellite-count": None,
        "height-above-ellipsoid": None,
        "received-timestamp": "2026-03-01T09:12:31.000Z",
    }
    path = tmp_path / "out.csv"
    n = write_movebank_csv(path, [fix], taxa={"SL-ALM-01": "Panthera uncia"}, study_name="a, b")
    assert n == 1
    text = path.read_bytes().decode()
    header, row, end = text.split("\r\n")
    assert header == ",".join(MOVEBANK_COLUMNS) and end == ""
    assert row == ('1,true,2026-03-01 04:00:00.999,,,,,,gps,Panthera uncia,40961,SL-ALM-01,"a, b"')
    write_movebank_csv(path, [fix], include_received=True)
    assert path.read_text().splitlines()[1].endswith(",2026-03-01 09:12:31.000")
    with pytest.raises(ValueError, match="timestamp"):
        write_movebank_csv(path, [{**fix, "timestamp": ""}])


def test_simulate_write_read_round_trip(tmp_path: Path) -> None:
    fixes = list(iter_fixes(simulate(seed=3, days=6.0)))
    path = tmp_path / "sim.csv"
    assert write_movebank_csv(path, fixes, taxa=taxa()) == len(fixes)
    track = read_movebank_csv(path)
    assert track.problems == () and track.warnings == () and track.skipped_non_location == 0
    assert len(track) == len(fixes)
    assert track.line.tolist() == list(range(2, len(fixes) + 2))

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if f[key] is None else f[key] for f in fixes], dtype=float)

    assert track.animal.tolist() == [f["individual-local-identifier"] for f in fixes]
    assert track.tag.tolist() == [f["tag-local-identifier"] for f in fixes]
    assert track.t_ms.tolist() == [parse_timestamp(f["timestamp"]) for f in fixes]
    # Exact equality, NaN in the same places: repr() of a float round-trips.
    np.testing.assert_array_equal(track.lon, column("location-long"))
    np.testing.assert_array_equal(track.lat, column("location-lat"))
    np.testing.assert_array_equal(track.hdop, column("gps:hdop"))
    np.testing.assert_array_equal(track.sats, column("gps:satellite-count"))
    np.testing.assert_array_equal(track.height_m, column("height-above-ellipsoid"))
    assert track.visible.all()


# --------------------------------------------------------------------------- real files


def assert_lines_point_at_rows(path: Path, track_line: np.ndarray, animals: np.ndarray) -> None:
    """Each reported line number names the physical line holding that row (any line ending)."""
    physical = path.read_bytes().decode("utf-8-sig").splitlines()
    for i in np.linspace(0, len(track_line) - 1, 50).astype(int):
        assert animals[i] in physical[track_line[i] - 1]


@pytest.mark.shared_data
def test_real_fishers() -> None:
    path = shared_file("tracks-fishers-new-york.csv")
    t0 = time.perf_counter()
    track = read_movebank_csv(path)
    elapsed = time.perf_counter() - t0
    assert len(track) == 47_347
    assert int(track.failed.sum()) == 14_443
    assert int((track.t_ms % 1000 != 0).sum()) == 25_447  # .999/.001 survive
    assert sorted(set(track.animal)) == ["F1", "F2", "F3", "M1", "M2", "M3", "M4", "M5"]
    assert track.problems == () and track.skipped_non_location == 0
    assert np.isnan(track.hdop).all() and np.isnan(track.height_m).all()  # no accuracy
    assert track.line[0] == 2 and track.line[-1] == 47_348
    assert len(track.columns) == 25
    # Failed rows have NaN on both coordinates; located rows are in New York State.
    ok = ~track.failed
    assert np.all((track.lon[ok] > -75) & (track.lon[ok] < -73))
    assert np.all((track.lat[ok] > 42) & (track.lat[ok] < 43.5))
    assert elapsed < 2.0, f"reading 47k rows took {elapsed:.2f} s"
    assert_lines_point_at_rows(path, track.line, track.animal)


@pytest.mark.shared_data
def test_real_cuckoos_accessory_rows() -> None:
    track = read_movebank_csv(shared_file("tracks-cuckoos-mongolia-icarus.csv"))
    assert len(track) == 1_193
    assert track.skipped_non_location == 1_141
    assert track.problems == ()
    assert len(set(track.animal)) == 11
    assert np.array_equal(track.animal, track.tag)  # tag id = animal id
    assert not track.failed.any()
    # The 34 gps/accessory pairs on the same individual + timestamp are gone with the
    # accessory rows.
    pairs = Counter(zip(track.animal.tolist(), track.t_ms.tolist(), strict=True))
    assert max(pairs.values()) == 1
    assert track.lon.min() > 27 and track.lon.max() < 118 and track.lat.min() > -23


@pytest.mark.shared_data
def test_real_bats_hdop() -> None:
    track = read_movebank_csv(shared_file("tracks-free-tailed-bats-portugal.csv"))
    assert len(track) == 9_873 and track.problems == ()
    assert track.hdop.min() == pytest.approx(0.08) and track.hdop.max() == pytest.approx(22.04)
    assert float(np.median(track.hdop)) == pytest.approx(2.02)
    assert int((track.hdop > 5).sum()) == 807 and int((track.hdop > 10).sum()) == 141
    assert track.sats.min() == 3 and track.sats.max() == 8 and int((track.sats <= 3).sum()) == 61
    assert np.isnan(track.height_m).all()  # height-above-msl is not an ellipsoidal height
    tag48 = set(track.animal[track.tag == "48"])
    assert tag48 == {"Bat4_3D6001852B980", "Bat5_3D6001852B98C"}


@pytest.mark.shared_data
def test_real_cougar_coyote_cr_only() -> None:
    path = shared_file("tracks-cougar-coyote-utah-idaho-sample.csv")
    raw = path.read_bytes()
    assert b"\n" not in raw and raw.count(b"\r") >= 30  # really CR-only
    track = read_movebank_csv(path)
    assert len(track) == 30 and track.problems == ()
    assert track.line.tolist() == list(range(2, 32))
    assert Counter(track.animal.tolist()) == {"F53": 10, "IdCoy_P3_1": 20}
    coyote = track.animal == "IdCoy_P3_1"
    assert set(track.tag[coyote]) == {"166760", "166560"}  # one animal, two tags
    assert np.any(np.diff(track.t_ms[coyote]) < 0)  # rows are not in time order
    assert np.isnan(track.sats[coyote]).all()
    assert not np.isnan(track.sats[~coyote]).any()
    assert track.columns[-1] == "study-name"
    assert_lines_point_at_rows(path, track.line, track.animal)
