"""The HTTP API over real HTTP: Faust's own aiohttp web server (`app.web`, the service a
worker starts after table recovery) started on its own on a free port, no broker
needed, and requests through an aiohttp client.

What must hold: no token, a wrong token or another subscriber's animal gets nothing;
every coordinate in every response is at the subscriber's precision and no younger
than its delay; tokens never reach a log or a body; /metrics parses.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import faust
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from collarstream.delivery.api import TokenIndex, bearer_token, register_api
from collarstream.delivery.liveview import LiveView
from collarstream.delivery.metrics import DeliveryMetrics
from collarstream.delivery.model import Precision, Subscriber
from collarstream.delivery.precision import coarsen
from collarstream.timefmt import iso, parse_ms

NOW = parse_ms("2026-03-01T12:00:00.000Z")
H = 3_600_000
GRID_KM = 5.0

SUBS = {
    "exact": Subscriber("exact", "Rangers", token="tok-exact-7f3a9c", precision=Precision()),
    "grid": Subscriber(
        "grid", "Public", token="tok-grid-91be22", precision=Precision("grid", GRID_KM)
    ),
    "none": Subscriber("none", "Press", token="tok-none-c0ffee", precision=Precision("none")),
    "delayed": Subscriber(
        "delayed", "Researchers", token="tok-delay-5150aa", precision=Precision(delay_h=6.0)
    ),
    "only-a": Subscriber("only-a", "Kyrgyz team", token="tok-onlya-d00d42"),
    "notoken": Subscriber("notoken", "Email only"),
}
VISIBLE = {"only-a": {"LEO-A"}}


def may_see(sub: Subscriber, animal: str) -> bool:
    return animal in VISIBLE.get(sub.id, {"LEO-A", "LEO-B"})


# ---- the pipeline's output, as on the topics ------------------------------------------


def _fix(animal: str, k: int) -> tuple[int, float, float]:
    """Hourly fixes with 7 decimals, the precision the pipeline emits."""
    base = (77.0, 43.2) if animal == "LEO-A" else (78.3, 44.9)
    t = NOW - (48 - k) * H
    return (
        t,
        round(base[0] + 0.0137 * math.sin(k) + k * 1e-4, 7),
        round(base[1] + 0.0093 * math.cos(k), 7),
    )


def _events(animal: str) -> list[dict[str, Any]]:
    fixes = [_fix(animal, k) for k in range(48)]  # the last is 1 h before NOW
    out: list[dict[str, Any]] = []
    for (t0, x0, y0), (t1, x1, y1) in itertools.pairwise(fixes):
        out.append(
            {
                "type": "step",
                "id": f"stp-{animal}-{t0}",
                "status": "current",
                "individual-local-identifier": animal,
                "start-timestamp": iso(t0),
                "end-timestamp": iso(t1),
                "start-location-long": x0,
                "start-location-lat": y0,
                "end-location-long": x1,
                "end-location-lat": y1,
                "distance_m": 1000.0,
                "duration_s": 3600.0,
            }
        )
    for age_h, through in ((20, fixes[28]), (2, fixes[46])):
        t, x, y = through
        ring = [[x, y], [x + 0.0311, y + 0.0017], [x + 0.0123, y + 0.0271], [x, y]]
        out.append(
            {
                "type": "home-range",
                "id": f"hr-{animal}-{age_h}",
                "individual-local-identifier": animal,
                "computed-through-timestamp": iso(t),
                "n_fixes": 12,
                "ranges": [
                    {
                        "method": "mcp",
                        "level": 95.0,
                        "area_km2": 3.2,
                        "bandwidth_m": None,
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    for k, kind in ((18, "border-crossing"), (46, "urban-edge"), (40, "urban-edge")):
        t, x, y = fixes[k]
        out.append(
            {
                "type": "alert",
                "id": f"alr-{animal}-{k}",
                "kind": kind,
                "severity": "warning",
                "individual-local-identifier": animal,
                "tag-local-identifier": "T1",
                "fix-timestamp": iso(t),
                "received-timestamp": iso(t + 60_000),
                "fix-age_s": 60.0,
                "location-long": x,
                "location-lat": y,
                "details": {"fence-id": "almaty", "transition": "enter"},
            }
        )
    out.append(
        {
            "type": "alert",
            "id": f"alr-{animal}-w40",
            "kind": "withdrawal",
            "severity": "info",
            "individual-local-identifier": animal,
            "tag-local-identifier": "T1",
            "withdraws": f"alr-{animal}-40",
            "reason": "late fix",
        }
    )
    return out


# Every exact coordinate as JSON writes it: none may appear in a coarse response.
EXACT_NUMBERS = {repr(v) for a in ("LEO-A", "LEO-B") for k in range(48) for v in _fix(a, k)[1:]}


def leaked_numbers(text: str) -> set[str]:
    """The exact coordinates written anywhere in `text` (whole numbers, not substrings)."""
    return set(re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)) & EXACT_NUMBERS


# ---- a real Faust web server ------------------------------------------------------------


class Served:
    """The Faust app's web service on a free port, in a thread with its own loop."""

    def __init__(
        self, metrics_token: str | None = None, view_cls: type[LiveView] = LiveView
    ) -> None:
        self.view = view_cls(now_ms=lambda: NOW)
        for animal in ("LEO-A", "LEO-B"):
            self.view.ingest_many(_events(animal))
        self.metrics = DeliveryMetrics()
        self.metrics_token = metrics_token
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.app = faust.App(
            f"api-test-{self.port}",
            broker="kafka://127.0.0.1:1",  # never contacted: only the web service runs
            store="memory://",
            web_port=self.port,
            web_bind="127.0.0.1",
            web_tables_enabled=False,
        )
        register_api(
            self.app,
            self.view,
            list(SUBS.values()),
            may_see,
            self.metrics,
            now_ms=lambda: NOW,
            metrics_token=self.metrics_token,
        )
        await self.app.web.start()

    def __enter__(self) -> Served:
        self._thread.start()
        assert self._ready.wait(30), "web server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.app.web.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def get(self, path: str, token: str | None = None, auth: str | None = None):
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if auth is not None:
            headers["Authorization"] = auth

        async def fetch() -> tuple[int, dict[str, str], bytes]:
            async with (
                aiohttp.ClientSession() as client,
                client.get(f"http://127.0.0.1:{self.port}{path}", headers=headers) as r,
            ):
                return r.status, dict(r.headers), await r.read()

        return asyncio.run(fetch())


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    with Served() as s:
        yield s


