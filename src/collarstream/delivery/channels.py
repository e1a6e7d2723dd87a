"""The one interface every delivery channel implements, its errors, and the factory.

A channel sends one `Delivery` to one place and says how it went by raising (or not):

* returns: delivered (the receiver accepted it);
* `TransientError`: try again later (timeouts, connection refused, HTTP 408/429/5xx,
  SMTP 4xx). `retry_after_s`, when set, is the receiver's minimum wait (Retry-After);
* `PermanentError`: retrying will not help (other HTTP 4xx, redirects, SMTP 5xx,
  misconfiguration); the delivery goes to the dead-letter topic at once.

Retrying, backoff and queueing are not a channel's business: `retry.deliver` and
`dispatcher.Dispatcher` do that for every channel alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from collarstream.delivery.model import ChannelSpec, Delivery, SmtpSettings, Subscriber

if TYPE_CHECKING:
    import aiohttp

KafkaSend = Callable[[str, bytes, bytes], Awaitable[None]]


class DeliveryError(Exception):
    """A send did not succeed. The message must never contain a secret or a location."""


class TransientError(DeliveryError):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class PermanentError(DeliveryError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Channel(Protocol):
    kind: str  # "webhook" | "email" | "kafka" | "terminal"
    label: str  # where it goes, safe to log and dead-letter (no secrets, no query strings)

    async def send(self, d: Delivery) -> None: ...


class Observer(Protocol):
    """Delivery metrics hooks (the Prometheus observer implements these)."""

    def delivered(self, channel_kind: str, subscriber_id: str, latency_s: float | None) -> None: ...
    def retried(self, channel_kind: str, subscriber_id: str) -> None: ...
    def failed(self, channel_kind: str, subscriber_id: str) -> None: ...
    def dropped(self, channel_kind: str, subscriber_id: str, reason: str) -> None: ...


def build_channel(
    spec: ChannelSpec,
    subscriber: Subscriber,
    smtp: SmtpSettings,
    kafka_send: KafkaSend | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
) -> Channel:
    """The adapter for one `ChannelSpec`. Build once per subscriber and reuse it: the
    dispatcher keeps one queue per (subscriber, channel object).

    Options: webhook `url`, `secret` (required), `timeout_s` (10), `allow_insecure`
    (plain http to a non-loopback host; off, since bodies carry locations);
    email `to` (address or list); kafka `topic`; terminal none. Pass one shared
    `session` for every webhook so they share a connection pool.
    """
    opts = spec.options
    if spec.kind == "webhook":
        from collarstream.delivery.webhook import WebhookChannel

        url = _required_str(opts, "url", subscriber)
        if not opts.get("allow_insecure") and not _is_safe_url(url):
            raise ValueError(
                f"subscriber {subscriber.id}: webhook must use https (plain http only to "
                "loopback, or set allow_insecure): bodies carry animal locations"
            )
        secret = _required_str(opts, "secret", subscriber)
        timeout_s = float(opts.get("timeout_s", 10.0))  # type: ignore[arg-type]
        return WebhookChannel(url, secret.encode(), timeout_s, session=session)
    if spec.kind == "email":
        from collarstream.delivery.mail import EmailChannel

        to = opts.get("to")
        addresses = [to] if isinstance(to, str) else list(to or [])  # type: ignore[call-overload]
        if not addresses or not all(isinstance(a, str) and "@" in a for a in addresses):
            raise ValueError(f"subscriber {subscriber.id}: email channel needs 'to' addresses")
        return EmailChannel(smtp, addresses)
    if spec.kind == "kafka":
        from collarstream.delivery.kafka_channel import KafkaChannel

        if kafka_send is None:
            raise ValueError(f"subscriber {subscriber.id}: kafka channel needs kafka_send")
        return KafkaChannel(_required_str(opts, "topic", subscriber), kafka_send)
    if spec.kind == "terminal":
        from collarstream.delivery.terminal import TerminalChannel

        return TerminalChannel()
    raise ValueError(f"subscriber {subscriber.id}: unknown channel kind {spec.kind!r}")


def safe_label(url: str) -> str:
    """scheme://host[:port]/path: the query string and userinfo may hold tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_safe_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname))


def _required_str(opts: dict[str, object], key: str, subscriber: Subscriber) -> str:
    value = opts.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"subscriber {subscriber.id}: {key!r} is required")
    return value


__all__ = [
    "Channel",
    "DeliveryError",
    "KafkaSend",
    "Observer",
    "PermanentError",
    "TransientError",
    "build_channel",
]
