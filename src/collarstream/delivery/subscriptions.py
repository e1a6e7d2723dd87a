"""Who gets which alerts, how, and how precisely: the subscriptions file.

`load_subscriptions(path, env)` reads a YAML file, checks every key before anything
runs, and returns `model.Subscriptions`. A bad file raises `config.ConfigError` whose
message starts with the key at fault and ends with the file and line::

    subscribers[2].precision.grid_km: expected a number > 0, got 'ten' (subs.yaml, line 31)

Unknown keys and duplicate keys are errors (a typo must not silently drop a filter),
and so are duplicate subscriber ids. See deploy/subscriptions.example.yaml.

Schema::

    smtp:                         # required when any subscriber has an email channel
      host: smtp.example.kz       # required
      port: 587                   # default 25
      starttls: true              # default false
      username: collarstream      # optional; then password_env or password_file
      password_env: VAR           # or password_file: path
      sender: alerts@example.kz   # default collarstream@localhost
      timeout_s: 10               # default 10
    subscribers:
      - id: almaty-wildlife       # required, [a-z0-9-], unique
        name: Almaty city wildlife service   # required
        language: ru              # en | ru | kk (default en)
        token_env: VAR            # or token_file: path; bearer token for the HTTP API
        alerts:                   # optional; each non-empty list must match
          kinds: [urban-edge]     # ALERT_KINDS
          animals: [leopard-07]
          fences: [almaty]        # an alert without a fence does not match a fence list
          countries: [KGZ]        # crossings from/into, approaches toward (ISO3)
          min_severity: warning   # info < warning < critical (default info)
        handoff:                  # transboundary hand-off
          countries: [KGZ]
        precision:                # required, exactly one of exact / grid_km / none
          grid_km: 5              # or exact: true, or none: true
          delay_h: 48             # optional, default 0
        quiet_period_min: 30      # optional, default 0
        channels:                 # at least one, unless the subscriber only uses the API
          - webhook: {url: https://..., secret_env: VAR, timeout_s: 10, max_retry_h: 24}
                                  # secret required (HMAC signing); allow_insecure: true
                                  # permits plain http to a non-loopback host
          - email: {to: [duty@example.kz]}
          - kafka: {topic: collarstream.deliveries.analyst}
          - terminal: {}

Secrets (API tokens, webhook secrets, the SMTP password) come only from environment
variables (`*_env`, upper-case names) or files (`*_file`, relative to the YAML file).
An inline `token:`, `secret:` or `password:` is an error saying where to put it. Error
messages name the variable or file, never a secret; model fields holding secrets have
repr=False, and the webhook secret in ChannelSpec.options["secret"] is a `SecretStr`,
masked in any repr. A subscriber with `handoff` receives alerts (by its `alerts` filter, or all
when absent) only about animals handed off to it: see `router`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from collarstream.config import ConfigError
from collarstream.delivery import model

__all__ = ["ALERT_KINDS", "SecretStr", "load_subscriptions"]

ALERT_KINDS = (
    "border-crossing",
    "border-approach",
    "urban-edge",
    "protected-area",
    "home-range-excursion",
    "immobility",
    "silent-collar",
    "proximity",
    "withdrawal",
)
_SECRET_WORDS = frozenset({"token", "secret", "password"})
_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_ISO3 = re.compile(r"[A-Z0-9]{3}")
# Upper-case only: a secret pasted where its variable's name belongs must not look like
# a name, or the "not set" error would print it.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class SecretStr(str):
    """A secret that is a plain `str` to code that uses it (`.encode()`, comparisons)
    but masked wherever it is printed as part of something else: a dict's or a
    dataclass's repr calls repr() on it. Used for secrets inside ChannelSpec.options."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"


