"""The reducer in a process of its own, holding the decoded track states.

Why a process. In one process the reducer (a thread) and the event loop (Faust,
aiokafka: fetching, validating, producing) took turns on one core under the GIL:
measured under load, the reducer held it ~35-55 % of the time and the loop the rest,
so neither could use the second core. Here the worker's event loop sends each
micro-batch's fix messages to a single child process and gets back what to send;
the child keeps every state it has seen decoded in memory (`ReducerState`), so a
batch crosses the pipe as bytes both ways and no state is encoded per batch.

States reach the `animal_to_track` table once per commit interval, before the offsets
are committed (Faust commits only through `Consumer._commit_offsets`, which the
worker's consumer makes run `flush` first; see `stream.app`). At-least-once holds
because only *confirmed* states are written: a state is confirmed when the worker
reports that the outputs of the batch that made it were handed to the producer, and
the producer is flushed before the write. So after a crash the restored table holds
every fix of every committed offset (committed offsets cover only events whose
outputs were sent), and every fix it holds has had its events sent; what is
reprocessed is merged idempotently by the reducer and re-emits the same ids, which
sinks drop. The commit can come while later batches are being reduced or wait to be
sent (the worker reduces ahead while it sends): each reduce call has a sequence
number, each confirmation names the call it confirms, and the child keeps each
animal's unconfirmed versions until a confirmation reaches them.

On a rebalance the worker flushes and the child forgets every state: another worker
may own those animals next, and the table restored from the changelog is the truth.
A child that dies takes the worker down (a supervisor restarts it from the table), and
a worker that dies takes the child with it (`stream.children`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import multiprocessing
import os
import weakref
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import orjson
from faust.streams import _current_event

from collarstream.core.track import Context, TrackState, advance_many
from collarstream.stream import state_codec
from collarstream.stream.children import tie_to_worker
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

_CHILD: ReducerState | None = None


# The child holds every animal's state (hundreds of thousands of small objects that
# live for hours) and makes thousands of short-lived ones per call. At Python's default
# (a collection every 700 allocations) the collector took ~10 % of the reducer's time:
# 200 animals with 70-day tracks, single-fix calls, 674-685 against 608-622 µs per
# animal-call at 20,000.
GC_THRESHOLD = 20_000


def _start_child(make_context: Callable[[], Context], worker_pid: int) -> None:
    global _CHILD
    tie_to_worker(worker_pid)
    gc.set_threshold(GC_THRESHOLD)
    _CHILD = ReducerState(make_context())


def _child() -> ReducerState:
    if _CHILD is None:
        raise RuntimeError("reducer process not initialised")
    return _CHILD


def _reduce(work: Any, confirm: Any) -> tuple[int, list[Result]]:
    return _child().reduce(work, confirm)


def _encode(confirm: Any) -> dict[bytes, bytes]:
    return _child().encode(confirm)


def _drop() -> None:
    _child().drop()


def _ready() -> int:
    return len(_child().current)


# ---------------------------------------------------------------- the worker's side


class ReducerProcess:
    """The worker's handle on the child: one call at a time, in order."""

    def __init__(
        self, table: MutableMapping[bytes, bytes], make_context: Callable[[], Context]
    ) -> None:
        self._table = table
        # "spawn": forking a process that runs the consumer's thread can deadlock the child.
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
            initargs=(make_context, os.getpid()),
        )
        self._held: set[bytes] = set()  # keys the child may hold (sent since the last drop)
        self._confirm: list[tuple[bytes, int]] = []
        # Key -> an event of its partition: Faust writes a table key to the partition of
        # the current event, so the flush borrows the last one seen.
        self._events: dict[bytes, Any] = {}

    def start(self) -> concurrent.futures.Future[int]:
        """Start the child now (it takes seconds to load the context), not on the first batch."""
        return self._pool.submit(_ready)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `fn` in the child, after every call submitted before; await the result."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def reduce(
        self, batches: Sequence[tuple[bytes, list[bytes]]]
    ) -> asyncio.Future[tuple[int, list[Result]]]:
        """Per animal (key, fix messages) -> this call's number, what to send per animal.
        Submitted before this returns, so calls run in the order they were made; the
        caller awaits the result when it wants it (the next call may be made first)."""
        work = []
        for key, bodies in batches:
            seed = None
            if key not in self._held:
                seed = Seed(self._table.get(key))
                self._held.add(key)
            work.append((key, seed, bodies))
        confirm, self._confirm = self._confirm, []
        return self._submit(_reduce, work, confirm)

    def sent(self, key: bytes, seq: int, event: Any) -> None:
        """The outputs of reduce call `seq` for `key` are with the producer."""
        self._confirm.append((key, seq))
        self._events[key] = event

    async def flush(self) -> int:
        """Write every confirmed, changed state to the table; returns how many. Flush the
        producer first (see the module docstring)."""
        confirm, self._confirm = self._confirm, []
        encoded: dict[bytes, bytes] = await self._submit(_encode, confirm)
        for key, raw in encoded.items():
            token = _current_event.set(weakref.ref(self._events[key]))
            try:
                self._table[key] = raw
            finally:
                _current_event.reset(token)
        return len(encoded)

    async def drop(self) -> None:
        """Forget every state (after a rebalance); flush first."""
        await self._submit(_drop)
        self._held.clear()
        self._events.clear()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
