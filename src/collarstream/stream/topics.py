"""Topic names and the small synchronous Kafka helpers used by the feeder, replay and tests.

Every topic is keyed by animal id, so one animal's fixes stay in one partition and in order.

Tansu 0.6 behaviour these helpers rely on or work around (measured against the embedded
broker, see tests/test_broker.py):

* kafka-python's ``KafkaAdminClient.create_topics`` works, and a second create answers
  ``TopicAlreadyExistsError`` (error 36) like Apache Kafka does.
* Group-less consumers (``assign`` + ``seek_to_beginning``) read everything, in order per key.
* ``end_offsets`` under-reports when a produce request carries multi-record batches (8 records
  in one batch gave a high watermark of 1), so ``consume_all`` never uses it to decide that a
  topic has been read to the end; it stops on ``min_count`` or on the timeout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

__all__ = ["TopicNames", "consume_all", "ensure_topics", "produce_json"]

# Kafka's own limits: legal characters, and 249 minus room for our longest suffix.
_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
_MAX_PREFIX_LEN = 249 - len(".home-range-work")
_ADMIN_TIMEOUT_MS = 15_000
# A few ms of linger lets the feeder batch records without making single sends feel slow.
_LINGER_MS = 5
_POLL_MS = 200


@dataclass(frozen=True)
class TopicNames:
    """The pipeline's topics under one prefix; a uuid prefix isolates a test or a demo run."""

    prefix: str = "collarstream"

    def __post_init__(self) -> None:
        if not _LEGAL_TOPIC.fullmatch(self.prefix) or len(self.prefix) > _MAX_PREFIX_LEN:
            raise ValueError(
                f"topic prefix must be 1..{_MAX_PREFIX_LEN} of [A-Za-z0-9._-], got {self.prefix!r}"
            )

    @property
    def raw_fixes(self) -> str:
        return f"{self.prefix}.fixes.raw"

    @property
    def fixes(self) -> str:
        """Validated fixes: what survived schema and plausibility checks on ``raw_fixes``."""
        return f"{self.prefix}.fixes"

    @property
    def steps(self) -> str:
        return f"{self.prefix}.steps"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    @property
    def home_ranges(self) -> str:
        return f"{self.prefix}.home-ranges"

    @property
    def home_range_work(self) -> str:
        """Home ranges due (internal): the fixes of each window, for the estimating agent."""
        return f"{self.prefix}.home-range-work"

    @property
    def positions(self) -> str:
        """Newest good fix of each animal under one key (internal, for proximity)."""
        return f"{self.prefix}.positions"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    def all(self) -> tuple[str, ...]:
        return (
            self.raw_fixes,
            self.fixes,
            self.steps,
            self.alerts,
            self.home_ranges,
            self.home_range_work,
            self.positions,
            self.dead_letter,
        )


def ensure_topics(
    bootstrap: str, names: TopicNames, partitions: int = 4, replication: int = 1
) -> list[str]:
    """Create whichever of ``names`` are missing; returns the ones this call created.

    Existing topics are left as they are, including their partition count.
    """
    if partitions < 1 or replication < 1:
        raise ValueError(
            f"partitions and replication must be >= 1, got {partitions}, {replication}"
        )
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="collarstream-admin",
        request_timeout_ms=_ADMIN_TIMEOUT_MS,
    )
    try:
        existing = set(admin.list_topics())
        missing = [t for t in names.all() if t not in existing]
        return [t for t in missing if _create_topic(admin, t, partitions, replication)]
    finally:
        admin.close()


def _create_topic(admin: KafkaAdminClient, topic: str, partitions: int, replication: int) -> bool:
    # One topic per request: kafka-python raises on the first per-topic error, so a batch
    # would hide whether the others were created when another process races us.
    try:
        admin.create_topics(
            [NewTopic(topic, partitions, replication)], timeout_ms=_ADMIN_TIMEOUT_MS
        )
    except TopicAlreadyExistsError:
        return False
    return True


def produce_json(bootstrap: str, topic: str, items: Iterable[tuple[str, bytes]]) -> int:
    """Send ``(animal_id, json_bytes)`` pairs, wait for every ack; returns how many were sent.

    Raises the first delivery error after flushing, so a partial send is never silent.
    """
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=_LINGER_MS,
        # One request in flight keeps per-animal order through retries even on clients
        # without the idempotent producer (kafka-python < 2.1).
        max_in_flight_requests_per_connection=1,
    )
    errors: list[BaseException] = []
    sent = 0
    try:
        for key, value in items:
            producer.send(topic, key=key.encode(), value=value).add_errback(errors.append)
            sent += 1
        producer.flush()
    finally:
        producer.close()
    if errors:
        raise RuntimeError(f"{len(errors)} of {sent} records to {topic} failed") from errors[0]
    return sent


def consume_all(
    bootstrap: str, topic: str, timeout_s: float, min_count: int | None = None
) -> list[tuple[str | None, bytes]]:
    """Read ``topic`` from the beginning without a consumer group.

    Stops once ``min_count`` records are in hand, else when ``timeout_s`` runs out (so without
    ``min_count`` it always waits the full timeout). Order is kept per key (per partition),
    not across partitions. Nothing is committed, so it can be called any number of times.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        partitions = _wait_for_partitions(consumer, topic, deadline)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return _poll_until(consumer, deadline, min_count)
    finally:
        consumer.close()


def _wait_for_partitions(
    consumer: KafkaConsumer, topic: str, deadline: float
) -> list[TopicPartition]:
    # Right after creation Apache Kafka can take a moment to publish a topic's metadata.
    while True:
        ids = consumer.partitions_for_topic(topic)
        if ids:
            return [TopicPartition(topic, p) for p in sorted(ids)]
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topic {topic!r} has no partitions in the broker's metadata")
        consumer.topics()  # forces a metadata refresh
        time.sleep(_POLL_MS / 1000)


def _poll_until(
    consumer: KafkaConsumer, deadline: float, min_count: int | None
) -> list[tuple[str | None, bytes]]:
    records: list[tuple[str | None, bytes]] = []
    while (min_count is None or len(records) < min_count) and time.monotonic() < deadline:
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        for batch in consumer.poll(timeout_ms=min(_POLL_MS, remaining_ms)).values():
            records += [(_decode_key(m.key), m.value) for m in batch]
    return records


def _decode_key(key: bytes | None) -> str | None:
    return None if key is None else key.decode()
