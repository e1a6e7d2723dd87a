"""The worker's write-back cache of track states (stream.state_cache), over a plain
mapping standing in for the Faust table (the live pipeline test runs it on a real one)."""

from __future__ import annotations

import numpy as np
import pytest

from collarstream.core.track import Context, FixBatch, TrackState, advance
from collarstream.stream import state_codec
from collarstream.stream.state_cache import StateCache
from collarstream.timefmt import parse_ms

T0 = parse_ms("2025-05-01T00:00:00Z")
CTX = Context(None)


class _Event:
    """Stands in for the Faust event whose partition a table write borrows."""


def _fix(k: int) -> FixBatch:
    t = np.array([T0 + k * 4 * 3_600_000], dtype=np.int64)
    return FixBatch(
        t, np.array([77.3 + k * 1e-3]), np.array([43.0]), np.ones(1), np.full(1, 8.0), t
    )


def test_reads_through_writes_back_only_changed_states_and_only_when_flushed() -> None:
    table: dict[bytes, bytes] = {}
    seed, _ = advance(TrackState.new("b"), _fix(0), CTX)
    table[b"b"] = state_codec.encode(seed)
    cache = StateCache(table, lambda key: TrackState.new(key.decode()))
    a = cache.get(b"a")  # unknown: a new state, nothing written
    assert len(a) == 0 and b"a" not in table
    b = cache.get(b"b")  # known: decoded from the table, once
    np.testing.assert_array_equal(b.t_ms, seed.t_ms)
    assert cache.get(b"b") is b
    for k in range(1, 4):
        a, _ = advance(a, _fix(k), CTX)
        cache.put(b"a", a, _Event())
    assert b"a" not in table and cache.dirty == 1  # three puts, nothing written yet
    assert cache.flush() == 1
    assert table[b"a"] == state_codec.encode(a)  # the latest state only
    assert table[b"b"] == state_codec.encode(seed)  # read, never put: not rewritten
    assert cache.flush() == 0 and cache.writes == 1


def test_drop_refuses_unflushed_states() -> None:
    cache = StateCache({}, lambda key: TrackState.new(key.decode()))
    cache.put(b"a", cache.get(b"a"), _Event())
    with pytest.raises(RuntimeError, match="flush first"):
        cache.drop()
    cache.flush()
    cache.drop()
    assert len(cache) == 0