DATA_PATHS = [
    "/api/v1/positions",
    "/api/v1/animals/LEO-A/track?hours=48",
    "/api/v1/animals/LEO-B/track",
    "/api/v1/animals/LEO-A/home-ranges",
    "/api/v1/animals/LEO-B/home-ranges",
    "/api/v1/alerts",
    "/api/v1/alerts?since=2026-03-01T00:00:00Z",
]


def geojson(server: Served, path: str, sub: str) -> dict[str, Any]:
    status, headers, body = server.get(path, SUBS[sub].token)
    assert status == 200, (path, sub, body)
    assert headers["Content-Type"].startswith("application/geo+json")
    assert headers["Cache-Control"] == "no-store"
    return json.loads(body)


def positions_of(fc: dict[str, Any]) -> list[list[float]]:
    out: list[list[float]] = []

    def walk(c: Any) -> None:
        if c and isinstance(c[0], int | float):
            out.append(c)
        else:
            for x in c:
                walk(x)

    for f in fc["features"]:
        if f["geometry"] is not None:
            walk(f["geometry"]["coordinates"])
    return out


def assert_rfc7946(fc: dict[str, Any]) -> None:
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    assert isinstance(fc["features"], list)
    rings = {"Point": 0, "LineString": 1, "Polygon": 2, "MultiPolygon": 3}
    for f in fc["features"]:
        assert f["type"] == "Feature" and set(f) >= {"geometry", "properties"}
        assert isinstance(f["properties"], dict)
        assert "individual-local-identifier" in f["properties"]
        for k, v in f["properties"].items():
            if k.endswith("timestamp") and v is not None:
                assert iso(parse_ms(v)) == v
        g = f["geometry"]
        if g is None:
            continue
        assert g["type"] in rings and "crs" not in g
        depth, c = 0, g["coordinates"]
        while not isinstance(c[0], int | float):
            depth, c = depth + 1, c[0]
        assert depth == rings[g["type"]]
        if g["type"] == "LineString":
            assert len(g["coordinates"]) >= 2
        if g["type"] == "Polygon":
            for ring in g["coordinates"]:
                assert len(ring) >= 4 and ring[0] == ring[-1]
    for lon, lat, *_ in positions_of(fc):
        assert -180 <= lon <= 180 and -90 <= lat <= 90