class _Map(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of each key and its repeated keys."""

    line = 0
    lines: dict[Any, int]
    repeated: list[tuple[Any, int]]


class _Seq(list):  # type: ignore[type-arg]
    line = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line, out.lines, out.repeated = node.start_mark.line + 1, {}, []
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=True)
        if key in out:
            out.repeated.append((key, knode.start_mark.line + 1))
        out[key] = loader.construct_object(vnode, deep=True)
        out.lines[key] = knode.start_mark.line + 1
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    out.line, out.lines = node.start_mark.line + 1, [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


class _Ctx:
    def __init__(self, file: Path, env: Mapping[str, str]) -> None:
        self.file, self.env = file, env

    def error(self, key: str, msg: str, line: int | None) -> ConfigError:
        where = f"{self.file}" if line is None else f"{self.file}, line {line}"
        return ConfigError(f"{key}: {msg} ({where})")


def load_subscriptions(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> model.Subscriptions:
    """Subscriptions from a YAML file, secrets resolved from `env` (default os.environ)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read subscriptions file: {exc.strerror}") from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{file}: {problem}{at}") from None
    cx = _Ctx(file, os.environ if env is None else env)
    if doc is None:
        raise cx.error("subscribers", "required: the file is empty", None)
    top = _mapping(cx, "(top level)", doc, 1, {"smtp", "subscribers"}, {"subscribers"})
    subs = _list(cx, "subscribers", top["subscribers"], top.lines["subscribers"], nonempty=True)
    subscribers = [
        _subscriber(cx, f"subscribers[{i}]", s, subs.lines[i]) for i, s in enumerate(subs)
    ]
    _unique_ids(cx, subscribers, subs)
    email_users = [s.id for s in subscribers if any(c.kind == "email" for c in s.channels)]
    if "smtp" in top:
        smtp = _smtp(cx, top["smtp"], top.lines["smtp"])
    elif email_users:
        raise cx.error("smtp", f"required: {email_users[0]!r} has an email channel", None)
    else:
        smtp = model.SmtpSettings()
    return model.Subscriptions(subscribers=tuple(subscribers), smtp=smtp)


def _unique_ids(cx: _Ctx, subscribers: list[model.Subscriber], subs: _Seq) -> None:
    seen: dict[str, int] = {}
    for i, s in enumerate(subscribers):
        if s.id in seen:
            msg = f"duplicate id {s.id!r} (also subscribers[{seen[s.id]}].id)"
            raise cx.error(f"subscribers[{i}].id", msg, subs[i].lines.get("id"))
        seen[s.id] = i


# --- structure -------------------------------------------------------------------


def _mapping(
    cx: _Ctx, key: str, v: Any, line: int, allowed: Collection[str], required: Collection[str] = ()
) -> _Map:
    if v is None:
        v = _Map()
        v.line, v.lines, v.repeated = line, {}, []
    if not isinstance(v, _Map):
        raise cx.error(key, f"expected a mapping, got {_kind(v)}", line)
    prefix = "" if key == "(top level)" else f"{key}."
    for k, kline in v.repeated:
        raise cx.error(f"{prefix}{k}", "repeated key (a later one would silently win)", kline)
    for k in v:
        if k not in allowed:
            raise cx.error(f"{prefix}{k}", _unknown(str(k), allowed), v.lines[k])
    for k in sorted(required):
        if k not in v:
            raise cx.error(f"{prefix}{k}", "required", v.line)
    return v


def _unknown(k: str, allowed: Collection[str]) -> str:
    if k in _SECRET_WORDS and f"{k}_env" in allowed:
        return (
            f"secrets may not be written in this file: put the {k} in an environment "
            f"variable and name it with {k}_env, or in a file named by {k}_file"
        )
    if k in _SECRET_WORDS:
        return "secrets may not be written in this file, and this section takes none"
    return f"unknown key; expected one of {', '.join(sorted(allowed))}"


def _list(cx: _Ctx, key: str, v: Any, line: int, nonempty: bool = False) -> _Seq:
    if not isinstance(v, _Seq):
        raise cx.error(key, f"expected a list, got {_kind(v)}", line)
    if nonempty and not v:
        raise cx.error(key, "expected a non-empty list", line)
    return v


def _kind(v: Any) -> str:
    if isinstance(v, _Map):
        return "a mapping"
    if isinstance(v, _Seq):
        return "a list"
    return repr(v)


# --- scalars ---------------------------------------------------------------------


def _str(
    cx: _Ctx,
    key: str,
    v: Any,
    line: int,
    pattern: re.Pattern[str] | None = None,
    expect: str = "a non-empty string",
) -> str:
    ok = isinstance(v, str) and v.strip() != ""
    if ok and pattern is not None:
        ok = pattern.fullmatch(v) is not None
    if not ok:
        raise cx.error(key, f"expected {expect}, got {_kind(v)}", line)
    return str(v)


