"""Delivery rules: the subscriptions file, messages and the router (pure, no broker)."""

from __future__ import annotations

import hashlib
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collarstream.config import ConfigError
from collarstream.delivery import model
from collarstream.delivery.messages import render
from collarstream.delivery.precision import coarsen
from collarstream.delivery.router import Router, RouterState, delivery_id
from collarstream.delivery.subscriptions import ALERT_KINDS, load_subscriptions
from collarstream.timefmt import iso

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "subscriptions.example.yaml"
T0 = 1_772_337_600_000  # 2026-03-01T04:00:00Z
MIN = 60_000
SECRETS = {
    "COLLARSTREAM_SMTP_PASSWORD": "smtp-pw-Zq81",
    "COLLARSTREAM_TOKEN_ALMATY_WILDLIFE": "tok-almaty-Xy72",
    "COLLARSTREAM_WEBHOOK_SECRET_ALMATY_WILDLIFE": "wh-almaty-Qp55",
    "COLLARSTREAM_TOKEN_KGZ": "tok-kgz-Lm09",
    "COLLARSTREAM_TOKEN_ANALYST": "tok-analyst-Rt44",
}
FILE_SECRETS = {"park-rangers.token": "tok-rangers-Hh31", "kgz-webhook.secret": "wh-kgz-Vb26"}
ALL_SECRETS = [*SECRETS.values(), *FILE_SECRETS.values()]

KAZ = {"code": "KAZ", "name": "Kazakhstan", "name_ru": "Казахстан"}
KGZ = {"code": "KGZ", "name": "Kyrgyzstan", "name_ru": "Кыргызстан"}
CHN = {"code": "CHN", "name": "China", "name_ru": "Китай"}


# --- subscriptions file ------------------------------------------------------------


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLE, tmp_path / "subs.yaml")
    (tmp_path / "secrets").mkdir()
    for name, value in FILE_SECRETS.items():
        (tmp_path / "secrets" / name).write_text(value + "\n")
    return tmp_path


def test_example_file_loads_with_every_audience(example_dir: Path) -> None:
    subs = load_subscriptions(example_dir / "subs.yaml", SECRETS)
    ids = [s.id for s in subs.subscribers]
    assert ids == [
        "almaty-wildlife",
        "park-rangers",
        "residents-medeu",
        "kgz-transboundary",
        "tkm-transboundary",
        "analyst",
    ]
    residents = subs.by_id("residents-medeu")
    assert residents.precision == model.Precision("grid", 5.0, 24.0)
    assert residents.quiet_period_s == 360 * 60
    assert subs.by_id("kgz-transboundary").handoff_countries == ("KGZ",)
    assert subs.by_id("park-rangers").token == "tok-rangers-Hh31"
    assert subs.by_id("kgz-transboundary").channels[0].options["secret"] == "wh-kgz-Vb26"
    assert subs.smtp.password == "smtp-pw-Zq81" and subs.smtp.port == 587
    text = repr(subs) + str(subs)
    for secret in ALL_SECRETS:
        assert secret not in text


BASE = """\
smtp:
  host: smtp.example.kz
  username: u
  password_env: SMTP_PW
subscribers:
  - id: one
    name: One
    token_env: TOKEN_ONE
    precision: {grid_km: 5}
    alerts: {kinds: [urban-edge], min_severity: warning}
    channels:
      - webhook: {url: "https://example.org/h", secret_env: HOOK_ONE}
      - email: {to: [a@example.org]}
"""
BASE_ENV = {"SMTP_PW": "pw-Secret-1", "TOKEN_ONE": "tok-Secret-2", "HOOK_ONE": "hook-Secret-3"}


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> model.Subscriptions:
    p = tmp_path / "subs.yaml"
    p.write_text(textwrap.dedent(text))
    return load_subscriptions(p, BASE_ENV if env is None else env)


def test_base_config_is_valid(tmp_path: Path) -> None:
    subs = _load(tmp_path, BASE)
    secret = subs.subscribers[0].channels[0].options["secret"]
    assert isinstance(secret, str) and secret == "hook-Secret-3"
    assert secret.encode() == b"hook-Secret-3"
    for text in (repr(subs), str(subs), repr(subs.subscribers[0].channels[0].options)):
        for value in BASE_ENV.values():
            assert value not in text
    assert subs.subscribers[0].token == "tok-Secret-2"


