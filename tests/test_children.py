"""The worker's helper processes ignore the terminal's signals and die with the worker."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from collarstream.stream.children import tie_to_worker

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prctl")


def _pool(niceness: int = 0) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=tie_to_worker,
        initargs=(os.getpid(), niceness),
    )


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_helper_survives_the_signals_a_terminal_sends_its_group() -> None:
    with _pool() as pool:
        pid = pool.submit(os.getpid).result(timeout=60)
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        # Killed, the pool would be broken (BrokenProcessPool) and the pid gone.
        assert pool.submit(abs, -3).result(timeout=30) == 3
        assert pool.submit(os.getpid).result(timeout=30) == pid


def test_a_helper_runs_at_the_niceness_asked_for() -> None:
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    with _pool(niceness=5) as pool:
        theirs = pool.submit(os.getpriority, os.PRIO_PROCESS, 0).result(timeout=60)
    assert theirs == min(mine + 5, 19)


def test_helpers_die_with_a_worker_killed_outright() -> None:
    # A stand-in worker: starts a pool as the worker does, prints its helper's pid, waits.
    script = textwrap.dedent(
        """
        import concurrent.futures, multiprocessing, os, sys, time
        from collarstream.stream.children import tie_to_worker
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=tie_to_worker,
            initargs=(os.getpid(),),
        )
        print(pool.submit(os.getpid).result(), flush=True)
        time.sleep(600)
        """
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert worker.stdout is not None
        helper = int(worker.stdout.readline())
        assert _running(helper)
        worker.kill()  # SIGKILL: no atexit, no pool shutdown
        worker.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _running(helper) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(helper), "the helper outlived its worker"
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
