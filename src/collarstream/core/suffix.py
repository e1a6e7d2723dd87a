"""The unit the episode detectors are called on: a suffix of one animal's track.

Every detector holds the same contract: judged from ``start`` on, with ``carry`` = its
state after fix start - 1 (None: no fix before), the result equals rows [start:] of the
whole-track result. Fixes before ``start`` are history the judgement may read (windows,
reference ranges). The ``*_many`` functions take a list of these, one per animal, and
judge all of them in one vectorized pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

Carry = TypeVar("Carry")


@dataclass(frozen=True)
class Suffix(Generic[Carry]):
    """One animal's time-sorted good fixes, judged from `start` on."""

    t_ms: npt.NDArray[np.int64]
    lon: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    start: int = 0
    carry: Carry | None = None
