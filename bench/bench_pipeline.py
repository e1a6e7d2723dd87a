"""Live-pipeline benchmark: a real `collarstream worker` child process on a real broker.

    python bench/bench_pipeline.py [--fixes N] [--rate R] [--repeats K] [--duration S]
                                   [--upload U]

Broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else an embedded Tansu (stopped at the end).

1. Throughput. N fixes (collar uploads of ~6 fixes, 200 animals cycled from
   ``collarstream.simulate``) go to a fresh ``<prefix>.fixes.raw`` once the worker has
   joined and tracked a sentinel upload (start-up and the group join excluded); the
   clock runs from the first send, as fast as librdkafka produces, until every step a
   direct replay of the same fixes predicts is on ``<prefix>.steps``: sustained
   catch-up, the first micro-batch included. (A lone worker owns every partition and
   hands validated batches to its tracking stage in process, so ``<prefix>.fixes``
   stays empty; with ``COLLARSTREAM_LOCAL_HANDOFF=false`` the validating stage's own
   rate is reported too.) A baseline in the same run: the same messages produced to a
   plain topic and read back by a group-less consumer. Each repeat uses a fresh prefix
   and worker.
2. Latency. With a warmed-up, joined worker, messages go out at a steady R fixes/s
   for animals that cross the KAZ-KGZ border (or Almaty's urban edge) on every step.
   Each animal (warm-up ones too) has a place of its own (``oscillators``): border
   crossers each on their own meridian between 74.5E and 80E, urban animals each between
   their own point inside the city near its north edge and one north of it beyond the
   outer zone; every endpoint is at least ~800 m from any other animal's, so the worker's
   proximity detector (500 m) finds no encounters. (An earlier layout stacked
   ~20 animals per spot; the proximity detector's alert flood and its pair work then
   dominated the worker, not the border and urban-edge alerts being measured.) Sent
   once as single-fix messages, once as uploads of ``--upload`` fixes (collars upload
   several fixes at a time; each fix counts from its upload's send). The producer
   remembers when it sent each (animal, fix timestamp); a group-less consumer on
   ``<prefix>.alerts`` matches alerts by ``individual-local-identifier`` and
   ``fix-timestamp``. Latency = alert received - fix sent. Also reported: the alert's
   broker timestamp (CreateTime, stamped by the worker's producer) - fix sent, in wall
   clock, which tells the worker's delay from the measuring client's.

The worker, the broker and every client are stopped on the way out, also on Ctrl-C,
SIGTERM and errors. Durations are measured with ``time.perf_counter``; only the
producer-stamp comparison uses the wall clock (the broker's timestamps are wall time).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from collarstream.config import from_env
from collarstream.core.approach import BorderLines, border_distance
from collarstream.core.areas import inside_masks
from collarstream.core.geodesy import inverse
from collarstream.core.track import Context, TrackState, advance
from collarstream.simulate import simulate
from collarstream.stream.app import live_context
from collarstream.stream.broker import _parent_death_signal, connect
from collarstream.stream.topics import TopicNames, ensure_topics
from collarstream.timefmt import iso
from collarstream.wire import parse_message, to_batch

ANIMALS = 200
# The latency load generator's linger.ms: librdkafka's default, as a collar gateway
# would run it. The clock starts before the message is handed over, so the linger is
# counted in every latency. With 0, each message is a batch of its own, and the embedded
# broker's CPU grows with the batches a partition holds (Tansu 0.6, memory storage:
# measured with one consumer at 1,000 messages/s, 0.4 -> 1.0 of a core within 15 s at
# linger 0, 0.1-0.2 at linger 20 ms); at 0 the broker took ~0.75 of the 2 cores here
# during a 10 s single-fix run, and ~0.4-0.65 at 5.
LINGER_MS = 5.0
PARTITIONS = 4
HOUR_MS = 3_600_000
FIX_INTERVAL_MS = 4 * HOUR_MS
# Tansu makes a group's first join wait half the session timeout.
SESSION_TIMEOUT_S = "4"
# librdkafka waits up to this long for a fetch to fill; on Tansu that is the reader's
# share of the measured latency.
FETCH_WAIT_MS = 5
POLL_MS = 50
WORKER_STOP_S = 20.0


# --------------------------------------------------------------------------- data


def throughput_messages(n_fixes: int) -> list[tuple[str, bytes]]:
    """Collar uploads of ~6 fixes (two 12-hourly uploads merged) for ANIMALS animals,
    in arrival order, cut at exactly ``n_fixes`` fixes. Animals are the simulator's eleven,
    cycled over seeds and renamed (``SL-ALM-01-s03``)."""
    seeds = math.ceil(ANIMALS / 11)
    days = n_fixes / ANIMALS / 6.0 * 1.15 + 1.0
    uploads: list[tuple[int, str, list[dict[str, Any]]]] = []
    n_animals = 0
    for seed in range(seeds):
        per_animal: dict[str, list[Any]] = defaultdict(list)
        for up in simulate(seed=seed, days=days):
            per_animal[up.animal].append(up)
        for animal, ups in sorted(per_animal.items()):
            if n_animals == ANIMALS:
                break
            n_animals += 1
            name = f"{animal}-s{seed:02d}"
            for k in range(0, len(ups), 2):
                pair = ups[k : k + 2]
                received = pair[-1].received_ms
                fixes = [
                    {
                        **f,
                        "individual-local-identifier": name,
                        "tag-local-identifier": f"{f['tag-local-identifier']}{seed:02d}",
                        "received-timestamp": iso(received),
                    }
                    for up in pair
                    for f in up.fixes
                ]
                uploads.append((received, name, fixes))
    uploads.sort(key=lambda u: (u[0], u[1]))
    out: list[tuple[str, bytes]] = []
    total = 0
    for _, name, fixes in uploads:
        fixes = fixes[: n_fixes - total]
        out.append((name, orjson.dumps(fixes)))
        total += len(fixes)
        if total >= n_fixes:
            break
    if total < n_fixes:
        raise RuntimeError(f"generated only {total} of {n_fixes} fixes")
    return out


def replay(messages: Iterable[tuple[str, bytes]], ctx: Context) -> list[dict[str, Any]]:
    """Events of the fixes through the reducer, one batch per animal (what live converges to)."""
    by_animal: dict[str, list[Any]] = defaultdict(list)
    for _, raw in messages:
        for fix in parse_message(raw, received_ms=0):
            by_animal[fix.animal].append(fix)
    events: list[dict[str, Any]] = []
    for animal, fixes in by_animal.items():
        _, out = advance(TrackState.new(animal, len(ctx.urban)), to_batch(fixes), ctx)
        events += out
    return events


# Places of the latency benchmark's oscillators (see `oscillators`), on fixed grids so
# every run uses the same ones. Border crossers: meridians scanned along the KAZ-KGZ
# border, one endpoint BORDER_OFFSET_DEG each side of it.
BORDER_SCAN_LON = (74.5, 80.0, 0.005)
BORDER_SCAN_LAT = (42.3, 43.6, 0.001)
BORDER_OFFSET_DEG = 0.04  # ~4.4 km
# Neighbouring border crossers' meridians at least this far apart: ~1.6 km at 43N.
BORDER_SPACING_DEG = 0.02
# Urban animals: nodes of a grid around Almaty (~975 m x ~890 m at 43.2N), each animal
# between a node inside the city near its north edge and one beyond every zone north of it.
URBAN_GRID_LON = (76.60, 77.35, 0.012)
URBAN_GRID_LAT = (43.00, 43.60, 0.008)
URBAN_PAIRS_PER_COLUMN = 2
# No border-approach alerts for the urban animals: no land border this close.
URBAN_BORDER_CLEAR_M = 10_000.0
# Any two places' endpoints at least this far apart: ~4 sigma of two fixes' GPS noise
# above the proximity detector's 500 m, so the animals never meet.
MIN_APART_M = 700.0


def _grid(spec: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    start, stop, step = spec
    return np.round(start + step * np.arange(round((stop - start) / step) + 1), 6)


def _border_lats(ctx: Context, lons: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per meridian: the latitude where it passes from Kyrgyzstan into Kazakhstan going
    north (the last KGZ sample), NaN unless that is its only change of country within
    BORDER_SCAN_LAT."""
    assert ctx.countries is not None
    lats = _grid(BORDER_SCAN_LAT)
    lon2, lat2 = np.meshgrid(lons, lats, indexing="ij")
    idx = ctx.countries.locate(lon2.ravel(), lat2.ravel()).reshape(lon2.shape)
    codes = np.asarray((*ctx.countries.codes, ""))[idx]  # -1 (no country): ""
    north = (codes[:, :-1] == "KGZ") & (codes[:, 1:] == "KAZ")
    single = ((idx[:, 1:] != idx[:, :-1]).sum(axis=1) == 1) & north.any(axis=1)
    return np.where(single, lats[north.argmax(axis=1)], np.nan)


