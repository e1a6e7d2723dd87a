"""The wire contracts in schemas/ describe exactly what the code emits and accepts.

Events are validated in their wire form (orjson round trip, as the stream app sends
them): shapely's GeoJSON mapping uses tuples, which JSON turns into arrays.
"""

from __future__ import annotations

import json
import math
import re
import string
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from collarstream import wire
from collarstream.core import quality
from collarstream.core.track import (
    Context,
    FixBatch,
    TrackConfig,
    TrackState,
    advance,
    resolve_home_ranges,
)
from collarstream.fences import FenceError, default_urban_path, load_countries, load_fence_file
from collarstream.timefmt import iso, parse_ms

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
NAMES = ("fix", "step", "alert", "home-range", "dead-letter")
BASE = "https://collarstream.example/schemas/"
H4_MS = 4 * 3600 * 1000
T0 = parse_ms("2025-05-01T00:00:00Z")


@cache
def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


@cache
def _registry() -> Registry:
    return Registry().with_resources(
        (f"{BASE}{n}.schema.json", Resource.from_contents(_schema(n))) for n in NAMES
    )


@cache
def _validator(name: str, pointer: str = "") -> Draft202012Validator:
    if pointer:
        return Draft202012Validator(
            {"$ref": f"{BASE}{name}.schema.json#{pointer}"}, registry=_registry()
        )
    return Draft202012Validator(_schema(name), registry=_registry())


def _wire(obj: Any) -> Any:
    """What a consumer of the topic sees."""
    return orjson.loads(orjson.dumps(obj))


def _errors(name: str, obj: Any, pointer: str = "") -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in _validator(name, pointer).iter_errors(obj)]


def _assert_valid(name: str, obj: Any) -> None:
    errs = _errors(name, _wire(obj))
    assert not errs, f"{name} schema rejects {obj!r}: {errs}"


# ----------------------------------------------------------------------------- the schemas


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_2020_12(name: str) -> None:
    schema = _schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{BASE}{name}.schema.json"
    assert schema["title"] and schema["description"]


