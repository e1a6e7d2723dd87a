"""The demo's terminal lines: every alert kind the simulated collars raise renders, and
no position finer than the 10 km grid reaches the terminal."""

from __future__ import annotations

import re
import time

import orjson
import pytest

from collarstream.config import ConfigError, from_env
from collarstream.core.track import TrackState, advance
from collarstream.demo import describe
from collarstream.simulate import simulate
from collarstream.stream.app import live_context
from collarstream.wire import parse_message, to_batch


def test_every_simulated_alert_kind_has_a_line_without_a_precise_position() -> None:
    ctx = live_context(from_env({}))
    by_animal: dict[str, list] = {}
    for up in simulate(seed=7, days=30):
        by_animal.setdefault(up.animal, []).extend(up.fixes)
    alerts = []
    for animal, fixes in by_animal.items():
        batch = to_batch(parse_message(orjson.dumps(fixes), received_ms=0))
        _, events = advance(TrackState.new(animal, len(ctx.urban)), batch, ctx)
        alerts += [e for e in events if e["type"] == "alert"]
    kinds = {a["kind"] for a in alerts}
    assert len(kinds) >= 5, kinds  # crossings, approach, urban edge, areas, excursions ...
    for a in alerts:
        line, kind = describe(a)
        assert kind == a["kind"] and a["individual-local-identifier"] in line
        # Coordinates in a line have at most 2 decimals (10 km grid), never the fix's 7.
        assert not re.search(r"\d+\.\d{3,}°", line), line
    withdrawn = {
        "kind": "withdrawal",
        "individual-local-identifier": "SL-ALM-01",
        "withdraws": "alr-0123456789abcdef",
        "id": "alr-x",
        "severity": "info",
        "reason": "a late fix",
        "type": "alert",
    }
    assert describe(withdrawn)[1] == "withdrawal"
    assert describe({"reason": "not JSON"}, dead=True) == ("  DEAD-LETTER  not JSON", "dead-letter")


def test_data_clock_setting_maps_wall_time_to_replayed_time() -> None:
    s = from_env({"COLLARSTREAM_DATA_CLOCK": "1772323200000,1000,5400"})
    assert s.data_clock == (1772323200000, 1000, 5400.0)
    # now = data t0 + (wall - w0) * speed: a wall second is 1.5 h of replayed time.
    w = s.now_ms() - 1772323200000
    assert abs(w / 5400.0 + 1000 - time.time() * 1000) < 1000
    assert from_env({}).data_clock is None and abs(from_env({}).now_ms() - time.time() * 1e3) < 1e3
    for bad in ("1,2", "a,b,c", "1,2,0", "1,2,3,4"):
        with pytest.raises(ConfigError, match=r"^COLLARSTREAM_DATA_CLOCK: "):
            from_env({"COLLARSTREAM_DATA_CLOCK": bad})