def test_webhook_http_needs_allow_insecure(tmp_path: Path) -> None:
    plain = BASE.replace('"https://example.org/h"', '"http://example.org/h"')
    opts = (
        _load(
            tmp_path,
            plain.replace("secret_env: HOOK_ONE", "secret_env: HOOK_ONE, allow_insecure: true"),
        )
        .subscribers[0]
        .channels[0]
        .options
    )
    assert opts["allow_insecure"] is True
    local = BASE.replace('"https://example.org/h"', '"http://127.0.0.1:8080/h"')
    assert (
        _load(tmp_path, local).subscribers[0].channels[0].options["url"]
        == "http://127.0.0.1:8080/h"
    )


BAD = [
    # (replace this, with this, error starts with)
    (
        "{grid_km: 5}",
        "{grid_km: ten}",
        "subscribers[0].precision.grid_km: expected a number > 0, got 'ten'",
    ),
    ("{grid_km: 5}", "{grid_km: 0}", "subscribers[0].precision.grid_km: expected a number > 0"),
    ("{grid_km: 5}", "{grid_km: 5, exact: true}", "subscribers[0].precision: give exactly one"),
    ("{grid_km: 5}", "{exact: false}", "subscribers[0].precision.exact: expected true"),
    ("{grid_km: 5}", "{grid_km: 5, delay_h: -1}", "subscribers[0].precision.delay_h"),
    ("{grid_km: 5}", "{grid-km: 5}", "subscribers[0].precision.grid-km: unknown key"),
    ("    precision: {grid_km: 5}\n", "", "subscribers[0].precision: required"),
    ("kinds: [urban-edge]", "kind: [urban-edge]", "subscribers[0].alerts.kind: unknown key"),
    (
        "kinds: [urban-edge]",
        "kinds: [urban-edge, urban]",
        "subscribers[0].alerts.kinds[1]: unknown alert kind 'urban'",
    ),
    (
        "min_severity: warning",
        "min_severity: high",
        "subscribers[0].alerts.min_severity: expected one of info",
    ),
    (
        "kinds: [urban-edge]",
        "countries: [kgz]",
        "subscribers[0].alerts.countries[0]: expected an ISO 3166-1",
    ),
    ("kinds: [urban-edge]", "animals: leopard-7", "subscribers[0].alerts.animals: expected a list"),
    ("id: one", "id: One_1", "subscribers[0].id: expected an id"),
    (
        "    name: One\n",
        "    name: One\n    language: de\n",
        "subscribers[0].language: expected one of en, ru, kk",
    ),
    (
        "    name: One\n",
        "    name: One\n    quiet_period_min: -5\n",
        "subscribers[0].quiet_period_min",
    ),
    ("    name: One\n", "    name: One\n    name: Two\n", "subscribers[0].name: repeated key"),
    (
        "    name: One\n",
        "    name: One\n    handoff: {countries: []}\n",
        "subscribers[0].handoff.countries: expected a non-empty list",
    ),
    ("    name: One\n", "    name: One\n    filters: {}\n", "subscribers[0].filters: unknown key"),
    (
        "token_env: TOKEN_ONE",
        "token: tok-Secret-2",
        "subscribers[0].token: secrets may not be written in this file: put the token in an",
    ),
    (
        "secret_env: HOOK_ONE",
        "secret: hook-Secret-3",
        "subscribers[0].channels[0].webhook.secret: secrets may not",
    ),
    ("password_env: SMTP_PW", "password: pw-Secret-1", "smtp.password: secrets may not be written"),
    (
        "token_env: TOKEN_ONE",
        "token_env: tok-Secret-2",
        "subscribers[0].token_env: expected the NAME of an environment variable",
    ),
    (
        "token_env: TOKEN_ONE",
        "token_env: TOKEN_UNSET",
        "subscribers[0].token_env: environment variable TOKEN_UNSET is not set",
    ),
    (
        "token_env: TOKEN_ONE",
        "token_file: missing.token",
        "subscribers[0].token_file: cannot read secret file",
    ),
    (", secret_env: HOOK_ONE", "", "subscribers[0].channels[0].webhook.secret_env: required"),
    (
        "token_env: TOKEN_ONE",
        "token_file: [tok-Secret-2]",
        "subscribers[0].token_file: expected the path of a file",
    ),
    (
        "token_env: TOKEN_ONE",
        "token_env: TOKEN_ONE\n    token_file: x",
        "subscribers[0].token_file: give one of token_env or token_file",
    ),
    (
        '"https://example.org/h"',
        '"http://example.org/h"',
        "subscribers[0].channels[0].webhook.url: expected an https:// URL",
    ),
    (
        '"https://example.org/h", ',
        '"https://example.org/h", timeout_s: soon, ',
        "subscribers[0].channels[0].webhook.timeout_s: expected a number > 0",
    ),
    (
        "- email: {to: [a@example.org]}",
        "- email: {to: [nobody]}",
        "subscribers[0].channels[1].email.to[0]: expected an e-mail address",
    ),
    (
        "- email: {to: [a@example.org]}",
        "- sms: {to: [a]}",
        "subscribers[0].channels[1].sms: unknown key",
    ),
    (
        "- email: {to: [a@example.org]}",
        "- {email: {to: [a@x.org]}, terminal: {}}",
        "subscribers[0].channels[1]: expected one of",
    ),
    (
        "- email: {to: [a@example.org]}",
        "- kafka: {topic: 'bad topic'}",
        "subscribers[0].channels[1].kafka.topic: expected a Kafka topic",
    ),
    (
        "  host: smtp.example.kz\n",
        "  host: smtp.example.kz\n  port: true\n",
        "smtp.port: expected a port number",
    ),
    ("  host: smtp.example.kz\n", "  hots: smtp.example.kz\n", "smtp.hots: unknown key"),
    (
        "smtp:\n  host: smtp.example.kz\n  username: u\n  password_env: SMTP_PW\n",
        "",
        "smtp: required",
    ),
    ("subscribers:", "subscriber:", "subscriber: unknown key"),
]


