"""`collarstream analyze` end to end: real Movebank files and a simulated one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from geographiclib.geodesic import Geodesic
from jsonschema import Draft202012Validator

from collarstream.analyze import analyze
from collarstream.cli import main
from collarstream.simulate import simulate_to_csv
from collarstream.timefmt import parse_ms

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
TRACKS = [
    "tracks-cuckoos-mongolia-icarus.csv",
    "tracks-fishers-new-york.csv",
    "tracks-free-tailed-bats-portugal.csv",
    "tracks-cougar-coyote-utah-idaho-sample.csv",
]


def _alert_validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / "alert.schema.json").read_text()))


def _check_outputs(out: Path) -> tuple[list[dict[str, str]], list[dict]]:
    with open(out / "steps.csv", newline="") as fh:
        steps = list(csv.DictReader(fh))
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    validator = _alert_validator()
    for a in alerts:
        validator.validate({"type": "alert", **a})
    ranges = json.loads((out / "home_ranges.geojson").read_text())
    assert ranges["type"] == "FeatureCollection"
    assert all(f["properties"]["area_km2"] >= 0 for f in ranges["features"])
    return steps, alerts


@pytest.mark.shared_data
@pytest.mark.parametrize("name", TRACKS)
def test_analyze_real_tracks_steps_match_geographiclib(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    report = analyze(shared_data / name, tmp_path)
    steps, _ = _check_outputs(tmp_path)
    assert report.steps == len(steps) > 0
    with open(tmp_path / "fixes.csv", newline="") as fh:
        fixes = list(csv.DictReader(fh))
    assert len(fixes) == report.fixes  # every usable row is accounted for, flagged or not
    g = Geodesic.WGS84
    for s in steps[:: max(1, len(steps) // 3000)]:
        ref = g.Inverse(
            float(s["start-location-lat"]),
            float(s["start-location-long"]),
            float(s["end-location-lat"]),
            float(s["end-location-long"]),
        )
        assert abs(float(s["distance_m"]) - ref["s12"]) < 0.01  # to the centimetre
        dt = (parse_ms(s["end-timestamp"]) - parse_ms(s["start-timestamp"])) / 1000.0
        assert float(s["duration_s"]) == dt


@pytest.mark.shared_data
def test_analyze_fishers_flags_failed_fixes_with_line_numbers(
    shared_data: Path, tmp_path: Path
) -> None:
    report = analyze(shared_data / "tracks-fishers-new-york.csv", tmp_path)
    assert report.flagged["missing-coordinates"] == 14_443  # the README's count of failed fixes
    with open(tmp_path / "fixes.csv", newline="") as fh:
        missing = [r for r in csv.DictReader(fh) if "missing-coordinates" in r["flags"]]
    assert all(int(r["line"]) >= 2 for r in missing)


def test_analyze_reports_bad_rows_by_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(
        "timestamp,location-long,location-lat,individual-local-identifier\n"
        "2026-03-01 00:00:00.000,77.0,43.0,A\n"
        "not a time,77.0,43.0,A\n"
        "2026-03-01 04:00:00.000,77.01,43.01,A\n"
        "2026-03-01 08:00:00.000,200.0,43.0,A\n"
    )
    analyze(src, tmp_path / "out")
    with open(tmp_path / "out" / "problems.csv", newline="") as fh:
        problems = {int(r["line"]): r["reason"] for r in csv.DictReader(fh)}
    assert set(problems) == {3, 5}


def test_simulated_collars_through_the_cli(tmp_path: Path) -> None:
    csv_path = tmp_path / "sim.csv"
    simulate_to_csv(csv_path, seed=3, days=6)
    assert (
        main(
            ["analyze", str(csv_path), "--out", str(tmp_path / "out"), "--profile", "snow-leopard"]
        )
        == 0
    )
    _, alerts = _check_outputs(tmp_path / "out")
    crossings = {
        (a["details"]["from"]["code"], a["details"]["to"]["code"])
        for a in alerts
        if a["kind"] == "border-crossing"
    }
    assert {("KAZ", "KGZ"), ("KGZ", "KAZ"), ("KAZ", "TKM")} <= crossings
    zones = [
        a["details"]["level"]
        for a in alerts
        if a["kind"] == "urban-edge" and a["details"]["transition"] == "enter"
    ]
    assert zones[:3] == [1, 2, 3]


def test_analyze_reads_gps_fix_type_and_flags_failed_fix_types(tmp_path: Path) -> None:
    src = tmp_path / "ftype.csv"
    src.write_text(
        "timestamp,location-long,location-lat,gps:fix-type,individual-local-identifier\n"
        "2026-03-01 00:00:00.000,77.00,43.00,3,A\n"
        "2026-03-01 04:00:00.000,77.01,43.01,1,A\n"
        "2026-03-01 08:00:00.000,77.02,43.02,,A\n"
        "2026-03-01 12:00:00.000,77.03,43.03,2,A\n"
    )
    report = analyze(src, tmp_path / "out")
    with open(tmp_path / "out" / "fixes.csv", newline="") as fh:
        flags = {int(r["line"]): r["flags"] for r in csv.DictReader(fh)}
    # Fix type 1 is "no fix"; an empty cell is unknown, not poor; 2-D passes the default.
    assert flags == {2: "", 3: "poor-fix-type", 4: "", 5: ""}
    assert report.flagged == {"poor-fix-type": 1}
