"""Timestamps on the wire: ISO 8601 UTC with milliseconds and a Z; int64 ms inside."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]00:?00)?$",
    re.ASCII,  # \d would also match fullwidth and Arabic-Indic digits
)


def iso(ms: int) -> str:
    """2026-03-01T04:00:00.000Z for int milliseconds since the epoch (UTC)."""
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def parse_ms(text: str) -> int:
    """Milliseconds since the epoch for ISO 8601 or Movebank (`yyyy-MM-dd HH:mm:ss.SSS`)
    timestamps in UTC. Fractions are rounded to the millisecond, never truncated:
    Movebank's 18:06:13.999 stays in its own second. Other offsets are rejected."""
    m = _ISO.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not a UTC timestamp: {text!r}")
    y, mo, d, h, mi, s, frac, _ = m.groups()
    try:
        base = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"not a valid date/time: {text!r} ({exc})") from exc
    ms = round(float(f"0.{frac}") * 1000) if frac else 0
    return int(base.timestamp()) * 1000 + ms
