"""Run the Faust worker in this process until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from collarstream.config import Settings
from collarstream.stream.heap import freeze_heap
from collarstream.stream.topics import TopicNames, ensure_topics

# The worker is a few single-threaded processes by design (the event loop, the reducer,
# the home-range estimator), each meant to keep one core busy. A BLAS thread pool in
# each (OpenBLAS starts one per core) only competes with them: measured on 2 cores, the
# catch-up throughput was 5.2-5.4 k fixes/s with the pools and 6.3 k with one thread.
# Set before the processes are spawned, so they inherit it; an operator's value stands.
SINGLE_THREADED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_worker(settings: Settings) -> None:
    from collarstream.stream.app import CollarWorker, build_app

    if not settings.bootstrap_servers:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS: the worker needs a broker address")
    for var in SINGLE_THREADED:
        os.environ.setdefault(var, "1")
    # Topics first, with our partition count: Faust would otherwise declare them itself
    # and a producer's auto-create could race it with another count.
    ensure_topics(
        settings.bootstrap_servers,
        TopicNames(settings.topic_prefix),
        partitions=settings.partitions,
    )
    app = build_app(settings)
    freeze_heap()  # the context stays (see stream.heap); the rest once started
    logging.getLogger("faust").setLevel(settings.log_level.upper())
    worker = CollarWorker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def spawn_worker(
    bootstrap: str, prefix: str, workdir: Path, extra_env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`collarstream worker` as a child process in its own session, logging to
    workdir/worker.log, its tables in workdir/data; for the demo, tests and benchmarks."""
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "COLLARSTREAM_TOPIC_PREFIX": prefix,
            "COLLARSTREAM_APP_ID": f"{prefix}-worker",
            "COLLARSTREAM_DATA_DIR": str(workdir / "data"),
            "COLLARSTREAM_WEB_ENABLED": "false",
            **(extra_env or {}),
        }
    )
    with open(workdir / "worker.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "collarstream", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM (Faust shuts down cleanly), then SIGKILL to the whole group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
