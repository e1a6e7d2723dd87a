"""The worker's helper processes (the reducer, the home-range estimator) live and die with it.

They are ProcessPoolExecutor processes, and their lifetime is the worker's business:

* Signals. Ctrl-C in a terminal (SIGINT) reaches the whole foreground process group, and
  so does ``kill -TERM -<pgid>``. A helper killed by them mid-call breaks its pool: the
  worker, shutting down in order on the same signal, then logged BrokenProcessPool
  crashes from its agents. Helpers ignore both; the worker ends them when it shuts its
  pools down.
* The worker's death. A worker killed outright (SIGKILL, the OOM killer) used to leave
  its helpers blocked on their call queue, whose write end they hold themselves, for
  good: the reducer with every decoded track. Linux sends them SIGKILL when the thread
  that started them ends (PR_SET_PDEATHSIG); the pools are started from the worker's
  main thread, whose end is the process's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def tie_to_worker(worker_pid: int, niceness: int = 0) -> None:
    """Pool initializer (also called first by other initializers): ignore SIGINT and
    SIGTERM, die with `worker_pid`, and lower this process's priority by `niceness`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux") and (libc := ctypes.util.find_library("c")):
        ctypes.CDLL(libc, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker_pid:  # the worker died before the signal was armed
        os._exit(1)
    if niceness:
        os.nice(niceness)
