"""Webhook channel: a signed JSON POST per delivery over a shared aiohttp session.

Headers: ``Content-Type: application/json``, ``Idempotency-Key`` and
``Collarstream-Delivery`` (both the delivery id, the same on every retry),
``Collarstream-Signature`` (see `signature`) and a ``User-Agent``.

2xx is delivered. 408, 429 and 5xx, timeouts, refused or dropped connections and TLS
failures are transient (an expired certificate is usually fixed within the retry
budget); ``Retry-After`` on 429/503 is carried as the minimum wait. Redirects are not
followed (they would re-send the locations to another address) and, like every other
4xx, are permanent. Logs carry the delivery id and status, never the body, the secret
or the URL's query string.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime

import aiohttp
import orjson

from collarstream.delivery.channels import PermanentError, TransientError, safe_label
from collarstream.delivery.model import Delivery
from collarstream.delivery.signature import HEADER as SIGNATURE_HEADER
from collarstream.delivery.signature import sign

log = logging.getLogger(__name__)

USER_AGENT = "collarstream-webhook/1"
_TRANSIENT_STATUS = frozenset({408, 429})
_RETRY_AFTER_STATUS = frozenset({429, 503})
# Receivers answer with a status; a large body is not worth reading into memory.
_MAX_RESPONSE_BYTES = 64 * 1024


class WebhookChannel:
    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes,
        timeout_s: float = 10.0,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not secret:
            raise ValueError("webhook secret must not be empty")
        self.url = url
        self.label = safe_label(url)
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owns_session = session is None

    def __repr__(self) -> str:
        return f"WebhookChannel({self.label!r})"

    async def send(self, d: Delivery) -> None:
        body = orjson.dumps(d.body)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": d.id,
            "Collarstream-Delivery": d.id,
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
        }
        try:
            async with self._get_session().post(
                self.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                await resp.content.read(_MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise TransientError("timeout") from None
        except aiohttp.InvalidURL:
            raise PermanentError("invalid URL") from None
        except aiohttp.ClientConnectionError as e:
            raise TransientError(f"connection: {type(e).__name__}") from None
        except aiohttp.ClientError as e:
            raise TransientError(f"http: {type(e).__name__}") from None
        log.debug("delivery %s to %s: HTTP %d", d.id, self.label, status)
        classify(status, retry_after)

    async def aclose(self) -> None:
        """Close the session if this channel made its own (not a shared one)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession must be made inside the running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session


def classify(status: int, retry_after_s: float | None = None) -> None:
    """Return for 2xx, else raise Transient or Permanent per the module docstring."""
    if 200 <= status < 300:
        return
    if status in _TRANSIENT_STATUS or 500 <= status < 600:
        floor = retry_after_s if status in _RETRY_AFTER_STATUS else None
        raise TransientError(f"HTTP {status}", retry_after_s=floor)
    if 300 <= status < 400:
        raise PermanentError(f"HTTP {status} (redirects are not followed)")
    raise PermanentError(f"HTTP {status}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP-date; None if absent
    or unparseable.

    >>> parse_retry_after("120")
    120.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))
