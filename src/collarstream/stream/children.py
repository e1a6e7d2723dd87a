"""The worker's helper processes (the reducer, the home-range estimator) live and die with it.

They are spawned processes (the reducer's its own, the home-range estimator a
ProcessPoolExecutor's), and their lifetime is the worker's business:

* Signals. Ctrl-C in a terminal (SIGINT) reaches the whole foreground process group, and
  so does ``kill -TERM -<pgid>``. A helper killed by them mid-call breaks its pool: the
  worker, shutting down in order on the same signal, then logged BrokenProcessPool
  crashes from its agents. Helpers ignore both; the worker ends them when it shuts its
  pools down.
* The worker's death. A worker killed outright (SIGKILL, the OOM killer) used to leave
  its helpers blocked on their call queue, whose write end they hold themselves, for
  good: the reducer with every decoded track. Linux sends them SIGKILL when the thread
  that started them ends (PR_SET_PDEATHSIG); they are started from the worker's main
  thread, whose end is the process's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def parent_death_signal() -> Callable[[int], object] | None:
    """Linux's prctl(PR_SET_PDEATHSIG, sig) as a function of sig: the calling process gets
    sig when the thread that started it ends. Resolved on this call, so a forked child
    that may only do trivial work until exec (`stream.broker`) can be handed it ready.
    None off Linux or without a C library."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.util.find_library("c")
    if libc is None:
        return None
    prctl = ctypes.CDLL(libc, use_errno=True).prctl
    return lambda sig: prctl(_PR_SET_PDEATHSIG, sig)


def tie_to_worker(worker_pid: int, niceness: int = 0) -> None:
    """Pool initializer (also called first by other initializers): ignore SIGINT and
    SIGTERM, die with `worker_pid`, and lower this process's priority by `niceness`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if (arm := parent_death_signal()) is not None:
        arm(signal.SIGKILL)
    if os.getppid() != worker_pid:  # the worker died before the signal was armed
        os._exit(1)
    if niceness:
        os.nice(niceness)
