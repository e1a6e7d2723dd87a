"""What a subscription says, as plain frozen data (no I/O).

`subscriptions.load_subscriptions` builds these from the YAML file and the
environment; the router, the channels and the HTTP API only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SEVERITIES = ("info", "warning", "critical")
LANGUAGES = ("en", "ru", "kk")


@dataclass(frozen=True)
class Precision:
    """How precise a location this subscriber may see.

    mode "exact": as measured; "grid": snapped to the centre of a cell of `grid_km`
    (see `precision.coarsen`); "none": no coordinates at all. `delay_h` holds every
    message with a location back until the fix is that many hours old.
    """

    mode: Literal["exact", "grid", "none"] = "exact"
    grid_km: float = 0.0
    delay_h: float = 0.0


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts. Empty tuples mean "any"."""

    kinds: tuple[str, ...] = ()
    animals: tuple[str, ...] = ()
    fences: tuple[str, ...] = ()  # fence ids (urban-edge, protected-area)
    countries: tuple[str, ...] = ()  # ISO3: crossings from or into, approach toward
    min_severity: str = "info"


@dataclass(frozen=True)
class ChannelSpec:
    """One way to reach the subscriber. `kind` picks the adapter; `options` are its
    settings with secrets already resolved from the environment or a file."""

    kind: Literal["webhook", "email", "kafka", "terminal"]
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Subscriber:
    id: str
    name: str
    language: str = "en"
    alerts: AlertFilter = AlertFilter()
    # Transboundary hand-off: while an animal is in one of these countries (ISO3),
    # this subscriber receives its fixes, until it returns.
    handoff_countries: tuple[str, ...] = ()
    precision: Precision = Precision()
    quiet_period_s: float = 0.0
    channels: tuple[ChannelSpec, ...] = ()
    # Bearer token for the HTTP API (from env or file, never the config repo).
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "collarstream@localhost"
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Subscriptions:
    subscribers: tuple[Subscriber, ...] = ()
    smtp: SmtpSettings = SmtpSettings()

    def by_id(self, sid: str) -> Subscriber:
        for s in self.subscribers:
            if s.id == sid:
                return s
        raise KeyError(sid)


@dataclass(frozen=True)
class Delivery:
    """One message for one subscriber, already redacted to its precision.

    `id` is deterministic (same subscriber, same alert or fix -> same id): it is the
    idempotency key receivers use to drop repeats after an at-least-once redelivery.
    """

    id: str
    subscriber_id: str
    kind: Literal["alert", "fix"]
    body: dict[str, object]  # JSON-ready, redacted
    subject: str
    text: str  # human message in the subscriber's language
    not_before_ms: int = 0  # held back until then (precision.delay_h)
    fix_received_ms: int | None = None  # when the fix reached us: delivery latency
