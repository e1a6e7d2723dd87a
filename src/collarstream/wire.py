"""Wire format of fixes: raw bytes in, validated fixes or a reason out.

A message on the raw topic is one fix (a JSON object, schemas/fix.schema.json) or one
collar upload (a JSON array of such objects). The checks below are the schema's,
written out by hand because jsonschema costs ~100 µs a message and the live path
handles tens of thousands a second; tests hold the two to agreement.
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from collarstream.core.track import FixBatch, compute_home_range
from collarstream.timefmt import iso, parse_ms

ANIMAL = "individual-local-identifier"
TAG = "tag-local-identifier"
TIME = "timestamp"
LON = "location-long"
LAT = "location-lat"
HDOP = "gps:hdop"
SATS = "gps:satellite-count"
HEIGHT = "height-above-ellipsoid"
RECEIVED = "received-timestamp"
FIX_TYPE = "gps:fix-type"  # Movebank: 1 no fix, 2 = 2-D, 3 = 3-D

KNOWN = {ANIMAL, TAG, TIME, LON, LAT, HDOP, SATS, HEIGHT, RECEIVED, FIX_TYPE}
MAX_ID = 128
# An upload larger than this is not a collar's; reject rather than stall a batch.
MAX_UPLOAD = 10_000


class InvalidFix(ValueError):
    """A fix that breaks the wire contract; the message is the dead-letter reason."""


class Fix(NamedTuple):
    """One validated fix. A tuple: a frozen dataclass's __init__ took ~1.5 µs a fix."""

    animal: str
    tag: str
    t_ms: int
    lon: float
    lat: float
    hdop: float
    sats: float
    height_m: float
    received_ms: int
    fix_type: float = math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            ANIMAL: self.animal,
            TAG: self.tag or None,
            TIME: iso(self.t_ms),
            LON: _opt(self.lon),
            LAT: _opt(self.lat),
            HDOP: _opt(self.hdop),
            SATS: None if math.isnan(self.sats) else int(self.sats),
            HEIGHT: _opt(self.height_m),
            RECEIVED: iso(self.received_ms),
            FIX_TYPE: None if math.isnan(self.fix_type) else int(self.fix_type),
        }


def _opt(v: float) -> float | None:
    return None if math.isnan(v) else v


