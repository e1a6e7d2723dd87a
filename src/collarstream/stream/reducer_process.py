"""The reducer in a process of its own, holding the decoded track states.

Why a process. In one process the reducer (a thread) and the event loop (Faust,
aiokafka: fetching, validating, producing) took turns on one core under the GIL:
measured under load, the reducer held it ~35-55 % of the time and the loop the rest,
so neither could use the second core. Here the worker's event loop writes each
micro-batch's fix messages to a single child process and reads back what to send, both
through pipes it serves itself (`ReducerProcess`); the child keeps every state it has
seen decoded in memory (`ReducerState`), so a batch crosses as bytes both ways and no
state is encoded per batch. Whenever the child is free it reduces every call waiting in
its pipe as one (`_serve`).

States reach the `animal_to_track` table once per commit interval, before the offsets
are committed (Faust commits only through `Consumer._commit_offsets`, which the
worker's consumer makes run `flush` first; see `stream.app`). At-least-once holds
because only *confirmed* states are written: a state is confirmed when the worker
reports that the outputs of the batch that made it were handed to the producer, and
the producer is flushed before the write. So after a crash the restored table holds
every fix of every committed offset (committed offsets cover only events whose
outputs were sent), and every fix it holds has had its events sent; what is
reprocessed is merged idempotently by the reducer and re-emits the same ids, which
sinks drop. The commit runs while later batches are being reduced and sent (the worker
reduces ahead while it sends, and goes on during a commit): each reduce call has a
sequence number, each confirmation names the call it confirms, and the child keeps
each animal's unconfirmed versions until a confirmation reaches them. A commit takes
the confirmations made so far before it flushes the producer (`hold`); those made
during the flush wait for the next commit.

On a rebalance the worker flushes and the child forgets every state: another worker
may own those animals next, and the table restored from the changelog is the truth.
A child that dies takes the worker down (a supervisor restarts it from the table), and
a worker that dies takes the child with it (`stream.children`).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import fcntl
import functools
import gc
import multiprocessing
import multiprocessing.process
import os
import pickle
import struct
import weakref
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import orjson
from faust.streams import _current_event

from collarstream.core.track import Context, TrackState, advance_many
from collarstream.stream import state_codec
from collarstream.stream.children import tie_to_worker
from collarstream.stream.heap import freeze_heap
from collarstream.stream.watch import last_fix_record
from collarstream.wire import concat_batches, decode_batch

# What a batch gives back per animal: its steps (one JSON array, or None), its other
# events (kind, JSON), and its newest good fix for the watchers (or None).
Result = tuple[bytes | None, list[tuple[str, bytes]], dict[str, Any] | None]


class Seed:
    """The table's bytes of a state the child does not hold (None: a new animal)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes | None) -> None:
        self.raw = raw