# ---- authentication and authorisation -------------------------------------------------


def test_health_needs_no_token_and_holds_no_data(server: Served) -> None:
    status, _, body = server.get("/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}


@pytest.mark.parametrize("path", DATA_PATHS)
@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer",
        "Bearer ",
        "Basic dG9rLWV4YWN0LTdmM2E5Yw==",
        "Bearer tok-exact-7f3a9",  # a prefix
        "Bearer tok-exact-7f3a9c0",  # an extension
        "Bearer tok-exact-7f3a9c extra",
        "Bearer TOK-EXACT-7F3A9C",
        "tok-exact-7f3a9c",
    ],
)
def test_missing_malformed_or_wrong_token_is_401(server: Served, path: str, auth: str) -> None:
    status, headers, body = server.get(path, auth=auth)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(body) == {"error": "unauthorized"}


def test_scheme_is_case_insensitive(server: Served) -> None:
    assert server.get("/api/v1/positions", auth="bearer tok-exact-7f3a9c")[0] == 200


@pytest.mark.parametrize("tail", ["track", "home-ranges", "track?hours=abc"])
def test_forbidden_animal_looks_exactly_like_a_missing_one(server: Served, tail: str) -> None:
    token = SUBS["only-a"].token
    forbidden = server.get(f"/api/v1/animals/LEO-B/{tail}", token)
    missing = server.get(f"/api/v1/animals/NO-SUCH-CAT/{tail}", token)
    assert forbidden[0] == missing[0] == 404
    assert forbidden[2] == missing[2]
    assert server.get(f"/api/v1/animals/LEO-A/{tail}", token)[0] in (200, 400)


def test_lists_hold_only_animals_the_subscriber_may_see(server: Served) -> None:
    for path in ("/api/v1/positions", "/api/v1/alerts"):
        fc = geojson(server, path, "only-a")
        animals = {f["properties"]["individual-local-identifier"] for f in fc["features"]}
        assert animals == {"LEO-A"}
        assert "LEO-B" not in json.dumps(fc)


def test_bad_parameters_are_400_but_only_after_authentication(server: Served) -> None:
    assert server.get("/api/v1/animals/LEO-A/track?hours=abc")[0] == 401
    tok = SUBS["exact"].token
    for q in ("hours=abc", "hours=0", "hours=-1", "hours=nan", "hours=1e9"):
        assert server.get(f"/api/v1/animals/LEO-A/track?{q}", tok)[0] == 400
    assert server.get("/api/v1/alerts?since=yesterday", tok)[0] == 400


# ---- precision and delay ----------------------------------------------------------------


@pytest.mark.parametrize("path", DATA_PATHS)
def test_grid_subscriber_never_sees_a_finer_coordinate(server: Served, path: str) -> None:
    fc = geojson(server, path, "grid")
    assert_rfc7946(fc)
    xy = positions_of(fc)
    assert xy, path
    for lon, lat in xy:
        cx, cy = coarsen(np.array([lon]), np.array([lat]), GRID_KM)
        assert (float(cx[0]), float(cy[0])) == (lon, lat)
    text = json.dumps(fc)
    assert not leaked_numbers(text)


@pytest.mark.parametrize("path", DATA_PATHS)
def test_mode_none_sees_no_coordinates_at_all(server: Served, path: str) -> None:
    fc = geojson(server, path, "none")
    assert_rfc7946(fc)
    assert fc["features"], path
    assert all(f["geometry"] is None for f in fc["features"])
    text = json.dumps(fc)
    assert "location-l" not in text and "coordinates" not in text
    assert not leaked_numbers(text)


class _LeakyView(LiveView):
    """A view with a redaction bug: it ignores the precision it is asked for."""

    def positions(self, animals, p, now_ms=None):  # type: ignore[no-untyped-def]
        return super().positions(animals, Precision(), now_ms)


