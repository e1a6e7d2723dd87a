"""Movebank CSV reading and writing, and the UTC millisecond timestamp helpers.

Internally every time is an int64 count of milliseconds since the Unix epoch, UTC.
Two textual forms exist:

* the wire form used by collarstream messages: ``2026-03-01T04:00:00.000Z``;
* the Movebank CSV form: ``2026-03-01 04:00:00.000``.

Movebank exports keep millisecond fractions (``.999``/``.001`` in e-obs data), so nothing here
ever truncates to whole seconds.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

from collarstream.timefmt import (  # re-exported: Movebank callers import them from here
    format_movebank_timestamp,
    format_timestamp,
    parse_timestamp,
)

__all__ = [
    "LOCATION_SENSOR_TYPES",
    "MOVEBANK_COLUMNS",
    "MovebankTrack",
    "RowProblem",
    "format_movebank_timestamp",
    "format_timestamp",
    "parse_timestamp",
    "read_movebank_csv",
    "write_movebank_csv",
]


# Sensor types whose rows are (attempted) position fixes. Anything else that is named, e.g.
# accessory-measurements or acceleration, is a non-location record and is not a fix.
LOCATION_SENSOR_TYPES = frozenset(
    {
        "gps",
        "argos-doppler-shift",
        "solar-geolocator",
        "solar-geolocator-raw",
        "solar-geolocator-twilight",
        "radio-transmitter",
        "natural-mark",
        "bird-ring",
        "sigfox-geolocation",
        "gnss",
        "atlas-geolocation",
    }
)

# Textual markers other tools (R, pandas) write for a missing value; read as empty.
_MISSING = frozenset({"", "na", "nan", "null", "none"})

MOVEBANK_COLUMNS: tuple[str, ...] = (
    "event-id",
    "visible",
    "timestamp",
    "location-long",
    "location-lat",
    "gps:hdop",
    "gps:satellite-count",
    "height-above-ellipsoid",
    "sensor-type",
    "individual-taxon-canonical-name",
    "tag-local-identifier",
    "individual-local-identifier",
    "study-name",
)
_RECEIVED_COLUMN = "collarstream:received-timestamp"

_REQUIRED_COLUMNS = ("timestamp", "location-long", "location-lat", "individual-local-identifier")


# --------------------------------------------------------------------------- timestamps


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A data record that could not be used (or, in ``warnings``, was used with a caveat)."""

    line: int  # 1-based physical line of the record's start; the header is line 1
    reason: str


@dataclass(frozen=True)
class MovebankTrack:
    """Parallel arrays over the usable location rows of a Movebank CSV, in file order.

    Rows are *not* sorted: real exports are out of time order, and callers decide how to sort.
    Failed fixes are kept with NaN coordinates.
    """

    animal: npt.NDArray[np.object_]
    tag: npt.NDArray[np.object_]
    t_ms: npt.NDArray[np.int64]
    lon: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    hdop: npt.NDArray[np.float64]
    sats: npt.NDArray[np.float64]
    height_m: npt.NDArray[np.float64]
    visible: npt.NDArray[np.bool_]
    line: npt.NDArray[np.int64]
    columns: tuple[str, ...]
    problems: tuple[RowProblem, ...]
    skipped_non_location: int
    # Rows kept, but with an unreadable optional value (hdop, satellites, height) set to NaN.
    warnings: tuple[RowProblem, ...] = ()
    # gps:fix-type (1 no fix, 2 = 2-D, 3 = 3-D); None when the file has no such column.
    fix_type: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return int(self.t_ms.shape[0])

    @property
    def failed(self) -> npt.NDArray[np.bool_]:
        """True where the row is a fix attempt without a position."""
        return np.isnan(self.lon)


def _read_records(path: str | PathLike[str]) -> tuple[list[str], list[list[str]], list[int]]:
    """Return header, data records and each record's first physical line number.

    ``newline=''`` lets csv see CR, LF and CRLF line ends as written, so CR-only (old Mac)
    files split into lines, and ``line_num`` counts physical lines even inside quoted fields.
    """
    records: list[list[str]] = []
    lines: list[int] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        prev_end = 0
        for rec in reader:
            start = prev_end + 1
            prev_end = reader.line_num
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # blank line
            if header is None:
                header = [c.strip() for c in rec]
                continue
            records.append(rec)
            lines.append(start)
    if header is None:
        raise ValueError(f"{path}: empty file, no header")
    return header, records, lines


def _missing_mask(values: Sequence[str]) -> npt.NDArray[np.bool_]:
    # The exact-match test first: nearly every value is "" or a plain number.
    return np.fromiter(
        (v in _MISSING or v.strip().lower() in _MISSING for v in values), bool, len(values)
    )