def _properties(node: Any) -> list[tuple[str, Any]]:
    """Every (name, subschema) under any `properties` keyword, at any depth."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out += list(value.items())
            out += _properties(value)
    elif isinstance(node, list):
        for value in node:
            out += _properties(value)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_property_is_described(name: str) -> None:
    # A property is described where it is defined (with a type/const/enum/$ref/oneOf);
    # the repetitions in if/then branches that only narrow it need not repeat the text.
    defining = {"type", "$ref", "oneOf", "enum"}
    undescribed = [
        p
        for p, sub in _properties(_schema(name))
        if isinstance(sub, dict)
        and defining & sub.keys()
        and "description" not in sub
        and not (sub.keys() <= {"type", "const", "minimum"})
    ]
    assert not undescribed, f"{name}: properties without a description: {undescribed}"


# ----------------------------------------------------------------------------- the reducer's events


@pytest.fixture(scope="module")
def ctx() -> Context:
    profile = quality.Profile("snow-leopard-test", 5.0, fix_interval_s=4 * 3600)
    return Context(
        load_countries(),
        load_fence_file(default_urban_path()),
        profile,
        config=TrackConfig(window_days=10000, home_range_every_days=1.0),
    )


def _track() -> tuple[list[float], list[float]]:
    """South from 77.0E 43.0N into Kyrgyzstan (border ~42.97N there) and back; then from
    76.95E 43.0N north into Almaty, a few days in the city, and out south again."""
    lon = [77.0] * 7
    lat = [43.0, 42.97, 42.94, 42.91, 42.94, 42.97, 43.0]
    north = [43.0, 43.01, 43.02, 43.03, 43.05, 43.08, 43.12, 43.16]
    rng = np.random.default_rng(7)
    city = list(43.2 + rng.normal(0, 0.01, 10))
    south = [43.16, 43.12, 43.08, 43.05, 43.02, 42.99, 42.97]
    lat += north + city + south
    lon += [76.95] * len(north) + list(76.9 + rng.normal(0, 0.01, 10)) + [76.95] * len(south)
    return lon, lat


def _batch(t_ms: list[int], lon: list[float], lat: list[float], tag: str = "collar-7") -> FixBatch:
    n = len(t_ms)
    t = np.asarray(t_ms, dtype=np.int64)
    return FixBatch(
        t,
        np.asarray(lon, float),
        np.asarray(lat, float),
        np.full(n, 1.5),
        np.full(n, 9.0),
        t + 90_000,
        tag,
    )


@pytest.fixture(scope="module")
def events(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    lon, lat = _track()
    t = [T0 + i * H4_MS for i in range(len(lon))]
    state = TrackState.new("leo-1", len(ctx.urban))
    out: list[dict[str, Any]] = []
    # In two uploads, then a late fix inside the first KAZ->KGZ step (fixes 0 -> 1):
    # at 42.95N it is already in Kyrgyzstan, so that step and its crossing are withdrawn.
    for sl in (slice(0, 15), slice(15, None)):
        state, ev = advance(state, _batch(t[sl], lon[sl], lat[sl]), ctx)
        out += ev
    late = _batch([T0 + H4_MS // 2], [77.0], [42.95])
    state, ev = advance(state, late, ctx)
    out += ev
    by_type: dict[str, list[dict[str, Any]]] = {"step": [], "alert": [], "home-range": []}
    for e in resolve_home_ranges(out):
        by_type[e["type"]].append(e)
    return by_type


def test_reducer_produced_every_kind_of_event(events: dict[str, list[dict[str, Any]]]) -> None:
    alerts = events["alert"]
    crossings = [
        (a["details"]["from"]["code"], a["details"]["to"]["code"])
        for a in alerts
        if a["kind"] == "border-crossing"
    ]
    assert ("KAZ", "KGZ") in crossings and ("KGZ", "KAZ") in crossings
    urban = [
        (a["details"]["transition"], a["details"]["level"])
        for a in alerts
        if a["kind"] == "urban-edge"
    ]
    assert [u for u in urban if u[0] == "enter"] == [("enter", 1), ("enter", 2), ("enter", 3)]
    assert ("exit", 0) in urban
    withdrawals = [a for a in alerts if a["kind"] == "withdrawal"]
    assert len(withdrawals) == 1
    withdrawn = {a["id"] for a in alerts} & {w["withdraws"] for w in withdrawals}
    assert withdrawn, "the withdrawal must name a crossing alert sent earlier"
    assert sum(s["status"] == "withdrawn" for s in events["step"]) == 1
    assert sum(s["status"] == "current" for s in events["step"]) >= 30
    assert events["home-range"], "home ranges at daily boundaries once 20 fixes are in"
    assert {r["method"] for r in events["home-range"][0]["ranges"]} == {"mcp", "kde"}


@pytest.mark.parametrize("kind", ["step", "alert", "home-range"])
def test_reducer_events_validate(events: dict[str, list[dict[str, Any]]], kind: str) -> None:
    assert events[kind]
    for e in events[kind]:
        _assert_valid(kind, e)


def test_schemas_reject_what_the_code_never_emits(
    events: dict[str, list[dict[str, Any]]],
) -> None:
    """The schemas are not vacuous: small corruptions of real events are rejected."""
    step = _wire(next(s for s in events["step"] if s["status"] == "current"))
    gone = _wire(next(s for s in events["step"] if s["status"] == "withdrawn"))
    crossing = _wire(next(a for a in events["alert"] if a["kind"] == "border-crossing"))
    urban = _wire(next(a for a in events["alert"] if a["kind"] == "urban-edge"))
    withdrawal = _wire(next(a for a in events["alert"] if a["kind"] == "withdrawal"))
    hr = _wire(events["home-range"][0])
    bad = [
        ("step", {**step, "heading_deg": 360.0}),
        ("step", {**step, "turn_angle_deg": -180.0}),
        ("step", {k: v for k, v in step.items() if k != "distance_m"}),
        ("step", {**gone, "distance_m": 1.0}),
        ("step", {**step, "end-timestamp": "2025-05-01 04:00:00"}),
        ("step", {**step, "type": "alert"}),
        ("alert", {**crossing, "severity": "fatal"}),
        ("alert", {**crossing, "details": {**crossing["details"], "path": "gap"}}),
        ("alert", {**crossing, "details": urban["details"]}),
        ("alert", {**urban, "details": {**urban["details"], "transition": "exit"}}),
        ("alert", {**withdrawal, "details": {}}),
        ("alert", {k: v for k, v in withdrawal.items() if k != "withdraws"}),
        ("alert", {**crossing, "location-lat": 91.0}),
        ("home-range", {**hr, "ranges": [{**hr["ranges"][0], "method": "lse"}]}),
        ("home-range", {**hr, "ranges": [{**hr["ranges"][0], "bandwidth_m": 300.0}]}),
        (
            "home-range",
            {
                **hr,
                "ranges": [
                    {**hr["ranges"][0], "geometry": {"type": "Point", "coordinates": [0, 0]}}
                ],
            },
        ),
    ]
    for name, obj in bad:
        assert _errors(name, obj), f"{name} schema accepts {obj!r}"


def test_an_akde_home_range_validates_and_its_model_is_checked() -> None:
    # The replay tool's whole-track range carries AKDE isopleths with their movement
    # model (core.akde); an OU track fixed 4-hourly with tau = 1 day.
    from collarstream.core.homerange import home_ranges
    from collarstream.core.track import home_range_event

    rng = np.random.default_rng(4)
    n, t = 300, np.arange(300) * 4 * 3_600_000
    xy = np.zeros((n, 2))
    for k in range(1, n):
        xy[k] = 0.85 * xy[k - 1] + math.sqrt(1 - 0.85**2) * rng.normal(0, 0.05, 2)
    ranges = home_ranges(77.0 + xy[:, 0], 43.0 + xy[:, 1], grid_size=64, t_ms=t)
    event = _wire(home_range_event("leo-1", int(t[-1]), None, n, ranges))
    akde = [r for r in event["ranges"] if r["method"] == "akde"]
    assert [r["level"] for r in akde] == [50.0, 95.0]
    assert akde[0]["movement-model"]["kind"] == "ou"
    _assert_valid("home-range", event)
    model = akde[0]["movement-model"]
    for bad in ({**model, "kind": "ouf"}, {**model, "tau_s": -1.0}, {"kind": "ou"}):
        corrupt = {**event, "ranges": [{**akde[0], "movement-model": bad}]}
        assert _errors("home-range", corrupt), bad
    kde = next(r for r in event["ranges"] if r["method"] == "kde")
    assert _errors("home-range", {**event, "ranges": [{**kde, "movement-model": model}]}) == []


# ----------------------------------------------------------------------------- fixes and DLQ


def _fix(**kw: Any) -> dict[str, Any]:
    return {"individual-local-identifier": "leo-1", "timestamp": "2025-05-01T04:00:00.000Z", **kw}


@pytest.mark.parametrize(
    "doc",
    [
        _fix(),
        _fix(
            **{
                "location-long": 77.0,
                "location-lat": 43.2,
                "gps:hdop": 1.2,
                "gps:satellite-count": 7,
                "height-above-ellipsoid": 1500.5,
                "tag-local-identifier": "T1",
                "received-timestamp": "2025-05-01T04:03:00Z",
            }
        ),
        _fix(**{"location-long": None, "location-lat": None, "tag-local-identifier": 4711}),
        _fix(timestamp="2025-05-01 04:00:00.999", **{"study-name": "extra columns are ignored"}),
    ],
)
def test_fix_to_json_validates_and_round_trips(doc: dict[str, Any]) -> None:
    fix = wire.parse_fix(doc, received_ms=T0)
    out = fix.to_json()
    _assert_valid("fix", out)
    assert wire.parse_fix(_wire(out), received_ms=0) == fix  # to_json loses nothing
    assert out["received-timestamp"].endswith("Z") and out["timestamp"].endswith("Z")


def test_raw_topic_upload_validates() -> None:
    raw = orjson.dumps([_fix(), _fix(**{"location-long": 76.9, "location-lat": 43.2})])
    fixes = wire.parse_message(raw, received_ms=T0)
    _assert_valid("fix", [f.to_json() for f in fixes])
    assert not _errors("fix", orjson.loads(raw))
    assert _errors("fix", []), "an empty upload is rejected by both"
    with pytest.raises(wire.InvalidFix):
        wire.parse_message(b"[]", received_ms=T0)
    assert _errors("fix", [_fix(), 3])
    with pytest.raises(wire.InvalidFix):
        wire.parse_message(orjson.dumps([_fix(), 3]), received_ms=T0)


@given(
    animal=st.text(min_size=1, max_size=128).filter(str.strip),
    tag=st.one_of(st.just(""), st.text(max_size=20)),
    t=st.integers(0, 4_102_444_800_000),
    age=st.integers(0, 10**9),
    located=st.booleans(),
    lon=st.floats(-180, 180),
    lat=st.floats(-90, 90),
    hdop=st.one_of(st.just(math.nan), st.floats(0, 100)),
    sats=st.one_of(st.just(math.nan), st.integers(0, 64).map(float)),
    height=st.one_of(st.just(math.nan), st.floats(-1000, 10000)),
)
@settings(max_examples=200, deadline=None)
def test_any_fix_to_json_validates(
    animal: str,
    tag: str,
    t: int,
    age: int,
    located: bool,
    lon: float,
    lat: float,
    hdop: float,
    sats: float,
    height: float,
) -> None:
    fix = wire.Fix(
        animal,
        tag,
        t,
        lon if located else math.nan,
        lat if located else math.nan,
        hdop,
        sats,
        height,
        t + age,
    )
    out = fix.to_json()
    _assert_valid("fix", out)
    assert wire.parse_fix(_wire(out), received_ms=0) == fix


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"individual-local-identifier": "leo-1"}', b"leo-1"),
        (b"\xff\xfe not utf-8", None),
        (b"", b"\x00\xff"),
        ('[{"timestamp": "2025-05-01T04:00:00Z", "x": "Алматы"}]'.encode(), b"k"),
    ],
)
def test_dead_letter_validates(raw: bytes, key: bytes | None) -> None:
    reason = "individual-local-identifier must be a non-empty string of at most 128 chars"
    try:
        wire.parse_message(raw, received_ms=T0)
    except wire.InvalidFix as exc:
        reason = str(exc)
    record = wire.dead_letter(raw, reason, "collarstream.raw-fixes", 3, 12345, key, T0)
    _assert_valid("dead-letter", record)
    assert _errors("dead-letter", {**record, "source-offset": -1})
    assert _errors("dead-letter", {**record, "extra": 1})


# ----------------------------------------------------------------------------- parse_fix vs schema

FIX_KEYS = (
    "individual-local-identifier",
    "tag-local-identifier",
    "timestamp",
    "received-timestamp",
    "location-long",
    "location-lat",
    "gps:hdop",
    "gps:satellite-count",
    "height-above-ellipsoid",
)
ZONES = ("Z", "+00:00", "-00:00", "+0000", "-0000", "")
BOUNDS = {
    "location-long": (-180, 180),
    "location-lat": (-90, 90),
    "gps:hdop": (0, 100),
    "gps:satellite-count": (0, 64),
    "height-above-ellipsoid": (-1000, 10000),
}


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """Every input form parse_ms accepts: T or space, 0-9 fraction digits, UTC zones."""
    ms = draw(st.integers(-30_610_224_000_000, 253_402_300_799_000))  # years 1000..9999
    digits = draw(st.integers(0, 9))
    text = iso(ms)[:19]
    if draw(st.booleans()):
        text = text.replace("T", " ")
    if digits:
        text += "." + "".join(
            draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits))
        )
    return text + draw(st.sampled_from(ZONES))


@st.composite
def bad_timestamps(draw: st.DrawFn) -> str:
    """Strings both must reject, all of them breaking the pattern (so none is a mere
    calendar error like 31 April, which only parse_fix can see)."""
    good = draw(timestamps())
    how = draw(st.sampled_from(["char", "drop", "append", "offset", "field", "text"]))
    if how == "char":
        i = draw(st.integers(0, 18))
        c = draw(st.sampled_from("x/_:-+.,aTZ"))
        assume(good[i] != c and not (i == 10 and c in "T "))
        return good[:i] + c + good[i + 1 :]
    if how == "drop":
        i = draw(st.integers(0, 18))
        return good[:i] + good[i + 1 :]
    if how == "append":
        return good + draw(st.sampled_from(["x", "ZZ", "+01:00", ".", "Z0"]))
    if how == "offset":
        return good[:19] + draw(st.sampled_from(["+05:00", "-03:30", "+01", "UTC", "z"]))
    if how == "field":
        # Out-of-range fields that a naive \d{2} pattern would let through.
        pos, val = draw(
            st.sampled_from(
                [
                    (0, "0000"),
                    (5, "13"),
                    (5, "00"),
                    (8, "32"),
                    (8, "00"),
                    (11, "24"),
                    (14, "60"),
                    (17, "60"),
                ]
            )
        )
        return good[:pos] + val + good[pos + len(val) :]
    return draw(st.text(alphabet=string.printable, max_size=30))


def _located() -> st.SearchStrategy[dict[str, Any]]:
    none_or_absent = st.sampled_from(["absent", None])
    return st.one_of(
        st.fixed_dictionaries(
            {"location-long": st.floats(-180, 180), "location-lat": st.floats(-90, 90)}
        ),
        st.tuples(none_or_absent, none_or_absent).map(
            lambda p: {
                k: v
                for k, v in zip(("location-long", "location-lat"), p, strict=True)
                if v != "absent"
            }
        ),
    )


def _optional(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just({}), st.just({key: None}), values.map(lambda v: {key: v}))


@st.composite
def valid_fixes(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "individual-local-identifier": draw(st.text(min_size=1, max_size=128).filter(str.strip)),
        "timestamp": draw(timestamps()),
    }
    doc |= draw(_located())
    doc |= draw(
        _optional(
            "tag-local-identifier", st.one_of(st.text(max_size=12), st.integers(-(2**63), 2**63))
        )
    )
    doc |= draw(_optional("received-timestamp", timestamps()))
    doc |= draw(_optional("gps:hdop", st.one_of(st.floats(0, 100), st.integers(0, 100))))
    doc |= draw(
        _optional(
            "gps:satellite-count", st.one_of(st.integers(0, 64), st.integers(0, 64).map(float))
        )
    )
    doc |= draw(_optional("height-above-ellipsoid", st.floats(-1000, 10000)))
    extra = draw(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in FIX_KEYS),
            st.one_of(st.none(), st.integers(), st.text(max_size=5)),
            max_size=2,
        )
    )
    return {**extra, **doc}


def _wrong_type(key: str) -> st.SearchStrategy[Any]:
    """Values of a JSON type the key does not allow."""
    anything = st.one_of(
        st.booleans(),
        st.integers(-1000, 1000),
        st.floats(-1000, 1000),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    if key == "individual-local-identifier":
        # Strings that are empty, blank or too long are also wrong.
        return st.one_of(
            anything.filter(lambda v: not isinstance(v, str)),
            st.sampled_from(["", " ", "\t\n", "\u2003"]),
            st.text(min_size=129, max_size=140),
        )
    if key == "tag-local-identifier":
        return anything.filter(
            lambda v: (
                isinstance(v, bool | list | dict) or (isinstance(v, float) and not v.is_integer())
            )
        )
    if key in ("timestamp", "received-timestamp"):
        return st.one_of(anything.filter(lambda v: not isinstance(v, str)), bad_timestamps())
    if key == "gps:satellite-count":
        return st.one_of(
            anything.filter(lambda v: not isinstance(v, int | float) or isinstance(v, bool)),
            st.floats(0.01, 63.99).filter(lambda v: not v.is_integer()),
        )
    return anything.filter(lambda v: not isinstance(v, int | float) or isinstance(v, bool))


def _out_of_range(key: str) -> st.SearchStrategy[Any]:
    lo, hi = BOUNDS[key]
    return st.one_of(
        st.floats(min_value=hi, exclude_min=True, allow_infinity=False),
        st.floats(max_value=lo, exclude_max=True, allow_infinity=False),
        st.integers(hi + 1, 10**300),
        st.integers(-(10**300), lo - 1),
    )


@st.composite
def mutated_fixes(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(valid_fixes())
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["delete", "type", "range", "half-located", "null"]))
        if how == "delete":
            doc.pop(draw(st.sampled_from(FIX_KEYS)), None)
        elif how == "type":
            key = draw(st.sampled_from(FIX_KEYS))
            doc[key] = draw(_wrong_type(key))
        elif how == "range":
            key = draw(st.sampled_from(sorted(BOUNDS)))
            doc[key] = draw(_out_of_range(key))
        elif how == "half-located":
            doc[draw(st.sampled_from(["location-long", "location-lat"]))] = None
        else:
            doc[draw(st.sampled_from(FIX_KEYS))] = None
    return doc


def _parses(doc: Any) -> bool:
    try:
        wire.parse_fix(doc, received_ms=T0)
    except wire.InvalidFix:
        return False
    return True


@given(
    doc=st.one_of(
        valid_fixes(),
        mutated_fixes(),
        st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers())),
    )
)
@settings(max_examples=1500, deadline=None)
def test_parse_fix_agrees_with_fix_schema(doc: Any) -> None:
    schema_ok = not _errors("fix", doc, "/$defs/fix")
    assert _parses(doc) == schema_ok, (doc, _errors("fix", doc, "/$defs/fix"))


@given(doc=valid_fixes())
@settings(max_examples=200, deadline=None)
def test_valid_fixes_are_valid(doc: dict[str, Any]) -> None:
    """The generator of the agreement test really produces valid fixes (half its cases)."""
    assert not _errors("fix", doc)
    assert _parses(doc)


@given(doc=valid_fixes(), received=st.integers(0, 2**42))
@settings(max_examples=300, deadline=None)
def test_the_fast_path_reads_a_fix_as_the_field_by_field_checks_do(
    doc: dict[str, Any], received: int
) -> None:
    """parse_fix takes the usual fix through one combined check; whatever it returns
    must be what the field-by-field checks return (NaN for NaN)."""

    def plain(fix: wire.Fix) -> list[Any]:
        return [v if v == v else "nan" for v in fix]

    assert plain(wire.parse_fix(doc, received)) == plain(wire._checked_fix(doc, received))


def test_documented_differences_between_parse_fix_and_schema() -> None:
    """Differences stated in fix.schema.json's description, and why they are acceptable."""
    # 1. Calendar: 31 April matches the pattern; only parse_fix knows April has 30 days.
    doc = _fix(timestamp="2025-04-31T00:00:00Z")
    assert not _errors("fix", doc) and not _parses(doc)
    doc = _fix(timestamp="2023-02-29T00:00:00Z")
    assert not _errors("fix", doc) and not _parses(doc)
    # 2. Whitespace around a timestamp: parse_fix strips it, the contract does not allow it.
    doc = _fix(timestamp=" 2025-04-30T00:00:00Z ")
    assert _errors("fix", doc) and _parses(doc)
    # 3. JSON Schema cannot tell 1.0 from 1; parse_fix takes only a true integer tag.
    doc = _fix(**{"tag-local-identifier": 1.0})
    assert not _errors("fix", doc) and not _parses(doc)