@pytest.mark.parametrize(("old", "new", "starts"), BAD, ids=[b[2].split(":")[0] for b in BAD])
def test_each_bad_key_is_named(tmp_path: Path, old: str, new: str, starts: str) -> None:
    assert old in BASE
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, BASE.replace(old, new, 1))
    msg = str(err.value)
    assert msg.startswith(starts), msg
    assert "subs.yaml" in msg
    for secret in BASE_ENV.values():
        assert secret not in msg


def test_errors_give_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"subs\.yaml, line 9\)$"):
        _load(tmp_path, BASE.replace("{grid_km: 5}", "{grid_km: ten}"))


def test_duplicate_subscriber_ids(tmp_path: Path) -> None:
    second = BASE[BASE.index("  - id: one") :]
    with pytest.raises(ConfigError, match=r"^subscribers\[1\]\.id: duplicate id 'one'"):
        _load(tmp_path, BASE + second)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_secret_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "t.token").write_text(content)
    with pytest.raises(ConfigError, match=r"^subscribers\[0\]\.token_file: secret file .* empty"):
        _load(tmp_path, BASE.replace("token_env: TOKEN_ONE", "token_file: t.token"))


def test_secret_file_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "t.token").write_text("tok-from-file\n")
    subs = _load(tmp_path, BASE.replace("token_env: TOKEN_ONE", "token_file: t.token"))
    assert subs.subscribers[0].token == "tok-from-file"


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_subscriptions(tmp_path / "nope.yaml", {})
    with pytest.raises(ConfigError, match=r"line \d"):
        _load(tmp_path, "subscribers: [\n")
    with pytest.raises(ConfigError, match=r"^subscribers: required"):
        _load(tmp_path, "")


def test_alert_kinds_exported() -> None:
    assert "border-crossing" in ALERT_KINDS and "withdrawal" in ALERT_KINDS
    assert len(ALERT_KINDS) == 9


# --- events ------------------------------------------------------------------------


def alert(
    kind: str,
    severity: str = "warning",
    t: int = T0,
    animal: str = "leo-1",
    lon: float | None = 76.95123,
    lat: float | None = 43.24567,
    **details: Any,
) -> dict[str, Any]:
    eid = (
        "alr-"
        + hashlib.sha256(
            f"{animal}|{kind}|{t}|{sorted(details.items())}|{severity}".encode()
        ).hexdigest()[:32]
    )
    return {
        "type": "alert",
        "id": eid,
        "kind": kind,
        "severity": severity,
        "individual-local-identifier": animal,
        "tag-local-identifier": "tag-" + animal,
        "fix-timestamp": iso(t),
        "received-timestamp": iso(t + 95_000),
        "fix-age_s": 95.0,
        "location-long": lon,
        "location-lat": lat,
        "details": details,
    }


