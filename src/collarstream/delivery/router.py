"""Which subscriber gets which alert or fix: pure rules, no I/O, no wall clock.

`Router(subscriptions).route(state, alert) -> (state, deliveries)` and
`route_fix(state, fix) -> (state, deliveries)`. Time comes from the events
(fix-timestamp), so a replay of the same events from the same state gives the same
deliveries, with the same ids. `RouterState` is JSON-serializable and holds per-animal
entries only: the Faust agent keeps one animal's state per key in a table partitioned
like the alerts topic (keyed by animal); `RouterState.merge` joins them for the API.

Rules, per subscriber:

* filter: each non-empty list of `alerts` must match (kinds; animals; fences by
  details["fence-id"]; countries by a crossing's from/to or an approach's toward);
  severity >= min_severity.
* quiet period per (subscriber, animal, target), target = fence id, country code or
  kind: after a delivery, alerts for the same target of the same or lower severity
  whose fix is within quiet_period_s of the delivered one are suppressed. A higher
  severity passes (escalation). An all-clear (severity info and transition
  exit/return/end, or a protected-area re-entry) for a target this subscriber was
  alerted about always passes, whatever its filter, and ends the quiet period.
* withdrawal: only to subscribers who got the withdrawn alert, never before it; it also
  undoes that alert's quiet period and hand-off effects.
* an alert already delivered to a subscriber (same id: a redelivered batch) is
  delivered again with the same delivery id, which receivers drop; so a crash between
  the table write and the sends loses nothing.
* hand-off (subscribers with handoff countries): a crossing into one of its countries
  opens a hand-off of that animal at the crossing's fix time; fixes inside an open
  interval, and alerts (by its filter) while the animal is handed off, go to it. A
  crossing out to a country not its own closes the interval. Crossings from or into
  its countries and approaches toward them always go to it; nothing else does.

Every delivery body is `precision.redact_event(event)` with distances (`*_m` in
details) rounded up to a multiple of the grid (removed at precision none), plus "message" and
"delivery-id"; the text is rendered from that redacted body.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from collarstream.delivery import messages, model
from collarstream.delivery.precision import held_until_ms, redact_event
from collarstream.timefmt import parse_ms

__all__ = ["Router", "RouterState", "delivery_id"]

Event = dict[str, Any]
_RANK = {s: i for i, s in enumerate(model.SEVERITIES)}
# Withdrawals follow their alert within the tracker's live window: a few hundred alerts
# per animal and subscriber is far more than that window holds.
DELIVERED_MAX = 256
HANDOFF_MAX = 16  # hand-off intervals remembered per animal and subscriber (late fixes)
_ALL_CLEAR = frozenset({"exit", "return", "end"})
_STATE_VERSION = 1


def delivery_id(subscriber_id: str, event_id: str) -> str:
    """Deterministic: the same subscriber and event give the same id, on replay too."""
    return "dlv-" + hashlib.sha256(f"{subscriber_id}|{event_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RouterState:
    """Per animal: quiet periods, delivered alert ids and hand-off intervals.

    JSON-shaped (`animals[animal]` is {"quiet", "delivered", "handoff"}); treat as
    opaque outside this module and never mutate: `route` returns a new state.
    """

    animals: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {"version": _STATE_VERSION, "animals": dict(self.animals)}
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str | None) -> RouterState:
        if not data:
            return cls()
        doc = orjson.loads(data)
        if doc.get("version") != _STATE_VERSION:
            raise ValueError(f"router state version {doc.get('version')!r} is not supported")
        return cls(animals=doc["animals"])

    def for_animal(self, animal: str) -> RouterState:
        """Only this animal's entry (what a table keyed by animal stores)."""
        return RouterState({animal: self.animals[animal]} if animal in self.animals else {})

    @staticmethod
    def merge(states: Iterable[RouterState]) -> RouterState:
        """Per-animal states joined (a later state wins for the same animal)."""
        out: dict[str, dict[str, Any]] = {}
        for s in states:
            out.update(s.animals)
        return RouterState(out)


def _empty() -> dict[str, Any]:
    return {"quiet": {}, "delivered": {}, "handoff": {}}


