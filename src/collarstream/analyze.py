"""`collarstream analyze`: the live core over a Movebank CSV, with no broker.

Each animal's fixes go through the same reducer the worker runs (`core.track.advance`),
so the steps and alerts are those the live system would have emitted once all fixes
had arrived. Outputs in DIR:

* steps.csv          one row per step, units in the column names
* alerts.jsonl       alerts, in the alert topic's schema
* home_ranges.geojson MCP and KDE home ranges per animal (lon/lat, areas in km²)
* fixes.csv          every fix with its source line and quality flags (nothing dropped)
* problems.csv       rows that could not be used, with their line numbers and reasons
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from collarstream.core import quality
from collarstream.core.encounters import encounter_alerts, fix_record
from collarstream.core.homerange import home_ranges
from collarstream.core.proximity import close_pairs, encounters
from collarstream.core.steps import max_gap_seconds
from collarstream.core.track import (
    Context,
    FixBatch,
    TrackConfig,
    TrackState,
    advance,
    home_range_event,
    resolve_home_ranges,
    row_keys,
)
from collarstream.fences import (
    border_lines,
    default_urban_path,
    load_countries,
    load_fence_file,
    load_protected_areas,
)
from collarstream.movebank import MovebankTrack, read_movebank_csv
from collarstream.timefmt import iso

STEP_COLUMNS = [
    "individual-local-identifier",
    "start-timestamp",
    "end-timestamp",
    "start-location-long",
    "start-location-lat",
    "end-location-long",
    "end-location-lat",
    "distance_m",
    "duration_s",
    "speed_mps",
    "heading_deg",
    "turn_angle_deg",
    "burst-start-timestamp",
    "id",
]
# The whole file is one track per animal: no live window. Home ranges at the live
# system's weekly boundaries (30-day window and the track so far), plus one over the
# whole track at the end.
REPLAY_CONFIG = TrackConfig(window_days=1e6, max_fixes=10**9, home_range_min_fixes=5)


def _proximity_alerts(states: list[TrackState]) -> list[dict[str, Any]]:
    """Encounters of animals close in space and time over the whole tracks: every close
    pair of good fixes is a detection, grouped per pair of animals into encounters
    (core.proximity.encounters), with two alerts at each encounter's first detection.
    The live worker groups the detections it finds the same way (see stream.watch)."""
    recs, who = [], []
    for k, s in enumerate(states):
        good = np.flatnonzero(s.flags == 0)
        who.append(np.full(good.size, k))
        recs += [fix_record(s, int(i)) for i in good]
    if len(states) < 2 or not recs:
        return []
    animal = np.concatenate(who)
    t = np.array([r["t_ms"] for r in recs], dtype=np.int64)
    lon = np.array([r["lon"] for r in recs])
    lat = np.array([r["lat"] for r in recs])
    pairs = close_pairs(animal, t, lon, lat)
    # Animals are coded in name order (`analyze` sorts them), as the live agent codes them.
    enc = encounters(animal[pairs.i], animal[pairs.j], t[pairs.i], t[pairs.j])
    out = []
    for k in enc.first.tolist():
        i, j = int(pairs.i[k]), int(pairs.j[k])
        out += encounter_alerts(recs[i], recs[j], float(pairs.dist_m[k]))
    return out


def _whole_track_range(state: TrackState, cfg: TrackConfig) -> list[dict[str, Any]]:
    good = state.flags == 0
    n = int(np.count_nonzero(good))
    if n < cfg.home_range_min_fixes:
        return []
    # With the fix times: the AKDE too (core.akde), which the weekly live ranges leave
    # out (a model fit and an n² pair count per estimate, in a catch-up thousands).
    ranges = home_ranges(
        state.lon[good], state.lat[good], grid_size=cfg.home_range_grid, t_ms=state.t_ms[good]
    )
    return [home_range_event(state.animal, int(state.t_ms[good][-1]), None, n, ranges)]


@dataclass
class Report:
    rows: int = 0
    fixes: int = 0
    animals: int = 0
    steps: int = 0
    alerts: int = 0
    home_ranges: int = 0
    flagged: dict[str, int] = field(default_factory=dict)
    problems: int = 0
    skipped_non_location: int = 0

    def summary(self) -> str:
        flags = ", ".join(f"{k} {v}" for k, v in sorted(self.flagged.items())) or "none"
        return (
            f"{self.fixes} fixes of {self.animals} animals -> {self.steps} steps, "
            f"{self.alerts} alerts, {self.home_ranges} home ranges; flagged: {flags}; "
            f"{self.problems} unusable rows (see problems.csv); "
            f"{self.skipped_non_location} non-location sensor rows skipped"
        )


def analyze(
    csv_path: Path,
    out: Path,
    fences: Path | None = None,
    countries: Path | None = None,
    profile: str | None = None,
) -> Report:
    if profile is not None and profile not in quality.PROFILES:
        raise ValueError(f"--profile: unknown {profile!r}; known: {sorted(quality.PROFILES)}")
    track = read_movebank_csv(csv_path)
    layer = load_countries(countries)
    # The live worker's detectors (stream.app.live_context), on the whole file.
    ctx = Context(
        layer,
        load_fence_file(fences or default_urban_path()),
        config=REPLAY_CONFIG,
        borders=border_lines(layer),
        areas=load_protected_areas(),
    )
    out.mkdir(parents=True, exist_ok=True)
    report = Report(
        rows=len(track),
        problems=len(track.problems),
        skipped_non_location=track.skipped_non_location,
    )
    _write_problems(out / "problems.csv", track)
    steps, alerts, ranges, fixes = [], [], [], []
    states: list[TrackState] = []
    for animal in sorted(set(track.animal.tolist())):
        sel = np.flatnonzero(track.animal == animal)
        actx = replace(ctx, profile=_profile_for(track, sel, profile))
        state, events = advance(TrackState.new(animal, len(ctx.urban)), _batch(track, sel), actx)
        events = resolve_home_ranges(events)
        steps += [e for e in events if e["type"] == "step"]
        alerts += [e for e in events if e["type"] == "alert"]
        ranges += [e for e in events if e["type"] == "home-range"]
        ranges += _whole_track_range(state, REPLAY_CONFIG)
        fixes += _fix_rows(track, sel, state)
        states.append(state)
        report.animals += 1
    alerts += _proximity_alerts(states)
    report.fixes = len(fixes)
    report.steps, report.alerts, report.home_ranges = len(steps), len(alerts), len(ranges)
    for row in fixes:
        for name in row["flags"].split(";") if row["flags"] else []:
            report.flagged[name] = report.flagged.get(name, 0) + 1
    _write_csv(out / "steps.csv", STEP_COLUMNS, steps)
    _write_csv(out / "fixes.csv", list(fixes[0]) if fixes else ["line"], fixes)
    alerts.sort(key=lambda a: (a["fix-timestamp"], a["individual-local-identifier"], a["id"]))
    with open(out / "alerts.jsonl", "wb") as fh:
        for a in alerts:
            fh.write(orjson.dumps({k: v for k, v in a.items() if k != "type"}) + b"\n")
    (out / "home_ranges.geojson").write_bytes(orjson.dumps(_feature_collection(ranges)))
    return report


def _profile_for(track: MovebankTrack, sel: np.ndarray, name: str | None) -> quality.Profile:
    """The named profile, with the collar schedule taken from the data when it has none."""
    base = quality.PROFILES[name or "default"]
    if base.fix_interval_s is not None:
        return base
    # Burst gaps relative to the animal's own median interval: fixed per file, so the
    # result does not depend on how the track is cut into batches.
    located = track.t_ms[sel][np.isfinite(track.lon[sel])]
    interval = max_gap_seconds(located, None, 1.0)
    return replace(base, fix_interval_s=interval)


def _batch(track: MovebankTrack, sel: np.ndarray) -> FixBatch:
    tags = [t for t in track.tag[sel] if t]
    return FixBatch(
        track.t_ms[sel],
        track.lon[sel],
        track.lat[sel],
        track.hdop[sel],
        track.sats[sel],
        track.t_ms[sel],
        tag=str(tags[-1]) if tags else "",
        fix_type=None if track.fix_type is None else track.fix_type[sel],
    )


def _fix_rows(track: MovebankTrack, sel: np.ndarray, state: TrackState) -> list[dict[str, Any]]:
    """Every input row with the flags its fix got; exact repeats of a row are duplicates."""
    index = {key: i for i, key in enumerate(row_keys(state, np.arange(len(state))))}
    batch = _batch(track, sel)
    seen: set[int] = set()
    rows = []
    for r, key in zip(sel, row_keys(batch, np.arange(sel.size)), strict=True):
        i = index[key]
        flags = int(state.flags[i]) | (int(quality.DUPLICATE) if i in seen else 0)
        seen.add(i)
        rows.append(
            {
                "line": int(track.line[r]),
                "individual-local-identifier": str(track.animal[r]),
                "timestamp": iso(int(track.t_ms[r])),
                "location-long": _num(track.lon[r]),
                "location-lat": _num(track.lat[r]),
                "gps:hdop": _num(track.hdop[r]),
                "flags": ";".join(quality.flag_names(flags)),
            }
        )
    return rows


def _num(v: float) -> str:
    return "" if not np.isfinite(v) else repr(float(v))


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if v is None else v for k, v in row.items()})


def _write_problems(path: Path, track: MovebankTrack) -> None:
    rows = [{"line": p.line, "problem": "unusable", "reason": p.reason} for p in track.problems]
    rows += [{"line": p.line, "problem": "warning", "reason": p.reason} for p in track.warnings]
    rows.sort(key=lambda r: r["line"])
    _write_csv(path, ["line", "problem", "reason"], rows)


def _feature_collection(events: list[dict[str, Any]]) -> dict[str, Any]:
    features = []
    for ev in events:
        for r in ev["ranges"]:
            features.append(
                {
                    "type": "Feature",
                    "geometry": r["geometry"],
                    "properties": {
                        "individual-local-identifier": ev["individual-local-identifier"],
                        "method": r["method"],
                        "level": r["level"],
                        "area_km2": r["area_km2"],
                        "bandwidth_m": r["bandwidth_m"],
                        "n_fixes": ev["n_fixes"],
                        "computed-through-timestamp": ev["computed-through-timestamp"],
                    },
                }
            )
    return {"type": "FeatureCollection", "features": features}
