"""The broker edge: embedded Tansu lifecycle, topic creation, and both ways of consuming."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient

from collarstream.stream.broker import (
    BOOTSTRAP_ENV,
    BrokerStartError,
    EmbeddedBroker,
    EmbeddedBrokerConfig,
    connect,
)
from collarstream.stream.topics import TopicNames, consume_all, ensure_topics, produce_json

# Tansu makes a group's first join wait half the session timeout; 6 s keeps that near 3 s.
GROUP_SESSION_TIMEOUT_MS = 6_000


def _process_gone(pid: int) -> bool:
    # We are the parent: until reaped, a dead child is a zombie that kill(pid, 0) still finds,
    # so this also proves the broker was reaped.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _records(n_animals: int, per_animal: int) -> list[tuple[str, bytes]]:
    return [
        (f"animal-{a}", b'{"animal_id":"animal-%d","seq":%d}' % (a, seq))
        for seq in range(per_animal)
        for a in range(n_animals)
    ]


def _seqs_by_key(records: list[tuple[str | None, bytes]]) -> dict[str | None, list[bytes]]:
    by_key: dict[str | None, list[bytes]] = defaultdict(list)
    for key, value in records:
        by_key[key].append(value)
    return dict(by_key)


@pytest.mark.broker
def test_embedded_broker_starts_answers_and_leaves_no_process() -> None:
    broker = EmbeddedBroker()
    with broker:
        pid = broker.pid
        log_dir = broker.log_path.parent if broker.log_path else None
        assert pid is not None and not _process_gone(pid)
        assert broker.bootstrap_servers.startswith("127.0.0.1:")
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            assert admin.list_topics() == []
        finally:
            admin.close()
    assert _process_gone(pid)
    assert not broker.running
    assert log_dir is not None and not log_dir.exists()
    broker.stop()  # a second stop is a no-op


@pytest.mark.broker
def test_requested_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerStartError, match=f"port {port} .* already in use"):
            EmbeddedBroker(port=port).start()


@pytest.mark.broker
def test_start_timeout_shows_log_tail_and_kills_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    fake = tmp_path / "fake-tansu"
    # Listens nowhere, so the Metadata probe never succeeds; exec keeps the pid for the check.
    fake.write_text(
        f'#!/bin/sh\necho "fake broker warming up"\necho $$ > {pid_file}\nexec sleep 60\n'
    )
    fake.chmod(0o755)
    config = EmbeddedBrokerConfig(binary=str(fake), start_timeout_s=1.0, log_dir=tmp_path)
    with pytest.raises(BrokerStartError, match="fake broker warming up"):
        EmbeddedBroker(config=config).start()
    assert _process_gone(int(pid_file.read_text()))


@pytest.mark.broker
def test_connect_prefers_argument_then_environment_then_embedded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "kafka.example:9092")
    assert connect("other:9092").source == "argument"
    from_env = connect()
    assert (from_env.source, from_env.bootstrap_servers) == ("environment", "kafka.example:9092")
    assert not from_env.owns_process
    monkeypatch.delenv(BOOTSTRAP_ENV)
    with connect() as handle:
        assert handle.source == "embedded" and handle.owns_process and handle.broker
        pid = handle.broker.pid
    assert pid is not None and _process_gone(pid)


@pytest.mark.broker
def test_ensure_topics_creates_all_once(kafka_bootstrap: str) -> None:
    names = TopicNames(prefix=f"ensure-{time.monotonic_ns()}")
    assert sorted(ensure_topics(kafka_bootstrap, names, partitions=3)) == sorted(names.all())
    assert ensure_topics(kafka_bootstrap, names, partitions=3) == []  # idempotent
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_topics(list(names.all()))
    finally:
        admin.close()
    assert {d["name"]: len(d["partitions"]) for d in described} == dict.fromkeys(names.all(), 3)


def test_topic_prefix_is_validated() -> None:
    assert TopicNames().home_ranges == "collarstream.home-ranges"
    with pytest.raises(ValueError, match="prefix"):
        TopicNames(prefix="has space")


@pytest.mark.broker
def test_groupless_round_trip_keeps_per_animal_order(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    sent = _records(n_animals=7, per_animal=60)
    assert produce_json(kafka_bootstrap, topics.raw_fixes, sent) == len(sent)
    got = consume_all(kafka_bootstrap, topics.raw_fixes, timeout_s=20, min_count=len(sent))
    assert len(got) == len(sent)
    assert _seqs_by_key(got) == _seqs_by_key(list(sent))
    # Reading again gives the same records: nothing was committed or consumed away.
    again = consume_all(kafka_bootstrap, topics.raw_fixes, timeout_s=20, min_count=len(sent))
    assert _seqs_by_key(again) == _seqs_by_key(got)


@pytest.mark.broker
def test_consume_all_without_min_count_returns_at_timeout(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    produce_json(kafka_bootstrap, topics.alerts, [("animal-1", b"{}")])
    started = time.monotonic()
    assert consume_all(kafka_bootstrap, topics.alerts, timeout_s=2) == [("animal-1", b"{}")]
    assert 1.5 < time.monotonic() - started < 10


async def _consume_as_group(
    bootstrap: str, topic: str, group: str, expected: int, patience_s: float = 30
) -> tuple[list[tuple[str | None, bytes]], float]:
    """Join ``group``, read until ``expected`` records or ``patience_s``, commit, leave."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=GROUP_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1_000,
    )
    started = time.monotonic()
    await consumer.start()
    try:
        records: list[tuple[str | None, bytes]] = []
        while len(records) < expected and time.monotonic() - started < patience_s:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += [(m.key.decode() if m.key else None, m.value) for m in batch]
        joined_and_read_s = time.monotonic() - started
        await consumer.commit()
    finally:
        await consumer.stop()
    return records, joined_and_read_s


@pytest.mark.broker
def test_aiokafka_consumer_group_consumes_and_commits(
    kafka_bootstrap: str, topics: TopicNames, record_property: Callable[[str, object], None]
) -> None:
    sent = _records(n_animals=5, per_animal=40)
    produce_json(kafka_bootstrap, topics.fixes, sent)
    group = f"{topics.prefix}-group"
    got, elapsed_s = asyncio.run(_consume_as_group(kafka_bootstrap, topics.fixes, group, len(sent)))
    record_property("group_join_and_read_s", round(elapsed_s, 2))
    assert _seqs_by_key(got) == _seqs_by_key(list(sent))
    # Half of a 6 s session, plus slack for a slow runner; a real Kafka joins faster.
    assert elapsed_s < GROUP_SESSION_TIMEOUT_MS / 1000 + 5
    # A restarted member resumes from the committed offsets (what a Faust restart relies on),
    # so it sees only what arrived after the commit. Tansu makes an immediate rejoin wait for
    # the departed member to expire: measured ~1.5x the session timeout plus 2-3 s.
    produce_json(kafka_bootstrap, topics.fixes, [("animal-late", b'{"seq":0}')])
    rejoin_patience_s = 2 * GROUP_SESSION_TIMEOUT_MS / 1000 + 5
    resumed, rejoin_s = asyncio.run(
        _consume_as_group(kafka_bootstrap, topics.fixes, group, 1, patience_s=rejoin_patience_s)
    )
    record_property("group_rejoin_and_read_s", round(rejoin_s, 2))
    assert resumed == [("animal-late", b'{"seq":0}')]
