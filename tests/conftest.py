"""Shared fixtures: one broker per session, fresh uuid topics per test, the real-data dir.

Broker choice, first match wins: ``KAFKA_BOOTSTRAP_SERVERS``; a testcontainers Kafka when a
Docker engine answers; the embedded Tansu broker. ``COLLARSTREAM_TEST_BROKER=embedded`` (or
``docker``) skips the detection, e.g. on CI runners where Docker exists but is slow to pull.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from collarstream.stream.broker import BOOTSTRAP_ENV, EmbeddedBroker
from collarstream.stream.topics import TopicNames, ensure_topics

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CHOICE_ENV = "COLLARSTREAM_TEST_BROKER"
# Docker's client hangs for its default 60 s on a dead TCP endpoint; a live engine answers
# a ping in milliseconds.
_DOCKER_PING_TIMEOUT_S = 3

BrokerKind = Literal["environment", "docker", "embedded"]


@functools.cache
def _broker_kind() -> BrokerKind:
    if os.environ.get(BOOTSTRAP_ENV, "").strip():
        return "environment"
    forced = os.environ.get(CHOICE_ENV, "").strip()
    if forced == "docker" or forced == "embedded":
        return forced
    if forced:
        raise pytest.UsageError(f"{CHOICE_ENV} must be 'docker' or 'embedded', got {forced!r}")
    return "docker" if _docker_engine_reachable() else "embedded"


def _docker_engine_reachable() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=_DOCKER_PING_TIMEOUT_S)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no client, no socket, no permission: all mean "not usable here"
        return False


def pytest_report_header(config: pytest.Config) -> str:
    return f"kafka broker for tests: {_broker_kind()} (see tests/conftest.py)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Marking by fixture use keeps `-m "not broker"` honest even when a test forgets the mark.
    for item in items:
        # fixturenames is the full closure, so `topics` users count as broker tests too.
        names = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in names:
            item.add_marker(pytest.mark.broker)
        if "shared_data" in names:
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    kind = _broker_kind()
    if kind == "environment":
        bootstrap = os.environ[BOOTSTRAP_ENV].strip()
        _announce(request, f"using {BOOTSTRAP_ENV}={bootstrap}")
        yield bootstrap
    elif kind == "docker":
        with _kafka_container() as container:
            bootstrap = container.get_bootstrap_server()
            _announce(request, f"started testcontainers Kafka at {bootstrap}")
            yield bootstrap
    else:
        with EmbeddedBroker() as broker:
            _announce(request, f"started embedded Tansu at {broker.bootstrap_servers}")
            yield broker.bootstrap_servers


def _kafka_container() -> Any:  # testcontainers' types are loose; Any keeps mypy quiet
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.10 kept it at the top level
        from testcontainers.kafka import KafkaContainer
    # KRaft: no ZooKeeper container, and the same mode production runs in.
    return KafkaContainer().with_kraft()


def _announce(request: pytest.FixtureRequest, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    # Fixture setup runs under output capture; suspend it so the line reaches the terminal.
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[kafka_bootstrap] {line}")


@pytest.fixture
def topics(kafka_bootstrap: str) -> TopicNames:
    """A fresh set of topics per test, so tests never read each other's records."""
    names = TopicNames(prefix=f"test-{uuid.uuid4().hex[:12]}")
    ensure_topics(kafka_bootstrap, names)
    return names


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent: real-data tests need it beside the project root")
    return SHARED_DATA