def urban(
    transition: str = "enter", severity: str = "warning", t: int = T0, **kw: Any
) -> dict[str, Any]:
    zone = "within 1 km" if transition == "enter" else None
    return alert(
        "urban-edge",
        severity,
        t,
        **{
            "fence-id": "almaty",
            "fence-name": "Almaty",
            "transition": transition,
            "zone": zone,
            "level": 1,
        },
        **kw,
    )


def crossing(a: dict[str, str], b: dict[str, str], t: int = T0, **kw: Any) -> dict[str, Any]:
    return alert(
        "border-crossing",
        "warning",
        t,
        **{"from": a, "to": b, "path": "geodesic", "crossing-timestamp": iso(t - MIN)},
        **kw,
    )


def withdrawal(of: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "alert",
        "id": "alr-w" + of["id"][5:],
        "kind": "withdrawal",
        "severity": "info",
        "individual-local-identifier": of["individual-local-identifier"],
        "tag-local-identifier": of["tag-local-identifier"],
        "withdraws": of["id"],
        "reason": "a late or corrected fix changed the track; the alert no longer holds",
    }


def fix(t: int, animal: str = "leo-1", lon: float = 74.6, lat: float = 42.9) -> dict[str, Any]:
    return {
        "type": "fix",
        "individual-local-identifier": animal,
        "tag-local-identifier": "tag-" + animal,
        "timestamp": iso(t),
        "location-long": lon,
        "location-lat": lat,
        "received-timestamp": iso(t + 30_000),
    }


def sub(sid: str, **kw: Any) -> model.Subscriber:
    kw.setdefault("channels", (model.ChannelSpec("terminal"),))
    return model.Subscriber(id=sid, name=sid, **kw)


def run(
    router: Router, events: list[dict[str, Any]], state: RouterState | None = None
) -> tuple[RouterState, list[model.Delivery]]:
    state = state or RouterState()
    out: list[model.Delivery] = []
    for e in events:
        state, d = router.route_fix(state, e) if e["type"] == "fix" else router.route(state, e)
        out += d
    return state, out


def to(deliveries: list[model.Delivery], sid: str) -> list[str]:
    """Ids of the alerts (or fix times) that reached `sid`."""
    return [d.body.get("id") or d.body["timestamp"] for d in deliveries if d.subscriber_id == sid]


# --- messages ----------------------------------------------------------------------

SAMPLES = [
    crossing(KAZ, KGZ),
    alert("border-approach", toward=KGZ, country=KAZ, distance_m=2350.0, heading_deg=200.0),
    urban("enter", "critical"),
    urban("exit", "info"),
    alert(
        "protected-area", **{"fence-id": "ile", "fence-name": "Ile-Alatau", "transition": "exit"}
    ),
    alert(
        "protected-area",
        "info",
        **{"fence-id": "ile", "fence-name": "Ile-Alatau", "transition": "enter"},
    ),
    alert("home-range-excursion", transition="exit"),
    alert("home-range-excursion", "info", transition="return"),
    alert(
        "immobility",
        "critical",
        transition="start",
        radius_m=40.0,
        **{"since-timestamp": iso(T0 - 86_400_000)},
    ),
    alert("immobility", "info", transition="end"),
    alert("silent-collar", transition="start", **{"last-fix-timestamp": iso(T0 - 3 * 86_400_000)}),
    alert("silent-collar", "info", transition="end"),
    alert("proximity", other="leo-2", distance_m=300.0),
    withdrawal(urban()),
    fix(T0),
]


@pytest.mark.parametrize("language", ["en", "ru", "kk"])
@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.get("kind", "fix"))
def test_every_kind_renders(event: dict[str, Any], language: str) -> None:
    subject, text = render(event, language)
    assert "leo-1" in subject and "leo-1" in text
    assert "\n" not in subject
    if event.get("kind") != "withdrawal":
        assert "2026-03-01 04:00:00 UTC" in text
        assert ("1 min 35 s" if language == "en" else "1 мин 35 с") in text or event[
            "type"
        ] == "fix"
        assert "43.24567°N 76.95123°E" in text or event["type"] == "fix"
    if language != "en":
        assert re.search("[а-яА-Я]", text)


