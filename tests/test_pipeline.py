"""The live pipeline through a real broker: a Faust worker in a child process.

Garbage goes to the dead-letter topic with its reason and original bytes while valid
fixes keep flowing; the alerts that come out are the ones the replay of the same fixes
through the same reducer gives; everything emitted validates against schemas/.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from kafka import KafkaConsumer, TopicPartition

from collarstream.config import from_env
from collarstream.core.track import TrackState, advance
from collarstream.simulate import simulate
from collarstream.stream import state_codec
from collarstream.stream.app import TRACKED_BY, live_context
from collarstream.stream.topics import TopicNames, consume_all, produce_json
from collarstream.stream.worker import spawn_worker, stop_worker
from collarstream.timefmt import iso
from collarstream.wire import parse_message, to_batch

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"

GARBAGE = {
    b"{not json": "not JSON",
    b'{"timestamp": "2026-03-01T00:00:00Z",'
    b' "location-long": 77.0, "location-lat": 43.1}': "individual-local-identifier",
    b'{"individual-local-identifier": "X", "timestamp": "2026-03-01T00:00:00Z",'
    b' "location-long": 181.5, "location-lat": 43.1}': "out of range",
    b'{"individual-local-identifier": "X", "timestamp": "2026-03-01T00:00:00Z",'
    b' "location-long": "77.0", "location-lat": 43.1}': "must be a number",
    b'{"individual-local-identifier": "X", "timestamp": "noon"}': "timestamp",
    b"\xff\xfe binary": "not JSON",
    b"[]": "empty upload",
}


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


@pytest.fixture(params=[True, False], ids=["local-handoff", "through-the-broker"])
def worker(
    kafka_bootstrap: str, topics: TopicNames, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[bool]:
    """A worker; True: it hands validated batches to its tracking stage in process."""
    proc = spawn_worker(
        kafka_bootstrap,
        topics.prefix,
        tmp_path,
        {
            "COLLARSTREAM_SESSION_TIMEOUT_S": "4",
            "COLLARSTREAM_LOCAL_HANDOFF": str(request.param).lower(),
        },
    )
    try:
        yield request.param
    finally:
        stop_worker(proc)
        if proc.returncode not in (0, -signal.SIGTERM):
            print((tmp_path / "worker.log").read_text()[-4000:])


def _uploads(days: float) -> list[tuple[str, bytes]]:
    out = []
    for up in simulate(seed=11, days=days):
        fixes = [{**f, "received-timestamp": iso(up.received_ms)} for f in up.fixes]
        out.append((up.animal, orjson.dumps(fixes)))
    return out


def _replay(messages: list[tuple[str, bytes]]) -> tuple[dict[str, dict], dict[str, TrackState]]:
    """Alerts left standing (see `_final`) and states of the same fixes through the
    reducer, one batch per animal."""
    ctx = live_context(from_env({}))
    by_animal: dict[str, list] = {}
    for _, raw in messages:
        for fix in parse_message(raw, received_ms=0):
            by_animal.setdefault(fix.animal, []).append(fix)
    alerts, states = [], {}
    for animal, fixes in by_animal.items():
        state, events = advance(TrackState.new(animal, len(ctx.urban)), to_batch(fixes), ctx)
        alerts += [e for e in events if e["type"] == "alert"]
        states[animal] = state
    return _final(alerts), states


def _changelog_states(bootstrap: str, topic: str, want: dict[str, TrackState]) -> dict:
    """Latest state per animal in the track table's changelog, once it holds every fix of
    `want` (the worker writes cached states before it commits offsets), or at timeout."""
    deadline = time.monotonic() + 60
    latest: dict[str, TrackState] = {}
    while time.monotonic() < deadline:
        latest = {k: state_codec.decode(v) for k, v in consume_all(bootstrap, topic, 3)}
        if all(a in latest and np.array_equal(latest[a].t_ms, s.t_ms) for a, s in want.items()):
            break
    return latest


def _header_values(bootstrap: str, topic: str, name: str) -> list[bytes | None]:
    """Per record of `topic` (from the beginning): the value of its header `name`."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return [dict(r.headers).get(name) for r in consumer]
    finally:
        consumer.close()


def _final(alerts: list[dict]) -> dict[str, dict]:
    """Alerts left standing once withdrawals are applied (later versions win)."""
    out: dict[str, dict] = {}
    for a in alerts:
        if a["kind"] == "withdrawal":
            out.pop(a["withdraws"], None)
        else:
            out[a["id"]] = a
    return out


