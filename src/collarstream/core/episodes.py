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
