"""Delivery and pipeline counters in the Prometheus text format.

One `DeliveryMetrics` per worker, each with its own `CollectorRegistry` (never the
process-wide default), so tests and embedded apps can hold several side by side.

Nothing here ever holds a location: labels are channel kinds, subscriber ids, alert
kinds, drop reasons and API route templates, and every label value is reduced to a
short slug (`_slug`) so a careless caller cannot smuggle free text (a message with
coordinates, a token) into the exposition.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "OUTCOMES", "DeliveryMetrics"]

# What `generate_latest` writes: the classic text format every Prometheus scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

OUTCOMES = ("delivered", "retried", "failed", "dropped")

# Fix received -> delivered spans sub-second webhooks to messages held for a
# subscriber's delay_h (hours to days), so the buckets run from 0.1 s to 3 days.
LATENCY_BUCKETS_S = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    24 * 3600.0,
    72 * 3600.0,
)

_SLUG = re.compile(r"[A-Za-z0-9_.:/{}-]{1,64}")


def _slug(value: object) -> str:
    """A label value that is a short identifier, or "other" (never free text)."""
    text = str(value)
    return text if _SLUG.fullmatch(text) else "other"


class DeliveryMetrics:
    """Counters the dispatcher, the pipeline and the HTTP API update; `render` exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._deliveries = Counter(
            "collarstream_deliveries",
            "Delivery attempts to subscribers, by channel kind, subscriber and outcome.",
            ["channel", "subscriber", "outcome"],
            registry=r,
        )
        self._drops = Counter(
            "collarstream_delivery_drops",
            "Deliveries dropped without sending, by reason (duplicate, quiet-period, ...).",
            ["channel", "subscriber", "reason"],
            registry=r,
        )
        self._latency = Histogram(
            "collarstream_delivery_latency_seconds",
            "Time from a fix reaching the system to its delivery (includes delay_h holds).",
            ["channel"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._fixes = Counter("collarstream_fixes_in", "Fixes read from the raw topic.", registry=r)
        self._dead = Counter(
            "collarstream_dead_letters", "Messages sent to the dead-letter topic.", registry=r
        )
        self._alerts = Counter(
            "collarstream_alerts_out", "Alerts emitted, by kind.", ["kind"], registry=r
        )
        self._requests = Counter(
            "collarstream_api_requests",
            "HTTP API requests by route template and status (401s show token guessing).",
            ["route", "status"],
            registry=r,
        )

    def delivered(self, channel_kind: str, subscriber_id: str, latency_s: float | None) -> None:
        self._outcome(channel_kind, subscriber_id, "delivered")
        if latency_s is not None and latency_s >= 0:
            self._latency.labels(_slug(channel_kind)).observe(latency_s)

    def retried(self, channel_kind: str, subscriber_id: str) -> None:
        self._outcome(channel_kind, subscriber_id, "retried")

    def failed(self, channel_kind: str, subscriber_id: str) -> None:
        self._outcome(channel_kind, subscriber_id, "failed")

    def dropped(self, channel_kind: str, subscriber_id: str, reason: str) -> None:
        self._outcome(channel_kind, subscriber_id, "dropped")
        self._drops.labels(_slug(channel_kind), _slug(subscriber_id), _slug(reason)).inc()

    def fixes_in(self, n: int) -> None:
        if n > 0:
            self._fixes.inc(n)

    def dead_lettered(self, n: int) -> None:
        if n > 0:
            self._dead.inc(n)

    def alerts_out(self, kind: str) -> None:
        self._alerts.labels(_slug(kind)).inc()

    def api_request(self, route: str, status: int) -> None:
        """Called by the HTTP API with the route *template* (no animal ids)."""
        self._requests.labels(_slug(route), str(int(status))).inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def _outcome(self, channel_kind: str, subscriber_id: str, outcome: str) -> None:
        self._deliveries.labels(_slug(channel_kind), _slug(subscriber_id), outcome).inc()
