"""Recent state per animal for the HTTP API, fed from the pipeline's output events.

`LiveView` is a bounded, in-memory, per-worker cache: it holds exact locations and
never leaves the process. Feed it the dicts that go out on the steps, alerts and
home-ranges topics (`ingest`); query it with a `Precision` and a time. Every query
returns an RFC 7946 FeatureCollection (lon, lat; WGS84; no `crs`) that is already at
that precision and withholds what is younger than its `delay_h`:

* mode "exact": as measured; "grid": every position is the centre of its grid cell
  (`precision.redact_geometry`/`redact_event`); "none": features keep their
  properties (animal, times) but their geometry is null (RFC 7946 section 3.2).
* a fix taken at `t` is shown only once `now >= held_until_ms(t, p)`; a home range
  only once its newest fix (`computed-through-timestamp`) is that old; an alert once
  its fix is; a withdrawal once the alert it withdraws is (or, unknown, once the
  withdrawal itself is).

Positions come from step end points (and the start point of each step, so the first
fix of a burst counts), deduplicated by time, the most recently ingested version of a
step winning: a correction re-sends a step's id with new content, and a withdrawn
step takes its points with it unless another step still has them. Step attributes
(distance, heading) are never exposed: with a coarsened point they would give the
exact one back.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from collarstream.delivery.model import Precision
from collarstream.delivery.precision import held_until_ms, redact_event, redact_geometry
from collarstream.timefmt import iso, parse_ms

__all__ = ["LiveView"]

ANIMAL = "individual-local-identifier"
GeoJSON = dict[str, Any]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class _Step:
    seq: int  # ingestion order: later wins on equal times
    t0: int
    t1: int
    start: tuple[float, float]
    end: tuple[float, float]


@dataclass(frozen=True)
class _Alert:
    seq: int
    as_of_ms: int  # fix time (or, unknown, when we learnt of it): what delay_h is held against
    received_ms: int
    event: dict[str, Any]


@dataclass
class _Animal:
    steps: dict[str, _Step] = field(default_factory=dict)
    home_ranges: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    alerts: dict[str, _Alert] = field(default_factory=dict)


class LiveView:
    """Recent positions, home ranges and alerts per animal (bounded; see module doc)."""

    def __init__(
        self,
        *,
        max_steps: int = 1000,
        max_home_ranges: int = 8,
        max_alerts: int = 200,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        # 1000 steps is ~5.5 months of a 4-hourly collar; 8 home ranges, a delay_h of
        # weeks at 12 fixes per estimate. Both keep memory at a few hundred kB per animal.
        self.max_steps = max_steps
        self.max_home_ranges = max_home_ranges
        self.max_alerts = max_alerts
        self._now_ms = now_ms
        self._seq = itertools.count()
        self._animals: dict[str, _Animal] = {}

    # ---- feeding -------------------------------------------------------------------

    def ingest(self, event: dict[str, Any]) -> None:
        """Take one output event (step, alert or home range); others are ignored."""
        animal = event.get(ANIMAL)
        if not isinstance(animal, str) or not animal:
            return
        kind = event.get("type")
        if kind == "step":
            self._step(animal, event)
        elif kind == "alert":
            self._alert(animal, event)
        elif kind == "home-range":
            self._home_range(animal, event)

    def ingest_many(self, events: Iterable[dict[str, Any]]) -> None:
        for ev in events:
            self.ingest(ev)

    def animals(self) -> list[str]:
        return sorted(self._animals)

    def _state(self, animal: str) -> _Animal:
        return self._animals.setdefault(animal, _Animal())

    def _step(self, animal: str, ev: dict[str, Any]) -> None:
        st = self._state(animal)
        sid = str(ev.get("id"))
        if ev.get("status") == "withdrawn":
            st.steps.pop(sid, None)
            return
        st.steps[sid] = _Step(
            next(self._seq),
            parse_ms(ev["start-timestamp"]),
            parse_ms(ev["end-timestamp"]),
            (float(ev["start-location-long"]), float(ev["start-location-lat"])),
            (float(ev["end-location-long"]), float(ev["end-location-lat"])),
        )
        if len(st.steps) > self.max_steps:
            del st.steps[min(st.steps, key=lambda k: st.steps[k].t1)]

    def _alert(self, animal: str, ev: dict[str, Any]) -> None:
        st = self._state(animal)
        now = self._now_ms()
        if ev.get("kind") == "withdrawal":
            gone = st.alerts.pop(str(ev.get("withdraws")), None)
            as_of = gone.as_of_ms if gone is not None else now
        else:
            as_of = parse_ms(ev["fix-timestamp"]) if ev.get("fix-timestamp") else now
        rec = ev.get("received-timestamp")
        received = parse_ms(rec) if isinstance(rec, str) else now
        st.alerts[str(ev.get("id"))] = _Alert(next(self._seq), as_of, received, dict(ev))
        if len(st.alerts) > self.max_alerts:
            del st.alerts[min(st.alerts, key=lambda k: (st.alerts[k].as_of_ms, st.alerts[k].seq))]

    def _home_range(self, animal: str, ev: dict[str, Any]) -> None:
        st = self._state(animal)
        through = parse_ms(ev["computed-through-timestamp"])
        st.home_ranges[str(ev.get("id"))] = (through, dict(ev))
        if len(st.home_ranges) > self.max_home_ranges:
            del st.home_ranges[min(st.home_ranges, key=lambda k: st.home_ranges[k][0])]

    # ---- queries -------------------------------------------------------------------

    def _cutoff(self, p: Precision, now_ms: int | None) -> int:
        """Newest fix time this precision may see now: t <= cutoff iff held_until_ms(t) <= now."""
        now = self._now_ms() if now_ms is None else now_ms
        return now - held_until_ms(0, p)  # held_until_ms(0, p) is delay_h in ms

    def _points(self, animal: str) -> list[tuple[int, float, float]]:
        """(t_ms, lon, lat) of every step point, by time, latest-ingested version per time."""
        st = self._animals.get(animal)
        if st is None:
            return []
        best: dict[int, tuple[int, tuple[float, float]]] = {}
        for s in st.steps.values():
            for t, xy in ((s.t0, s.start), (s.t1, s.end)):
                if t not in best or best[t][0] < s.seq:
                    best[t] = (s.seq, xy)
        return [(t, xy[0], xy[1]) for t, (_, xy) in sorted(best.items())]

    def positions(self, animals: Iterable[str], p: Precision, now_ms: int | None = None) -> GeoJSON:
        """The latest visible position of each animal: one Point feature per animal."""
        cutoff = self._cutoff(p, now_ms)
        feats = []
        for animal in sorted(set(animals)):
            visible = [pt for pt in self._points(animal) if pt[0] <= cutoff]
            if visible:
                t, lon, lat = visible[-1]
                props = {ANIMAL: animal, "timestamp": iso(t)}
                feats.append(_feature(_geom_point(lon, lat), props, p))
        return _collection(feats)

    def track(self, animal: str, hours: float, p: Precision, now_ms: int | None = None) -> GeoJSON:
        """The last `hours` of track this precision may see, i.e. ending delay_h ago:
        a LineString feature (when there are two or more points), then a Point each."""
        cutoff = self._cutoff(p, now_ms)
        start = cutoff - int(hours * 3_600_000)
        pts = [pt for pt in self._points(animal) if start <= pt[0] <= cutoff]
        feats = []
        if len(pts) >= 2:
            line = {"type": "LineString", "coordinates": [[x, y] for _, x, y in pts]}
            props = {
                ANIMAL: animal,
                "start-timestamp": iso(pts[0][0]),
                "end-timestamp": iso(pts[-1][0]),
                "n_points": len(pts),
            }
            feats.append(_feature(line, props, p))
        for t, x, y in pts:
            feats.append(_feature(_geom_point(x, y), {ANIMAL: animal, "timestamp": iso(t)}, p))
        return _collection(feats)

    def home_ranges(self, animal: str, p: Precision, now_ms: int | None = None) -> GeoJSON:
        """The newest visible home-range estimate: one feature per method and level."""
        cutoff = self._cutoff(p, now_ms)
        st = self._animals.get(animal)
        snaps = [] if st is None else [v for v in st.home_ranges.values() if v[0] <= cutoff]
        if not snaps:
            return _collection([])
        _, ev = max(snaps, key=lambda v: v[0])
        feats = []
        for r in ev.get("ranges", ()):
            props = {
                ANIMAL: animal,
                "method": r.get("method"),
                "level": r.get("level"),
                "area_km2": r.get("area_km2"),
                "bandwidth_m": r.get("bandwidth_m"),
                "computed-through-timestamp": ev.get("computed-through-timestamp"),
                "n_fixes": ev.get("n_fixes"),
            }
            feats.append(_feature(r.get("geometry"), props, p))
        return _collection(feats)

    def alerts(
        self,
        animals: Iterable[str],
        p: Precision,
        since_ms: int | None = None,
        now_ms: int | None = None,
    ) -> GeoJSON:
        """Recent alerts (withdrawals included, without geometry) of these animals, oldest
        first. `available-timestamp` is when this precision could first see an alert
        (its fix time plus delay_h, not before it was received); `since_ms` filters on
        it, so a client polling with the previous response's newest value misses no
        late-arriving alert."""
        now = self._now_ms() if now_ms is None else now_ms
        cutoff = self._cutoff(p, now)
        rows = []
        for animal in set(animals):
            st = self._animals.get(animal)
            for a in () if st is None else st.alerts.values():
                available = max(a.received_ms, held_until_ms(a.as_of_ms, p))
                if a.as_of_ms <= cutoff and (since_ms is None or available >= since_ms):
                    rows.append((available, a.as_of_ms, a.seq, a))
        rows.sort(key=lambda r: r[:3])
        return _collection([_alert_feature(a, available, p) for available, _, _, a in rows])


def _geom_point(lon: float, lat: float) -> GeoJSON:
    return {"type": "Point", "coordinates": [lon, lat]}


def _feature(geometry: GeoJSON | None, props: dict[str, Any], p: Precision) -> GeoJSON:
    return {"type": "Feature", "geometry": redact_geometry(geometry, p), "properties": props}


def _collection(features: list[GeoJSON]) -> GeoJSON:
    return {"type": "FeatureCollection", "features": features}


def _alert_feature(a: _Alert, available_ms: int, p: Precision) -> GeoJSON:
    # redact_event coarsens or removes every coordinate pair anywhere in the alert
    # (details included); the pair then moves into the geometry.
    ev = redact_event(a.event, p)
    lon, lat = ev.get("location-long"), ev.get("location-lat")
    props = {
        k: v
        for k, v in ev.items()
        if k not in {"type", "location-long", "location-lat"} and not k.startswith("_")
    }
    props["available-timestamp"] = iso(available_ms)
    geom = None if lon is None or lat is None else _geom_point(float(lon), float(lat))
    # Already at precision `p`; coarsening a cell centre again is a no-op.
    return {"type": "Feature", "geometry": geom, "properties": props}