def parse_message(raw: bytes, received_ms: int) -> list[Fix]:
    """All fixes of one raw message; raises InvalidFix naming the first problem.

    `received_ms` is used when the fix does not already say when it was received
    (a collar gateway may stamp it; otherwise the broker's arrival time stands).
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidFix(f"not JSON: {exc}") from exc
    if type(doc) is not list:
        return [parse_fix(doc, received_ms)]
    if not doc:
        raise InvalidFix("empty upload: an array with no fixes")
    if len(doc) > MAX_UPLOAD:
        raise InvalidFix(f"upload of {len(doc)} fixes exceeds {MAX_UPLOAD}")
    try:
        return [parse_fix(item, received_ms) for item in doc]
    except InvalidFix:
        if len(doc) == 1:
            raise
    for i, item in enumerate(doc):  # which one, for the reason
        try:
            parse_fix(item, received_ms)
        except InvalidFix as exc:
            raise InvalidFix(f"[{i}] {exc}") from None
    raise AssertionError("unreachable: a fix failed once and then passed")


def parse_fix(item: Any, received_ms: int) -> Fix:
    """One fix, or InvalidFix naming the first problem."""
    if type(item) is dict:
        # The usual fix passes these checks in one go; anything else (an int where a
        # float usually is, a missing field, a bad value) takes the field-by-field checks
        # below, which accept the same and say what is wrong. Both agree with the schema
        # (tests/test_schemas.py).
        get = item.get
        animal, tag, t, rec = get(ANIMAL), get(TAG), get(TIME), get(RECEIVED)
        lon, lat, hdop, sats = get(LON), get(LAT), get(HDOP), get(SATS)
        height, ftype = get(HEIGHT), get(FIX_TYPE)
        if (
            type(animal) is str
            and 0 < len(animal) <= MAX_ID
            and not animal.isspace()
            and (tag is None or type(tag) is str)
            and type(t) is str
            and (rec is None or type(rec) is str)
            and type(lon) is float
            and -180.0 <= lon <= 180.0
            and type(lat) is float
            and -90.0 <= lat <= 90.0
            and type(hdop) is float
            and 0.0 <= hdop <= 100.0
            and type(sats) is int
            and 0 <= sats <= 64
            and (height is None or (type(height) is float and -1000.0 <= height <= 10000.0))
            and (ftype is None or (type(ftype) is int and 1 <= ftype <= 3))
        ):
            try:
                t_ms = parse_ms(t)
                rec_ms = received_ms if rec is None else _received_ms(rec)
            except ValueError:
                pass  # the checks below say which
            else:
                return Fix(
                    animal,
                    "" if tag is None else tag,
                    t_ms,
                    lon,
                    lat,
                    hdop,
                    float(sats),
                    math.nan if height is None else height,
                    rec_ms,
                    math.nan if ftype is None else float(ftype),
                )
    return _checked_fix(item, received_ms)


# An upload's fixes share its received-timestamp.
_received_ms = functools.lru_cache(maxsize=1024)(parse_ms)


def _checked_fix(item: Any, received_ms: int) -> Fix:
    if not isinstance(item, dict):
        raise InvalidFix(f"a fix must be a JSON object, got {type(item).__name__}")
    animal = item.get(ANIMAL)
    if not isinstance(animal, str) or not animal.strip() or len(animal) > MAX_ID:
        raise InvalidFix(f"{ANIMAL} must be a non-empty string of at most {MAX_ID} chars")
    tag = item.get(TAG)
    if tag is not None and (isinstance(tag, bool) or not isinstance(tag, str | int)):
        raise InvalidFix(f"{TAG} must be a string")
    t_ms = _time(item, TIME, required=True)
    rec = _time(item, RECEIVED, required=False)
    lon = _number(item, LON, -180.0, 180.0)
    lat = _number(item, LAT, -90.0, 90.0)
    if math.isnan(lon) != math.isnan(lat):
        raise InvalidFix(f"{LON} and {LAT} must both be present or both be null")
    hdop = _number(item, HDOP, 0.0, 100.0)
    sats = _number(item, SATS, 0.0, 64.0)
    if not math.isnan(sats) and sats != int(sats):
        raise InvalidFix(f"{SATS} must be a whole number")
    height = _number(item, HEIGHT, -1000.0, 10000.0)
    ftype = _number(item, FIX_TYPE, 1.0, 3.0)
    if not math.isnan(ftype) and ftype != int(ftype):
        raise InvalidFix(f"{FIX_TYPE} must be 1 (no fix), 2 (2-D) or 3 (3-D)")
    return Fix(
        animal,
        "" if tag is None else str(tag),
        t_ms,
        lon,
        lat,
        hdop,
        sats,
        height,
        received_ms if rec is None else rec,
        ftype,
    )


def _time(item: dict[str, Any], key: str, required: bool) -> int | None:
    v = item.get(key)
    if v is None:
        if required:
            raise InvalidFix(f"{key} is required")
        return None
    if not isinstance(v, str):
        raise InvalidFix(f"{key} must be an ISO 8601 UTC string")
    try:
        return parse_ms(v)
    except ValueError as exc:
        raise InvalidFix(f"{key}: {exc}") from exc


def _number(item: dict[str, Any], key: str, lo: float, hi: float) -> float:
    v = item.get(key)
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidFix(f"{key} must be a number or null, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f) or not lo <= f <= hi:
        raise InvalidFix(f"{key}={v} is out of range [{lo:g}, {hi:g}]")
    return f


def to_batch(fixes: Sequence[Fix]) -> FixBatch:
    """Arrays for the core from fixes of one animal."""
    return FixBatch(
        t_ms=np.fromiter((f.t_ms for f in fixes), np.int64, len(fixes)),
        lon=np.fromiter((f.lon for f in fixes), np.float64, len(fixes)),
        lat=np.fromiter((f.lat for f in fixes), np.float64, len(fixes)),
        hdop=np.fromiter((f.hdop for f in fixes), np.float64, len(fixes)),
        sats=np.fromiter((f.sats for f in fixes), np.float64, len(fixes)),
        received_ms=np.fromiter((f.received_ms for f in fixes), np.int64, len(fixes)),
        tag=next((f.tag for f in reversed(fixes) if f.tag), ""),
        fix_type=np.fromiter((f.fix_type for f in fixes), np.float64, len(fixes)),
    )


# The internal fixes topic (validated, keyed by animal) carries columns, not objects:
# the tracking agent turns a message into arrays without touching each fix in Python.
_COLUMNS = ("t_ms", "lon", "lat", "hdop", "sats", "received_ms", "fix_type")


def encode_batch(animal: str, fixes: Sequence[Fix]) -> bytes:
    """One animal's validated fixes as one columnar message (schemas/fix-batch)."""
    columns = dict(
        zip(
            Fix._fields, zip(*fixes, strict=True) if fixes else [()] * len(Fix._fields), strict=True
        )
    )
    doc: dict[str, Any] = {
        "type": "fix-batch",
        ANIMAL: animal,
        TAG: next((tag for tag in reversed(columns["tag"]) if tag), None),
    }
    for name in _COLUMNS:
        col = columns[name]
        doc[name] = list(col) if name.endswith("_ms") else [None if v != v else v for v in col]
    return orjson.dumps(doc)


