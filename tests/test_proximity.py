"""Proximity encounters: close pairs of fixes grouped per pair of animals, one alert per
animal at each encounter's start. The grouping against a plain loop and its properties
(order, gaps, a partition of the detections, live = batch), the alerts against the
schema, the live agent (Faust's test context, no broker) against the replay, and the
real tracks."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faust
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from collarstream.analyze import _proximity_alerts, analyze
from collarstream.core.encounters import encounter_alerts
from collarstream.core.geodesy import forward, inverse
from collarstream.core.proximity import (
    ENCOUNTER_GAP_S,
    MAX_DT_S,
    NO_PREVIOUS,
    WITHIN_M,
    OpenEncounter,
    close_pairs,
    close_to,
    continue_encounters,
    encounters,
)
from collarstream.core.track import Context, Detectors, FixBatch, TrackConfig, TrackState, advance
from collarstream.stream.watch import LatestFixes, install_watchers

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "alert.schema.json"
H_MS = 3_600_000
DAY_MS = 24 * H_MS
T0 = 1_746_057_600_000  # 2025-05-01T00:00:00Z
GAP_MS = round(ENCOUNTER_GAP_S * 1000)

# A detection: (animal a, animal b, fix time of a, fix time of b).
Detection = tuple[int, int, int, int]


def _key(d: Detection) -> tuple[int, int, int, int]:
    """Identity of a detection whatever the order of its two animals: the pair, sorted,
    and the fix time of each."""
    a, b, ta, tb = d
    return (a, b, ta, tb) if a < b else (b, a, tb, ta)


@st.composite
def detections(draw: st.DrawFn, max_size: int = 40) -> list[Detection]:
    """Detections of up to four animals over a week, minutes apart or days apart, the two
    fixes of each within the hour; no two with the same identity."""
    n = draw(st.integers(0, max_size))
    out: dict[tuple[int, int, int, int], Detection] = {}
    for _ in range(n):
        a, b = draw(st.lists(st.integers(0, 3), min_size=2, max_size=2, unique=True))
        ta = T0 + draw(st.integers(0, 7 * 24 * 60)) * 60_000
        tb = ta + draw(st.integers(-60, 60)) * 60_000
        d = (a, b, ta, tb)
        out.setdefault(_key(d), d)
    return list(out.values())


def _arrays(ds: list[Detection]) -> tuple[np.ndarray, ...]:
    cols = list(zip(*ds, strict=True)) if ds else [(), (), (), ()]
    return tuple(np.array(c, dtype=np.int64) for c in cols)


def _by_loop(ds: list[Detection], gap_ms: int) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Detection key -> key of its encounter's first detection, by a plain walk over the
    detections sorted by pair, time of the later fix, then the two fix times."""
    keyed = sorted((k[0], k[1], max(k[2], k[3]), k[2], k[3]) for k in map(_key, ds))
    out: dict[tuple[int, ...], tuple[int, ...]] = {}
    start = prev = None
    for lo, hi, t, t_lo, t_hi in keyed:
        if prev is None or prev[:2] != (lo, hi) or t - prev[2] > gap_ms:
            start = (lo, hi, t_lo, t_hi)
        prev = (lo, hi, t)
        out[lo, hi, t_lo, t_hi] = start
    return out


def _grouping(ds: list[Detection], gap_s: float) -> dict[tuple[int, ...], tuple[int, ...]]:
    a, b, ta, tb = _arrays(ds)
    enc = encounters(a, b, ta, tb, gap_s)
    assert enc.new.all()  # nothing carried in: every encounter starts here
    return {_key(d): _key(ds[int(enc.first[e])]) for d, e in zip(ds, enc.encounter, strict=True)}


GAPS = st.sampled_from([ENCOUNTER_GAP_S, 4 * 3600.0, 0.0])


@settings(max_examples=300, deadline=None)
@given(detections(), GAPS)
def test_encounters_equal_a_plain_loop(ds: list[Detection], gap_s: float) -> None:
    assert _grouping(ds, gap_s) == _by_loop(ds, round(gap_s * 1000))


@settings(max_examples=200, deadline=None)
@given(detections(), GAPS, st.randoms(use_true_random=False), st.booleans())
def test_encounters_do_not_depend_on_the_order_of_detections(
    ds: list[Detection], gap_s: float, rnd: Any, flip: bool
) -> None:
    shuffled = list(ds)
    rnd.shuffle(shuffled)
    if flip:  # (a, b) or (b, a): the same unordered pair
        shuffled = [(b, a, tb, ta) for a, b, ta, tb in shuffled]
    assert _grouping(shuffled, gap_s) == _grouping(ds, gap_s)