@pytest.mark.broker
def test_live_pipeline_alerts_dead_letters_and_schemas(
    kafka_bootstrap: str, topics: TopicNames, worker: bool
) -> None:
    messages = _uploads(days=5)
    mixed: list[tuple[str, bytes]] = []
    garbage = list(GARBAGE)
    for i, msg in enumerate(messages):
        mixed.append(msg)
        if i % 20 == 3 and garbage:
            mixed.append(("garbage", garbage.pop()))
    mixed += [("garbage", g) for g in garbage]
    produce_json(kafka_bootstrap, topics.raw_fixes, mixed)

    expected, replayed = _replay(messages)
    kinds = {a["kind"] for a in expected.values()}
    assert {"border-crossing", "urban-edge"} <= kinds, "the scenario must exercise both"

    dead = consume_all(kafka_bootstrap, topics.dead_letter, timeout_s=90, min_count=len(GARBAGE))
    deadline = time.monotonic() + 90
    alerts: list[dict] = []
    while time.monotonic() < deadline:
        alerts = [
            orjson.loads(v) for _, v in consume_all(kafka_bootstrap, topics.alerts, timeout_s=3)
        ]
        if set(_final(alerts)) >= set(expected):
            break
    final = _final(alerts)
    assert set(final) == set(expected)

    # Every garbage message, and nothing else, is in the dead-letter topic with its reason.
    records = [orjson.loads(v) for _, v in dead]
    originals = {base64.b64decode(r["original-base64"]): r["reason"] for r in records}
    assert set(originals) == set(GARBAGE)
    for raw, reason in originals.items():
        assert GARBAGE[raw] in reason

    validators = {
        n: _validator(n) for n in ("alert", "step", "home-range", "dead-letter", "fix-batch")
    }
    for r in records:
        validators["dead-letter"].validate(r)
    for a in alerts:
        validators["alert"].validate(a)
    # Steps travel as one array per animal per micro-batch; fixes as columnar batches.
    steps = [s for _, v in consume_all(kafka_bootstrap, topics.steps, 3) for s in orjson.loads(v)]
    ranges = [orjson.loads(v) for _, v in consume_all(kafka_bootstrap, topics.home_ranges, 3)]
    fixes = [orjson.loads(v) for _, v in consume_all(kafka_bootstrap, topics.fixes, 3)]
    assert steps and ranges
    for s in steps:
        validators["step"].validate(s)
    for h in ranges:
        validators["home-range"].validate(h)
    if worker:  # a lone worker owns every partition, and no delivery reads the topic
        assert fixes == []
    else:
        for f in fixes:
            validators["fix-batch"].validate(f)
        n_valid = sum(len(orjson.loads(v)) for _, v in messages)
        assert sum(len(f["t_ms"]) for f in fixes) >= n_valid  # at-least-once: no loss
        assert not any(_header_values(kafka_bootstrap, topics.fixes, TRACKED_BY))
    assert np.all([a["fix-age_s"] >= 0 for a in final.values()])

    # The track table reaches its changelog (written from the worker's in-memory states
    # before each offset commit): per animal, the same fixes, flags and emitted ids as
    # the replay's state.
    changelog = f"{topics.prefix}-worker-animal_to_track-changelog"
    stored = _changelog_states(kafka_bootstrap, changelog, replayed)
    assert set(stored) == set(replayed)
    for animal, want in replayed.items():
        got = stored[animal]
        np.testing.assert_array_equal(got.t_ms, want.t_ms)
        np.testing.assert_array_equal(got.flags, want.flags)
        assert set(got.emitted) == set(want.emitted)


def test_the_tracking_agent_knows_its_own_marked_copies() -> None:
    """Headers as aiokafka gives them (pairs) or as a mapping; another instance's mark,
    or none, is not this worker's."""
    from collarstream.stream.app import _tracked

    mine, other = (TRACKED_BY, b"a1"), (TRACKED_BY, b"b2")
    assert _tracked([("x", b"1"), mine], mine)
    assert _tracked({TRACKED_BY: b"a1"}, mine)
    assert not _tracked([other], mine)
    assert not _tracked(None, mine) and not _tracked([], mine)


def test_offsets_are_committed_on_the_timer_only(tmp_path: Path) -> None:
    """Faust also commits every `broker_commit_every` messages, inline in the loop that
    hands messages to the agents, which stops until the commit's hooks (outputs in
    flight, the reducer's states) and the broker are done: a stall every 10,000
    messages. The worker's consumer commits on its timer (its own task) only."""
    from collarstream.stream.app import CollarApp, _Consumer

    app = CollarApp(
        "commit-test",
        broker="kafka://127.0.0.1:1",  # never connected: the consumer is only built
        datadir=str(tmp_path),
        store="memory://",
        broker_commit_interval=7.5,
    )
    consumer = app.consumer
    assert isinstance(consumer, _Consumer)
    assert consumer._commit_every is None
    assert consumer.commit_interval == 7.5
