"""Delivery through the live pipeline: a real broker, a worker subprocess with a
subscriptions file, a real HTTP receiver and a real SMTP server in this process.

One worker serves every test of the module (starting one costs seconds); the fixes
are produced once, and each test checks one promise against what arrived.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from collarstream.config import from_env
from collarstream.core.track import TrackState, advance
from collarstream.delivery.precision import coarsen
from collarstream.delivery.signature import verify
from collarstream.stream.app import live_context
from collarstream.stream.topics import TopicNames, ensure_topics, produce_json
from collarstream.stream.worker import spawn_worker, stop_worker
from collarstream.timefmt import iso
from collarstream.wire import parse_message, to_batch

pytestmark = pytest.mark.broker

GRID_KM = 5.0
DOWN_S = 4.0  # the Almaty receiver answers 503 this long after its first request
SECRETS = {sid: f"whsec-{sid}-{uuid.uuid4().hex}" for sid in ("almaty", "kgz", "tkm", "grid")}
TOKENS = {sid: f"tok-{sid}-{uuid.uuid4().hex}" for sid in SECRETS}
URBAN, CROSSER = "LEO-URB-01", "LEO-KGZ-01"
T0_MS = (int(time.time()) // 3600 - 72) * 3_600_000  # three days ago, on the hour
STEP_MS = 4 * 3_600_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hit:
    path: str
    at: float
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1 in a thread with its own loop."""

    port: int = field(default_factory=_free_port)
    hits: list[Hit] = field(default_factory=list)
    down_until: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            now = time.monotonic()
            until = self.down_until.setdefault(request.path, now + DOWN_S)
            status = 503 if request.path == "/almaty" and now < until else 200
            self.hits.append(Hit(request.path, now, status, dict(request.headers), body))
            return web.Response(status=status, text="ok" if status == 200 else "down")

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/{name}", handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def ok(self, path: str) -> list[Hit]:
        return [h for h in list(self.hits) if h.path == path and h.status == 200]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"

    def to(self, address: str) -> list[email.message.Message]:
        return [m for rcpt, m in list(self.messages) if address in rcpt]


def _subscriptions(http_port: int, smtp_port: int) -> str:
    def hook(sid: str) -> str:
        return f"{{url: 'http://127.0.0.1:{http_port}/{sid}', secret_env: S_{sid.upper()}}}"

    return f"""
smtp: {{host: 127.0.0.1, port: {smtp_port}, sender: alerts@collarstream.test, timeout_s: 5}}
subscribers:
  - id: almaty
    name: Almaty city wildlife service
    token_env: T_ALMATY
    alerts: {{kinds: [urban-edge]}}
    precision: {{exact: true}}
    channels:
      - webhook: {hook("almaty")}
      - email: {{to: [duty@almaty.test]}}
  - id: kgz
    name: Kyrgyz transboundary team
    token_env: T_KGZ
    handoff: {{countries: [KGZ]}}
    precision: {{exact: true}}
    channels: [{{webhook: {hook("kgz")}}}]
  - id: tkm
    name: Turkmen transboundary team
    token_env: T_TKM
    handoff: {{countries: [TKM]}}
    precision: {{exact: true}}
    channels: [{{webhook: {hook("tkm")}}}]
  - id: grid
    name: Regional NGO
    token_env: T_GRID
    alerts: {{kinds: [urban-edge, border-crossing]}}
    precision: {{grid_km: {GRID_KM}}}
    channels:
      - webhook: {hook("grid")}
      - email: {{to: [ngo@grid.test]}}
"""


def _fixes() -> list[tuple[str, bytes]]:
    """One animal walking north into Almaty, one walking south into Kyrgyzstan."""

    def fix(animal: str, k: int, lon: float, lat: float) -> tuple[str, bytes]:
        doc = {
            "individual-local-identifier": animal,
            "tag-local-identifier": f"tag-{animal}",
            "timestamp": iso(T0_MS + k * STEP_MS),
            "location-long": lon,
            "location-lat": lat,
            "gps:hdop": 1.1,
            "gps:satellite-count": 8,
        }
        return animal, orjson.dumps(doc)

    urban = [fix(URBAN, k, round(76.55 + 0.012 * k, 4), 43.3) for k in range(18)]  # to 76.75 E
    crosser = [fix(CROSSER, k, 77.0, round(43.0 - 0.01 * k, 4)) for k in range(11)]
    return [m for pair in zip(urban, crosser + [None] * 7, strict=True) for m in pair if m]