def test_a_redaction_bug_is_a_500_not_a_leak(caplog: pytest.LogCaptureFixture) -> None:
    with Served(view_cls=_LeakyView) as s:
        for sub in ("grid", "none"):
            status, _, body = s.get("/api/v1/positions", SUBS[sub].token)
            assert status == 500 and not leaked_numbers(body.decode())
        assert s.get("/api/v1/positions", SUBS["exact"].token)[0] == 200
    assert "precision check" in caplog.text


def test_exact_subscriber_sees_exact(server: Served) -> None:
    fc = geojson(server, "/api/v1/positions", "exact")
    got = {f["properties"]["individual-local-identifier"]: f for f in fc["features"]}
    t, x, y = _fix("LEO-A", 47)
    assert got["LEO-A"]["geometry"] == {"type": "Point", "coordinates": [x, y]}
    assert got["LEO-A"]["properties"]["timestamp"] == iso(t)
    track = geojson(server, "/api/v1/animals/LEO-A/track?hours=48", "exact")
    line = track["features"][0]
    assert line["geometry"]["type"] == "LineString"
    assert line["geometry"]["coordinates"] == [list(_fix("LEO-A", k)[1:]) for k in range(48)]


def test_delay_withholds_recent_fixes(server: Served) -> None:
    cutoff = NOW - 6 * H
    fc = geojson(server, "/api/v1/positions", "delayed")
    for f in fc["features"]:
        t, x, y = _fix(f["properties"]["individual-local-identifier"], 42)  # NOW - 6 h
        assert f["properties"]["timestamp"] == iso(t) and t == cutoff
        assert f["geometry"]["coordinates"] == [x, y]
    track = geojson(server, "/api/v1/animals/LEO-A/track?hours=48", "delayed")
    times = [parse_ms(f["properties"]["timestamp"]) for f in track["features"][1:]]
    assert times and max(times) == cutoff
    hr = geojson(server, "/api/v1/animals/LEO-A/home-ranges", "delayed")
    through = {f["properties"]["computed-through-timestamp"] for f in hr["features"]}
    assert through == {iso(_fix("LEO-A", 28)[0])}  # the 20-h-old estimate, not the 2-h one
    alerts = geojson(server, "/api/v1/alerts", "delayed")
    fix_times = [f["properties"].get("fix-timestamp") for f in alerts["features"]]
    assert fix_times and all(parse_ms(t) <= cutoff for t in fix_times if t)
    assert "alr-LEO-A-46" not in json.dumps(alerts)
    # the exact subscriber does get the 2-h-old alert, and the withdrawal, not the withdrawn
    exact = geojson(server, "/api/v1/alerts", "exact")
    ids = {f["properties"]["id"] for f in exact["features"]}
    assert {"alr-LEO-A-46", "alr-LEO-A-w40"} <= ids and "alr-LEO-A-40" not in ids


def test_alerts_since_filters_on_availability(server: Served) -> None:
    since = iso(NOW - 3 * H)
    fc = geojson(server, f"/api/v1/alerts?since={since}", "exact")
    assert fc["features"]
    for f in fc["features"]:
        assert parse_ms(f["properties"]["available-timestamp"]) >= NOW - 3 * H


# ---- metrics and secrecy ------------------------------------------------------------------


def test_metrics_parse_and_hold_no_locations(server: Served) -> None:
    m = server.metrics
    m.delivered("webhook", "exact", 0.8)
    m.delivered("email", "grid", None)
    m.retried("webhook", "exact")
    m.failed("webhook", "exact")
    m.dropped("webhook", "grid", "duplicate")
    m.dropped("webhook", "grid", "at 77.0123456, 43.2 because")  # free text is not a label
    m.fixes_in(12)
    m.dead_lettered(1)
    m.alerts_out("urban-edge")
    server.get("/api/v1/positions", SUBS["exact"].token)
    status, headers, body = server.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    deliveries = {
        (s.labels["channel"], s.labels["subscriber"], s.labels["outcome"]): s.value
        for s in families["collarstream_deliveries"].samples
    }
    assert deliveries[("webhook", "exact", "delivered")] == 1
    assert deliveries[("webhook", "grid", "dropped")] == 2
    assert {"retried", "failed", "delivered", "dropped"} <= {k[2] for k in deliveries}
    assert families["collarstream_delivery_latency_seconds"].type == "histogram"
    assert families["collarstream_fixes_in"].samples[0].value == 12
    reasons = {s.labels["reason"] for s in families["collarstream_delivery_drops"].samples}
    assert reasons == {"duplicate", "other"}
    routes = {s.labels["route"] for s in families["collarstream_api_requests"].samples}
    assert "/api/v1/positions" in routes
    assert "77.0" not in text and "43.2" not in text and "LEO-" not in text