class Router:
    def __init__(self, subscriptions: model.Subscriptions) -> None:
        self.subscriptions = subscriptions

    # --- public ----------------------------------------------------------------

    def route(self, state: RouterState, event: Event) -> tuple[RouterState, list[model.Delivery]]:
        """Deliveries for one event of the alerts topic (other types give none)."""
        animal = event.get("individual-local-identifier")
        if event.get("type") != "alert" or not isinstance(animal, str):
            return state, []
        entry = copy.deepcopy(state.animals.get(animal)) or _empty()
        out = []
        for sub in self.subscriptions.subscribers:
            if event.get("kind") == "withdrawal":
                nb = _withdraw(entry, sub.id, str(event.get("withdraws", "")))
                if nb is not None:
                    out.append(self._delivery(sub, event, "alert", nb))
                    _remember(entry, sub.id, str(event["id"]), nb)
            elif self._decide(entry, sub, event):
                nb = _not_before(event, sub.precision)
                out.append(self._delivery(sub, event, "alert", nb))
                _remember(entry, sub.id, str(event["id"]), nb)
        return RouterState({**state.animals, animal: entry}), out

    def route_fix(self, state: RouterState, fix: Event) -> tuple[RouterState, list[model.Delivery]]:
        """Deliveries of one fix record to the subscribers it is handed off to."""
        animal, stamp = fix.get("individual-local-identifier"), fix.get("timestamp")
        entry = state.animals.get(animal) if isinstance(animal, str) else None
        if entry is None or not stamp:
            return state, []
        t = parse_ms(str(stamp))
        out = []
        for sub in self.subscriptions.subscribers:
            if any(_contains(iv, t) for iv in entry["handoff"].get(sub.id, ())):
                out.append(self._delivery(sub, fix, "fix", held_until_ms(t, sub.precision)))
        return state, out

    def visible_animals(
        self, state: RouterState, subscriber: model.Subscriber | str
    ) -> frozenset[str] | None:
        """Animals this subscriber may see now (None: all), for the HTTP API."""
        sub = self._sub(subscriber)
        f = sub.alerts
        if sub.handoff_countries:
            seen = {a for a, e in state.animals.items() if _open(e["handoff"].get(sub.id))}
        elif f.countries:
            seen = {a for a, e in state.animals.items() if e["delivered"].get(sub.id)}
        elif f.animals:
            return frozenset(f.animals)
        else:
            return None
        return frozenset(seen & set(f.animals) if f.animals else seen)

    def may_see(self, state: RouterState, subscriber: model.Subscriber | str, animal: str) -> bool:
        seen = self.visible_animals(state, subscriber)
        return seen is None or animal in seen

    # --- rules -----------------------------------------------------------------

    def _sub(self, subscriber: model.Subscriber | str) -> model.Subscriber:
        if isinstance(subscriber, str):
            return self.subscriptions.by_id(subscriber)
        return subscriber

    def _decide(self, entry: dict[str, Any], sub: model.Subscriber, event: Event) -> bool:
        eid, t = str(event.get("id")), _fix_ms(event)
        if any(d[0] == eid for d in entry["delivered"].get(sub.id, ())):
            return True  # a repeat: same delivery id again, receivers drop it
        key = f"{sub.id}|{_target(event)}"
        if _is_all_clear(event):
            if entry["quiet"].pop(key, None) is not None:
                return True
            return self._wanted(entry, sub, event, t) == "filter"
        why = self._wanted(entry, sub, event, t)
        if why == "handoff":
            entry["quiet"][key] = [t, _rank(event), eid]
            return True
        return why is not None and _quiet_passes(entry, key, sub, event, t)

    def _wanted(
        self, entry: dict[str, Any], sub: model.Subscriber, event: Event, t: int | None
    ) -> str | None:
        """Why this subscriber wants the event: "handoff" (bypasses the quiet period),
        "filter", or None."""
        if not sub.handoff_countries:
            return "filter" if _matches(sub.alerts, event) else None
        mine = set(sub.handoff_countries)
        if event.get("kind") == "border-crossing":
            if _handoff_crossing(entry, sub.id, event, t, mine):
                return "handoff"
        elif event.get("kind") == "border-approach" and _codes(event) & mine:
            return "filter"
        ivs = entry["handoff"].get(sub.id, ())
        handed = t is not None and any(_contains(iv, t) for iv in ivs)
        return "filter" if handed and _matches(sub.alerts, event) else None

    def _delivery(
        self, sub: model.Subscriber, event: Event, kind: str, not_before: int
    ) -> model.Delivery:
        did = delivery_id(sub.id, _event_id(event))
        body = _blur(redact_event(event, sub.precision), sub.precision)
        subject, text = messages.render(body, sub.language, sub.precision)
        body["message"] = {"subject": subject, "text": text}
        body["delivery-id"] = did
        received = event.get("received-timestamp")
        return model.Delivery(
            id=did,
            subscriber_id=sub.id,
            kind="fix" if kind == "fix" else "alert",
            body=body,
            subject=subject,
            text=text,
            not_before_ms=not_before,
            fix_received_ms=parse_ms(str(received)) if received else None,
        )


# --- helpers (pure, on the JSON-shaped entry) --------------------------------------


def _event_id(event: Event) -> str:
    """An alert's id; a fix record has none, so its identity is (animal, fix time)."""
    if event.get("id"):
        return str(event["id"])
    animal, t = event.get("individual-local-identifier"), parse_ms(str(event["timestamp"]))
    return f"fix|{animal}|{t}"


def _rank(event: Event) -> int:
    # An unknown severity ranks as critical: better one message too many than a lost one.
    return _RANK.get(str(event.get("severity")), len(_RANK) - 1)


def _fix_ms(event: Event) -> int | None:
    stamp = event.get("fix-timestamp") or event.get("received-timestamp")
    return parse_ms(str(stamp)) if stamp else None