def concat_batches(batches: Sequence[FixBatch]) -> FixBatch:
    """One batch from several of the same animal (arrival order kept)."""
    if len(batches) == 1:
        return batches[0]
    cols = {
        n: np.concatenate([b.fix_types() if n == "fix_type" else getattr(b, n) for b in batches])
        for n in _COLUMNS
    }
    return FixBatch(tag=next((b.tag for b in reversed(batches) if b.tag), ""), **cols)


def decode_batch(raw: bytes) -> tuple[str, FixBatch]:
    """The animal and its fixes from an `encode_batch` message."""
    doc = orjson.loads(raw)
    cols = {
        name: np.asarray(doc[name], dtype=np.int64)
        if name.endswith("_ms")
        else np.array(doc[name], dtype=np.float64)  # None -> nan
        for name in _COLUMNS
    }
    return doc[ANIMAL], FixBatch(tag=doc[TAG] or "", **cols)


def dead_letter(
    raw: bytes,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    received_ms: int,
) -> dict[str, Any]:
    """The dead-letter record: the reason, where it came from, and the original bytes."""
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "id": f"dlq-{topic}-{partition}-{offset}",
        "reason": reason,
        "source-topic": topic,
        "source-partition": partition,
        "source-offset": offset,
        "key": None if key is None else base64.b64encode(key).decode(),
        "original-base64": base64.b64encode(raw).decode(),
        "original-text": text,
        "received-timestamp": iso(received_ms),
    }


def home_range_message(item: bytes) -> bytes:
    """The home-range message of a `home-range-due` message. Runs in the worker's
    home-range process: bytes both ways, so the worker's event loop neither unpickles
    the event (~65 kB of nested coordinate lists) nor encodes it again."""
    return orjson.dumps(compute_home_range(orjson.loads(item)))


def warm_up() -> bool:
    """Nothing to do: submitted once to a fresh home-range process so that it loads this
    module, and with it the home-range code and scipy (about 0.5 s of a core, more when
    shared), at start-up instead of with the first estimate, in a catch-up's first burst."""
    return True
