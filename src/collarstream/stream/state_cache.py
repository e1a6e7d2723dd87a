"""Track states kept decoded in memory and written to their table before offsets commit.

Kafka Streams' caching store, for a Faust table. Writing an animal's state to the
table after every batch costs an encode (~100 µs for two months of 4-hourly fixes), a
decode on the next batch (~230 µs) and an ~80 kB changelog record; when fixes arrive
one at a time that is most of the work. Here the tracking agent reads and writes
decoded states in a dict, and the table gets only the latest state of each animal
that changed, once per commit interval.

At-least-once holds because Faust commits offsets only through
`Consumer._commit_offsets`, and the worker's consumer (`stream.app`) calls `flush`
first. The order inside a flush is what makes a crash harmless:

1. the producer is flushed, so every output of the states about to be written is on
   the broker;
2. the states are written to the table (their changelog records join the producer);
3. Faust flushes the producer again and commits the offsets.

The committed offsets cover only events whose processing finished, and a state is
put here only after its outputs were handed to the producer, so after a crash the
restored table holds at least every committed fix, and every fix it holds has had its
events sent. What is reprocessed (after the last commit) is merged idempotently by the
reducer and re-emits the same ids, which sinks drop.

On a rebalance the dirty states are flushed and the dict emptied: another worker may
own those animals next, and the table restored from the changelog is the truth.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, MutableMapping
from typing import Any

from faust.streams import _current_event

from collarstream.core.track import TrackState
from collarstream.stream import state_codec


class StateCache:
    """Decoded track states over a raw-bytes table (key: animal id bytes)."""

    def __init__(
        self, table: MutableMapping[bytes, bytes], new_state: Callable[[bytes], TrackState]
    ) -> None:
        self._table = table
        self._new = new_state
        self._states: dict[bytes, TrackState] = {}
        # Dirty key -> an event of its partition: Faust writes a table key to the
        # partition of the current event, so the flush borrows the last one seen.
        self._dirty: dict[bytes, Any] = {}
        self.flushes = 0
        self.writes = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    def get(self, key: bytes) -> TrackState:
        state = self._states.get(key)
        if state is None:
            raw = self._table.get(key)
            state = state_codec.decode(raw) if raw is not None else self._new(key)
            self._states[key] = state
        return state

    def put(self, key: bytes, state: TrackState, event: Any) -> None:
        """Record the new state; call only after the state's outputs were sent."""
        self._states[key] = state
        self._dirty[key] = event

    def flush(self) -> int:
        """Write every changed state to the table; returns how many."""
        dirty, self._dirty = self._dirty, {}
        for key, event in dirty.items():
            token = _current_event.set(weakref.ref(event))
            try:
                self._table[key] = state_codec.encode(self._states[key])
            finally:
                _current_event.reset(token)
        self.flushes += 1
        self.writes += len(dirty)
        return len(dirty)

    def drop(self) -> None:
        """Forget every decoded state (after a rebalance); flush first."""
        if self._dirty:
            raise RuntimeError("StateCache.drop with unflushed states; flush first")
        self._states.clear()