@settings(max_examples=300, deadline=None)
@given(detections(), GAPS)
def test_every_detection_is_in_one_encounter_and_none_spans_a_long_gap(
    ds: list[Detection], gap_s: float
) -> None:
    a, b, ta, tb = _arrays(ds)
    enc = encounters(a, b, ta, tb, gap_s)
    gap_ms = round(gap_s * 1000)
    t = np.maximum(ta, tb)
    pair = [tuple(sorted(p)) for p in zip(a.tolist(), b.tolist(), strict=True)]
    assert enc.encounter.shape == (len(ds),)
    assert set(enc.encounter.tolist()) == set(range(len(enc)))
    assert np.bincount(enc.encounter, minlength=len(enc)).tolist() == enc.count.tolist()
    assert int(enc.count.sum()) == len(ds)
    assert (enc.encounter[enc.first] == np.arange(len(enc))).all()
    assert (enc.encounter[enc.last] == np.arange(len(enc))).all()
    ends: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for e in range(len(enc)):
        members = np.flatnonzero(enc.encounter == e)
        assert len({pair[k] for k in members}) == 1  # one pair of animals
        times = np.sort(t[members])
        assert t[enc.first[e]] == times[0] and t[enc.last[e]] == times[-1]
        assert (np.diff(times) <= gap_ms).all()  # never across a gap longer than gap_s
        ends.setdefault(pair[members[0]], []).append((int(times[0]), int(times[-1])))
    for spans in ends.values():  # and the encounters of a pair are more than gap_s apart
        spans.sort()
        assert all(nxt[0] - cur[1] > gap_ms for cur, nxt in itertools.pairwise(spans))


def _names(k: int) -> str:
    return f"leo-{k}"


@settings(max_examples=200, deadline=None)
@given(detections(max_size=60), GAPS, st.lists(st.integers(1, 6), min_size=60, max_size=60))
def test_live_form_fed_in_time_order_equals_the_batch(
    ds: list[Detection], gap_s: float, cuts: list[int]
) -> None:
    """The live agent's form: detections in time order (cut into calls of any size, the
    order inside a call shuffled), each pair's open encounter carried between calls."""
    want = _grouping(ds, gap_s)
    starts_want = set(want.values())
    ordered = sorted(ds, key=lambda d: (max(d[2], d[3]), _key(d)[2], _key(d)[3]))
    carry: dict[tuple[str, str], OpenEncounter] = {}
    started: list[tuple[int, ...]] = []
    pos = 0
    for size in cuts:
        chunk = ordered[pos : pos + size][::-1]
        pos += size
        if not chunk:
            break
        a, b, ta, tb = _arrays(chunk)
        starts, changed = continue_encounters(
            carry, [_names(x) for x in a.tolist()], [_names(x) for x in b.tolist()], ta, tb, gap_s
        )
        started += [_key(chunk[k]) for k in np.flatnonzero(starts)]
        carry.update(changed)
    if pos < len(ordered):  # the rest in one call
        a, b, ta, tb = _arrays(ordered[pos:])
        starts, changed = continue_encounters(
            carry, [_names(x) for x in a.tolist()], [_names(x) for x in b.tolist()], ta, tb, gap_s
        )
        started += [_key(ordered[pos + k]) for k in np.flatnonzero(starts)]
        carry.update(changed)
    assert len(started) == len(set(started)) and set(started) == starts_want
    # The carry holds each pair's last encounter: its first and its latest detection.
    a, b, ta, tb = _arrays(ds)
    enc = encounters(a, b, ta, tb, gap_s)
    last: dict[tuple[str, str], OpenEncounter] = {}
    for first, latest in zip(enc.first.tolist(), enc.last.tolist(), strict=True):
        lo, hi, t_lo, t_hi = _key(ds[first])  # encounters come by pair, then in time
        last[_names(lo), _names(hi)] = OpenEncounter((t_lo, t_hi), max(ds[latest][2:]))
    assert carry == last


