"""Embedded broker benchmark: what delivering one record batch costs Tansu as a
partition's batches pile up.

    python bench/bench_broker.py [--stored 250,1000,4000,8000] [--rounds 200] [--repeats 5]

Tansu 0.6's memory storage keeps each produced record batch as an object of its own
and, on every fetch that has data to return, lists every object of the partition to
find the offsets (`tansu-storage`, dynostore `fetch`; an empty fetch, at the end of
the partition, lists nothing). So what the broker spends to deliver a batch grows with
the batches the partition already holds, and a run at a steady rate costs it more CPU
every second: in the pipeline bench's 1,000 single-fix messages/s, the broker's share
of the two cores grew from ~0.5 to ~0.9 over 40 s. Production runs Apache Kafka, whose
fetch finds its offset through an index.

One partition; a librdkafka consumer at its end (fetch wait 5 ms). A round produces one
single-record batch (flushed), then polls until the consumer has it. Before each
measured level the partition is filled to `--stored` batches the same way, without
consuming. Printed per level: Tansu's CPU per round (from /proc, median over repeats),
and the ratio against the smallest level, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from collarstream.stream.broker import EmbeddedBroker

TOPIC = "bench-broker"
FETCH_WAIT_MS = 5


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(producer: Producer, n: int) -> None:
    """n batches of one record each (each flushed on its own: one batch per produce)."""
    for _ in range(n):
        producer.produce(TOPIC, key=b"k", value=b"x" * 100)
        producer.flush()


def rounds(producer: Producer, consumer: Consumer, n: int) -> None:
    for _ in range(n):
        fill(producer, 1)
        while True:
            msg = consumer.poll(5.0)
            if msg is None:
                raise RuntimeError("a produced record did not come back within 5 s")
            if msg.error() is None:
                break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stored", default="250,1000,4000,8000", help="batches held, ascending")
    ap.add_argument("--rounds", type=int, default=200, help="rounds measured per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    levels = sorted(int(v) for v in args.stored.split(","))
    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert pid is not None
        bootstrap = broker.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result()
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-broker-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                "log_level": 3,
            }
        )
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        held = 0
        results: list[tuple[int, float, float]] = []
        print(f"{'stored batches':>15} {'Tansu CPU ms/round':>19} {'wall ms/round':>14} ratio")
        for level in levels:
            fill(producer, level - held)
            held = level
            while consumer.poll(0.2) is not None:  # catch up, unmeasured
                pass
            cpus, walls = [], []
            for _ in range(args.repeats):
                c0, t0 = cpu_s(pid), time.perf_counter()
                rounds(producer, consumer, args.rounds)
                cpus.append((cpu_s(pid) - c0) / args.rounds * 1e3)
                walls.append((time.perf_counter() - t0) / args.rounds * 1e3)
                held += args.rounds
            cpu, wall = statistics.median(cpus), statistics.median(walls)
            results.append((level, cpu, wall))
            print(f"{level:>15,} {cpu:>19.3f} {wall:>14.2f} {cpu / results[0][1]:5.1f}x")
        consumer.close()
        (lo, c_lo, _), (hi, c_hi, _) = results[0], results[-1]
        if hi > lo:
            per = (c_hi - c_lo) / (hi - lo) * 1e3
            print(f"slope: {per:.2f} µs of Tansu CPU per batch held, per batch delivered")


if __name__ == "__main__":
    main()
