"""The worker must not build a LogRecord for every debug call of its Kafka client."""

from __future__ import annotations

import logging

import faust
import pytest

from collarstream.stream.app import CollarWorker


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.usefixtures("restore_root_logger")
def test_debug_logging_stays_off_at_warning_level() -> None:
    app = faust.App("collarstream-logging-test", broker="kafka://127.0.0.1:9")  # never started
    worker = CollarWorker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker._setup_logging()
    # faust.Worker's spinner would lower the root logger to DEBUG here.
    assert not logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("aiokafka").isEnabledFor(logging.WARNING)
