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


def test_the_worker_spawns_its_processes_with_single_threaded_blas(monkeypatch) -> None:
    """The reducer and home-range processes inherit one BLAS thread each (their pools
    competed with the worker's own processes), unless the operator chose otherwise."""
    import os

    from collarstream.config import Settings
    from collarstream.stream import app as app_mod
    from collarstream.stream import worker as worker_mod

    seen: dict[str, str | None] = {}

    def build_app(settings: Settings) -> None:  # where the processes are spawned
        seen.update({var: os.environ.get(var) for var in worker_mod.SINGLE_THREADED})
        raise SystemExit(0)

    monkeypatch.setattr(worker_mod, "ensure_topics", lambda *a, **k: None)
    monkeypatch.setattr(app_mod, "build_app", build_app)
    for var in worker_mod.SINGLE_THREADED:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with pytest.raises(SystemExit):
        worker_mod.run_worker(Settings(bootstrap_servers="127.0.0.1:1"))
    assert seen == {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}