def test_kazakh_falls_back_to_russian() -> None:
    assert render(SAMPLES[0], "kk") == render(SAMPLES[0], "ru")


def test_message_content() -> None:
    s = render(crossing(KAZ, KGZ), "en")[0]
    assert s.startswith("[WARNING] leo-1: crossed the border from Kazakhstan (KAZ) into Kyrgyzstan")
    assert "Кыргызстан" in render(crossing(KAZ, KGZ), "ru")[0]
    assert "withheld" in render(alert("immobility", lon=None, lat=None), "en")[1]
    assert "скрыты" in render(alert("immobility", lon=None, lat=None), "ru")[1]
    assert "alr-" in render(withdrawal(urban()), "en")[0]
    assert "fix age on arrival: 30 s" in render(fix(T0), "en")[1].lower()


# --- router: filters, quiet period, all-clear, withdrawal -----------------------------


def test_filters() -> None:
    subs = model.Subscriptions(
        (
            sub("any"),
            sub("kinds", alerts=model.AlertFilter(kinds=("urban-edge",))),
            sub("animal", alerts=model.AlertFilter(animals=("leo-2",))),
            sub("fence", alerts=model.AlertFilter(fences=("almaty",))),
            sub("kgz", alerts=model.AlertFilter(countries=("KGZ",))),
            sub("critical", alerts=model.AlertFilter(min_severity="critical")),
        )
    )
    events = [
        u := urban(),
        c := crossing(KAZ, KGZ),
        c2 := crossing(KAZ, CHN, t=T0 + MIN),
        a := alert("border-approach", toward=KGZ, country=KAZ, distance_m=900.0),
        i := alert("immobility", "critical", animal="leo-2", transition="start"),
    ]
    _, out = run(Router(subs), events)
    assert to(out, "any") == [e["id"] for e in events]
    assert to(out, "kinds") == [u["id"]]
    assert to(out, "animal") == [i["id"]]
    assert to(out, "fence") == [u["id"]]
    assert to(out, "kgz") == [c["id"], a["id"]]
    assert to(out, "critical") == [i["id"]]
    assert c2["id"] in to(out, "any")


def test_quiet_period_escalation_and_all_clear() -> None:
    s = sub("s", quiet_period_s=30 * 60, alerts=model.AlertFilter(min_severity="warning"))
    router = Router(model.Subscriptions((s,)))
    e1 = urban("enter", "warning", T0)
    e2 = urban("enter", "warning", T0 + 10 * MIN)  # same key, same severity: quiet
    e3 = urban("enter", "critical", T0 + 12 * MIN)  # escalation
    e4 = urban("enter", "warning", T0 + 14 * MIN)  # lower than the critical: quiet
    e5 = urban("exit", "info", T0 + 15 * MIN)  # all-clear despite min_severity warning
    e6 = urban("enter", "warning", T0 + 16 * MIN)  # quiet period ended by the all-clear
    e7 = urban("enter", "warning", T0 + 47 * MIN)  # 31 min later: passes
    _, out = run(router, [e1, e2, e3, e4, e5, e6, e7])
    assert to(out, "s") == [e1["id"], e3["id"], e5["id"], e6["id"], e7["id"]]


def test_all_clear_only_for_what_was_alerted() -> None:
    s = sub("s", alerts=model.AlertFilter(min_severity="warning"))
    _, out = run(Router(model.Subscriptions((s,))), [urban("exit", "info")])
    assert out == []


def test_withdrawal_only_to_who_got_the_alert() -> None:
    subs = model.Subscriptions(
        (
            sub("got", precision=model.Precision("grid", 5.0, 2.0)),
            sub("not", alerts=model.AlertFilter(kinds=("immobility",))),
        )
    )
    router = Router(subs)
    e = urban()
    state, first = run(router, [e])
    state, out = run(router, [withdrawal(e)], state)
    assert [d.subscriber_id for d in out] == ["got"]
    assert out[0].not_before_ms == first[0].not_before_ms == T0 + 2 * 3_600_000
    assert out[0].body["withdraws"] == e["id"]
    # The withdrawn alert's quiet period is gone: its correction goes out at once.
    s2 = sub("q", quiet_period_s=3600)
    r2 = Router(model.Subscriptions((s2,)))
    corrected = urban(t=T0 + MIN)
    _, out = run(r2, [e, withdrawal(e), corrected])
    assert to(out, "q") == [e["id"], withdrawal(e)["id"], corrected["id"]]