def test_encounters_carry_and_edges() -> None:
    h = H_MS
    # Exactly the gap apart continues (inclusive), a millisecond more starts anew.
    enc = encounters([0, 0, 0], [1, 1, 1], [0, GAP_MS, 2 * GAP_MS + 1], [0, GAP_MS, 2 * GAP_MS])
    assert enc.encounter.tolist() == [0, 0, 1] and enc.new.tolist() == [True, True]
    # The detection's time is its later fix: a's fix at 0 h, b's at 1 h is a detection at
    # 1 h, which continues one at 1 h - gap and would not continue one at 0 h - gap.
    enc = encounters([1, 0], [0, 1], [h - GAP_MS, 0], [h - GAP_MS, h])
    assert enc.encounter.tolist() == [0, 0]
    enc = encounters([1, 0], [0, 1], [-GAP_MS - 1, 0], [-GAP_MS - 1, h])
    assert len(enc) == 2
    # Carried: continues within the gap (not new), starts after it; pairs carry apart.
    prev = [10 * h, 10 * h, NO_PREVIOUS]
    enc = encounters(
        [0, 0, 2], [1, 2, 1], [11 * h, 10 * h + GAP_MS + 1, 0], [11 * h, 0, 0], prev_ms=prev
    )
    assert enc.new.tolist() == [False, True, True]
    # Empty in, empty out; an animal never meets itself.
    assert len(encounters([], [], [], [])) == 0
    with pytest.raises(ValueError):
        encounters([1], [1], [0], [0])


def _rec(animal: str, t: int, lon: float, lat: float, tag: str = "") -> dict[str, Any]:
    return {"animal": animal, "tag": tag, "t_ms": t, "lon": lon, "lat": lat, "received_ms": t}


def test_encounter_alerts_validate_and_agree_whichever_animal_comes_first() -> None:
    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    a = _rec("leo-2", T0, 77.0, 43.0, "T2")
    b = _rec("leo-1", T0 + 600_000, 77.001, 43.0)
    alerts = encounter_alerts(a, b, 81.4)
    assert alerts == encounter_alerts(b, a, 81.4)
    assert [x["individual-local-identifier"] for x in alerts] == ["leo-1", "leo-2"]
    for x in alerts:
        validator.validate(x)
        assert x["kind"] == "proximity" and x["severity"] == "info"
        d = x["details"]
        assert d["transition"] == "start" and d["distance_m"] == 81.4
        assert d["dt_s"] == 600.0 and d["within_m"] == WITHIN_M
        assert d["encounter-gap_s"] == ENCOUNTER_GAP_S
    assert alerts[0]["details"]["other"] == "leo-2" and alerts[0]["tag-local-identifier"] == ""
    assert alerts[1]["location-long"] == 77.0 and alerts[1]["tag-local-identifier"] == "T2"
    assert alerts[0]["id"] != alerts[1]["id"]
    # The id names the pair and the two fix times, nothing else.
    moved = encounter_alerts({**a, "lon": 77.0005, "received_ms": T0 + 5}, b, 40.0)
    assert [x["id"] for x in moved] == [x["id"] for x in alerts]
    later = encounter_alerts({**a, "t_ms": T0 + 1}, b, 81.4)
    assert not {x["id"] for x in later} & {x["id"] for x in alerts}


# ------------------------------------------------------------ a mother and her cub


