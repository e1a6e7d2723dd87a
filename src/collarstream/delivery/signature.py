"""Webhook signatures: how a receiver knows a POST came from collarstream, unaltered.

Every webhook request carries

    Collarstream-Signature: t=1718000000,v1=5257a869e7ec...(64 hex digits)

where ``t`` is the Unix time in seconds when it was signed and ``v1`` is the lowercase
hex HMAC-SHA256, keyed with your webhook secret, of the string ``f"{t}.{raw body}"``.
During a secret rotation a header may carry several ``v1=`` entries; any one matching
is enough.

To verify a request:

1. Read the raw request body as bytes, before any JSON parsing (re-serialised JSON
   will not match).
2. Split the header on ``,`` and each item on the first ``=``; take ``t`` and every
   ``v1``. Reject the request if either is missing.
3. Reject it if ``t`` is more than 5 minutes from your clock (replay protection).
4. Compute HMAC-SHA256(secret, ``t`` + ``.`` + body) and compare its hex digest with
   each ``v1`` in constant time (``hmac.compare_digest``, never ``==``).
5. Drop repeats: the ``Idempotency-Key`` header (also ``Collarstream-Delivery``) is the
   same on every retry of the same message.

With the Python standard library only::

    import hmac, hashlib, time

    def verify(secret: bytes, body: bytes, header: str, tolerance_s: int = 300) -> bool:
        items = [p.split("=", 1) for p in header.split(",") if "=" in p]
        t = next((v for k, v in items if k.strip() == "t"), None)
        sigs = [v.strip() for k, v in items if k.strip() == "v1"]
        if t is None or not t.strip().isdigit() or not sigs:
            return False
        if abs(time.time() - int(t)) > tolerance_s:
            return False
        mac = hmac.new(secret, t.strip().encode() + b"." + body, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(mac, s) for s in sigs)

>>> header = sign(b"whsec_test", b'{"id":"a1"}', 1718000000)
>>> header.startswith("t=1718000000,v1=")
True
>>> verify(b"whsec_test", b'{"id":"a1"}', header, now=1718000100)
>>> tampered = b'{"id":"a2"}'
>>> verify(b"whsec_test", tampered, header, now=1718000100)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
collarstream.delivery.signature.SignatureError: signature mismatch
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Collarstream-Signature"
SCHEME = "v1"
# Stripe's default: long enough for clock skew and a slow proxy, short enough that a
# captured request cannot be replayed much later.
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The signature header is malformed, too old or too new, or does not match."""


def sign(secret: bytes, body: bytes, t: int) -> str:
    """The ``Collarstream-Signature`` header value for `body` signed at Unix time `t`."""
    return f"t={t},{SCHEME}={_mac(secret, body, t)}"


def verify(
    secret: bytes,
    body: bytes,
    header: str,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise `SignatureError` unless `header` signs `body` with `secret` within
    `tolerance_s` of `now` (default: the current time). Returns None when valid."""
    t, candidates = _parse(header)
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance window")
    expected = _mac(secret, body, t)
    # Check every candidate (no early exit) so timing says nothing about which matched.
    matched = [hmac.compare_digest(expected, c) for c in candidates]
    if not any(matched):
        raise SignatureError("signature mismatch")


def _mac(secret: bytes, body: bytes, t: int) -> str:
    return hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[int, list[str]]:
    if not isinstance(header, str) or not header:
        raise SignatureError("missing signature header")
    t: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature header")
        if key == "t":
            if not value.isascii() or not value.isdigit():
                raise SignatureError("malformed timestamp")
            t = int(value)
        elif key == SCHEME:
            candidates.append(value)
    if t is None or not candidates:
        raise SignatureError(f"signature header needs t= and {SCHEME}=")
    return t, candidates