def test_delivery_fields() -> None:
    s = sub("s", language="ru", precision=model.Precision("grid", 10.0, 24.0))
    (d,) = run(Router(model.Subscriptions((s,))), [urban()])[1]
    e = urban()
    assert d.id == delivery_id("s", e["id"])
    assert d.id == "dlv-" + hashlib.sha256(f"s|{e['id']}".encode()).hexdigest()[:32]
    assert d.body["delivery-id"] == d.id and d.kind == "alert"
    assert d.body["message"] == {"subject": d.subject, "text": d.text}
    assert d.not_before_ms == T0 + 24 * 3_600_000
    assert d.fix_received_ms == T0 + 95_000
    assert "вход в зону" in d.subject
    assert e["location-long"] == 76.95123  # the input is never modified


def test_distances_are_no_finer_than_the_grid() -> None:
    s = sub("s", precision=model.Precision("grid", 5.0))
    n = sub("n", precision=model.Precision("none"))
    ev = alert("border-approach", toward=KGZ, country=KAZ, distance_m=2351.0)
    _, out = run(Router(model.Subscriptions((s, n))), [ev])
    assert out[0].body["details"]["distance_m"] == 5000.0
    assert "≤ 5.0 km" in out[0].text
    assert out[1].body["details"]["distance_m"] is None
    assert ev["details"]["distance_m"] == 2351.0


def test_redelivered_alert_gives_the_same_delivery() -> None:
    router = Router(model.Subscriptions((sub("s", quiet_period_s=3600),)))
    state, first = run(router, [urban()])
    _, again = run(router, [urban()], state)
    assert again == first


def test_state_round_trips_and_splits_per_animal() -> None:
    router = Router(model.Subscriptions((sub("s", quiet_period_s=3600),)))
    state, _ = run(router, [urban(), urban(animal="leo-2"), crossing(KAZ, KGZ)])
    back = RouterState.from_json(state.to_json())
    assert back == state and back.to_json() == state.to_json()
    parts = [state.for_animal(a) for a in ("leo-1", "leo-2")]
    assert RouterState.merge(parts) == state
    assert RouterState.from_json(b"") == RouterState()
    with pytest.raises(ValueError, match="version"):
        RouterState.from_json(b'{"version": 99, "animals": {}}')


def test_visible_animals() -> None:
    subs = model.Subscriptions(
        (
            sub("all"),
            sub("two", alerts=model.AlertFilter(animals=("leo-1", "leo-2"))),
            sub("kgz-c", alerts=model.AlertFilter(countries=("KGZ",))),
            sub("kgz-h", handoff_countries=("KGZ",)),
        )
    )
    router = Router(subs)
    state, _ = run(router, [crossing(KAZ, KGZ, animal="leo-3"), urban(animal="leo-4")])
    assert router.visible_animals(state, "all") is None
    assert router.visible_animals(state, "two") == {"leo-1", "leo-2"}
    assert router.visible_animals(state, "kgz-c") == {"leo-3"}
    assert router.visible_animals(state, subs.by_id("kgz-h")) == {"leo-3"}
    assert router.may_see(state, "kgz-h", "leo-3") and not router.may_see(state, "kgz-h", "leo-4")
    assert router.may_see(state, "all", "anything")


# --- router: transboundary hand-off ------------------------------------------------


def test_handoff() -> None:
    kgz = sub("kgz", handoff_countries=("KGZ",), alerts=model.AlertFilter(kinds=("immobility",)))
    router = Router(model.Subscriptions((kgz, sub("other"))))
    before = fix(T0 - 10 * MIN)
    approach = alert("border-approach", t=T0 - 5 * MIN, toward=KGZ, country=KAZ, distance_m=800.0)
    into = crossing(KAZ, KGZ, t=T0)
    inside = [fix(T0), fix(T0 + 240 * MIN)]
    immobile = alert("immobility", "critical", T0 + 300 * MIN, transition="start")
    urban_in = urban(t=T0 + 310 * MIN)  # not in their kinds
    out_of = crossing(KGZ, KAZ, t=T0 + 480 * MIN)
    after = fix(T0 + 600 * MIN)
    late = fix(T0 + 470 * MIN)  # arrives late, but was taken inside Kyrgyzstan
    events = [before, approach, into, *inside, immobile, urban_in, out_of, after, late]
    state, out = run(router, events)
    assert to(out, "kgz") == [
        approach["id"],
        into["id"],
        inside[0]["timestamp"],
        inside[1]["timestamp"],
        immobile["id"],
        out_of["id"],
        late["timestamp"],
    ]
    assert all(d.kind == "fix" for d in out if d.subscriber_id == "kgz" and "timestamp" in d.body)
    assert router.visible_animals(state, "kgz") == frozenset()