class ReducerState:
    """The child's side: decoded states, the version each reduce call made, and which
    of them the worker has confirmed (outputs sent) and not yet had written."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.seq = 0
        # key -> the state after the newest reduce of it; its versions not confirmed yet.
        self.current: dict[bytes, TrackState] = {}
        self.versions: dict[bytes, dict[int, TrackState]] = {}
        self.confirmed: dict[bytes, TrackState] = {}
        self.unwritten: set[bytes] = set()

    def reduce(
        self, work: Sequence[tuple[bytes, Seed | None, list[bytes]]], confirm: Sequence[Any]
    ) -> tuple[int, list[Result]]:
        """Advance each animal by its fix messages; returns this call's number and, per
        animal, what to send. Steps go out as one message per animal per batch (a JSON
        array, like a collar upload): a send costs tens of µs, and at 20 k fixes/s one
        per step would be most of the budget. Alerts and home ranges are rare and go one
        by one."""
        self.confirm(confirm)
        self.seq += 1
        n_fences = len(self.ctx.urban)
        items, before = [], []
        for key, seed, bodies in work:
            held = self.current.get(key)
            if held is not None:
                state = held
            elif seed is not None and seed.raw is not None:
                state = state_codec.decode(seed.raw)
            else:
                state = TrackState.new(key.decode(), n_fences)
            batch = concat_batches([decode_batch(b)[1] for b in bodies])
            items.append((state, batch))
            before.append(state)
        out: list[Result] = []
        advanced = advance_many(items, self.ctx)
        for (key, _, _), old, (state, events) in zip(work, before, advanced, strict=True):
            self.current[key] = state
            self.versions.setdefault(key, {})[self.seq] = state
            steps = [e for e in events if e["type"] == "step"]
            others = [
                (e["type"], orjson.dumps(e, option=orjson.OPT_SERIALIZE_NUMPY))
                for e in events
                if e["type"] != "step"
            ]
            # (advance returns the very state it was given when nothing was new)
            rec = last_fix_record(state, self.ctx) if state is not old else None
            out.append((orjson.dumps(steps) if steps else None, others, rec))
        return self.seq, out

    def confirm(self, confirm: Sequence[tuple[bytes, int]]) -> None:
        """The outputs of reduce call `seq` for `key` were handed to the producer."""
        for key, seq in confirm:
            versions = self.versions.get(key)
            if versions is None:
                continue  # dropped since (a rebalance): the table has it
            state = versions.pop(seq, None)
            if state is None:
                raise RuntimeError(f"confirmation of {key!r} for an unknown reduce {seq}")
            for older in [s for s in versions if s < seq]:
                del versions[older]  # outputs sent in order: superseded
            self.confirmed[key] = state
            self.unwritten.add(key)

    def encode(self, confirm: Sequence[tuple[bytes, int]]) -> dict[bytes, bytes]:
        """The confirmed states not written yet, encoded for the table."""
        self.confirm(confirm)
        out = {key: state_codec.encode(self.confirmed[key]) for key in sorted(self.unwritten)}
        self.unwritten.clear()
        return out

    def drop(self) -> None:
        if self.unwritten:
            raise RuntimeError("drop with confirmed states not written; encode first")
        self.current.clear()
        self.versions.clear()
        self.confirmed.clear()


# ---------------------------------------------------------------- the child process


# The child holds every animal's state (hundreds of thousands of small objects that
# live for hours) and makes thousands of short-lived ones per call. At Python's default
# (a collection every 700 allocations) the collector took ~10 % of the reducer's time:
# 200 animals with 70-day tracks, single-fix calls, 674-685 against 608-622 µs per
# animal-call at 20,000.
GC_THRESHOLD = 20_000
# Below the event loop and the broker, which decide how fast fixes come in: on a small
# machine, a reducer at their priority eats each trickle as it comes, in many small calls
# (a call's cost is mostly per animal), and takes the cores the intake needed. Niced, it
# gets the cores they leave and reduces what built up meanwhile in fewer, larger calls.
NICENESS = 10
# The pipes both ways, raised from Linux's 64 KiB: a catch-up call's outputs are
# megabytes, and a reader that must come back for every 64 KiB is one more wait.
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ names it; Linux only)


class _Request(NamedTuple):
    rid: int  # numbered by the worker, in the order it wrote them
    op: str  # "reduce", "encode", "drop", "ready"
    args: tuple[Any, ...]


class Merged:
    """What a reduce call answers when the child reduced it together with later calls:
    its outputs come with the last of them (`ReducerProcess.reduce`)."""


MERGED = Merged()
# A reduce call's answer: this state version's number and, per animal (key), what to send.
Reduced = tuple[int, list[tuple[bytes, Result]]]


def _serve(
    make_context: Callable[[], Context], worker_pid: int, inbox: Connection, outbox: Connection
) -> None:
    """The child's main loop. Whenever it is free it reads every request waiting in its
    pipe, and reduces each run of consecutive reduce calls as one call: in a catch-up
    the worker keeps handing it what it took while the child was busy, and one call
    over all of it costs a fraction of many (a call's cost is mostly per animal, not
    per fix; measured in process on the throughput bench's uploads, 200 animals: 113
    µs a fix at one upload an animal a call, 33 at twelve)."""
    tie_to_worker(worker_pid, NICENESS)
    gc.set_threshold(GC_THRESHOLD)
    state = ReducerState(make_context())
    freeze_heap()  # the context stays (see stream.heap)
    while True:
        try:
            requests = [_read(inbox)]
            while inbox.poll():
                requests.append(_read(inbox))
        except EOFError:
            return  # the worker closed the pipe (shut down) or died
        for run in _runs(requests):
            rids = [r.rid for r in run]
            try:
                answer: tuple[str, Any] = ("ok", _answer(state, run))
            except Exception as exc:  # the worker raises it from the calls' futures
                answer = ("error", _picklable(exc))
            try:
                outbox.send_bytes(pickle.dumps((rids, answer), pickle.HIGHEST_PROTOCOL))
            except BrokenPipeError:
                return  # the worker stopped reading: it shut down or died


def _read(inbox: Connection) -> _Request:
    request: _Request = pickle.loads(inbox.recv_bytes())
    return request


def _runs(requests: list[_Request]) -> Iterator[list[_Request]]:
    """Consecutive reduce requests together; any other request alone, in order."""
    run: list[_Request] = []
    for r in requests:
        if r.op == "reduce":
            run.append(r)
            continue
        if run:
            yield run
            run = []
        yield [r]
    if run:
        yield run


def _answer(state: ReducerState, run: list[_Request]) -> Any:
    op = run[0].op
    if op == "reduce":
        return _reduce_all(state, [r.args for r in run])
    if op == "encode":
        return state.encode(*run[0].args)
    if op == "drop":
        return state.drop()
    if op == "ready":
        return len(state.current)
    raise ValueError(f"unknown request {op!r}")


def _reduce_all(state: ReducerState, calls: list[tuple[Any, ...]]) -> Reduced:
    """Reduce calls as one: each animal's messages in call order, the first seed it was
    sent with (later calls send none: the worker knows the child holds it), every
    confirmation (they name calls answered before any of these were sent)."""
    merged: dict[bytes, tuple[Seed | None, list[bytes]]] = {}
    confirm: list[tuple[bytes, int]] = []
    for work, conf in calls:
        confirm += conf
        for key, seed, bodies in work:
            if key in merged:
                merged[key][1].extend(bodies)
            else:
                merged[key] = (seed, list(bodies))
    seq, out = state.reduce([(k, seed, bodies) for k, (seed, bodies) in merged.items()], confirm)
    return seq, list(zip(merged, out, strict=True))


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(f"in the reducer process: {exc!r}")
    return exc


# ---------------------------------------------------------------- the worker's side


class ReducerProcess:
    """The worker's handle on the child: calls are answered in the order they were made.

    Not a ProcessPoolExecutor. Its feeder and result threads hand every call and every
    answer through the worker's GIL, which the event loop holds for milliseconds at a
    time: an answer of a few MiB came back in 64 KiB reads, each waiting out a switch
    interval (measured in a catch-up: ~120 ms between the child's end of a call and the
    worker's seeing it). And it runs calls one by one, where the child here reduces
    together whatever waits (`_serve`). Here the event loop writes requests to one pipe
    and reads answers from another itself, with no thread between."""

    def __init__(
        self, table: MutableMapping[bytes, bytes], make_context: Callable[[], Context]
    ) -> None:
        self._table = table
        ctx = multiprocessing.get_context("spawn")  # forking a process with threads may deadlock
        self._child_in, self._to_child = ctx.Pipe(duplex=False)
        self._from_child, self._child_out = ctx.Pipe(duplex=False)
        for conn in (self._to_child, self._from_child):
            _grow(conn)
        self._process = ctx.Process(
            target=_serve,
            args=(make_context, os.getpid(), self._child_in, self._child_out),
            name="collarstream-reducer",
        )
        self._rid = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._messages: dict[int, int] = {}  # rid -> fix messages of a reduce call
        self.in_flight_messages = 0
        self._answered = asyncio.Event()
        self._pipes: _Pipes | None = None
        self._at_exit: Callable[[], None] | None = None
        self._broken: BaseException | None = None
        self._held: set[bytes] = set()  # keys the child may hold (sent since the last drop)
        self._confirm: list[tuple[bytes, int]] = []
        self._holding = False  # confirmations wait here, not passed on (see `hold`)
        # Key -> an event of its partition: Faust writes a table key to the partition of
        # the current event, so the flush borrows the last one seen.
        self._events: dict[bytes, Any] = {}

    def start(self) -> None:
        """Start the child now (it takes seconds to load the context), not on the first
        batch. The worker's main thread must call this (`stream.children`)."""
        self._process.start()
        # The child's ends are the child's: its death must read as EOF here.
        self._child_in.close()
        self._child_out.close()
        # At exit multiprocessing joins its children, and this one waits on its pipe
        # until it reads EOF: end it first (registered later, so run earlier).
        self._at_exit = functools.partial(_stop, self._process, self._to_child, self._from_child)
        atexit.register(self._at_exit)

    async def ready(self) -> int:
        """Wait until the child has loaded its context; how many states it holds."""
        n: int = await self._submit("ready")
        return n

    @property
    def calls_in_flight(self) -> int:
        """Calls sent and not answered yet."""
        return len(self._waiting)

    async def answered(self, timeout: float | None = None) -> None:
        """Wait until the child answers a call (or `timeout` seconds pass)."""
        self._answered.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answered.wait(), timeout)

    def reduce(self, batches: Sequence[tuple[bytes, list[bytes]]]) -> asyncio.Future[Any]:
        """Per animal (key, fix messages) -> `Reduced`: this call's state version and,
        per animal, what to send; or `MERGED` when the child reduced it together with
        later calls, whose answer (the last of them) then holds its animals' outputs
        too. Written before this returns, so calls run in the order they were made; the
        caller awaits the result when it wants it (the next call may be made first)."""
        work = []
        for key, bodies in batches:
            seed = None
            if key not in self._held:
                seed = Seed(self._table.get(key))
                self._held.add(key)
            work.append((key, seed, bodies))
        confirm: list[tuple[bytes, int]] = []
        if not self._holding:
            confirm, self._confirm = self._confirm, []
        return self._submit("reduce", work, confirm, messages=sum(len(b) for _, b in batches))

    def sent(self, key: bytes, seq: int, event: Any) -> None:
        """The outputs of state version `seq` of `key` are with the producer."""
        self._confirm.append((key, seq))
        self._events[key] = event

    def hold(self) -> list[tuple[bytes, int]]:
        """The confirmations so far, for `flush`; later ones stay here (not passed on
        with reduce calls) until `release`. An offset commit runs while later batches are
        reduced and sent: it takes these, flushes the producer, and writes exactly the
        states whose outputs that flush acknowledged."""
        confirm, self._confirm = self._confirm, []
        self._holding = True
        return confirm

    def release(self) -> None:
        self._holding = False

    async def flush(self, confirm: Sequence[tuple[bytes, int]] | None = None) -> int:
        """Write every confirmed, changed state to the table; returns how many. Flush the
        producer first (see the module docstring). `confirm`: the confirmations `hold`
        took (default: all made so far)."""
        if confirm is None:
            confirm, self._confirm = self._confirm, []
        encoded: dict[bytes, bytes] = await self._submit("encode", confirm)
        for key, raw in encoded.items():
            token = _current_event.set(weakref.ref(self._events[key]))
            try:
                self._table[key] = raw
            finally:
                _current_event.reset(token)
        return len(encoded)

    async def drop(self) -> None:
        """Forget every state (after a rebalance); flush first."""
        await self._submit("drop")
        self._held.clear()
        self._events.clear()

    def shutdown(self) -> None:
        self._broken = self._broken or RuntimeError("shut down")
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
        if self._pipes is not None:
            self._pipes.close()
        _stop(self._process, self._to_child, self._from_child)
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)

    # ------------------------------------------------------------ the pipes

    def _submit(self, op: str, *args: Any, messages: int = 0) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self._broken is not None:
            fut.set_exception(RuntimeError(f"the reducer process is gone: {self._broken}"))
            return fut
        if self._pipes is None:
            self._attach(loop)
        self._rid += 1
        self._waiting[self._rid] = fut
        if messages:
            self._messages[self._rid] = messages
            self.in_flight_messages += messages
        body = pickle.dumps(_Request(self._rid, op, args), pickle.HIGHEST_PROTOCOL)
        assert self._pipes is not None
        self._pipes.write(_header(len(body)))
        self._pipes.write(body)
        return fut

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve both pipes from the running loop (the first call's)."""
        self._pipes = _Pipes(
            loop, self._to_child.fileno(), self._from_child.fileno(), self._on_answer, self._lost
        )

    def _on_answer(self, rids: list[int], answer: tuple[str, Any]) -> None:
        status, value = answer
        for k, rid in enumerate(rids):
            fut = self._waiting.pop(rid, None)
            self.in_flight_messages -= self._messages.pop(rid, 0)
            if fut is None or fut.done():
                continue  # cancelled (shutdown)
            if status == "error":
                fut.set_exception(value)
            else:
                fut.set_result(value if k == len(rids) - 1 else MERGED)
        self._answered.set()

    def _lost(self, exc: BaseException | None) -> None:
        """A pipe closed or failed: the child is gone. Every call waiting fails."""
        if self._broken is not None:
            return
        code = self._process.exitcode
        self._broken = exc or EOFError(f"the reducer process ended (exit code {code})")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError(f"the reducer process is gone: {self._broken}"))
        self._waiting.clear()
        self._messages.clear()
        self.in_flight_messages = 0
        self._answered.set()


