"""Human messages for alerts and hand-off fixes, in English and Russian.

`render(event, language)` -> (subject, text). It formats what it is given and nothing
else, so callers pass the event already redacted to the subscriber's precision
(`precision.redact_event`): a coordinate it prints is never finer than the event's,
and a missing location reads "withheld". Given the subscriber's `Precision`, it prints
coordinates with only as many decimals as the grid supports (and the printed value
still lies in the same grid cell, so it coarsens to the same centre).

Kazakh (`kk`) falls back to Russian, which every Kazakh reader of these alerts reads:
a poor machine-made Kazakh text would be worse than none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from collarstream.delivery.model import Precision
from collarstream.delivery.precision import KM_PER_DEG
from collarstream.timefmt import iso, parse_ms

__all__ = ["coordinate_decimals", "render"]

Event = dict[str, Any]
_EXACT_DECIMALS = 5  # ~1 m: finer than any collar's accuracy

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "info": "INFO", "warning": "WARNING", "critical": "CRITICAL",
        "animal": "Animal", "collar": "collar", "fix_time": "Fix time",
        "fix_age": "Fix age on arrival", "location": "Location", "withheld": "withheld",
        "grid": "{g:g} km grid", "severity": "Severity", "id": "Alert id",
        "h": "h", "min": "min", "s": "s", "m": "m", "km": "km", "unknown": "unknown",
    },
    "ru": {
        "info": "ИНФО", "warning": "ВНИМАНИЕ", "critical": "КРИТИЧНО",
        "animal": "Животное", "collar": "ошейник", "fix_time": "Время фикса",
        "fix_age": "Задержка поступления", "location": "Координаты", "withheld": "скрыты",
        "grid": "сетка {g:g} км", "severity": "Важность", "id": "Id оповещения",
        "h": "ч", "min": "мин", "s": "с", "m": "м", "km": "км", "unknown": "неизвестно",
    },
}  # fmt: skip


def render(event: Event, language: str, precision: Precision | None = None) -> tuple[str, str]:
    """(subject, text) for an alert or fix record, in `language` (en, ru; kk -> ru)."""
    lang = "en" if language == "en" else "ru"
    w = _WORDS[lang]
    animal = str(event.get("individual-local-identifier", "?"))
    if event.get("type") == "fix":
        headline = _FIX[lang]
        severity = None
    else:
        kind = str(event.get("kind", ""))
        details = event.get("details") or {}
        headline = _HEADLINES.get(kind, _other)(lang, details, event, precision)
        severity = str(event.get("severity", "info"))
    tag = f"[{w[severity]}] " if severity in ("info", "warning", "critical") else ""
    subject = f"{tag}{animal}: {headline}"
    lines = [headline, "", f"{w['animal']}: {animal} ({w['collar']} {_tag(event, w)})"]
    lines += _when(event, w)
    if "location-long" in event or "location-lat" in event:
        lines.append(f"{w['location']}: {_where(event, w, precision)}")
    if severity is not None:
        lines += [f"{w['severity']}: {w[severity]}", f"{w['id']}: {event.get('id', '?')}"]
    return subject, "\n".join(lines) + "\n"


def coordinate_decimals(p: Precision | None) -> int:
    """Decimals that keep a printed coordinate inside its grid cell.

    A cell is at least `grid_km` tall and wide, i.e. at least grid_km / KM_PER_DEG
    degrees; rounding moves a value by at most half a unit of the last decimal, so a
    unit of at most half the cell's half-size leaves the cell centre in its cell.
    """
    if p is None or p.mode != "grid":
        return _EXACT_DECIMALS
    half_cell_deg = 0.5 * p.grid_km / KM_PER_DEG
    return min(_EXACT_DECIMALS, max(0, math.ceil(-math.log10(half_cell_deg))))


def _tag(event: Event, w: dict[str, str]) -> str:
    return str(event.get("tag-local-identifier") or w["unknown"])


def _when(event: Event, w: dict[str, str]) -> list[str]:
    stamp = event.get("fix-timestamp") or event.get("timestamp")
    if not stamp:
        return []
    fix_ms = parse_ms(str(stamp))
    out = [f"{w['fix_time']}: {_utc(fix_ms)}"]
    age = event.get("fix-age_s")
    if age is None and event.get("received-timestamp"):
        age = (parse_ms(str(event["received-timestamp"])) - fix_ms) / 1000.0
    if age is not None:
        out.append(f"{w['fix_age']}: {_duration(float(age), w)}")
    return out


def _utc(ms: int) -> str:
    s = iso(ms)
    return f"{s[:10]} {s[11:19]} UTC"


def _duration(seconds: float, w: dict[str, str]) -> str:
    sign, t = ("-" if seconds < 0 else ""), round(abs(seconds))
    h, rest = divmod(t, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{sign}{h} {w['h']} {m} {w['min']}"
    if m:
        return f"{sign}{m} {w['min']} {s} {w['s']}"
    return f"{sign}{s} {w['s']}"


def _where(event: Event, w: dict[str, str], p: Precision | None) -> str:
    lon, lat = event.get("location-long"), event.get("location-lat")
    if lon is None or lat is None or (p is not None and p.mode == "none"):
        return w["withheld"]
    d = coordinate_decimals(p)
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    text = f"{abs(float(lat)):.{d}f}°{ns} {abs(float(lon)):.{d}f}°{ew}"
    if p is not None and p.mode == "grid":
        text += f" ({w['grid'].format(g=p.grid_km)})"
    return text


def _distance(v: Any, w: dict[str, str], p: Precision | None = None) -> str:
    if v is None:
        return w["withheld"]
    m = float(v)
    text = f"{m:.0f} {w['m']}" if m < 1000 else f"{m / 1000:.1f} {w['km']}"
    # The router rounds distances up to the grid: say it is an upper bound.
    return f"≤ {text}" if p is not None and p.mode == "grid" and m > 0 else text


def _country(c: Any, lang: str) -> str:
    if not isinstance(c, dict):
        return str(c)
    name = c.get("name_ru") if lang == "ru" else c.get("name")
    return f"{name or c.get('code', '?')} ({c.get('code', '?')})"


_FIX = {"en": "new position (transboundary hand-off)", "ru": "новое местоположение (передача)"}

Headline = Callable[[str, dict[str, Any], Event, Precision | None], str]


def _crossing(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    a, b = _country(d.get("from"), lang), _country(d.get("to"), lang)
    return (
        f"crossed the border from {a} into {b}" if lang == "en" else f"переход границы: {a} → {b}"
    )


def _approach(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    c, dist = _country(d.get("toward"), lang), _distance(d.get("distance_m"), _WORDS[lang], p)
    if lang == "en":
        return f"approaching the border of {c}, {dist} away"
    return f"приближение к границе: {c}, расстояние {dist}"


def _urban(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    fence, zone = d.get("fence-name") or d.get("fence-id"), d.get("zone")
    if d.get("transition") == "exit":
        if lang == "en":
            return f"left every zone of {fence} (all clear)"
        return f"животное покинуло все зоны «{fence}» (отбой)"
    return (
        f"entered zone '{zone}' of {fence}" if lang == "en" else f"вход в зону «{zone}» ({fence})"
    )


def _protected(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    fence = d.get("fence-name") or d.get("fence-id")
    if d.get("transition") == "enter":
        if lang == "en":
            return f"back inside protected area {fence}"
        return f"животное вернулось на охраняемую территорию «{fence}»"
    if lang == "en":
        return f"left protected area {fence}"
    return f"животное покинуло охраняемую территорию «{fence}»"


def _excursion(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    if d.get("transition") == "return":
        return (
            "returned to its home range" if lang == "en" else "животное вернулось на свой участок"
        )
    return "left its home range" if lang == "en" else "животное вышло за пределы своего участка"


def _immobility(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    w = _WORDS[lang]
    if d.get("transition") == "end":
        return "moving again" if lang == "en" else "животное снова перемещается"
    r, since = _distance(d.get("radius_m"), w, p), _stamp(d.get("since-timestamp"), w)
    if lang == "en":
        return f"has stayed within {r} since {since} (check for mortality or a snare)"
    return f"животное не перемещается дальше {r} с {since} (проверить: гибель или петля)"


def _silent(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    if d.get("transition") == "end":
        return "collar reporting again" if lang == "en" else "ошейник снова передаёт данные"
    last = _stamp(d.get("last-fix-timestamp"), _WORDS[lang])
    return f"collar silent since {last}" if lang == "en" else f"нет данных от ошейника с {last}"


def _proximity(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    other = d.get("other")
    if isinstance(other, dict):
        other = other.get("individual-local-identifier", "?")
    dist = _distance(d.get("distance_m"), _WORDS[lang], p)
    return f"within {dist} of {other}" if lang == "en" else f"рядом с {other}: {dist}"


def _withdrawal(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    wid = e.get("withdraws") or d.get("withdraws") or "?"
    if lang == "en":
        return f"alert {wid} is withdrawn: a late or corrected fix changed the track"
    return f"оповещение {wid} отозвано: поздний или исправленный фикс изменил трек"


def _other(lang: str, d: dict[str, Any], e: Event, p: Precision | None = None) -> str:
    kind = e.get("kind", "?")
    return f"alert '{kind}'" if lang == "en" else f"оповещение «{kind}»"


def _stamp(v: Any, w: dict[str, str]) -> str:
    if not v:
        return w["unknown"]
    try:
        return _utc(parse_ms(str(v)))
    except ValueError:
        return w["unknown"]


_HEADLINES: dict[str, Headline] = {
    "border-crossing": _crossing,
    "border-approach": _approach,
    "urban-edge": _urban,
    "protected-area": _protected,
    "home-range-excursion": _excursion,
    "immobility": _immobility,
    "silent-collar": _silent,
    "proximity": _proximity,
    "withdrawal": _withdrawal,
}