def test_nothing_about_animals_that_never_come() -> None:
    kgz = sub("kgz", handoff_countries=("KGZ",))
    events = [
        urban(),
        crossing(KAZ, CHN),
        alert("immobility", transition="start"),
        fix(T0 + MIN),
        alert("border-approach", toward=CHN, country=KAZ, distance_m=10.0),
    ]
    state, out = run(Router(model.Subscriptions((kgz,))), events)
    assert out == [] and Router(model.Subscriptions((kgz,))).visible_animals(state, "kgz") == set()


def test_withdrawn_crossing_ends_the_handoff() -> None:
    router = Router(model.Subscriptions((sub("kgz", handoff_countries=("KGZ",)),)))
    into = crossing(KAZ, KGZ)
    state, out = run(router, [into, withdrawal(into), fix(T0 + MIN)])
    assert to(out, "kgz") == [into["id"], withdrawal(into)["id"]]
    assert router.visible_animals(state, "kgz") == frozenset()


def test_handoff_crossing_is_never_quiet() -> None:
    router = Router(
        model.Subscriptions((sub("kgz", handoff_countries=("KGZ",), quiet_period_s=1e6),))
    )
    events = [
        crossing(KAZ, KGZ),
        crossing(KGZ, KAZ, t=T0 + MIN),
        crossing(KAZ, KGZ, t=T0 + 2 * MIN),
    ]
    _, out = run(router, events)
    assert len(out) == 3


# --- properties --------------------------------------------------------------------

COUNTRIES = [KAZ, KGZ, CHN]
SEVERITY = st.sampled_from(model.SEVERITIES)
LON = st.floats(-180, 180, allow_nan=False)
LAT = st.floats(-90, 90, allow_nan=False)


@st.composite
def events(draw: st.DrawFn, n_max: int = 25) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    t = T0
    for _ in range(draw(st.integers(1, n_max))):
        t += draw(st.integers(0, 90)) * MIN
        animal = draw(st.sampled_from(["leo-1", "leo-2"]))
        choice = draw(st.integers(0, 9))
        loc = {"lon": draw(LON), "lat": draw(LAT), "animal": animal}
        if choice <= 3:
            tr = draw(st.sampled_from(["enter", "exit"]))
            out.append(urban(tr, "info" if tr == "exit" else draw(SEVERITY), t, **loc))
        elif choice <= 5:
            a, b = draw(st.permutations(COUNTRIES))[:2]
            out.append(crossing(a, b, t, **loc))
        elif choice == 6:
            tr = draw(st.sampled_from(["start", "end"]))
            out.append(
                alert(
                    "immobility",
                    "info" if tr == "end" else draw(SEVERITY),
                    t,
                    transition=tr,
                    radius_m=55.5,
                    **loc,
                )
            )
        elif choice == 7:
            out.append(fix(t, animal, loc["lon"], loc["lat"]))
        elif choice == 8 and any(e["type"] == "alert" for e in out):
            out.append(withdrawal(draw(st.sampled_from([e for e in out if e["type"] == "alert"]))))
        else:
            out.append(
                alert(
                    "border-approach",
                    draw(SEVERITY),
                    t,
                    toward=draw(st.sampled_from(COUNTRIES)),
                    country=KAZ,
                    distance_m=1234.5,
                    **loc,
                )
            )
    return out


def _subscribers(precision: model.Precision) -> model.Subscriptions:
    return model.Subscriptions(
        (
            sub("all", precision=precision, quiet_period_s=3600),
            sub(
                "warn",
                precision=precision,
                language="ru",
                alerts=model.AlertFilter(min_severity="warning"),
                quiet_period_s=1800,
            ),
            sub("kgz", precision=precision, handoff_countries=("KGZ",), quiet_period_s=600),
        )
    )