def _to_float(values: Sequence[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Convert strings to float64: missing markers become NaN.

    Returns (values, bad) where ``bad`` marks non-numeric or non-finite text. The bulk numpy
    conversion handles the normal case; only if it fails do we go row by row to find the bad ones.
    """
    n = len(values)
    missing = _missing_mask(values)
    cleaned = ["nan" if m else v for v, m in zip(values, missing, strict=True)]
    try:
        out = np.array(cleaned, dtype=np.float64) if n else np.empty(0, np.float64)
        bad = np.zeros(n, dtype=bool)
    except ValueError:
        out = np.full(n, np.nan)
        bad = np.zeros(n, dtype=bool)
        for i, v in enumerate(cleaned):
            try:
                out[i] = float(v)
            except ValueError:
                bad[i] = True
    # "inf" or a literal "nan" spelled differently parses but is not a usable number.
    nonfinite = ~np.isfinite(out) & ~missing & ~bad
    bad |= nonfinite
    out[bad] = np.nan
    return out, bad


def _timestamps_to_ms(values: Sequence[str]) -> tuple[npt.NDArray[np.int64], list[str | None]]:
    """Vectorised timestamp parsing; returns (ms, per-row error or None).

    numpy's datetime64 parser is fast but lenient (it accepts a bare date, truncates long
    fractions), so a row only counts as parsed in bulk if formatting it back reproduces the
    input. Every other row goes through ``parse_timestamp`` for a precise verdict.
    """
    n = len(values)
    errors: list[str | None] = [None] * n
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out, errors
    norm = [v.strip().replace(" ", "T", 1).removesuffix("Z") for v in values]
    ok = np.zeros(n, dtype=bool)
    try:
        dt = np.array(norm, dtype="datetime64[ms]")
    except ValueError:
        dt = None  # some row is unparseable; all rows go the careful way
    if dt is not None:
        back = np.datetime_as_string(dt, unit="ms")
        norm_arr = np.array(norm)
        # Length 23 = a 4-digit year; numpy would also take years like 10000 or -0001.
        ok = (back == norm_arr) & (np.strings.str_len(norm_arr) == 23)
        out[ok] = dt[ok].astype(np.int64)
    for i in np.flatnonzero(~ok):
        try:
            out[i] = parse_timestamp(values[i])
        except ValueError as exc:
            errors[i] = str(exc)
    return out, errors


def read_movebank_csv(path: str | PathLike[str]) -> MovebankTrack:
    """Read a Movebank CSV export into a :class:`MovebankTrack`.

    * Non-location sensor rows (``sensor-type`` named but not a location sensor, e.g.
      ``accessory-measurements``) are counted in ``skipped_non_location``, not returned.
    * Failed fixes (both coordinates empty) are kept with NaN coordinates.
    * Rows that cannot be used are listed in ``problems`` with their line and reason.
    * ``hdop``/``sats``/``height_m`` come from ``gps:hdop``, ``gps:satellite-count`` and
      ``height-above-ellipsoid``; NaN where empty or the column is absent. ``height-above-msl``
      is deliberately not substituted (different vertical datum). ``fix_type`` comes from
      ``gps:fix-type`` (None without the column).

    Raises ValueError when a required column is missing.
    """
    header, records, lines = _read_records(path)
    col = {name: i for i, name in enumerate(header)}
    missing_cols = [c for c in _REQUIRED_COLUMNS if c not in col]
    if missing_cols:
        raise ValueError(f"{path}: missing required column(s): {', '.join(missing_cols)}")

    problems: list[RowProblem] = []
    warnings: list[RowProblem] = []
    width = len(header)
    good: list[list[str]] = []
    good_lines: list[int] = []
    for rec, ln in zip(records, lines, strict=True):
        if len(rec) != width:
            problems.append(RowProblem(ln, f"expected {width} fields, found {len(rec)}"))
        else:
            good.append(rec)
            good_lines.append(ln)

    n = len(good)
    line_arr = np.asarray(good_lines, dtype=np.int64)

    def column(name: str) -> list[str] | None:
        # Extract only the columns we use: transposing all of a wide export costs far more.
        i = col.get(name)
        return None if i is None else [r[i] for r in good]

    # Non-location sensor rows are another record type, not a problem.
    sensor = column("sensor-type")
    if sensor is not None:
        st = [s.strip().lower() for s in sensor]
        non_loc = np.fromiter((s != "" and s not in LOCATION_SENSOR_TYPES for s in st), bool, n)
    else:
        non_loc = np.zeros(n, dtype=bool)
    skipped_non_location = int(non_loc.sum())

    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}

    def flag(mask: npt.NDArray[np.bool_], reason: str) -> None:
        new = mask & ~bad & ~non_loc
        for i in np.flatnonzero(new):
            reasons[int(i)] = reason
        bad[new] = True

    animal_txt = column("individual-local-identifier") or []
    animal = np.array([a.strip() for a in animal_txt], dtype=object)
    flag(animal == "", "missing individual-local-identifier")

    t_ms, t_err = _timestamps_to_ms(column("timestamp") or ())
    for i, err in enumerate(t_err):
        if err is not None and not bad[i] and not non_loc[i]:
            reasons[i] = f"bad timestamp: {err}"
            bad[i] = True

    lon_txt = column("location-long") or ()
    lat_txt = column("location-lat") or ()
    lon, lon_bad = _to_float(lon_txt)
    lat, lat_bad = _to_float(lat_txt)
    flag(lon_bad, "non-numeric location-long")
    flag(lat_bad, "non-numeric location-lat")
    flag(np.isnan(lon) != np.isnan(lat), "only one of location-long/location-lat is given")
    with np.errstate(invalid="ignore"):
        flag(np.abs(lon) > 180.0, "location-long out of range [-180, 180]")
        flag(np.abs(lat) > 90.0, "location-lat out of range [-90, 90]")

    vis_txt = column("visible")
    if vis_txt is not None:
        v = np.array([x.strip().lower() for x in vis_txt], dtype=object)
        visible = v != "false"
        flag(~np.isin(v, ["true", "false", ""]), "visible is neither true nor false")
    else:
        visible = np.ones(n, dtype=bool)

    def optional(name: str) -> npt.NDArray[np.float64]:
        txt = column(name)
        if txt is None:
            return np.full(n, np.nan)
        vals, vbad = _to_float(txt)
        for i in np.flatnonzero(vbad & ~bad & ~non_loc):
            warnings.append(RowProblem(int(line_arr[i]), f"unreadable {name} {txt[i]!r}"))
        return vals

    hdop = optional("gps:hdop")
    sats = optional("gps:satellite-count")
    height = optional("height-above-ellipsoid")
    fix_type = optional("gps:fix-type") if "gps:fix-type" in col else None

    tag_txt = column("tag-local-identifier")
    tag = (
        np.array([t.strip() for t in tag_txt], dtype=object)
        if tag_txt is not None
        else np.full(n, "", dtype=object)
    )

    problems.extend(RowProblem(int(line_arr[i]), r) for i, r in reasons.items())
    problems.sort(key=lambda p: p.line)
    warnings.sort(key=lambda p: p.line)

    keep = ~bad & ~non_loc
    return MovebankTrack(
        animal=animal[keep],
        tag=tag[keep],
        t_ms=t_ms[keep],
        lon=lon[keep],
        lat=lat[keep],
        hdop=hdop[keep],
        sats=sats[keep],
        height_m=height[keep],
        visible=np.asarray(visible, dtype=bool)[keep],
        line=line_arr[keep],
        columns=tuple(header),
        problems=tuple(problems),
        skipped_non_location=skipped_non_location,
        warnings=tuple(warnings),
        fix_type=None if fix_type is None else fix_type[keep],
    )


# --------------------------------------------------------------------------- writing


def _num(value: Any) -> str:
    """Format an optional number; repr() of a float round-trips exactly."""
    if value is None:
        return ""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int | np.integer):
        return str(int(value))
    f = float(value)
    if math.isnan(f):
        return ""
    if math.isinf(f):
        raise ValueError(f"cannot write non-finite number {value!r}")
    return repr(f)


def _fix_to_row(
    fix: Mapping[str, Any],
    event_id: int,
    taxa: Mapping[str, str],
    study_name: str,
    include_received: bool,
) -> list[str]:
    for key in ("individual-local-identifier", "timestamp"):
        if not fix.get(key):
            raise ValueError(f"fix #{event_id} has no {key!r}")
    animal = str(fix["individual-local-identifier"])
    taxon = fix.get("individual-taxon-canonical-name") or taxa.get(animal, "")
    row = [
        str(event_id),
        "true",
        format_movebank_timestamp(parse_timestamp(fix["timestamp"])),
        _num(fix.get("location-long")),
        _num(fix.get("location-lat")),
        _num(fix.get("gps:hdop")),
        _num(fix.get("gps:satellite-count")),
        _num(fix.get("height-above-ellipsoid")),
        "gps",
        taxon,
        str(fix.get("tag-local-identifier") or ""),
        animal,
        study_name,
    ]
    if include_received:
        rec = fix.get("received-timestamp")
        row.append(format_movebank_timestamp(parse_timestamp(rec)) if rec else "")
    return row


def write_movebank_csv(
    path: str | PathLike[str],
    fixes: Iterable[Mapping[str, Any]],
    *,
    taxa: Mapping[str, str] | None = None,
    study_name: str = "collarstream simulation",
    include_received: bool = False,
) -> int:
    """Write wire-format fixes as a Movebank CSV (CRLF, like Movebank exports); return row count.

    Rows keep the order given and ``event-id`` counts from 1. ``taxa`` maps animal id to the
    species name when the fixes do not carry ``individual-taxon-canonical-name``.
    ``include_received`` appends a non-Movebank ``collarstream:received-timestamp`` column so
    upload lateness survives the file.
    """
    taxa = taxa or {}
    header = list(MOVEBANK_COLUMNS)
    if include_received:
        header.append(_RECEIVED_COLUMN)
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header)
        for fix in fixes:
            n += 1
            writer.writerow(_fix_to_row(fix, n, taxa, study_name, include_received))
    return n
