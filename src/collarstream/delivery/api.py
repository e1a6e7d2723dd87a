"""The HTTP API on the Faust web server: recent positions, tracks, home ranges, alerts.

Routes (`register_api`):

=======================================  =====================  ============================
GET /health                              no auth                ``{"status": "ok"}``, no data
GET /metrics                             ``metrics_token``      Prometheus text (no locations)
GET /api/v1/positions                    subscriber token       latest position per animal
GET /api/v1/animals/{animal}/track       subscriber token       ``?hours=24`` (max 336)
GET /api/v1/animals/{animal}/home-ranges subscriber token       newest visible estimate
GET /api/v1/alerts                       subscriber token       ``?since=<ISO 8601 UTC>``
=======================================  =====================  ============================

Decisions:

* ``Authorization: Bearer <token>`` names the subscriber. The presented token is hashed
  (SHA-256) and compared with every subscriber's token digest by `hmac.compare_digest`,
  without stopping at a match, so timing tells neither a prefix nor which subscriber
  matched. Missing, malformed or unknown token: 401 with ``WWW-Authenticate: Bearer``.
* An animal the subscriber may not see answers **404**, byte-for-byte the same as an
  animal that does not exist, so the API never confirms that an animal is collared.
  An animal it may see but with no data yet answers 200 with an empty collection.
  The response depends on `may_see` only, never on what the view holds.
* Every location is at the subscriber's `Precision` (see `liveview`), and before a
  response leaves, `_check_precision` re-checks every coordinate against it; a
  violation is a 500, never a leak.
* ``/metrics`` holds counts keyed by channel kind, subscriber id, alert kind and route
  template: no locations, no animal ids. It is open unless `metrics_token` is given
  (then only that bearer token; subscriber tokens are refused, since one subscriber
  must not see another's delivery stats). Prometheus scrapers usually sit inside the
  network; set a token when the web port is reachable from outside.
* Tokens are never logged and never echoed; error bodies are fixed strings. Data
  responses carry ``Cache-Control: no-store`` so no proxy keeps a copy.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
import numpy as np
import orjson
from faust.web import Request, Response, View

from collarstream.delivery.liveview import LiveView, wall_clock_ms
from collarstream.delivery.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from collarstream.delivery.metrics import DeliveryMetrics
from collarstream.delivery.model import Precision, Subscriber
from collarstream.delivery.precision import coarsen
from collarstream.timefmt import parse_ms

__all__ = ["TokenIndex", "register_api"]

log = logging.getLogger(__name__)

GEOJSON = "application/geo+json"
DEFAULT_TRACK_HOURS = 24.0
MAX_TRACK_HOURS = 14 * 24.0  # two weeks: the LiveView keeps months, a response stays small
REALM = 'Bearer realm="collarstream"'
# RFC 6750 section 2.1 b64token; a length cap so a huge header costs nothing to reject.
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]{1,1024}=*)", re.ASCII)
_NO_STORE = {"Cache-Control": "no-store", "Vary": "Authorization"}

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


class TokenIndex:
    """Who a bearer token belongs to, in time independent of which token it is.

    Only SHA-256 digests are kept (equal length, so `compare_digest` compares all 32
    bytes). Subscribers without a token can never authenticate. Two subscribers with
    one token would make the answer ambiguous, so that is refused at start.
    """

    def __init__(self, subscribers: Sequence[Subscriber]) -> None:
        self._entries = [(_digest(s.token), s) for s in subscribers if s.token]
        seen: dict[bytes, str] = {}
        for digest, s in self._entries:
            if digest in seen:
                raise ValueError(f"subscribers {seen[digest]!r} and {s.id!r} share an API token")
            seen[digest] = s.id

    def match(self, presented: str) -> Subscriber | None:
        probe = _digest(presented)
        found: Subscriber | None = None
        for digest, sub in self._entries:  # no early exit: every digest is compared
            hit = hmac.compare_digest(digest, probe)
            found = sub if hit else found
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    m = _BEARER.fullmatch(header.strip())
    return m.group(1) if m else None


def register_api(
    app: faust.App,
    view: LiveView,
    subscribers: Sequence[Subscriber],
    may_see: Callable[[Subscriber, str], bool],
    metrics: DeliveryMetrics,
    now_ms: Callable[[], int] = wall_clock_ms,
    *,
    metrics_token: str | None = None,
) -> None:
    """Add the API's routes to `app`'s web server (call before the worker starts)."""
    if app.conf.web_tables_enabled:
        # Faust's /table/<name>/<key>/ serves table values without auth, and
        # animal_to_track holds every exact fix: serving it beside this API would
        # make the API's access control pointless.
        raise ValueError("register_api needs web_tables_enabled=False on the Faust app")
    api = _Api(view, TokenIndex(subscribers), may_see, metrics, now_ms, metrics_token)
    routes: list[tuple[str, str, Handler]] = [
        ("/health", "health", api.health),
        ("/metrics", "metrics", api.metrics),
        ("/api/v1/positions", "positions", api.positions),
        ("/api/v1/animals/{animal}/track", "track", api.track),
        ("/api/v1/animals/{animal}/home-ranges", "home-ranges", api.home_ranges),
        ("/api/v1/alerts", "alerts", api.alerts),
    ]
    for path, name, handler in routes:
        app.page(path, name=f"collarstream-{name}")(_view_class(path, handler, metrics))


def _view_class(route: str, handler: Handler, metrics: DeliveryMetrics) -> type[View]:
    async def get(self: View, request: Request, **match: str) -> Response:
        response = await handler(request, match)
        metrics.api_request(route, response.status)
        return response

    return type(f"Api{route.replace('/', '_')}", (View,), {"get": get})


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _json_response(
    value: Any,
    status: int = 200,
    ctype: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Response:
    from aiohttp import web  # Faust's web driver is aiohttp (faust.web.drivers.aiohttp)

    return web.Response(
        body=orjson.dumps(value), status=status, content_type=ctype, headers=headers
    )


def _error(exc: _HttpError) -> Response:
    return _json_response({"error": exc.message}, exc.status, headers={**_NO_STORE, **exc.headers})


class _Api:
    def __init__(
        self,
        view: LiveView,
        tokens: TokenIndex,
        may_see: Callable[[Subscriber, str], bool],
        metrics: DeliveryMetrics,
        now_ms: Callable[[], int],
        metrics_token: str | None,
    ) -> None:
        self.view, self.tokens, self.may_see = view, tokens, may_see
        self.metrics_, self.now_ms = metrics, now_ms
        self._metrics_digest = _digest(metrics_token) if metrics_token else None

    # ---- open and operator routes ---------------------------------------------------

    async def health(self, request: Request, match: dict[str, str]) -> Response:
        return _json_response({"status": "ok"}, headers=_NO_STORE)

    async def metrics(self, request: Request, match: dict[str, str]) -> Response:
        from aiohttp import web

        if self._metrics_digest is not None:
            token = bearer_token(request.headers.get("Authorization"))
            if token is None or not hmac.compare_digest(_digest(token), self._metrics_digest):
                return _error(_unauthorized(token is None))
        body = self.metrics_.render()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    # ---- data routes ------------------------------------------------------------------

    async def positions(self, request: Request, match: dict[str, str]) -> Response:
        return self._data(
            request,
            None,
            lambda sub, now: self.view.positions(
                [a for a in self.view.animals() if self.may_see(sub, a)], sub.precision, now
            ),
        )

    async def track(self, request: Request, match: dict[str, str]) -> Response:
        def build(sub: Subscriber, now: int) -> dict[str, Any]:
            hours = _hours(request.query.get("hours"))
            return self.view.track(match["animal"], hours, sub.precision, now)

        return self._data(request, match["animal"], build)

    async def home_ranges(self, request: Request, match: dict[str, str]) -> Response:
        return self._data(
            request,
            match["animal"],
            lambda sub, now: self.view.home_ranges(match["animal"], sub.precision, now),
        )

    async def alerts(self, request: Request, match: dict[str, str]) -> Response:
        def build(sub: Subscriber, now: int) -> dict[str, Any]:
            since = _since(request.query.get("since"))
            animals = [a for a in self.view.animals() if self.may_see(sub, a)]
            return self.view.alerts(animals, sub.precision, since, now)

        return self._data(request, None, build)

    def _data(
        self,
        request: Request,
        animal: str | None,
        build: Callable[[Subscriber, int], dict[str, Any]],
    ) -> Response:
        """Authenticate, authorise the animal, build at the subscriber's precision, check."""
        try:
            sub = self._subscriber(request)
            if animal is not None and not self.may_see(sub, animal):
                raise _HttpError(404, "not found")
            fc = build(sub, self.now_ms())
        except _HttpError as exc:
            return _error(exc)
        if not _check_precision(fc, sub.precision):
            log.error("response for subscriber %s failed its precision check; withheld", sub.id)
            return _error(_HttpError(500, "internal error"))
        return _json_response(fc, ctype=GEOJSON, headers=_NO_STORE)

    def _subscriber(self, request: Request) -> Subscriber:
        token = bearer_token(request.headers.get("Authorization"))
        sub = None if token is None else self.tokens.match(token)
        if sub is None:
            # The path is logged, never the header.
            log.info("api: refused %s (%s)", request.path, "no token" if token is None else "bad")
            raise _unauthorized(token is None)
        return sub