def _pairs(obj: Any) -> list[tuple[Any, Any]]:
    """Every coordinate pair anywhere in a body."""
    out = []
    if isinstance(obj, dict):
        for k in ("location-long", "start-location-long", "end-location-long"):
            if k in obj:
                out.append((obj[k], obj[k.replace("long", "lat")]))
        for v in obj.values():
            out += _pairs(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _pairs(v)
    return out


TEXT_COORD = re.compile(r"([0-9.]+)°([NS]) ([0-9.]+)°([EW])")
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(events(), st.sampled_from([1.0, 5.0, 10.0, 50.0, 333.0]))
def test_grid_deliveries_are_no_finer_than_the_grid(evs: list[dict[str, Any]], g: float) -> None:
    _, out = run(Router(_subscribers(model.Precision("grid", g))), evs)
    for d in out:
        for lon, lat in _pairs(d.body):
            assert lon is not None and lat is not None
            x, y = coarsen(np.array([lon]), np.array([lat]), g)
            assert (float(x[0]), float(y[0])) == (lon, lat)
        for m in TEXT_COORD.finditer(d.text):
            lat = float(m[1]) * (1 if m[2] == "N" else -1)
            lon = float(m[3]) * (1 if m[4] == "E" else -1)
            x, y = coarsen(np.array([lon]), np.array([lat]), g)
            assert (float(x[0]), float(y[0])) == (d.body["location-long"], d.body["location-lat"])


@PROPS
@given(events())
def test_precision_none_leaves_no_coordinate(evs: list[dict[str, Any]]) -> None:
    _, out = run(Router(_subscribers(model.Precision("none"))), evs)
    for d in out:
        assert all(p == (None, None) for p in _pairs(d.body))
        assert not TEXT_COORD.search(d.text) and "°" not in d.text
        assert d.body.get("details", {}).get("distance_m") is None


@PROPS
@given(events())
def test_replay_is_deterministic_and_state_serializes(evs: list[dict[str, Any]]) -> None:
    router = Router(_subscribers(model.Precision("exact")))
    state, once = run(router, evs)
    _, twice = run(router, evs)
    assert once == twice
    # A worker restarting from its table (JSON) between any two events changes nothing.
    s, via_json = RouterState(), []
    for e in evs:
        s = RouterState.from_json(s.to_json())
        s, d = router.route_fix(s, e) if e["type"] == "fix" else router.route(s, e)
        via_json += d
    assert via_json == once and s.to_json() == state.to_json()
    # One table entry per animal (partitioned by animal) gives the same deliveries too.
    per_animal: dict[str, RouterState] = {}
    split = []
    for e in evs:
        a = e["individual-local-identifier"]
        st_a = per_animal.get(a, RouterState())
        st_a, d = router.route_fix(st_a, e) if e["type"] == "fix" else router.route(st_a, e)
        per_animal[a], split = st_a, split + d
    assert split == once


@PROPS
@given(events())
def test_quiet_period_never_suppresses_all_clear_or_escalation(evs: list[dict[str, Any]]) -> None:
    router = Router(_subscribers(model.Precision("exact")))
    state = RouterState()
    last: dict[tuple[str, str, str], int] = {}  # (subscriber, animal, target) -> rank delivered
    rank = {s: i for i, s in enumerate(model.SEVERITIES)}
    for e in evs:
        if e["type"] == "fix" or e["kind"] == "withdrawal":
            state, _ = router.route_fix(state, e) if e["type"] == "fix" else router.route(state, e)
            last = {}  # a withdrawal may reset quiet periods: restart the bookkeeping
            continue
        state, out = router.route(state, e)
        got = {d.subscriber_id for d in out}
        d = e["details"]
        target = (
            d.get("fence-id") or (d.get("to") or d.get("toward") or {}).get("code") or e["kind"]
        )
        all_clear = e["severity"] == "info" and d.get("transition") in ("exit", "end")
        for s in ("all", "warn"):
            key = (s, e["individual-local-identifier"], f"{e['kind']}:{target}")
            if all_clear and key in last:
                assert s in got, "all-clear suppressed"
            if not all_clear and key in last and rank[e["severity"]] > last[key]:
                assert s in got, "escalation suppressed"
            if s in got:
                if all_clear:
                    last.pop(key, None)
                else:
                    last[key] = rank[e["severity"]]