def _header(n: int) -> bytes:
    """multiprocessing.Connection's framing, which the child reads with `recv_bytes`."""
    return struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)


def _grow(conn: Connection) -> None:
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(conn.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)


def _stop(process: multiprocessing.process.BaseProcess, *conns: Connection) -> None:
    """Close the pipes (the child ends on EOF) and make sure the child is gone: it
    ignores SIGTERM (`stream.children`), and multiprocessing joins its children at exit."""
    for conn in conns:
        conn.close()
    if process.pid is None:
        return
    process.join(2.0)
    if process.exitcode is None:
        process.kill()
        process.join(2.0)


class _Pipes:
    """The worker's ends of both pipes, served by the event loop: requests written as
    far as the pipe takes them and the rest when it has room, answers read whenever
    they come and handed on whole (unpickled) in order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        out_fd: int,
        in_fd: int,
        on_answer: Callable[[list[int], tuple[str, Any]], None],
        on_lost: Callable[[BaseException | None], None],
    ) -> None:
        self._loop, self._out_fd, self._in_fd = loop, out_fd, in_fd
        self._on_answer, self._on_lost = on_answer, on_lost
        self._out: collections.deque[memoryview] = collections.deque()
        self._in = bytearray()
        self._closed = False
        os.set_blocking(out_fd, False)
        os.set_blocking(in_fd, False)
        loop.add_reader(in_fd, self._readable)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        view = memoryview(data)
        if not self._out:
            try:
                view = view[os.write(self._out_fd, view) :]
            except BlockingIOError:
                pass
            except OSError as exc:
                self._fail(exc)
                return
            if not view:
                return
            self._loop.add_writer(self._out_fd, self._writable)
        self._out.append(view)

    def _writable(self) -> None:
        while self._out:
            try:
                n = os.write(self._out_fd, self._out[0])
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(exc)
                return
            if n < len(self._out[0]):
                self._out[0] = self._out[0][n:]
                return
            self._out.popleft()
        self._loop.remove_writer(self._out_fd)

    def _readable(self) -> None:
        try:
            data = os.read(self._in_fd, PIPE_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        if not data:
            self._fail(None)  # EOF: the child is gone
            return
        self._in += data
        while len(self._in) >= 4:
            (n,) = struct.unpack_from("!i", self._in)
            at = 4
            if n == -1:
                if len(self._in) < 12:
                    return
                (n,) = struct.unpack_from("!Q", self._in, 4)
                at = 12
            if len(self._in) < at + n:
                return
            with memoryview(self._in) as view:
                rids, answer = pickle.loads(view[at : at + n])
            del self._in[: at + n]
            self._on_answer(rids, answer)

    def _fail(self, exc: BaseException | None) -> None:
        self.close()
        self._on_lost(exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._in_fd)
        self._loop.remove_writer(self._out_fd)
        self._out.clear()