def _clear_of_areas(
    ctx: Context, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Outside every protected area widened by its hysteresis (no area transitions)."""
    ok = np.ones(lon.size, dtype=bool)
    for fence in ctx.areas.fences if ctx.areas is not None else ():
        ok &= ~inside_masks(fence, lon, lat)[1]
    return ok


def _outside_urban(
    ctx: Context, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Beyond every zone of every urban fence, hysteresis included (stay level 0)."""
    ok = np.ones(lon.size, dtype=bool)
    for fence in ctx.urban:
        ok &= fence.raw_levels(lon, lat)[1] == 0
    return ok


Place = tuple[tuple[float, float], tuple[float, float]]


def _border_places(ctx: Context) -> list[Place]:
    """(KAZ end, KGZ end) on meridians west to east, BORDER_SPACING_DEG or more apart;
    each end BORDER_OFFSET_DEG from the meridian's single KGZ->KAZ border, in its country,
    outside every urban zone and protected area."""
    assert ctx.countries is not None
    lons = _grid(BORDER_SCAN_LON)
    border = _border_lats(ctx, lons)
    ok = ~np.isnan(border)
    lons, border = lons[ok], border[ok]
    lon = np.concatenate([lons, lons])
    lat = np.concatenate([border + BORDER_OFFSET_DEG, border - BORDER_OFFSET_DEG])
    codes = np.asarray((*ctx.countries.codes, ""))[ctx.countries.locate(lon, lat)]
    good = (
        (codes == np.repeat(["KAZ", "KGZ"], lons.size))
        & _outside_urban(ctx, lon, lat)
        & _clear_of_areas(ctx, lon, lat)
    )
    good = good[: lons.size] & good[lons.size :]
    out: list[Place] = []
    last = -math.inf
    for x, b in zip(lons[good].tolist(), border[good].tolist(), strict=True):
        if x >= last + BORDER_SPACING_DEG - 1e-9:
            north, south = round(b + BORDER_OFFSET_DEG, 6), round(b - BORDER_OFFSET_DEG, 6)
            out.append(((x, north), (x, south)))
            last = x
    return out


def _urban_places(ctx: Context) -> list[Place]:
    """(inside the city, beyond every zone) of Almaty's fence (``ctx.urban[0]``), both on
    one grid meridian: per grid column the northernmost nodes inside the city, paired with
    the nearest nodes north of them beyond the outer zone and its hysteresis. Both ends in the same
    country, with no land border within URBAN_BORDER_CLEAR_M and outside every protected
    area. Ordered by pair rank, then west to east (shortest jumps first)."""
    assert ctx.countries is not None
    fence = ctx.urban[0]
    lons, lats = _grid(URBAN_GRID_LON), _grid(URBAN_GRID_LAT)
    lon2, lat2 = np.meshgrid(lons, lats, indexing="ij")
    lon, lat = lon2.ravel(), lat2.ravel()
    country = ctx.countries.locate(lon, lat)
    borders = ctx.borders if ctx.borders is not None else BorderLines.from_layer(ctx.countries)
    far = np.isinf(border_distance(borders, lon, lat, country, URBAN_BORDER_CLEAR_M).dist_m)
    usable = (country >= 0) & far & _clear_of_areas(ctx, lon, lat)
    inside = (usable & (fence.raw_levels(lon, lat)[0] == len(fence.zones))).reshape(lon2.shape)
    outside = (usable & _outside_urban(ctx, lon, lat)).reshape(lon2.shape)
    country = country.reshape(lon2.shape)
    ranked: list[tuple[int, int, Place]] = []
    for c in range(lons.size):
        ins = np.flatnonzero(inside[c])[::-1]  # north to south
        if ins.size == 0:
            continue
        outs = np.flatnonzero(outside[c])
        outs = outs[outs > ins[0]]  # south to north
        for k, (i, o) in enumerate(
            zip(
                ins[:URBAN_PAIRS_PER_COLUMN].tolist(),
                outs[:URBAN_PAIRS_PER_COLUMN].tolist(),
                strict=False,
            )
        ):
            if country[c, i] == country[c, o]:
                ranked.append(
                    (k, c, ((float(lons[c]), float(lats[i])), (float(lons[c]), float(lats[o]))))
                )
    return [place for _, _, place in sorted(ranked)]


def _check_apart(places: list[Place]) -> None:
    """Every two endpoints (of any places) more than MIN_APART_M apart."""
    pts = np.array([end for place in places for end in place], dtype=np.float64)
    i, j = np.triu_indices(len(pts), k=1)
    d, _, _ = inverse(pts[i, 0], pts[i, 1], pts[j, 0], pts[j, 1])
    k = int(np.argmin(d)) if d.size else -1
    if k >= 0 and d[k] <= MIN_APART_M:
        raise RuntimeError(
            f"oscillator places {pts[i[k]]} and {pts[j[k]]} are only "
            f"{d[k]:.0f} m apart (need > {MIN_APART_M:.0f} m)"
        )


@dataclass
class Oscillator:
    """An animal jumping between two places on every fix (each step a crossing)."""

    animal: str
    a: tuple[float, float]
    b: tuple[float, float]
    t0_ms: int
    n: int = 0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def next_fix(self) -> dict[str, Any]:
        lon, lat = self.a if self.n % 2 == 0 else self.b
        # ~50 m of GPS noise so no two fixes coincide.
        lon += float(self.rng.normal(0.0, 0.0006))
        lat += float(self.rng.normal(0.0, 0.0004))
        fix = {
            "individual-local-identifier": self.animal,
            "tag-local-identifier": f"T{self.animal}",
            "timestamp": iso(self.t0_ms + self.n * FIX_INTERVAL_MS),
            "location-long": round(lon, 7),
            "location-lat": round(lat, 7),
            "gps:hdop": 1.2,
            "gps:satellite-count": 9,
            "height-above-ellipsoid": 3000.0,
        }
        self.n += 1
        return fix


_PLACES: dict[int, tuple[Context, list[Place], list[Place]]] = {}


def _places(ctx: Context) -> tuple[list[Place], list[Place]]:
    """Border-crossing and urban places, checked apart; found once per context (~0.4 s)."""
    hit = _PLACES.get(id(ctx))
    if hit is None or hit[0] is not ctx:  # the entry holds ctx, so its id is not reused
        border, urban = _border_places(ctx), _urban_places(ctx)
        _check_apart(border + urban)
        hit = _PLACES[id(ctx)] = (ctx, border, urban)
    return hit[1], hit[2]


def oscillators(
    ctx: Context, prefix: str, count: int, seed: int, first: int = 0
) -> list[Oscillator]:
    """Animals ``first`` .. ``first + count - 1``, each at a place of its own: three in four
    (g % 4 != 3) cross the KAZ-KGZ border on their own meridian, ~4.4 km each side of it;
    one in four goes between beyond all of Almaty's zones and inside the city (enter, all
    clear). The place depends only on the animal's number g (``first``: another set of
    animals on other places); endpoints of any two places are > MIN_APART_M apart."""
    border, urban = _places(ctx)
    numbers = range(first, first + count)
    n_border = max((g - (g + 1) // 4 + 1 for g in numbers if g % 4 != 3), default=0)
    n_urban = max((g // 4 + 1 for g in numbers if g % 4 == 3), default=0)
    if n_border > len(border) or n_urban > len(urban):
        raise RuntimeError(
            f"oscillators {first}..{first + count - 1} need {n_border} border-crossing and "
            f"{n_urban} urban places; only {len(border)} and {len(urban)} qualify "
            f"(see BORDER_* and URBAN_* in {Path(__file__).name})"
        )
    # Sim time in the past (fix-age >= 0), distinct per animal by a few seconds.
    base = (int(time.time() * 1000) - 400 * 24 * HOUR_MS) // HOUR_MS * HOUR_MS
    out = []
    for i, g in enumerate(numbers):
        rng = np.random.default_rng([seed, i])
        if g % 4 == 3:
            inside, outside = urban[g // 4]
            a, b = outside, inside
        else:
            a, b = border[g - (g + 1) // 4]  # KAZ, KGZ
        out.append(Oscillator(f"{prefix}-{i:03d}", a, b, base + i * 1000, rng=rng))
    return out


def alert_keys(events: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (e["individual-local-identifier"], e["fix-timestamp"])
        for e in events
        if e["type"] == "alert" and e["kind"] != "withdrawal"
    }


# --------------------------------------------------------------------------- processes


def start_worker(bootstrap: str, names: TopicNames, tmp: Path) -> subprocess.Popen[bytes]:
    """`collarstream worker` in its own session, like tests/test_pipeline.py's fixture."""
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "COLLARSTREAM_TOPIC_PREFIX": names.prefix,
            "COLLARSTREAM_APP_ID": f"{names.prefix}-worker",
            "COLLARSTREAM_DATA_DIR": str(tmp / "data"),
            "COLLARSTREAM_PARTITIONS": str(PARTITIONS),
            "COLLARSTREAM_WEB_ENABLED": "false",
            "COLLARSTREAM_SESSION_TIMEOUT_S": SESSION_TIMEOUT_S,
        }
    )
    with open(tmp / "worker.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "collarstream", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # SIGTERM to the worker if this process dies without cleaning up (SIGKILL).
            preexec_fn=_parent_death_signal(),
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, SIGKILL the worker's process group; reaps it even if interrupted."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=WORKER_STOP_S)
    except (subprocess.TimeoutExpired, ProcessLookupError, KeyboardInterrupt):
        pass
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class WorkerRun:
    """A worker for one prefix in a temp dir; the context exit always stops it."""

    def __init__(self, bootstrap: str, names: TopicNames) -> None:
        self.bootstrap, self.names = bootstrap, names
        self._tmp = tempfile.TemporaryDirectory(prefix="collarstream-bench-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        self.proc = start_worker(self.bootstrap, self.names, Path(self._tmp.name))
        return time.perf_counter()

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        path = Path(self._tmp.name) / "worker.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def __enter__(self) -> WorkerRun:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None:
                stop_worker(self.proc)
        finally:
            self._tmp.cleanup()


# --------------------------------------------------------------------------- clients


# The load generator and the readers use librdkafka (confluent-kafka), not kafka-python:
# they share the two cores with the worker and the broker, and kafka-python's pure-Python
# client took ~65 % of a core to send 1,000 messages/s and read the alerts back.


@dataclass(frozen=True)
class Record:
    topic: str
    value: bytes
    timestamp_ms: int  # the broker's CreateTime (stamped by the producer)


def reader(bootstrap: str, topics: Iterable[str]) -> Consumer:
    """A consumer on every partition of ``topics``, from the beginning; it never joins
    a group or commits (assigned partitions)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": FETCH_WAIT_MS,
            "log_level": 3,  # errors only: Tansu closes idle connections, librdkafka says so
        }
    )
    try:
        parts = []
        for topic in topics:
            deadline = time.perf_counter() + 15
            while not (ids := _partitions(consumer, topic)):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"topic {topic} has no partitions")
                time.sleep(0.1)
            parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(ids)]
        consumer.assign(parts)
    except BaseException:
        consumer.close()
        raise
    return consumer


def _partitions(client: Consumer, topic: str) -> list[int]:
    meta = client.list_topics(topic, timeout=5).topics.get(topic)
    return [] if meta is None or meta.error is not None else list(meta.partitions)


def poll_until(
    consumer: Consumer,
    handle: Callable[[Record, float], None],
    done: Callable[[], bool],
    timeout_s: float,
    check: Callable[[], None] = lambda: None,
) -> bool:
    """Poll continuously, handing each record and its receipt time to ``handle``;
    True when ``done()``, False on timeout. (End offsets are not trusted on Tansu.)"""
    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            return False
        check()
        # consume(n, timeout) would wait for n records: poll returns on the first one,
        # then take what else is there without waiting.
        first = consumer.poll(POLL_MS / 1000.0)
        now = time.perf_counter()
        if first is None:
            continue
        msgs = [first, *consumer.consume(num_messages=2000, timeout=0)]
        for m in msgs:
            if m.error():
                raise KafkaException(m.error())
            handle(Record(m.topic(), m.value(), m.timestamp()[1]), now)
    return True


def producer(bootstrap: str, **config: Any) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "log_level": 3, **config})


def send(p: Producer, topic: str, key: bytes, value: bytes, errors: list[Any]) -> None:
    """Queue one record (waiting for room if the client's queue is full)."""

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    while True:
        try:
            p.produce(topic, key=key, value=value, on_delivery=delivered)
            break
        except BufferError:
            p.poll(0.01)
    p.poll(0)


def produce_all(bootstrap: str, topic: str, items: Iterable[tuple[str, bytes]]) -> int:
    """Send (animal, JSON) records in order and wait for every ack; raises on any failure."""
    p = producer(
        bootstrap, acks="all", **{"linger.ms": 5, "max.in.flight.requests.per.connection": 1}
    )
    errors: list[Any] = []
    sent = 0
    for key, value in items:
        send(p, topic, key.encode(), value, errors)
        sent += 1
    if p.flush(60) or errors:
        raise RuntimeError(f"{len(errors)} of {sent} records to {topic} failed: {errors[:1]}")
    return sent


# --------------------------------------------------------------------------- throughput


@dataclass
class Baseline:
    produce_s: float
    consume_s: float
    messages: int
    fixes: int

    @property
    def msgs_per_s(self) -> float:
        return self.messages / (self.produce_s + self.consume_s)

    @property
    def fixes_per_s(self) -> float:
        return self.fixes / (self.produce_s + self.consume_s)


def run_baseline(bootstrap: str, messages: list[tuple[str, bytes]], n_fixes: int) -> Baseline:
    """Produce the messages (as the pipeline's are), then read them all without a group."""
    names = TopicNames(f"bench-base-{uuid.uuid4().hex[:8]}")
    ensure_topics(bootstrap, names, partitions=PARTITIONS)
    t0 = time.perf_counter()
    produce_all(bootstrap, names.raw_fixes, messages)
    t1 = time.perf_counter()
    consumer = reader(bootstrap, [names.raw_fixes])
    seen = [0]
    try:
        ok = poll_until(
            consumer,
            lambda rec, now: seen.__setitem__(0, seen[0] + 1),
            lambda: seen[0] >= len(messages),
            timeout_s=120,
        )
    finally:
        consumer.close()
    t2 = time.perf_counter()
    if not ok:
        raise RuntimeError(f"baseline read {seen[0]} of {len(messages)} messages")
    return Baseline(t1 - t0, t2 - t1, len(messages), n_fixes)


@dataclass
class PipelineRun:
    produce_s: float  # sending every message (while the worker already consumes)
    startup_s: float  # worker spawned -> the sentinel's step
    first_step_s: float  # first send -> first step of the data
    total_s: float  # first send -> every predicted step on <prefix>.steps
    fixes: int
    complete: bool
    detail: str = ""
    # first send -> every fix on <prefix>.fixes; None: they did not go through it
    validate_s: float | None = None

    @property
    def fixes_per_s(self) -> float:
        return self.fixes / self.total_s

    @property
    def validate_fixes_per_s(self) -> float:
        return self.fixes / self.validate_s if self.validate_s else math.nan


READY_ANIMAL = "BENCH-READY"


def _ready_upload() -> bytes:
    """Two fixes of an animal outside the data: its step says the worker is tracking."""
    t = int(time.time() * 1000) - 30 * 24 * HOUR_MS
    return orjson.dumps(
        [
            {
                "individual-local-identifier": READY_ANIMAL,
                "timestamp": iso(t + k * FIX_INTERVAL_MS),
                "location-long": 77.0 + 0.01 * k,
                "location-lat": 43.2,
                "gps:hdop": 1.0,
            }
            for k in range(2)
        ]
    )


def run_pipeline(
    bootstrap: str,
    messages: list[tuple[str, bytes]],
    n_fixes: int,
    expected_steps: set[str],
    timeout_s: float,
) -> PipelineRun:
    """Start the worker on an empty topic; once it has tracked a sentinel upload (joined,
    its reducer warm), produce every message as fast as librdkafka goes and clock from
    the first send until every predicted step is out: sustained catch-up, the first
    micro-batch included."""
    names = TopicNames(f"bench-{uuid.uuid4().hex[:8]}")
    ensure_topics(bootstrap, names, partitions=PARTITIONS)
    consumer = reader(bootstrap, [names.fixes, names.steps])
    fixes_topic = names.fixes
    state: dict[str, Any] = {
        "ready": None,
        "fixes": 0,
        "fixes_done": None,
        "first_step": None,
        "last": None,
    }
    missing = set(expected_steps)

    def handle(rec: Any, now: float) -> None:
        if rec.topic == fixes_topic:
            state["fixes"] += len(orjson.loads(rec.value)["t_ms"])
            if state["fixes_done"] is None and state["fixes"] >= n_fixes:
                state["fixes_done"] = now
            return
        for step in orjson.loads(rec.value):  # one array per animal per batch
            if step["individual-local-identifier"] == READY_ANIMAL:
                state["ready"] = state["ready"] or now
            elif step["status"] == "current" and step["id"] in missing:
                state["first_step"] = state["first_step"] or now
                missing.discard(step["id"])
                if not missing:
                    state["last"] = now

    try:
        with WorkerRun(bootstrap, names) as worker:
            spawned = worker.start()
            produce_all(bootstrap, names.raw_fixes, [(READY_ANIMAL, _ready_upload())])
            if not poll_until(
                consumer, handle, lambda: state["ready"] is not None, timeout_s, worker.check
            ):
                raise RuntimeError("the worker tracked nothing before the timeout")
            # the sentinel's fixes, if they went through <prefix>.fixes, are not the data's
            state["fixes"] = 0
            t0 = time.perf_counter()
            produce_all(bootstrap, names.raw_fixes, messages)
            produce_s = time.perf_counter() - t0
            complete = poll_until(consumer, handle, lambda: not missing, timeout_s, worker.check)
    finally:
        consumer.close()
    end = time.perf_counter()
    last = state["last"] or end
    return PipelineRun(
        produce_s,
        state["ready"] - spawned,
        (state["first_step"] or end) - t0,
        last - t0,
        n_fixes,
        complete,
        ""
        if complete
        else (f"timed out: {len(expected_steps) - len(missing)}/{len(expected_steps)} steps"),
        None if state["fixes_done"] is None else state["fixes_done"] - t0,
    )


# --------------------------------------------------------------------------- latency


@dataclass
class LatencyRun:
    latencies_ms: list[float]  # in send order
    expected: int
    sent: int
    send_s: float
    startup_s: float
    drain_s: float  # first send -> last matched alert received
    per_message: int = 1
    produced_ms: list[float] = field(default_factory=list)  # fix sent -> alert on broker
    linger_ms: float = LINGER_MS  # the load generator's

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.nan


def run_latency(
    bootstrap: str,
    ctx: Context,
    rate: float,
    duration_s: float,
    per_message: int = 1,
    linger_ms: float = LINGER_MS,
) -> LatencyRun:
    names = TopicNames(f"bench-lat-{uuid.uuid4().hex[:8]}")
    ensure_topics(bootstrap, names, partitions=PARTITIONS)

    # Warm-up animals (8, so every partition is hit) and the measured ones, prepared and
    # replayed up front so the send loop only sends.
    warm = oscillators(ctx, "WARM", 8, seed=1, first=ANIMALS)  # places of their own
    warm_msgs = [(o.animal, orjson.dumps(o.next_fix())) for _ in range(30) for o in warm]
    animals = oscillators(ctx, "LAT", ANIMALS, seed=2)
    # A message is one fix, or an upload of `per_message` consecutive fixes of one animal
    # (as collars send them); every fix in it is sent at the message's send time.
    n_msgs = max(1, round(rate * duration_s / per_message))
    plan: list[tuple[bytes, bytes, list[tuple[str, str]]]] = []
    for i in range(n_msgs):
        osc = animals[i % len(animals)]
        fixes = [osc.next_fix() for _ in range(per_message)]
        keys = [(f["individual-local-identifier"], f["timestamp"]) for f in fixes]
        body = orjson.dumps(fixes[0] if per_message == 1 else fixes)
        plan.append((osc.animal.encode(), body, keys))
    rate_msgs = rate / per_message
    warm_keys = alert_keys(replay(warm_msgs, ctx))
    expected = alert_keys(replay(((k.decode(), v) for k, v, _ in plan), ctx))

    sent_at: dict[tuple[str, str], float] = {}
    sent_wall: dict[tuple[str, str], float] = {}
    latencies: dict[tuple[str, str], float] = {}
    produced: dict[tuple[str, str], float] = {}  # alert's broker timestamp - fix sent, ms
    warm_seen: set[tuple[str, str]] = set()
    send_span = [math.nan]
    last_alert = [math.nan]
    errors: list[Any] = []
    stop = threading.Event()

    def handle(rec: Any, now: float) -> None:
        doc = orjson.loads(rec.value)
        if doc["kind"] == "withdrawal":
            return
        key = (doc["individual-local-identifier"], doc["fix-timestamp"])
        if key in warm_keys:
            warm_seen.add(key)
        elif key in sent_at and key not in latencies:
            latencies[key] = (now - sent_at[key]) * 1000.0
            # CreateTime, stamped by the worker's producer: the worker's share of the delay.
            produced[key] = rec.timestamp_ms - sent_wall[key] * 1000.0
            last_alert[0] = now

    def send_all() -> None:
        p = producer(bootstrap, acks=1, **{"linger.ms": linger_ms})
        try:
            start = time.perf_counter()
            for i, (key, value, ks) in enumerate(plan):
                due = start + i / rate_msgs
                while (wait := due - time.perf_counter()) > 0:
                    if stop.is_set():
                        return
                    time.sleep(wait)
                now, wall = time.perf_counter(), time.time()
                for k in ks:
                    sent_at[k] = now
                    sent_wall[k] = wall
                send(p, names.raw_fixes, key, value, errors)
            send_span[0] = time.perf_counter() - start
            if p.flush(30):
                errors.append(RuntimeError("sends still queued after 30 s"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    consumer = reader(bootstrap, [names.alerts])
    sender = threading.Thread(target=send_all, name="bench-sender", daemon=True)
    try:
        with WorkerRun(bootstrap, names) as worker:
            spawned = worker.start()
            produce_all(bootstrap, names.raw_fixes, warm_msgs)
            if not poll_until(consumer, handle, lambda: warm_seen >= warm_keys, 120, worker.check):
                raise RuntimeError(
                    f"warm-up: {len(warm_seen)}/{len(warm_keys)} alerts in 120 s\n{worker.log()}"
                )
            startup_s = time.perf_counter() - spawned
            poll_until(consumer, handle, lambda: False, 1.0, worker.check)  # settle
            sender.start()

            def finished() -> bool:
                return not sender.is_alive() and (len(latencies) >= len(expected) or bool(errors))

            poll_until(consumer, handle, finished, duration_s * 3 + 60, worker.check)
            # Stragglers after the last send: at most 15 s more.
            poll_until(consumer, handle, lambda: len(latencies) >= len(expected), 15, worker.check)
    finally:
        stop.set()
        if sender.ident is not None:
            sender.join(timeout=10)
        consumer.close()
    if errors:
        raise RuntimeError(f"{len(errors)} sends failed: {errors[0]}")
    in_order = sorted(latencies, key=sent_at.__getitem__)
    first_send = min(sent_at.values(), default=math.nan)
    return LatencyRun(
        [latencies[k] for k in in_order],
        len(expected),
        sum(len(ks) for _, _, ks in plan),
        send_span[0],
        startup_s,
        last_alert[0] - first_send,
        per_message,
        [produced[k] for k in in_order],
        linger_ms,
    )


# --------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _row(label: str, values: list[float], fmt: str = "{:,.0f}", median: bool = True) -> str:
    cells = "".join(f"{fmt.format(v):>11}" for v in values)
    med = f"{fmt.format(_med(values)):>11}" if median and len(values) > 1 else ""
    return f"  {label:<44}{cells}{med}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixes", type=int, default=20_000, help="fixes for throughput (20000)")
    ap.add_argument("--rate", type=float, default=1000.0, help="latency send rate, fixes/s")
    ap.add_argument("--repeats", type=int, default=3, help="throughput repeats (3)")
    ap.add_argument("--duration", type=float, default=15.0, help="latency send time, s (15)")
    ap.add_argument(
        "--linger-ms",
        type=float,
        default=LINGER_MS,
        help="the latency load generator's linger.ms, counted in every latency "
        f"({LINGER_MS:g}, librdkafka's default; see LINGER_MS)",
    )
    ap.add_argument(
        "--upload",
        type=int,
        default=6,
        help="fixes per message in the second latency run, as collars upload "
        "them (6; 1 skips that run)",
    )
    args = ap.parse_args(argv)
    if args.fixes < 1 or args.rate <= 0 or args.repeats < 1 or args.duration <= 0:
        ap.error("--fixes, --rate, --repeats and --duration must be positive")

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through every finally: worker, clients, broker

    signal.signal(signal.SIGTERM, on_sigterm)
    t_start = time.perf_counter()
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted; worker and broker stopped", file=sys.stderr)
        return 130
    finally:
        print(f"(total {time.perf_counter() - t_start:.0f} s)", flush=True)


def _run(args: argparse.Namespace) -> int:
    say = lambda text: print(text, flush=True)  # noqa: E731
    ctx = live_context(from_env({}))
    messages = throughput_messages(args.fixes)
    replay(messages[:50], ctx)  # first-call costs (imports, lazy index builds) out of the timing
    t0 = time.perf_counter()
    events = replay(messages, ctx)
    replay_s = time.perf_counter() - t0
    expected_steps = {e["id"] for e in events if e["type"] == "step"}
    n_alerts = sum(e["type"] == "alert" for e in events)
    say(
        f"data: {args.fixes:,} fixes in {len(messages):,} messages "
        f"({args.fixes / len(messages):.1f} fixes/message, {ANIMALS} animals); replay predicts "
        f"{len(expected_steps):,} steps, {n_alerts} alerts (replay in-process, one batch per "
        f"animal: {replay_s:.1f} s = {args.fixes / replay_s:,.0f} fixes/s)"
    )

    with connect() as broker:
        kind = "embedded Tansu" if broker.owns_process else "external"
        say(
            f"broker: {broker.bootstrap_servers} ({kind}); {os.cpu_count()} CPUs; "
            f"{PARTITIONS} partitions; session timeout {SESSION_TIMEOUT_S} s"
        )
        bases: list[Baseline] = []
        runs: list[PipelineRun] = []
        timeout_s = max(120.0, args.fixes / 100.0)
        for k in range(args.repeats):
            bases.append(run_baseline(broker.bootstrap_servers, messages, args.fixes))
            run = run_pipeline(
                broker.bootstrap_servers, messages, args.fixes, expected_steps, timeout_s
            )
            runs.append(run)
            say(
                f"repeat {k + 1}/{args.repeats}: pipeline {run.fixes_per_s:,.0f} fixes/s "
                f"({run.total_s:.2f} s after a {run.startup_s:.1f} s start-up); baseline "
                f"{bases[-1].fixes_per_s:,.0f} fixes/s {run.detail}"
            )
        lats: list[LatencyRun] = []
        for per_message in sorted({1, args.upload}):
            say(
                f"latency: {args.rate:g} fixes/s in messages of {per_message} for "
                f"{args.duration:g} s ..."
            )
            lats.append(
                run_latency(
                    broker.bootstrap_servers,
                    ctx,
                    args.rate,
                    args.duration,
                    per_message,
                    args.linger_ms,
                )
            )

    ok = all(r.complete for r in runs)
    say("")
    say(
        f"THROUGHPUT  {args.fixes:,} fixes / {len(messages):,} messages, {args.repeats} "
        f"repeat(s), fresh prefix and worker each"
    )
    head = "".join(f"{'run ' + str(i + 1):>11}" for i in range(len(runs)))
    say(f"  {'':<44}{head}{'median':>11}" if len(runs) > 1 else f"  {'':<44}{head}")
    say(_row("baseline produce, msgs/s", [b.messages / b.produce_s for b in bases]))
    say(_row("baseline group-less read, msgs/s", [b.messages / b.consume_s for b in bases]))
    say(_row("baseline round trip, msgs/s", [b.msgs_per_s for b in bases]))
    say(_row("baseline round trip, fixes/s", [b.fixes_per_s for b in bases]))
    say(
        _row(
            "pipeline produce (worker consuming), msgs/s",
            [len(messages) / r.produce_s for r in runs],
        )
    )
    say(_row("worker start-up + join + sentinel, s", [r.startup_s for r in runs], "{:.1f}"))
    if all(r.validate_s for r in runs):  # COLLARSTREAM_LOCAL_HANDOFF=false
        say(
            _row(
                "pipeline validate stage (.fixes), fixes/s", [r.validate_fixes_per_s for r in runs]
            )
        )
    say(_row("first send -> first step, s", [r.first_step_s for r in runs], "{:.2f}"))
    say(_row("pipeline end to end (.steps), fixes/s", [r.fixes_per_s for r in runs]))
    say(_row("pipeline end to end, s", [r.total_s for r in runs], "{:.2f}"))
    ratios = [r.fixes_per_s / b.fixes_per_s for r, b in zip(runs, bases, strict=True)]
    say(_row("ratio pipeline / baseline (fixes/s)", ratios, "{:.3f}"))
    say(
        f"  median ratio of medians: "
        f"{_med([r.fixes_per_s for r in runs]) / _med([b.fixes_per_s for b in bases]):.3f}"
        + ("" if ok else "   ** INCOMPLETE RUN(S): see above **")
    )
    for lat in lats:
        _report_latency(say, lat, args.rate)
    return 0 if ok and all(len(lt.latencies_ms) == lt.expected for lt in lats) else 1


def _report_latency(say: Callable[[str], None], lat: LatencyRun, rate: float) -> None:
    say("")
    achieved = lat.sent / lat.send_s if lat.send_s > 0 else math.nan
    what = (
        "single-fix messages"
        if lat.per_message == 1
        else f"uploads of {lat.per_message} fixes per message"
    )
    say(
        f"LATENCY  {what}, {ANIMALS} animals crossing a border or the urban edge "
        f"every fix; warm-up + join took {lat.startup_s:.1f} s"
    )
    say(
        f"  sent {lat.sent:,} fixes in {lat.send_s:.2f} s = {achieved:,.0f} fixes/s "
        f"(target {rate:g}; producer linger.ms {lat.linger_ms:g}, inside the latencies)"
    )
    say(f"  alerts matched {len(lat.latencies_ms):,} of {lat.expected:,} predicted")
    say(
        f"  fix sent -> alert received, ms:  p50 {lat.pct(50):.1f}   p90 {lat.pct(90):.1f}   "
        f"p99 {lat.pct(99):.1f}   max {max(lat.latencies_ms, default=math.nan):.1f}"
    )
    if lat.produced_ms:
        q = np.percentile(lat.produced_ms, [50, 90, 99])
        say(
            f"  fix sent -> alert stamped by the worker's producer, ms:  p50 {q[0]:.1f}   "
            f"p90 {q[1]:.1f}   p99 {q[2]:.1f}"
        )
    tenth = max(1, len(lat.latencies_ms) // 10)
    early, late = _med(lat.latencies_ms[:tenth]), _med(lat.latencies_ms[-tenth:])
    say(
        f"  p50 of the first / last tenth of sends: {early:.1f} / {late:.1f} ms; "
        f"alerts back at {len(lat.latencies_ms) / lat.drain_s:,.0f} fixes/s "
        f"(last alert {lat.drain_s:.1f} s after the first send)"
    )
    if late > 3 * early + 500:
        say(
            "  ** the worker did not keep up with this rate: latency is queueing, it grew "
            "through the run (try a lower --rate) **"
        )


if __name__ == "__main__":
    sys.exit(main())
