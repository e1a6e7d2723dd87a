"""`collarstream demo`: broker, worker and collar simulator together, alerts on screen.

Simulated time runs `speed` times faster than the clock: collar uploads are sent to
the raw topic when their (simulated) upload time comes, the worker runs as a real
Faust worker in a child process, and alerts are read back from the alerts topic and
printed for a person. Ctrl-C or --duration stops everything; no process is left.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from collarstream.delivery.messages import render
from collarstream.delivery.model import Precision
from collarstream.delivery.precision import redact_event
from collarstream.simulate import DEFAULT_START_MS, Upload, simulate
from collarstream.stream.broker import connect
from collarstream.stream.topics import TopicNames, ensure_topics
from collarstream.stream.worker import spawn_worker, stop_worker
from collarstream.timefmt import iso

GARBAGE = [
    b"{not json",
    b'{"individual-local-identifier": "SL-ALM-01", "timestamp": "yesterday"}',
    b'{"individual-local-identifier": "SL-ALM-02", "timestamp": "2026-03-01T00:00:00Z",'
    b' "location-long": 181.5, "location-lat": 43.1}',
    b'{"timestamp": "2026-03-01T00:00:00Z", "location-long": 77.0, "location-lat": 43.1}',
    b'{"individual-local-identifier": "SL-ALM-03", "timestamp": "2026-03-01T00:00:00Z",'
    b' "location-long": "77.0", "location-lat": 43.1}',
]


def run_demo(
    duration_s: float, speed: float, seed: int, partitions: int = 4, out: Any = sys.stdout
) -> Counter[str]:
    """Run the demo; returns counts of what was shown (alerts by kind, dead letters)."""
    say = _printer(out)
    say(
        f"collarstream demo: {speed:g}x simulated time, seed {seed}, "
        f"{'until Ctrl-C' if duration_s <= 0 else f'{duration_s:g} s'}"
    )
    with connect() as broker, tempfile.TemporaryDirectory(prefix="collarstream-demo-") as tmp:
        bootstrap = broker.bootstrap_servers
        names = TopicNames(f"demo-{uuid.uuid4().hex[:8]}")
        say(
            f"broker: {bootstrap} ({'embedded Tansu' if broker.owns_process else 'external'}); "
            f"topics {names.prefix}.*"
        )
        ensure_topics(bootstrap, names, partitions=partitions)
        # Simulated time starts now and runs `speed` times faster, for the feeder and for
        # the worker's silent-collar timer alike.
        wall0 = time.time()
        clock = f"{DEFAULT_START_MS},{round(wall0 * 1000)},{speed}"
        worker = spawn_worker(
            bootstrap,
            names.prefix,
            Path(tmp),
            {"COLLARSTREAM_PARTITIONS": str(partitions), "COLLARSTREAM_DATA_CLOCK": clock},
        )
        stop = threading.Event()
        feeder = threading.Thread(
            target=_feed,
            args=(bootstrap, names, simulate(seed=seed, days=30), speed, stop, wall0),
            daemon=True,
        )
        counts: Counter[str] = Counter()
        try:
            feeder.start()
            for line, kind in _watch(bootstrap, names, duration_s, stop, worker):
                counts[kind] += 1
                say(line)
        except KeyboardInterrupt:
            say("interrupted")
        finally:
            stop.set()
            feeder.join(timeout=5)
            stop_worker(worker)
            log = Path(tmp) / "worker.log"
            if worker.returncode not in (0, -signal.SIGTERM, None) and log.exists():
                say("worker log tail:\n" + log.read_text()[-3000:])
        say("summary: " + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"))
        return counts


def _printer(out: Any) -> Any:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    return say


def _feed(
    bootstrap: str,
    names: TopicNames,
    uploads: list[Upload],
    speed: float,
    stop: threading.Event,
    wall0: float,
) -> None:
    """Send each upload when its simulated time comes (simulated DEFAULT_START_MS is wall
    time wall0); some garbage along the way."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    try:
        for n, up in enumerate(uploads):
            due = wall0 + (up.received_ms - DEFAULT_START_MS) / 1000.0 / speed
            while not stop.is_set() and time.time() < due:
                time.sleep(min(0.05, due - time.time()))
            if stop.is_set():
                return
            fixes = [{**f, "received-timestamp": iso(up.received_ms)} for f in up.fixes]
            producer.send(names.raw_fixes, key=up.animal.encode(), value=orjson.dumps(fixes))
            if n % 25 == 7:
                producer.send(names.raw_fixes, value=GARBAGE[(n // 25) % len(GARBAGE)])
            producer.flush()
    finally:
        producer.close(timeout=5)


def _watch(
    bootstrap: str,
    names: TopicNames,
    duration_s: float,
    stop: threading.Event,
    worker: subprocess.Popen[bytes],
) -> Iterator[tuple[str, str]]:
    """Alerts and dead letters as they arrive, as lines for a person."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=200
    )
    parts = [
        TopicPartition(t, p)
        for t in (names.alerts, names.dead_letter)
        for p in range(_partitions(consumer, t))
    ]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    end = time.monotonic() + duration_s if duration_s > 0 else float("inf")
    try:
        while time.monotonic() < end and not stop.is_set():
            if worker.poll() is not None:
                yield f"worker exited with code {worker.returncode}", "worker-exit"
                return
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    doc = orjson.loads(rec.value)
                    yield describe(doc, rec.topic == names.dead_letter)
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topic: str) -> int:
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return len(parts)
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")


# The terminal is not the place for the precise location of an endangered cat: 10 km.
_TERMINAL = Precision(mode="grid", grid_km=10.0)


def describe(doc: dict[str, Any], dead: bool = False) -> tuple[str, str]:
    """One human line for an alert or a dead letter, and its kind for counting: the
    headline subscribers get (`delivery.messages`, English), positions on a 10 km grid."""
    if dead:
        return f"  DEAD-LETTER  {doc['reason']}", "dead-letter"
    kind = doc["kind"]
    subject, _ = render(redact_event(doc, _TERMINAL), "en", _TERMINAL)
    if kind == "withdrawal":
        return f"  WITHDRAWN    {subject}", kind
    when = doc["fix-timestamp"][:16].replace("T", " ")
    age = doc["fix-age_s"] / 3600.0
    return f"[{when}Z] {kind:<20} {subject}  (fix {age:.1f} h old on arrival)", kind