def _num(cx: _Ctx, key: str, v: Any, line: int, zero_ok: bool = False) -> float:
    expect = "a number >= 0" if zero_ok else "a number > 0"
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise cx.error(key, f"expected {expect}, got {_kind(v)}", line)
    if not (v >= 0 if zero_ok else v > 0) or v != v or v == float("inf"):
        raise cx.error(key, f"expected {expect}, got {_kind(v)}", line)
    return float(v)


def _bool(cx: _Ctx, key: str, v: Any, line: int) -> bool:
    if not isinstance(v, bool):
        raise cx.error(key, f"expected true or false, got {_kind(v)}", line)
    return v


def _strs(
    cx: _Ctx, key: str, v: Any, line: int, check: Callable[[str, Any, int], str]
) -> tuple[str, ...]:
    items = _list(cx, key, v, line)
    return tuple(check(f"{key}[{i}]", x, items.lines[i]) for i, x in enumerate(items))


def _get(cx: _Ctx, m: _Map, key: str, k: str, parse: Callable[..., Any], default: Any) -> Any:
    if k not in m:
        return default
    return parse(cx, f"{key}.{k}", m[k], m.lines[k])


# --- secrets ---------------------------------------------------------------------


def _secret(cx: _Ctx, key: str, m: _Map, word: str, required: bool) -> str | None:
    """The secret named by `word`_env or `word`_file; errors never print the value."""
    ek, fk = f"{word}_env", f"{word}_file"
    if ek in m and fk in m:
        raise cx.error(f"{key}.{fk}", f"give one of {ek} or {fk}, not both", m.lines[fk])
    if ek in m:
        name = m[ek]
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            msg = "expected the NAME of an environment variable (A-Z, 0-9, _), not the secret"
            raise cx.error(f"{key}.{ek}", msg, m.lines[ek])
        value = cx.env.get(name, "").strip()
        if not value:
            msg = f"environment variable {name} is not set or is empty"
            raise cx.error(f"{key}.{ek}", msg, m.lines[ek])
        return value
    if fk in m:
        raw = m[fk]
        if not isinstance(raw, str) or not raw.strip():
            # Not echoed: it might be the secret itself, pasted in the wrong place.
            raise cx.error(
                f"{key}.{fk}", "expected the path of a file holding the secret", m.lines[fk]
            )
        p = Path(raw) if Path(raw).is_absolute() else cx.file.parent / raw
        try:
            value = p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise cx.error(
                f"{key}.{fk}", f"cannot read secret file {str(p)!r}", m.lines[fk]
            ) from None
        if not value:
            raise cx.error(f"{key}.{fk}", f"secret file {str(p)!r} is empty", m.lines[fk])
        return value
    if required:
        raise cx.error(f"{key}.{ek}", f"required ({ek} or {fk})", m.line)
    return None


# --- sections --------------------------------------------------------------------


def _smtp(cx: _Ctx, v: Any, line: int) -> model.SmtpSettings:
    key = "smtp"
    allowed = {"host", "port", "starttls", "username", "password_env", "password_file"}
    m = _mapping(cx, key, v, line, allowed | {"sender", "timeout_s"}, {"host"})
    username = _get(cx, m, key, "username", _str, None)
    password = _secret(cx, key, m, "password", required=username is not None)
    if password is not None and username is None:
        raise cx.error(f"{key}.username", "required when a password is given", m.line)
    return model.SmtpSettings(
        host=_str(cx, f"{key}.host", m["host"], m.lines["host"], expect="a host name"),
        port=_get(cx, m, key, "port", _port, 25),
        starttls=_get(cx, m, key, "starttls", _bool, False),
        username=username,
        password=password,
        sender=_get(cx, m, key, "sender", _address, "collarstream@localhost"),
        timeout_s=_get(cx, m, key, "timeout_s", _num, 10.0),
    )


