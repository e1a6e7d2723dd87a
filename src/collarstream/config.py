"""Runtime settings, read once at start from the environment.

Every key is validated up front; a bad value stops the process with the key at fault
(`ConfigError: COLLARSTREAM_PARTITIONS: expected a whole number >= 1, got 'four'`),
never half-way through a run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from collarstream.core.quality import PROFILES


class ConfigError(ValueError):
    """A setting that cannot be used; the message starts with the key at fault."""


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str | None = None
    app_id: str = "collarstream"
    topic_prefix: str = "collarstream"
    partitions: int = 4
    store: str = "rocksdb://"
    data_dir: Path = Path("collarstream-data")
    # Latency on Tansu is set by the consumer's fetch wait, not load (Faust fixes it at
    # 1,500 ms; 10 ms gave a p99 of 73 ms at 1,000 fixes/s here).
    fetch_wait_ms: int = 10
    # Largest micro-batch, in messages: the validating and tracking stages take whatever
    # is pending up to this (stream.coalesce); the home-range and delivery agents take
    # up to this many within batch_within_s. Only a backlog fills it; in a catch-up,
    # larger reduce calls pay the reducer's per-animal cost less often (paired runs of
    # 60 k and 120 k fixes: 2,500 beat 1,000 in all five, by 3-14 %).
    batch_max: int = 2500
    batch_within_s: float = 0.01
    # Validated batches whose fixes-topic partition this worker owns go to the tracking
    # stage in process, not through the broker (stream.app._LocalBatch).
    local_handoff: bool = True
    # The weekly live home ranges with the AKDE as well (core.akde): about twice the
    # home-range process's work; off by default, `analyze` always computes it.
    home_range_akde: bool = False
    # How often offsets are committed (the only commits: not every N messages, see
    # stream.app._Consumer), and so how often every changed track state is written to
    # its table first (stream.reducer_process). Fixes flow on during a commit, but it
    # costs the reducer and the broker a burst of work; after a crash at most this much
    # input is reprocessed, which the deterministic ids make harmless. Kafka Streams'
    # at-least-once default is 30 s.
    commit_interval_s: float = 10.0
    # Tansu makes a group's first join wait half the session timeout: keep it short.
    session_timeout_s: float = 6.0
    urban_fences: Path | None = None
    countries: Path | None = None
    profile: str = "snow-leopard"
    web_enabled: bool = True
    web_port: int = 6066
    log_level: str = "warning"
    # Delivery (issue 4): off unless a subscriptions file is given.
    subscriptions: Path | None = None
    # Bearer token for GET /metrics; unset leaves it open (scrapers inside the network).
    metrics_token: str | None = field(default=None, repr=False)
    # What "now" is for the silent-collar timer: None is the wall clock. A replay at
    # speed x (the demo) gives (data time t0, wall time w0 in ms, x): now = t0 + (wall -
    # w0) * x, so collars replayed from months ago are not all "silent" at once.
    data_clock: tuple[int, int, float] | None = None

    def now_ms(self) -> int:
        wall = time.time() * 1000.0
        if self.data_clock is None:
            return int(wall)
        t0, w0, speed = self.data_clock
        return int(t0 + (wall - w0) * speed)

    @property
    def heartbeat_s(self) -> float:
        return max(self.session_timeout_s / 6.0, 0.5)


def _int(key: str, v: str, lo: int = 1) -> int:
    try:
        n = int(v)
    except ValueError:
        raise ConfigError(f"{key}: expected a whole number >= {lo}, got {v!r}") from None
    if n < lo:
        raise ConfigError(f"{key}: expected a whole number >= {lo}, got {v!r}")
    return n


def _float(key: str, v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise ConfigError(f"{key}: expected a number > 0, got {v!r}") from None
    if not f > 0:
        raise ConfigError(f"{key}: expected a number > 0, got {v!r}")
    return f


def _clock(key: str, v: str) -> tuple[int, int, float]:
    parts = v.split(",")
    try:
        t0, w0, speed = int(parts[0]), int(parts[1]), float(parts[2])
    except (ValueError, IndexError):
        raise ConfigError(
            f"{key}: expected <data time ms>,<wall time ms>,<speed>, got {v!r}"
        ) from None
    if len(parts) != 3 or not speed > 0:
        raise ConfigError(f"{key}: expected <data time ms>,<wall time ms>,<speed > 0>, got {v!r}")
    return t0, w0, speed


def _bool(key: str, v: str) -> bool:
    low = v.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{key}: expected true or false, got {v!r}")


def _file(key: str, v: str) -> Path:
    p = Path(v)
    if not p.is_file():
        raise ConfigError(f"{key}: no such file: {v!r}")
    return p


def _store(key: str, v: str) -> str:
    if v not in {"rocksdb://", "memory://"}:
        raise ConfigError(f"{key}: expected 'rocksdb://' or 'memory://', got {v!r}")
    return v


def _profile(key: str, v: str) -> str:
    if v not in PROFILES:
        raise ConfigError(f"{key}: unknown species profile {v!r}; known: {sorted(PROFILES)}")
    return v


def _name(key: str, v: str) -> str:
    if not v or not all(c.isalnum() or c in "._-" for c in v):
        raise ConfigError(f"{key}: use letters, digits, '.', '_' and '-' only, got {v!r}")
    return v


def _token(key: str, v: str) -> str | None:
    v = v.strip()
    # The API's bearer-token grammar (RFC 6750 b64token); never echo the value.
    if v and (len(v) < 16 or not all(c.isalnum() or c in "-._~+/=" for c in v)):
        raise ConfigError(f"{key}: expected at least 16 of [A-Za-z0-9-._~+/=] (value not shown)")
    return v or None


def _level(key: str, v: str) -> str:
    if v.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"{key}: expected debug, info, warning or error, got {v!r}")
    return v.lower()


_PARSERS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "bootstrap_servers": ("KAFKA_BOOTSTRAP_SERVERS", lambda k, v: v.strip() or None),
    "app_id": ("COLLARSTREAM_APP_ID", _name),
    "topic_prefix": ("COLLARSTREAM_TOPIC_PREFIX", _name),
    "partitions": ("COLLARSTREAM_PARTITIONS", _int),
    "store": ("COLLARSTREAM_STORE", _store),
    "data_dir": ("COLLARSTREAM_DATA_DIR", lambda k, v: Path(v)),
    "fetch_wait_ms": ("COLLARSTREAM_FETCH_WAIT_MS", lambda k, v: _int(k, v, lo=0)),
    "batch_max": ("COLLARSTREAM_BATCH_MAX", _int),
    "batch_within_s": ("COLLARSTREAM_BATCH_WITHIN_S", _float),
    "commit_interval_s": ("COLLARSTREAM_COMMIT_INTERVAL_S", _float),
    "session_timeout_s": ("COLLARSTREAM_SESSION_TIMEOUT_S", _float),
    "urban_fences": ("COLLARSTREAM_URBAN_FENCES", _file),
    "countries": ("COLLARSTREAM_COUNTRIES", _file),
    "profile": ("COLLARSTREAM_PROFILE", _profile),
    "web_enabled": ("COLLARSTREAM_WEB_ENABLED", _bool),
    "local_handoff": ("COLLARSTREAM_LOCAL_HANDOFF", _bool),
    "home_range_akde": ("COLLARSTREAM_HOME_RANGE_AKDE", _bool),
    "web_port": ("COLLARSTREAM_WEB_PORT", _int),
    "log_level": ("COLLARSTREAM_LOG_LEVEL", _level),
    "subscriptions": ("COLLARSTREAM_SUBSCRIPTIONS", _file),
    "metrics_token": ("COLLARSTREAM_METRICS_TOKEN", _token),
    "data_clock": ("COLLARSTREAM_DATA_CLOCK", _clock),
}


def env_keys() -> dict[str, str]:
    """Environment variable of each setting, for the README and --help."""
    return {name: env for name, (env, _) in _PARSERS.items()}


def from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (unset keys keep their defaults), then overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key, parse = _PARSERS[f.name]
        if key in env:
            values[f.name] = parse(key, env[key])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
