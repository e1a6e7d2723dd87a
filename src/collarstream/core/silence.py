"""Silent collars: no fix for longer than a few schedule intervals.

Live, a timer over all animals asks ``silent_collars``; in replay ``silences`` finds the
same gaps in the recorded track. A silence starts at last fix + periods x interval (the
moment the live timer would have raised it, not when the next fix happened to arrive)
and ends at the next fix. Both use a strict ">": a gap of exactly periods x interval is
not a silence, in either form, so replay reproduces what the live timer raised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Three missed fixes: one or two are routine (canopy, terrain, a satellite pass missed
# -- the Utah cougar misses single 4-h fixes); three in a row is worth a look.
PERIODS = 3.0


# The newest fixes whose delivery delay sets how long the live timer waits: two days of
# 4-hourly fixes span several uploads.
DELAY_FIXES = 12


def limit_ms(interval_s: FloatArray | float, periods: float) -> npt.NDArray[np.int64]:
    return np.round(np.asarray(interval_s, np.float64) * periods * 1000.0).astype(np.int64)


def silent_collars(
    last_fix_ms: IntArray,
    interval_s: FloatArray,
    now_ms: int,
    periods: float = PERIODS,
    delay_ms: IntArray | int = 0,
) -> tuple[BoolArray, IntArray]:
    """Per animal: silent now, and since when (last fix + periods x interval).

    ``since_ms`` is given for every animal (the moment it will become or became silent);
    the mask says which are known silent at `now_ms`. A collar's fixes reach us
    `delay_ms` after they are taken (collars upload in batches: one that uploads twice a
    day delivers fixes up to 12 h old), so a wall clock may only call it silent that much
    later, or every collar would be "silent" before each upload. NaN-free int inputs;
    interval and delay per animal.
    """
    last = np.asarray(last_fix_ms, np.int64)
    since = last + limit_ms(interval_s, periods)
    return now_ms > since + np.maximum(np.asarray(delay_ms, np.int64), 0), since


def usual_delay_ms(t_ms: IntArray, received_ms: IntArray, recent: int = DELAY_FIXES) -> int:
    """How late a collar's fixes usually arrive: the longest delay among its `recent`
    newest fixes (time-sorted input), 0 without fixes."""
    t, r = np.asarray(t_ms, np.int64)[-recent:], np.asarray(received_ms, np.int64)[-recent:]
    return int(max(0, (r - t).max())) if t.size else 0


@dataclass(frozen=True)
class Silences:
    """One row per gap: after fix `after` (index), from start_ms to end_ms.

    end_ms is the time of the next fix, or -1 for a silence still open at `now_ms`.
    """

    after: IntArray
    start_ms: IntArray
    end_ms: IntArray

    def __len__(self) -> int:
        return int(self.after.size)


def silences(
    t_ms: IntArray,
    interval_s: FloatArray | float,
    periods: float = PERIODS,
    now_ms: int | None = None,
    prior_ms: int | None = None,
) -> Silences:
    """Gaps longer than periods x interval between time-sorted good fixes.

    `interval_s` is the schedule in force after each fix (scalar or per fix). With
    `now_ms`, a silence still open after the last fix is included (end_ms -1).
    Contract: the result over fixes [r:] with ``prior_ms = t[r-1]`` (and the interval in
    force after it as ``interval_s`` of a prepended row -- or simply a scalar interval)
    equals the whole-track rows with after >= r-1; the row for the gap that ends at fix r
    has ``after = -1``.
    """
    t = np.asarray(t_ms, np.int64)
    iv = np.broadcast_to(np.asarray(interval_s, np.float64), t.shape)
    if prior_ms is not None:
        t = np.concatenate([[prior_ms], t])
        iv = np.concatenate([iv[:1], iv])
    limit = limit_ms(iv, periods)
    nxt = t[1:]
    gap = (nxt - t[:-1]) > limit[:-1]
    after = np.flatnonzero(gap)
    start = t[after] + limit[after]
    end = nxt[after]
    if now_ms is not None and t.size and now_ms - t[-1] > limit[-1]:
        after = np.append(after, t.size - 1)
        start = np.append(start, t[-1] + limit[-1])
        end = np.append(end, -1)
    shift = 1 if prior_ms is not None else 0
    return Silences(after.astype(np.int64) - shift, start.astype(np.int64), end.astype(np.int64))