def _port(cx: _Ctx, key: str, v: Any, line: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
        raise cx.error(key, f"expected a port number 1..65535, got {_kind(v)}", line)
    return v


def _address(cx: _Ctx, key: str, v: Any, line: int) -> str:
    return _str(cx, key, v, line, _EMAIL, "an e-mail address")


_SUBSCRIBER_KEYS = {
    "id", "name", "language", "token_env", "token_file", "alerts", "handoff", "precision",
    "quiet_period_min", "channels",
}  # fmt: skip


def _subscriber(cx: _Ctx, key: str, v: Any, line: int) -> model.Subscriber:
    m = _mapping(cx, key, v, line, _SUBSCRIBER_KEYS, {"id", "name", "precision"})
    sid = _str(cx, f"{key}.id", m["id"], m.lines["id"], _ID, "an id of a-z, 0-9 and '-'")
    token = _secret(cx, key, m, "token", required=False)
    channels = _get(cx, m, key, "channels", _channels, ())
    if not channels and token is None:
        raise cx.error(
            f"{key}.channels", "required (or a token_env/token_file for the API)", m.line
        )
    handoff = _get(cx, m, key, "handoff", _handoff, ())
    return model.Subscriber(
        id=sid,
        name=_str(cx, f"{key}.name", m["name"], m.lines["name"]),
        language=_get(cx, m, key, "language", _language, "en"),
        alerts=_get(cx, m, key, "alerts", _alerts, model.AlertFilter()),
        handoff_countries=handoff,
        precision=_precision(cx, f"{key}.precision", m["precision"], m.lines["precision"]),
        quiet_period_s=_get(cx, m, key, "quiet_period_min", _quiet, 0.0),
        channels=channels,
        token=token,
    )


def _language(cx: _Ctx, key: str, v: Any, line: int) -> str:
    if v not in model.LANGUAGES:
        raise cx.error(key, f"expected one of {', '.join(model.LANGUAGES)}, got {_kind(v)}", line)
    return str(v)


def _quiet(cx: _Ctx, key: str, v: Any, line: int) -> float:
    return _num(cx, key, v, line, zero_ok=True) * 60.0


def _iso3(cx: _Ctx, key: str, v: Any, line: int) -> str:
    return _str(cx, key, v, line, _ISO3, "an ISO 3166-1 alpha-3 code in capitals (e.g. KGZ)")


def _alerts(cx: _Ctx, key: str, v: Any, line: int) -> model.AlertFilter:
    allowed = {"kinds", "animals", "fences", "countries", "min_severity"}
    m = _mapping(cx, key, v, line, allowed)
    return model.AlertFilter(
        kinds=_get(cx, m, key, "kinds", lambda *a: _strs(*a, check=_alert_kind(cx)), ()),
        animals=_get(cx, m, key, "animals", lambda *a: _strs(*a, check=_plain(cx)), ()),
        fences=_get(cx, m, key, "fences", lambda *a: _strs(*a, check=_plain(cx)), ()),
        countries=_get(cx, m, key, "countries", lambda *a: _strs(*a, check=_iso(cx)), ()),
        min_severity=_get(cx, m, key, "min_severity", _severity, "info"),
    )


def _alert_kind(cx: _Ctx) -> Callable[[str, Any, int], str]:
    def check(key: str, v: Any, line: int) -> str:
        if v not in ALERT_KINDS:
            raise cx.error(
                key, f"unknown alert kind {_kind(v)}; known: {', '.join(ALERT_KINDS)}", line
            )
        return str(v)

    return check


def _plain(cx: _Ctx) -> Callable[[str, Any, int], str]:
    return lambda key, v, line: _str(cx, key, v, line)


def _iso(cx: _Ctx) -> Callable[[str, Any, int], str]:
    return lambda key, v, line: _iso3(cx, key, v, line)


def _severity(cx: _Ctx, key: str, v: Any, line: int) -> str:
    if v not in model.SEVERITIES:
        raise cx.error(key, f"expected one of {', '.join(model.SEVERITIES)}, got {_kind(v)}", line)
    return str(v)


def _handoff(cx: _Ctx, key: str, v: Any, line: int) -> tuple[str, ...]:
    m = _mapping(cx, key, v, line, {"countries"}, {"countries"})
    countries = _list(cx, f"{key}.countries", m["countries"], m.lines["countries"], nonempty=True)
    return _strs(cx, f"{key}.countries", countries, m.lines["countries"], _iso(cx))


def _precision(cx: _Ctx, key: str, v: Any, line: int) -> model.Precision:
    m = _mapping(cx, key, v, line, {"exact", "grid_km", "none", "delay_h"})
    modes = [k for k in ("exact", "grid_km", "none") if k in m]
    if len(modes) != 1:
        got = "none of them" if not modes else " and ".join(modes)
        raise cx.error(
            key, f"give exactly one of exact: true, grid_km: N, none: true; got {got}", m.line
        )
    mode = modes[0]
    delay_h = _get(cx, m, key, "delay_h", lambda *a: _num(*a, zero_ok=True), 0.0)
    if mode == "grid_km":
        return model.Precision("grid", _num(cx, f"{key}.grid_km", m[mode], m.lines[mode]), delay_h)
    if m[mode] is not True:
        raise cx.error(f"{key}.{mode}", f"expected true, got {_kind(m[mode])}", m.lines[mode])
    return model.Precision("exact" if mode == "exact" else "none", 0.0, delay_h)


def _channels(cx: _Ctx, key: str, v: Any, line: int) -> tuple[model.ChannelSpec, ...]:
    items = _list(cx, key, v, line)
    return tuple(_channel(cx, f"{key}[{i}]", c, items.lines[i]) for i, c in enumerate(items))


def _channel(cx: _Ctx, key: str, v: Any, line: int) -> model.ChannelSpec:
    m = _mapping(cx, key, v, line, set(_CHANNELS))
    if len(m) != 1:
        raise cx.error(key, f"expected one of {', '.join(_CHANNELS)} per list item", m.line)
    (kind,) = m
    return _CHANNELS[kind](cx, f"{key}.{kind}", m[kind], m.lines[kind])


def _webhook(cx: _Ctx, key: str, v: Any, line: int) -> model.ChannelSpec:
    allowed = {"url", "secret_env", "secret_file", "timeout_s", "max_retry_h", "allow_insecure"}
    m = _mapping(cx, key, v, line, allowed, {"url"})
    url = _str(cx, f"{key}.url", m["url"], m.lines["url"], expect="a URL")
    insecure = _get(cx, m, key, "allow_insecure", _bool, False)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise cx.error(f"{key}.url", "expected an https:// URL", m.lines["url"])
    # Locations travel in the body: plain http only to this machine, unless forced.
    if parts.scheme == "http" and not insecure and not _loopback(parts.hostname):
        msg = "expected an https:// URL (http:// only to loopback, or set allow_insecure: true)"
        raise cx.error(f"{key}.url", msg, m.lines["url"])
    options: dict[str, object] = {
        "url": url,
        "secret": SecretStr(_secret(cx, key, m, "secret", required=True)),
        "timeout_s": _get(cx, m, key, "timeout_s", _num, 10.0),
        "max_retry_h": _get(cx, m, key, "max_retry_h", _num, 24.0),
    }
    if insecure:
        options["allow_insecure"] = True
    return model.ChannelSpec("webhook", options)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _email(cx: _Ctx, key: str, v: Any, line: int) -> model.ChannelSpec:
    m = _mapping(cx, key, v, line, {"to"}, {"to"})
    to = _list(cx, f"{key}.to", m["to"], m.lines["to"], nonempty=True)
    check = lambda k, x, ln: _address(cx, k, x, ln)  # noqa: E731
    return model.ChannelSpec("email", {"to": _strs(cx, f"{key}.to", to, m.lines["to"], check)})


def _kafka(cx: _Ctx, key: str, v: Any, line: int) -> model.ChannelSpec:
    m = _mapping(cx, key, v, line, {"topic"}, {"topic"})
    topic = _str(cx, f"{key}.topic", m["topic"], m.lines["topic"], _TOPIC, "a Kafka topic name")
    return model.ChannelSpec("kafka", {"topic": topic})


def _terminal(cx: _Ctx, key: str, v: Any, line: int) -> model.ChannelSpec:
    _mapping(cx, key, v, line, set())
    return model.ChannelSpec("terminal", {})


_CHANNELS: dict[str, Callable[[_Ctx, str, Any, int], model.ChannelSpec]] = {
    "webhook": _webhook,
    "email": _email,
    "kafka": _kafka,
    "terminal": _terminal,
}