def test_parse_fix_rejects_non_ascii_digits() -> None:
    doc = _fix(timestamp="２０２５-05-01T04:00:00Z")
    assert _errors("fix", doc)
    assert not _parses(doc)


def test_parse_fix_rejects_huge_integers_with_invalid_fix() -> None:
    doc = _fix(**{"location-long": 10**400, "location-lat": 0})
    assert _errors("fix", doc)
    assert not _parses(doc)


def test_fence_file_rejects_unknown_severity(tmp_path: Path) -> None:
    doc = json.loads(default_urban_path().read_text(encoding="utf-8"))
    doc["features"][0]["properties"]["zones"][0]["severity"] = "urgent"
    path = tmp_path / "fence.geojson"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(FenceError):
        load_fence_file(path)


def test_timestamp_pattern_matches_emitted_form() -> None:
    pattern = re.compile(_schema("step")["$defs"]["timestamp"]["pattern"])
    for ms in (0, T0, 253_402_300_799_999, 951_782_400_123):
        assert pattern.search(iso(ms))


def test_step_heading_stays_below_360_after_rounding() -> None:
    ctx = Context(None, (), quality.Profile("cuckoo", 70.0, fix_interval_s=86400))
    # Due north over 10 degrees, 1e-9 degrees (0.1 mm) west: azimuth -6e-9 degrees.
    t = np.array([T0, T0 + 86_400_000], dtype=np.int64)
    batch = FixBatch(
        t,
        np.array([10.0, 10.0 - 1e-9]),
        np.array([0.0, 10.0]),
        np.full(2, 1.0),
        np.full(2, 8.0),
        t,
        "c",
    )
    _, ev = advance(TrackState.new("cuckoo-1"), batch, ctx)
    (step,) = ev
    assert not _errors("step", _wire(step)), step