def _mother_and_cub(seed: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Sixty days of 4-hourly fixes (up to 10 min late) of a mother and a cub within 300 m
    of her, except days 20-23, when the cub is 5 km away, and of a third, unrelated cat
    20 km off. A tenth of the fixes go missing at random, and the cub's collar misses
    five in a row on day 40 (24 h between its fixes there)."""
    rng = np.random.default_rng(seed)
    slots = np.arange(60 * 6)
    t = T0 + slots * 4 * H_MS
    steps = rng.normal(0, 0.004, (slots.size, 2)).cumsum(axis=0)
    mlon, mlat = 77.0 + steps[:, 0], 43.0 + steps[:, 1]
    away = (t >= T0 + 20 * DAY_MS) & (t < T0 + 23 * DAY_MS)
    # The cub: up to 300 m from the mother, or 5 km east of her while away.
    off_m = np.where(away, 5000.0, rng.uniform(0, 300.0, slots.size))
    clon, clat = forward(mlon, mlat, np.where(away, 90.0, rng.uniform(0, 360, slots.size)), off_m)
    olon, olat = forward(mlon, mlat, 180.0, 20_000.0)
    silent = np.isin(slots, 40 * 6 + np.arange(1, 6))
    kept = np.isin(slots, [40 * 6, 40 * 6 + 6])  # the fixes either side of the silence
    out: dict[str, list[dict[str, Any]]] = {}
    for name, lon, lat in (("mother", mlon, mlat), ("cub", clon, clat), ("other", olon, olat)):
        jitter = rng.integers(0, 10 * 60_000, slots.size)
        keep = ((rng.uniform(0, 1, slots.size) > 0.1) | kept) & ~(silent & (name == "cub"))
        out[name] = [
            _rec(name, int(t[k] + jitter[k]), float(lon[k]), float(lat[k]))
            for k in np.flatnonzero(keep)
        ]
    return out


def _states(fixes: dict[str, list[dict[str, Any]]]) -> list[TrackState]:
    ctx = Context(
        None,
        config=TrackConfig(window_days=1e6, max_fixes=10**9, home_range_every_days=None),
        detectors=Detectors(excursions=False, immobility=False),
    )
    states = []
    for name in sorted(fixes):
        recs = fixes[name]
        t = np.array([r["t_ms"] for r in recs], dtype=np.int64)
        n = t.size
        batch = FixBatch(
            t,
            np.array([r["lon"] for r in recs]),
            np.array([r["lat"] for r in recs]),
            np.full(n, 1.0),
            np.full(n, 8.0),
            t,
        )
        state, _ = advance(TrackState.new(name), batch, ctx)
        assert (state.flags == 0).all()
        states.append(state)
    return states


def _watched_app(name: str) -> tuple[faust.App, list[tuple[bytes, dict[str, Any]]]]:
    """A Faust app (no broker) with `stream.watch`'s watchers, and the alerts they send."""
    app = faust.App(name, store="memory://", broker="kafka://127.0.0.1:1")
    topic = app.topic(
        "positions",
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    sent: list[tuple[bytes, dict[str, Any]]] = []

    async def send(key: bytes, alert: dict[str, Any]) -> None:
        sent.append((key, alert))

    install_watchers(app, Context(None), topic, send)
    return app, sent


def _run_agent(
    positions: Iterable[dict[str, Any]],
    tables: dict[str, dict[bytes, bytes]] | None = None,
    per_message: int = 1,
) -> tuple[list[tuple[bytes, dict[str, Any]]], dict[str, dict[bytes, bytes]]]:
    """The proximity agent of `stream.watch` in Faust's test context (no broker): the
    alerts it sends for these positions, and its tables after them. `tables` seeds them,
    as a restart restores them from their changelogs. `per_message` > 1: positions go
    in arrays of that many, as the tracking agent publishes them."""

    async def run() -> tuple[list[tuple[bytes, dict[str, Any]]], dict[str, dict[bytes, bytes]]]:
        app, sent = _watched_app("test-proximity")
        for name, rows in (tables or {}).items():
            for k, v in rows.items():
                app.tables[name].data[k] = v  # as restored from the changelog
        async with app.agents["proximity"].test_context() as agent:
            recs = list(positions)
            if per_message == 1:
                for rec in recs:
                    await agent.put(orjson.dumps(rec), key=b"all")
            else:
                for k in range(0, len(recs), per_message):
                    await agent.put(orjson.dumps(recs[k : k + per_message]), key=b"all")
            # The agent writes its tables when offsets are committed, as Faust does next.
            for hook in app.collarstream_before_commit:
                await hook()
        names = ("latest_positions", "proximity_encounters")
        return sent, {n: dict(app.tables[n].items()) for n in names}

    return asyncio.run(run())


def test_mother_and_cub_replay_and_live_agent_raise_the_same_few_alerts() -> None:
    fixes = _mother_and_cub()
    states = _states(fixes)
    replay = _proximity_alerts(states)
    # Every 4 h for 60 days they are close; the encounters are: until the cub leaves on
    # day 20, and from its return on day 23 to the end (the five missed fixes on day 40
    # do not split it). The third cat meets neither.
    animal = np.concatenate([np.full(len(fixes[n]), k) for k, n in enumerate(sorted(fixes))])
    rows = [r for n in sorted(fixes) for r in fixes[n]]
    t = np.array([r["t_ms"] for r in rows], dtype=np.int64)
    lon, lat = np.array([r["lon"] for r in rows]), np.array([r["lat"] for r in rows])
    pairs = close_pairs(animal, t, lon, lat)
    assert len(pairs) > 200  # the per-fix alerts this replaces: two per pair
    # Apart from the days away, close pairs come at most 26 h apart, once 24 h apart.
    detected = np.sort(np.maximum(t[pairs.i], t[pairs.j]))
    gaps = np.diff(detected)
    assert (gaps > 3 * DAY_MS).sum() == 1 and (gaps > 26 * H_MS).sum() == 1
    assert 23 * H_MS < np.sort(gaps)[-2] <= 26 * H_MS
    assert len(replay) == 4
    assert Counter(a["individual-local-identifier"] for a in replay) == {"cub": 2, "mother": 2}
    assert all(a["details"]["transition"] == "start" for a in replay)
    # Each encounter starts at its earliest close pair: the first one, and the first
    # after the cub's three days away.
    detected = np.maximum(t[pairs.i], t[pairs.j])
    back = detected > T0 + 23 * DAY_MS - H_MS
    for when, starts in ((detected.min(), ~back), (detected[back].min(), back)):
        k = int(np.flatnonzero(starts & (detected == when))[0])
        ids = {x["id"] for x in encounter_alerts(rows[pairs.i[k]], rows[pairs.j[k]], 0.0)}
        assert ids <= {a["id"] for a in replay}
    # Live: the agent fed each fix as the tracking agent publishes it (time order).
    positions = sorted(rows, key=lambda r: r["t_ms"])
    sent, tables = _run_agent(positions)
    assert {a["id"] for _, a in sent} == {a["id"] for a in replay}
    assert sorted((a["id"], json.dumps(a, sort_keys=True)) for _, a in sent) == sorted(
        (a["id"], json.dumps(a, sort_keys=True)) for a in replay
    )
    assert all(key == a["individual-local-identifier"].encode() for key, a in sent)
    assert set(tables["proximity_encounters"]) == {b'["cub","mother"]'}
    # Positions published in arrays (as the worker does): the same alerts and tables.
    assert _run_agent(positions, per_message=7) == (sent, tables)
    # A restart half-way (tables restored, memory empty) and a redelivered position:
    # the same alerts, no more.
    half = len(positions) // 2
    sent1, tables1 = _run_agent(positions[:half])
    sent2, _ = _run_agent(positions[half - 3 :], tables1)
    assert [a["id"] for _, a in sent1 + sent2] == [a["id"] for _, a in sent]


def test_what_changes_while_a_commit_flushes_waits_for_the_next_commit() -> None:
    """Positions are handled while an offset commit runs. The commit writes the tables'
    entries as they were before it flushed the producer (whose flush acknowledges their
    alerts); an encounter opened or moved on during the flush, its alerts maybe not
    acknowledged yet, is written by the next commit, and so is a newer position."""
    ten_min = 600_000

    async def run() -> tuple[int, list[dict[str, dict[bytes, bytes]]]]:
        app, sent = _watched_app("test-commit")
        (commit,) = app.collarstream_before_commit
        seen = []
        async with app.agents["proximity"].test_context() as agent:

            async def position(animal: str, t: int, lon: float) -> None:
                await agent.put(orjson.dumps(_rec(animal, t, lon, 43.0)), key=b"all")

            await position("leo-1", T0, 77.0)
            await position("leo-2", T0, 77.001)  # opens leo-1 / leo-2

            async def flush_meanwhile() -> None:
                await position("leo-2", T0 + ten_min, 77.001)  # moves it on
                await position("leo-3", T0 + ten_min, 77.5)
                await position("leo-4", T0 + ten_min, 77.501)  # opens leo-3 / leo-4

            async def flush_nothing() -> None:
                pass

            for flush in (flush_meanwhile, flush_nothing):
                app.producer.flush = flush  # type: ignore[method-assign]
                await commit()
                tables = ("latest_positions", "proximity_encounters")
                seen.append({n: dict(app.tables[n].items()) for n in tables})
        return len(sent), seen

    n_sent, (first, second) = asyncio.run(run())
    assert n_sent == 4  # two encounters, an alert per animal
    latest = {k: orjson.loads(v)["t_ms"] for k, v in first["latest_positions"].items()}
    assert latest == {b"leo-1": T0, b"leo-2": T0}
    pairs = {k: orjson.loads(v)["last_ms"] for k, v in first["proximity_encounters"].items()}
    assert pairs == {b'["leo-1","leo-2"]': T0}
    latest = {k: orjson.loads(v)["t_ms"] for k, v in second["latest_positions"].items()}
    moved = T0 + ten_min
    assert latest == {b"leo-1": T0, b"leo-2": moved, b"leo-3": moved, b"leo-4": moved}
    pairs = {k: orjson.loads(v)["last_ms"] for k, v in second["proximity_encounters"].items()}
    assert pairs == {b'["leo-1","leo-2"]': T0 + ten_min, b'["leo-3","leo-4"]': T0 + ten_min}


def test_latest_fixes_keep_one_record_per_animal_and_skip_the_fix_itself() -> None:
    latest = LatestFixes()
    for k in range(20):  # past the initial columns
        latest.put(_rec(f"leo-{k}", T0, 77.0 + k * 1e-3, 43.0))
    latest.put(_rec("leo-3", T0 + 60_000, 77.0, 43.0))
    assert len(latest) == 20 and latest.get("leo-3") == _rec("leo-3", T0 + 60_000, 77.0, 43.0)
    assert latest.get("leo-99") is None
    others, dist = latest.close_to(_rec("leo-0", T0 + 120_000, 77.0, 43.0))
    # leo-1 .. leo-5 are 81 m apart in a row along the parallel (leo-3 on leo-0's spot
    # now); leo-0's own last fix is not a partner; leo-6 is 488 m off, leo-7 570 m.
    assert {o["animal"] for o in others} == {f"leo-{k}" for k in range(1, 7)}
    assert max(dist) <= WITHIN_M and min(dist) == 0.0
    # An hour and a millisecond after the newest of the others (leo-3's): no partner.
    stale = latest.close_to(_rec("leo-0", T0 + round(MAX_DT_S * 1000) + 60_001, 77.0, 43.0))
    assert stale == ([], [])


# ------------------------------------------------------------------ real tracks


@pytest.mark.shared_data
def test_bats_analyze_sends_two_alerts_per_encounter_not_per_pair_of_fixes(
    shared_data: Path, tmp_path: Path
) -> None:
    """`collarstream analyze` on the free-tailed bats, which roost together: 15,041 close
    pairs of good fixes (30,082 alerts, one per bat and pair, before encounters) are 17
    encounters, one for each of the 17 pairs of bats that met (none of them apart for
    26 h in these tracks, so one each). tests/test_real_data.py checks the grouping
    against a loop."""
    analyze(shared_data / "tracks-free-tailed-bats-portugal.csv", tmp_path)
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    prox = [a for a in alerts if a["kind"] == "proximity"]
    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    for a in prox:
        validator.validate({"type": "alert", **a})
    assert len(prox) == 34 and len({a["id"] for a in prox}) == 34
    met = Counter(
        tuple(sorted((a["individual-local-identifier"], a["details"]["other"]))) for a in prox
    )
    assert len(met) == 17 and set(met.values()) == {2}
    # Both alerts of an encounter name the same two fixes, the other's way round.
    by_pair: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for a in prox:
        by_pair.setdefault(
            tuple(sorted((a["individual-local-identifier"], a["details"]["other"]))), []
        ).append(a)
    for x, y in by_pair.values():
        assert x["fix-timestamp"] == y["details"]["other-fix-timestamp"]
        assert y["fix-timestamp"] == x["details"]["other-fix-timestamp"]
        assert x["details"]["distance_m"] == y["details"]["distance_m"] <= WITHIN_M


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-180, 180),
    st.floats(-89, 89),
    st.lists(
        st.tuples(st.floats(0, 360), st.floats(0, 3 * WITHIN_M), st.integers(-7200, 7200)),
        min_size=1,
        max_size=30,
    ),
)
def test_live_close_to_screens_by_box_and_finds_what_every_geodesic_finds(
    lon: float, lat: float, others: list[tuple[float, float, int]]
) -> None:
    # close_to computes geodesics only inside a lon/lat box around the fix; the answer
    # is that of a geodesic to every other animal's fix (across the antimeridian too).
    az, dist, dt = (np.array(c) for c in zip(*others, strict=True))
    olon, olat = forward(np.full(az.size, lon), np.full(az.size, lat), az, dist)
    ot = T0 + dt * 1000
    idx, d = close_to(lon, lat, T0, olon, olat, ot)
    every, _, _ = inverse(np.full(az.size, lon), np.full(az.size, lat), olon, olat)
    want = np.flatnonzero((np.abs(ot - T0) / 1000.0 <= MAX_DT_S) & (every <= WITHIN_M))
    assert idx.tolist() == want.tolist()
    assert np.array_equal(d, every[want])