def _codes(event: Event) -> set[str]:
    d = event.get("details") or {}
    keys = {"border-crossing": ("from", "to"), "border-approach": ("toward",)}
    out = set()
    for k in keys.get(str(event.get("kind")), ()):
        c = d.get(k)
        if isinstance(c, dict) and c.get("code"):
            out.add(str(c["code"]))
    return out


def _code(event: Event, side: str) -> str | None:
    c = (event.get("details") or {}).get(side)
    return str(c["code"]) if isinstance(c, dict) and c.get("code") else None


def _target(event: Event) -> str:
    kind, d = str(event.get("kind")), event.get("details") or {}
    if d.get("fence-id") is not None:
        return f"{kind}:{d['fence-id']}"
    side = {"border-crossing": "to", "border-approach": "toward"}.get(kind)
    code = _code(event, side) if side else None
    return f"{kind}:{code}" if code else kind


def _is_all_clear(event: Event) -> bool:
    if event.get("severity") != "info":
        return False
    transition = (event.get("details") or {}).get("transition")
    if event.get("kind") == "protected-area":
        return transition == "enter"  # back inside is the good news
    return transition in _ALL_CLEAR


def _matches(f: model.AlertFilter, event: Event) -> bool:
    d = event.get("details") or {}
    return (
        (not f.kinds or event.get("kind") in f.kinds)
        and (not f.animals or event.get("individual-local-identifier") in f.animals)
        and (not f.fences or d.get("fence-id") in f.fences)
        and (not f.countries or bool(_codes(event) & set(f.countries)))
        and _rank(event) >= _RANK[f.min_severity]
    )


def _quiet_passes(
    entry: dict[str, Any], key: str, sub: model.Subscriber, event: Event, t: int | None
) -> bool:
    rank, last = _rank(event), entry["quiet"].get(key)
    same_or_lower = last is not None and last[0] is not None and rank <= last[1]
    # abs: a late-arriving alert about an earlier fix is as stale as a later one.
    if same_or_lower and t is not None and abs(t - last[0]) < sub.quiet_period_s * 1000:
        return False
    entry["quiet"][key] = [t, rank, str(event.get("id"))]
    return True


def _handoff_crossing(
    entry: dict[str, Any], sid: str, event: Event, t: int | None, mine: set[str]
) -> bool:
    """Opens or closes a hand-off; True if the crossing involves this subscriber."""
    frm, to = _code(event, "from"), _code(event, "to")
    if to not in mine and frm not in mine:
        return False
    ivs = entry["handoff"].setdefault(sid, [])
    eid = str(event.get("id"))
    if to in mine and not _open(ivs) and t is not None:
        ivs.append([to, t, None, eid, None])
        del ivs[:-HANDOFF_MAX]
    elif to not in mine and _open(ivs) and t is not None:
        ivs[-1][2], ivs[-1][4] = max(t, ivs[-1][1]), eid
    return True


def _open(ivs: list[list[Any]] | None) -> bool:
    return bool(ivs) and ivs[-1][2] is None  # type: ignore[index]


def _contains(iv: list[Any], t: int) -> bool:
    return iv[1] <= t and (iv[2] is None or t < iv[2])


def _withdraw(entry: dict[str, Any], sid: str, wid: str) -> int | None:
    """Undo what alert `wid` did for this subscriber; its not-before, or None if the
    subscriber never got it."""
    got = [d for d in entry["delivered"].get(sid, ()) if d[0] == wid]
    if not got:
        return None
    entry["quiet"] = {
        k: v for k, v in entry["quiet"].items() if not (k.startswith(f"{sid}|") and v[2] == wid)
    }
    ivs = entry["handoff"].get(sid, [])
    ivs[:] = [iv for iv in ivs if iv[3] != wid]
    for iv in ivs:
        if iv[4] == wid:
            iv[2], iv[4] = None, None
    return int(got[0][1])


def _remember(entry: dict[str, Any], sid: str, eid: str, not_before: int) -> None:
    seen = entry["delivered"].setdefault(sid, [])
    if not any(d[0] == eid for d in seen):
        seen.append([eid, not_before])
        del seen[:-DELIVERED_MAX]


def _not_before(event: Event, p: model.Precision) -> int:
    if event.get("location-long") is None and event.get("location-lat") is None:
        return 0
    t = _fix_ms(event)
    return 0 if t is None else held_until_ms(t, p)


def _blur(body: Event, p: model.Precision) -> Event:
    """A copy whose distances in details are no finer than the grid: a distance to a
    known border or fence would otherwise narrow a coarsened location to a line."""
    body = dict(body)
    d = body.get("details")
    if p.mode == "exact" or not isinstance(d, dict):
        return body
    step_m = p.grid_km * 1000.0
    body["details"] = {
        k: (_round_to(v, step_m) if p.mode == "grid" else None)
        if k.endswith("_m") and isinstance(v, int | float) and not isinstance(v, bool)
        else v
        for k, v in d.items()
    }
    return body


def _round_to(v: float, step: float) -> float:
    # Up, not to nearest: "within 5 km" stays true, and never reads "0 m from the border".
    return float(math.ceil(v / step) * step)