def _replay(messages: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    ctx = live_context(from_env({}))
    by_animal: dict[str, list[Any]] = {}
    for _, raw in messages:
        for f in parse_message(raw, received_ms=0):
            by_animal.setdefault(f.animal, []).append(f)
    out = []
    for animal, fixes in by_animal.items():
        _, events = advance(TrackState.new(animal, len(ctx.urban)), to_batch(fixes), ctx)
        out += [e for e in events if e["type"] == "alert"]
    return out


@dataclass
class Run:
    receiver: Receiver
    mailbox: Mailbox
    api_port: int
    messages: list[tuple[str, bytes]]
    alerts: list[dict[str, Any]]
    workdir: Path


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("delivery")
    names = TopicNames(prefix=f"test-{uuid.uuid4().hex[:12]}")
    ensure_topics(kafka_bootstrap, names)
    receiver, mailbox = Receiver(), Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    subs = workdir / "subscriptions.yaml"
    subs.write_text(_subscriptions(receiver.port, smtp.port))
    api_port = _free_port()
    env = {
        "COLLARSTREAM_SUBSCRIPTIONS": str(subs),
        "COLLARSTREAM_WEB_ENABLED": "true",
        "COLLARSTREAM_WEB_PORT": str(api_port),
        "COLLARSTREAM_SESSION_TIMEOUT_S": "4",
        **{f"S_{k.upper()}": v for k, v in SECRETS.items()},
        **{f"T_{k.upper()}": v for k, v in TOKENS.items()},
    }
    proc = spawn_worker(kafka_bootstrap, names.prefix, workdir, env)
    messages = _fixes()
    try:
        produce_json(kafka_bootstrap, names.raw_fixes, messages)
        yield Run(receiver, mailbox, api_port, messages, _replay(messages), workdir)
    finally:
        stop_worker(proc)
        smtp.stop()
        receiver.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            print((workdir / "worker.log").read_text()[-4000:])


def _bodies(hits: list[Hit]) -> list[dict[str, Any]]:
    return [orjson.loads(h.body) for h in hits]


def _wait(cond: Any, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _ids(bodies: list[dict[str, Any]], kind: str | None = None) -> set[str]:
    return {b["id"] for b in bodies if b.get("type") == "alert" and kind in (None, b["kind"])}


def _expected(run: Run, animal: str, kind: str) -> set[str]:
    return {
        a["id"]
        for a in run.alerts
        if a["individual-local-identifier"] == animal and a["kind"] == kind
    }


def _json_parts(msg: email.message.Message) -> list[dict[str, Any]]:
    return [
        orjson.loads(part.get_payload(decode=True))
        for part in msg.walk()
        if part.get_content_type() == "application/json"
    ]


def test_urban_edge_reaches_almaty_by_webhook_and_email(run: Run) -> None:
    want = _expected(run, URBAN, "urban-edge")
    assert want, "the walk must enter Almaty's zones"
    _wait(lambda: _ids(_bodies(run.receiver.ok("/almaty"))) >= want, what="almaty webhooks")
    _wait(
        lambda: (
            {p["id"] for m in run.mailbox.to("duty@almaty.test") for p in _json_parts(m)} >= want
        ),
        what="almaty email",
    )
    for hit in run.receiver.ok("/almaty"):
        verify(SECRETS["almaty"].encode(), hit.body, hit.headers["Collarstream-Signature"])
        assert hit.headers["Idempotency-Key"] == orjson.loads(hit.body)["delivery-id"]
    # Only what its filter asks for.
    assert {b["kind"] for b in _bodies(run.receiver.ok("/almaty"))} == {"urban-edge"}


def test_receiver_down_then_back_loses_nothing_and_delays_nobody_else(run: Run) -> None:
    want = _expected(run, URBAN, "urban-edge")
    _wait(lambda: _ids(_bodies(run.receiver.ok("/almaty"))) >= want, what="almaty webhooks")
    failed = [h for h in run.receiver.hits if h.path == "/almaty" and h.status == 503]
    assert failed, "the receiver was down for the first alerts"
    ok = run.receiver.ok("/almaty")
    assert {h.headers["Idempotency-Key"] for h in failed} <= {
        h.headers["Idempotency-Key"] for h in ok
    }
    # The NGO got the first urban-edge alert while Almaty's receiver was still down.
    _wait(lambda: _ids(_bodies(run.receiver.ok("/grid")), "urban-edge") >= want, what="grid")
    first = orjson.loads(failed[0].body)["id"]
    grid_at = min(h.at for h in run.receiver.ok("/grid") if orjson.loads(h.body)["id"] == first)
    almaty_at = min(h.at for h in ok if orjson.loads(h.body)["id"] == first)
    assert grid_at < failed[0].at + DOWN_S <= almaty_at


def test_crossing_into_kyrgyzstan_hands_the_animal_off(run: Run) -> None:
    crossings = _expected(run, CROSSER, "border-crossing")
    assert crossings, "the walk south must cross into Kyrgyzstan"
    cross = next(a for a in run.alerts if a["id"] in crossings)
    assert cross["details"]["to"]["code"] == "KGZ"
    after = [
        iso(T0_MS + k * STEP_MS)
        for k in range(11)
        if T0_MS + k * STEP_MS >= _ms(cross["fix-timestamp"])
    ]

    def handed() -> set[str]:
        bodies = _bodies(run.receiver.ok("/kgz"))
        return {b["timestamp"] for b in bodies if b.get("type") == "fix"}

    _wait(lambda: crossings <= _ids(_bodies(run.receiver.ok("/kgz"))), what="kgz crossing")
    _wait(lambda: set(after) <= handed(), what="kgz hand-off fixes")
    for hit in run.receiver.ok("/kgz"):
        verify(SECRETS["kgz"].encode(), hit.body, hit.headers["Collarstream-Signature"])
    fixes = [b for b in _bodies(run.receiver.ok("/kgz")) if b.get("type") == "fix"]
    assert all(b["individual-local-identifier"] == CROSSER for b in fixes)
    assert handed() == set(after), "no fix from before the crossing"
    time.sleep(2)  # anything for the Turkmen team would have been routed with the rest
    tkm = _bodies(run.receiver.ok("/tkm"))
    assert not [b for b in tkm if b.get("individual-local-identifier") == CROSSER]


def _ms(stamp: str) -> int:
    from collarstream.timefmt import parse_ms

    return parse_ms(stamp)


def _pairs(obj: Any) -> list[tuple[float, float]]:
    """Every coordinate pair in a JSON document: *-long/*-lat keys and GeoJSON positions."""
    out: list[tuple[float, float]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith("location-long") and v is not None:
                out.append((float(v), float(obj[k[: -len("long")] + "lat"])))
            elif k == "coordinates":
                out += _positions(v)
            else:
                out += _pairs(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _pairs(v)
    return out


def _positions(c: Any) -> list[tuple[float, float]]:
    if c and isinstance(c[0], int | float):
        return [(float(c[0]), float(c[1]))]
    return [p for x in c for p in _positions(x)]


def _assert_on_grid(pairs: list[tuple[float, float]]) -> None:
    assert pairs
    xy = np.array(pairs)
    cx, cy = coarsen(xy[:, 0], xy[:, 1], GRID_KM)
    assert np.array_equal(cx, xy[:, 0]) and np.array_equal(cy, xy[:, 1])


_PRINTED = re.compile(r"(\d+\.\d+)°([NS]) (\d+\.\d+)°([EW])")


def _api(run: Run, path: str, token: str | None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{run.api_port}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def test_grid_subscriber_never_sees_a_finer_coordinate(run: Run) -> None:
    want = _expected(run, URBAN, "urban-edge") | _expected(run, CROSSER, "border-crossing")
    _wait(lambda: _ids(_bodies(run.receiver.ok("/grid"))) >= want, what="grid webhooks")
    _wait(
        lambda: {p["id"] for m in run.mailbox.to("ngo@grid.test") for p in _json_parts(m)} >= want,
        what="grid email",
    )
    for hit in run.receiver.ok("/grid"):
        verify(SECRETS["grid"].encode(), hit.body, hit.headers["Collarstream-Signature"])
    _assert_on_grid([p for b in _bodies(run.receiver.ok("/grid")) for p in _pairs(b)])
    for m in run.mailbox.to("ngo@grid.test"):
        _assert_on_grid([p for part in _json_parts(m) for p in _pairs(part)])
        text = next(
            p.get_payload(decode=True).decode()
            for p in m.walk()
            if p.get_content_type() == "text/plain"
        )
        for lat, ns, lon, ew in _PRINTED.findall(text):
            x = float(lon) * (1 if ew == "E" else -1)
            y = float(lat) * (1 if ns == "N" else -1)
            cx, cy = coarsen([x], [y], GRID_KM)
            decimals = len(lat.split(".")[1])
            assert abs(cx[0] - x) <= 0.5 * 10**-decimals + 1e-12
            assert abs(cy[0] - y) <= 0.5 * 10**-decimals + 1e-12
    _wait(lambda: _api(run, "/api/v1/positions", TOKENS["grid"])[0] == 200, what="api")
    status, fc = _api(run, "/api/v1/positions", TOKENS["grid"])
    _wait(lambda: len(_api(run, "/api/v1/positions", TOKENS["grid"])[1]["features"]) == 2)
    status, fc = _api(run, "/api/v1/positions", TOKENS["grid"])
    _assert_on_grid(_pairs(fc))
    status, fc = _api(run, f"/api/v1/animals/{URBAN}/track?hours=336", TOKENS["grid"])
    assert status == 200
    _assert_on_grid(_pairs(fc))


def test_api_refuses_without_the_right_token(run: Run) -> None:
    _expected_crossing = _expected(run, CROSSER, "border-crossing")
    _wait(lambda: _expected_crossing <= _ids(_bodies(run.receiver.ok("/kgz"))), what="hand-off")
    assert _api(run, "/api/v1/positions", None)[0] == 401
    assert _api(run, "/api/v1/positions", "not-a-token-" + uuid.uuid4().hex)[0] == 401
    # The Kyrgyz team sees the animal handed off to it, and nothing of the other one.
    assert _api(run, f"/api/v1/animals/{URBAN}/track", TOKENS["kgz"])[0] == 404
    _wait(lambda: _api(run, "/api/v1/positions", TOKENS["kgz"])[1]["features"], what="view")
    status, fc = _api(run, f"/api/v1/animals/{CROSSER}/track?hours=336", TOKENS["kgz"])
    assert status == 200 and fc["type"] == "FeatureCollection" and fc["features"]
    status, fc = _api(run, "/api/v1/positions", TOKENS["kgz"])
    assert {f["properties"]["individual-local-identifier"] for f in fc["features"]} == {CROSSER}
    status, fc = _api(run, "/api/v1/positions", TOKENS["almaty"])
    assert status == 200 and fc["type"] == "FeatureCollection"
    assert all(f["geometry"]["type"] == "Point" for f in fc["features"])


# Tansu's end offsets under-report after multi-record produce batches (stream/topics.py),
# so a restarted worker's table recovery either waits for records that never come or
# stops with ConsistencyError (persisted offset > highwater). Passes on Apache Kafka.
@pytest.mark.xfail(strict=False, reason="Tansu high watermark breaks Faust table recovery")
def test_a_delivery_queued_at_a_crash_is_sent_after_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGKILL while the receiver is down and the offsets are committed: the restarted
    worker sends what was queued. Same data dir: on Tansu a recovery from the changelog
    alone never completes (its end offsets under-report, see stream/topics.py)."""
    names = TopicNames(prefix=f"test-{uuid.uuid4().hex[:12]}")
    ensure_topics(kafka_bootstrap, names)
    receiver = Receiver()
    receiver.down_until["/almaty"] = float("inf")
    subs = tmp_path / "subscriptions.yaml"
    subs.write_text(
        "subscribers:\n"
        "  - {id: almaty, name: Almaty, alerts: {kinds: [urban-edge]}, precision: {exact: true},\n"
        f"     channels: [{{webhook: {{url: 'http://127.0.0.1:{receiver.port}/almaty',"
        " secret_env: S_ALMATY}}]}\n"
    )
    env = {
        "COLLARSTREAM_SUBSCRIPTIONS": str(subs),
        "COLLARSTREAM_SESSION_TIMEOUT_S": "4",
        "S_ALMATY": SECRETS["almaty"],
    }
    messages = [m for m in _fixes() if m[0] == URBAN]
    want = {a["id"] for a in _replay(messages) if a["kind"] == "urban-edge"}
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    proc = spawn_worker(kafka_bootstrap, names.prefix, first, env)
    try:
        produce_json(kafka_bootstrap, names.raw_fixes, messages)
        # A lane sends in order: the first alert is retrying, the others queue behind it.
        _wait(lambda: bool(receiver.hits), what="a first attempt")
        time.sleep(4)  # past Faust's commit interval (2.8 s): the alerts' offsets are committed
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        receiver.down_until["/almaty"] = 0.0
        (first / "worker.log").rename(second / "first-worker.log")
        proc = spawn_worker(kafka_bootstrap, names.prefix, first, env)
        _wait(lambda: _ids(_bodies(receiver.ok("/almaty"))) >= want, what="after restart")
        assert "re-submitted" in (first / "worker.log").read_text()
    finally:
        stop_worker(proc)
        receiver.close()
