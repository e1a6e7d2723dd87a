"""The reducer's process (stream.reducer_process): which state versions reach the table.

The at-least-once argument rests on one rule: a state is written only once the worker
has confirmed that the outputs of the reduce call that made it were handed to the
producer, even when the commit comes while a later batch is being reduced. The live
pipeline test (tests/test_pipeline.py) runs the same code on a real table and broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest

from collarstream.core.track import Context, FixBatch, TrackState, advance
from collarstream.stream import state_codec
from collarstream.stream.reducer_process import (
    MERGED,
    NICENESS,
    ReducerProcess,
    ReducerState,
    Seed,
    _Request,
    _runs,
)
from collarstream.timefmt import parse_ms
from collarstream.wire import Fix, encode_batch

T0 = parse_ms("2025-05-01T00:00:00Z")
CTX = Context(None)


class _Event:
    """Stands in for the Faust event whose partition a table write borrows."""


def _fix(k: int) -> FixBatch:
    t = np.array([T0 + k * 4 * 3_600_000], dtype=np.int64)
    return FixBatch(
        t, np.array([77.3 + k * 1e-3]), np.array([43.0]), np.ones(1), np.full(1, 8.0), t
    )


def _message(animal: str, k: int) -> bytes:
    """Fix k as the fixes topic carries it (wire.encode_batch)."""
    b = _fix(k)
    t = int(b.t_ms[0])
    return encode_batch(
        animal, [Fix(animal, "", t, float(b.lon[0]), float(b.lat[0]), 1.0, 8.0, float("nan"), t)]
    )


def _alone(animal: str, ks: list[int]) -> TrackState:
    """The state advancing fixes ks one by one gives, in this process."""
    state = TrackState.new(animal)
    for k in ks:
        state, _ = advance(state, _fix(k), CTX)
    return state


def test_only_confirmed_versions_are_written_even_while_a_later_batch_is_reduced() -> None:
    r = ReducerState(CTX)
    seq1, out1 = r.reduce([(b"a", Seed(None), [_message("a", 0)])], [])
    assert out1[0][2] is not None  # its newest good fix, for the watchers
    assert r.encode([]) == {}  # nothing confirmed: nothing to write
    # Batch 2 is reduced before the worker confirms batch 1's outputs (piggybacked).
    seq2, _ = r.reduce([(b"a", None, [_message("a", 1)])], [(b"a", seq1)])
    # A commit now (batch 2's outputs not sent yet) writes batch 1's state, not batch 2's.
    assert r.encode([]) == {b"a": state_codec.encode(_alone("a", [0]))}
    assert r.encode([]) == {}  # written once
    assert r.encode([(b"a", seq2)]) == {b"a": state_codec.encode(_alone("a", [0, 1]))}


def test_versions_wait_for_their_own_confirmation_when_reduce_runs_ahead() -> None:
    """The worker reduces up to a few batches ahead of sending their outputs."""
    r = ReducerState(CTX)
    seqs = [
        r.reduce([(b"a", Seed(None) if k == 0 else None, [_message("a", k)])], [])[0]
        for k in range(4)
    ]
    r.confirm([(b"a", seqs[0])])
    assert r.encode([]) == {b"a": state_codec.encode(_alone("a", [0]))}
    # Batches 1 and 2 sent: the newest of them is written; 3 waits.
    assert r.encode([(b"a", seqs[1]), (b"a", seqs[2])]) == {
        b"a": state_codec.encode(_alone("a", [0, 1, 2]))
    }
    assert list(r.versions[b"a"]) == [seqs[3]]


def test_seeds_restore_table_states_and_repeats_report_no_newer_fix() -> None:
    r = ReducerState(CTX)
    stored = _alone("b", [0, 1])
    seq, out = r.reduce(
        [
            (b"b", Seed(state_codec.encode(stored)), [_message("b", 1)]),  # a redelivery
            (b"c", Seed(None), [_message("c", 0)]),
        ],
        [],
    )
    (steps_b, others_b, rec_b), (_, _, rec_c) = out
    assert steps_b is None and others_b == [] and rec_b is None  # nothing new for b
    assert rec_c is not None and rec_c["animal"] == "c"
    assert r.encode([(b"b", seq), (b"c", seq)]) == {
        b"b": state_codec.encode(stored),
        b"c": state_codec.encode(_alone("c", [0])),
    }


def test_drop_refuses_unwritten_states_and_unknown_confirmations() -> None:
    r = ReducerState(CTX)
    seq, _ = r.reduce([(b"a", Seed(None), [_message("a", 0)])], [])
    with pytest.raises(RuntimeError, match="unknown reduce"):
        r.confirm([(b"a", seq + 5)])
    r.confirm([(b"a", seq)])
    with pytest.raises(RuntimeError, match="encode first"):
        r.drop()
    r.encode([])
    r.drop()
    assert r.current == {} and r.confirm([(b"a", seq)]) is None  # forgotten: ignored


def test_the_child_process_reduces_and_writes_to_the_table() -> None:
    async def run() -> dict[bytes, bytes]:
        table: dict[bytes, bytes] = {b"b": state_codec.encode(_alone("b", [0]))}
        proc = ReducerProcess(table, functools.partial(Context, None))
        try:
            proc.start()
            assert await proc.ready() == 0
            seq, out = await proc.reduce(
                [(b"a", [_message("a", 0), _message("a", 1)]), (b"b", [_message("b", 1)])]
            )
            assert [key for key, _ in out] == [b"a", b"b"]
            assert out[0][1][0] is not None  # a's step
            assert await proc.flush() == 0  # nothing sent yet
            event = _Event()
            proc.sent(b"a", seq, event)
            proc.sent(b"b", seq, event)
            assert await proc.flush() == 2
            await proc.drop()
            # After a drop the child holds nothing: b is restored from the table again.
            seq, _ = await proc.reduce([(b"b", [_message("b", 2)])])
            proc.sent(b"b", seq, event)
            await proc.flush()
        finally:
            proc.shutdown()
        return table

    table = asyncio.run(run())
    assert table[b"a"] == state_codec.encode(_alone("a", [0, 1]))
    assert table[b"b"] == state_codec.encode(_alone("b", [0, 1, 2]))


def test_a_commit_writes_what_was_confirmed_before_its_producer_flush() -> None:
    """Fixes are reduced and sent while a commit runs. The commit takes the confirmations
    made so far (`hold`) before it flushes the producer and writes exactly those states;
    one made during the flush is not passed on with the next reduce call, and waits."""

    async def run() -> list[dict[bytes, bytes]]:
        table: dict[bytes, bytes] = {}
        seen = []
        async with _child(table) as proc:
            event = _Event()
            seq, _ = await proc.reduce([(b"a", [_message("a", 0)])])
            proc.sent(b"a", seq, event)
            confirm = proc.hold()  # the commit begins: its producer flush covers this
            seq, _ = await proc.reduce([(b"a", [_message("a", 1)])])
            proc.sent(b"a", seq, event)  # handed to the producer during the flush
            seq, _ = await proc.reduce([(b"b", [_message("b", 0)])])
            proc.sent(b"b", seq, event)
            assert await proc.flush(confirm) == 1
            seen.append(dict(table))
            proc.release()
            assert await proc.flush() == 2  # the next commit
            seen.append(dict(table))
        return seen

    during, after = asyncio.run(run())
    assert during == {b"a": state_codec.encode(_alone("a", [0]))}
    assert after == {
        b"a": state_codec.encode(_alone("a", [0, 1])),
        b"b": state_codec.encode(_alone("b", [0])),
    }


def test_a_decoded_state_holds_its_emitted_ids_in_anchor_order() -> None:
    """The reducer reads a state's emitted ids back from the end (`core.track._diff`):
    a state stored before it kept them in anchor order must come back in that order."""
    state = _alone("a", [0, 1, 2])
    shuffled = dict(sorted(state.emitted.items(), key=lambda kv: -kv[1][0]))
    assert len(shuffled) > 1 and list(shuffled) != list(state.emitted)
    raw = state_codec.encode(dataclasses.replace(state, emitted=shuffled))
    back = state_codec.decode(raw)
    assert back.emitted == state.emitted
    assert [v[0] for v in back.emitted.values()] == sorted(v[0] for v in state.emitted.values())


@contextlib.asynccontextmanager
async def _child(table: dict[bytes, bytes] | None = None) -> AsyncIterator[ReducerProcess]:
    """A started child with an empty context, shut down on the way out."""
    proc = ReducerProcess({} if table is None else table, functools.partial(Context, None))
    proc.start()
    try:
        yield proc
    finally:
        proc.shutdown()


def test_calls_waiting_in_the_pipe_are_reduced_as_one_and_answered_by_the_last() -> None:
    """Calls written while the child is still loading its context wait in its pipe; it
    reduces them together. Each but the last answers MERGED; the last carries every
    animal's outputs under one state version, and what reaches the table is what the
    calls made one by one would have written."""

    async def run() -> tuple[list[Any], dict[bytes, bytes]]:
        table: dict[bytes, bytes] = {}
        async with _child(table) as proc:
            calls = [
                proc.reduce([(b"a", [_message("a", 0)])]),
                proc.reduce([(b"b", [_message("b", 0)]), (b"a", [_message("a", 1)])]),
                proc.reduce([(b"a", [_message("a", 2)])]),
            ]
            assert proc.calls_in_flight == 3 and proc.in_flight_messages == 4
            answers = [await c for c in calls]
            assert proc.calls_in_flight == 0 and proc.in_flight_messages == 0
            seq, out = answers[-1]
            for key, _ in out:
                proc.sent(key, seq, _Event())
            assert await proc.flush() == 2
        return answers, table

    answers, table = asyncio.run(run())
    assert answers[:2] == [MERGED, MERGED]
    _, out = answers[2]
    assert [key for key, _ in out] == [b"a", b"b"]  # first appearance, across the calls
    steps = orjson.loads(out[0][1][0])
    assert [s["type"] for s in steps] == ["step", "step"]  # a's 0-1 and 1-2, in one message
    assert table == {
        b"a": state_codec.encode(_alone("a", [0, 1, 2])),
        b"b": state_codec.encode(_alone("b", [0])),
    }


def test_requests_are_merged_only_between_other_requests() -> None:
    reqs = [
        _Request(1, "reduce", ()),
        _Request(2, "reduce", ()),
        _Request(3, "encode", ()),
        _Request(4, "reduce", ()),
        _Request(5, "drop", ()),
        _Request(6, "ready", ()),
    ]
    assert [[r.rid for r in run] for run in _runs(reqs)] == [[1, 2], [3], [4], [5], [6]]


def test_an_error_in_the_child_fails_its_call_and_the_child_serves_on() -> None:
    async def run() -> None:
        async with _child() as proc:
            seq, _ = await proc.reduce([(b"a", [_message("a", 0)])])
            proc._confirm.append((b"a", seq + 7))  # names a call that never was
            with pytest.raises(RuntimeError, match="unknown reduce"):
                await proc.reduce([(b"a", [_message("a", 1)])])
            assert await proc.ready() == 1

    asyncio.run(run())


def test_a_child_that_dies_fails_every_call_waiting_and_every_later_one() -> None:
    async def run() -> None:
        async with _child() as proc:
            await proc.ready()
            assert proc._process.pid is not None
            os.kill(proc._process.pid, signal.SIGKILL)
            with pytest.raises(RuntimeError, match="reducer process is gone"):
                await proc.reduce([(b"a", [_message("a", 0)])])
            with pytest.raises(RuntimeError, match="reducer process is gone"):
                await proc.reduce([(b"a", [_message("a", 1)])])
            assert proc.calls_in_flight == 0 and proc.in_flight_messages == 0

    asyncio.run(run())


def test_the_child_runs_niced_below_the_event_loop() -> None:
    async def run() -> int:
        async with _child() as proc:
            await proc.ready()
            assert proc._process.pid is not None
            return os.getpriority(os.PRIO_PROCESS, proc._process.pid)

    assert asyncio.run(run()) == min(os.getpriority(os.PRIO_PROCESS, 0) + NICENESS, 19)


def test_a_worker_that_exits_without_shutting_the_child_down_still_exits() -> None:
    """multiprocessing joins a process's children at exit, and the child waits on its
    pipe until EOF: without the exit hook that ends it first, the worker would hang."""
    script = textwrap.dedent(
        """
        import asyncio, functools
        from collarstream.core.track import Context
        from collarstream.stream.reducer_process import ReducerProcess

        proc = ReducerProcess({}, functools.partial(Context, None))
        proc.start()
        asyncio.run(proc.ready())
        print(proc._process.pid, flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    child = int(done.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
