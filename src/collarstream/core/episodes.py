"""Two-state episodes along a track: a Schmitt-trigger latch and its transitions.

Every detector here reduces to the same shape: per fix, a condition that *sets* a state
(enter) and one that *keeps* it (stay); the state after fix i is
``enter_i or (state_{i-1} and stay_i)``. Because the state after fix i depends on the
past only through state_{i-1}, a suffix [r:] computed from ``carry = state[r-1]`` equals
the same suffix of the whole-track result: the contract the reducer relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collarstream.core.zones import latch_levels

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Transitions:
    """Indices (into the fixes passed in) where the state switched on and off."""

    on: IntArray
    off: IntArray


def latch(enter: BoolArray, stay: BoolArray, carry: bool) -> BoolArray:
    """state_i = enter_i or (state_{i-1} and stay_i), state_{-1} = carry; no Python loop.

    A fix that sets also keeps (stay |= enter), so "set and reset at once" cannot occur.
    """
    enter = np.asarray(enter, dtype=bool)
    stay = np.asarray(stay, dtype=bool) | enter
    levels = latch_levels(enter.astype(np.int8), stay.astype(np.int8), int(bool(carry)), 1)
    return levels.astype(bool)


def transitions(state: BoolArray, carry: bool | None) -> Transitions:
    """Where `state` differs from the state before it; `carry` None means "unknown": the
    first fix then sets the state without a transition (a track's first fix is not news)."""
    state = np.asarray(state, dtype=bool)
    if state.size == 0:
        e = np.empty(0, dtype=np.int64)
        return Transitions(e, e.copy())
    prev = np.concatenate([[state[0] if carry is None else bool(carry)], state[:-1]])
    return Transitions(np.flatnonzero(state & ~prev), np.flatnonzero(~state & prev))


def latch_runs(
    enter: BoolArray,
    stay: BoolArray,
    bounds: IntArray,
    prior: BoolArray,
    news: BoolArray,
) -> tuple[BoolArray, BoolArray]:
    """`latch` of many tracks' fixes at once, a column per latch: (fixes, latches) masks,
    track m being rows bounds[m]:bounds[m + 1] with the state `prior[m]` before its first
    fix. Returns the state after each fix and the state before it: the one after the
    fix before, or for a track's first fix `prior` when `news[m]` (the state before is
    known, as `transitions` with a carry) and the first fix's own state otherwise (a
    track's first fix is not news). No Python loop over tracks or fixes."""
    n = enter.shape[0]
    sizes = np.diff(bounds)
    track = np.repeat(np.arange(sizes.size), sizes)
    # "Nothing yet in this track": the row before its first. Earlier tracks' rows are
    # all below it, so a running maximum starts afresh at each track.
    floor = (np.repeat(bounds[:-1], sizes) - 1)[:, None]
    idx = np.arange(n)[:, None]
    stay = stay | enter  # a fix that sets also keeps
    last_set = np.maximum.accumulate(np.where(enter, idx, floor), axis=0)
    last_reset = np.maximum.accumulate(np.where(stay, floor, idx), axis=0)
    before = np.asarray(prior, dtype=bool)[track]
    state = np.where((last_set == floor) & (last_reset == floor), before, last_set > last_reset)
    prev = np.empty_like(state)
    prev[1:] = state[:-1]
    first = bounds[:-1][sizes > 0]
    known = np.asarray(news, dtype=bool)[sizes > 0][:, None]
    prev[first] = np.where(known, np.asarray(prior, dtype=bool)[sizes > 0], state[first])
    return state, prev