def test_metrics_token_when_set() -> None:
    with Served(metrics_token="scrape-secret-1") as s:
        assert s.get("/metrics")[0] == 401
        assert s.get("/metrics", SUBS["exact"].token)[0] == 401
        assert s.get("/metrics", "scrape-secret-1")[0] == 200


def test_tokens_never_in_logs_or_bodies(server: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = []
    wrong = "tok-wrong-4242abcd"
    for sub in SUBS.values():
        for path in [*DATA_PATHS, "/metrics", "/api/v1/animals/LEO-B/track?hours=x"]:
            bodies.append(server.get(path, sub.token)[2].decode())
    for path in DATA_PATHS:
        bodies.append(server.get(path, wrong)[2].decode())
    secrets = [s.token for s in SUBS.values() if s.token] + [wrong]
    assert caplog.records  # refusals are logged (without the token)
    for secret in secrets:
        assert secret not in caplog.text
        assert not [b for b in bodies if secret in b]


def test_register_api_refuses_an_app_serving_its_tables() -> None:
    app = faust.App("api-test-tables", broker="kafka://127.0.0.1:1", web_tables_enabled=True)
    with pytest.raises(ValueError, match="web_tables_enabled"):
        register_api(app, LiveView(), [], may_see, DeliveryMetrics())


# ---- the token helper and the view, without HTTP -----------------------------------------

_token = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1)


@given(tokens=st.lists(_token, min_size=0, max_size=6, unique=True), probe=_token)
def test_token_index_matches_exactly_one_owner(tokens: list[str], probe: str) -> None:
    subs = [Subscriber(f"s{i}", "x", token=t) for i, t in enumerate(tokens)]
    subs.append(Subscriber("tokenless", "x"))
    index = TokenIndex(subs)
    for s in subs[:-1]:
        assert index.match(s.token or "") is s
    owner = index.match(probe)
    assert (owner.token if owner else None) == (probe if probe in tokens else None)


def test_token_index_refuses_a_shared_token() -> None:
    with pytest.raises(ValueError, match="share") as exc:
        TokenIndex([Subscriber("a", "a", token="same-1"), Subscriber("b", "b", token="same-1")])
    assert "same-1" not in str(exc.value)


@given(st.text(max_size=40))
def test_bearer_parsing_never_accepts_what_it_should_not(header: str) -> None:
    tok = bearer_token(header)
    assert tok is None or (header.strip().lower().startswith("bearer ") and tok in header)


def test_view_step_withdrawal_and_correction() -> None:
    view = LiveView(now_ms=lambda: NOW)
    events = [e for e in _events("LEO-A") if e["type"] == "step"]
    view.ingest_many(events)
    last = events[-1]
    corrected = {**last, "end-location-long": 77.5, "end-location-lat": 43.5}
    view.ingest(corrected)
    fc = view.positions(["LEO-A"], Precision(), NOW)
    assert fc["features"][0]["geometry"]["coordinates"] == [77.5, 43.5]
    view.ingest({**last, "status": "withdrawn"})
    fc = view.positions(["LEO-A"], Precision(), NOW)
    assert fc["features"][0]["properties"]["timestamp"] == last["start-timestamp"]


def test_view_is_bounded() -> None:
    view = LiveView(max_steps=5, max_alerts=2, max_home_ranges=1, now_ms=lambda: NOW)
    view.ingest_many(_events("LEO-A"))
    track = view.track("LEO-A", 48, Precision(), NOW)
    assert track["features"][0]["properties"]["n_points"] == 6
    assert len(view.alerts(["LEO-A"], Precision(), None, NOW)["features"]) == 2
    assert view.home_ranges("LEO-A", Precision(delay_h=6), NOW)["features"] == []