def _unauthorized(missing: bool) -> _HttpError:
    # RFC 6750 section 3.1: no error code when no credentials were presented.
    challenge = REALM if missing else f'{REALM}, error="invalid_token"'
    return _HttpError(401, "unauthorized", {"WWW-Authenticate": challenge})


def _hours(text: str | None) -> float:
    if text is None:
        return DEFAULT_TRACK_HOURS
    try:
        hours = float(text)
    except ValueError:
        raise _HttpError(400, "hours must be a number") from None
    if not (math.isfinite(hours) and 0 < hours <= MAX_TRACK_HOURS):
        raise _HttpError(400, f"hours must be in (0, {MAX_TRACK_HOURS:g}]")
    return hours


def _since(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_ms(text)
    except ValueError:
        raise _HttpError(400, "since must be an ISO 8601 UTC timestamp") from None


def _check_precision(fc: dict[str, Any], p: Precision) -> bool:
    """Every geometry of `fc` is allowed at `p`: none has no geometry at all, grid has
    only cell centres (coarsening them again changes nothing)."""
    geoms = [f.get("geometry") for f in fc.get("features", ())]
    if p.mode == "exact":
        return True
    if p.mode == "none":
        return all(g is None for g in geoms)
    xy = np.array([pos[:2] for g in geoms if g is not None for pos in _positions(g)], float)
    if xy.size == 0:
        return True
    cx, cy = coarsen(xy[:, 0], xy[:, 1], p.grid_km)
    return bool(np.array_equal(cx, xy[:, 0]) and np.array_equal(cy, xy[:, 1]))


def _positions(geometry: dict[str, Any]) -> list[list[float]]:
    out: list[list[float]] = []

    def walk(c: Any) -> None:
        if c and isinstance(c[0], int | float):
            out.append(c)
        else:
            for x in c:
                walk(x)

    for g in geometry.get("geometries", [geometry]):
        walk(g.get("coordinates", []))
    return out
