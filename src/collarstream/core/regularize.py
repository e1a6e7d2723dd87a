"""Resample a track onto a regular schedule (amt's ``track_resample``) and split bursts.

Collars miss fixes, drift off schedule and sometimes take extra ones; step-selection and
movement models want one fix per scheduled slot. ``regularize`` lays slots at
``start + k * interval`` and gives each slot the nearest good fix within ``± tolerance``;
``bursts_from_slots`` numbers runs of consecutive filled slots (amt's ``burst_``).

Unlike amt, which walks from fix to fix (the next fix within ``rate ± tolerance`` of the
*previous kept fix*, so the schedule drifts with every late fix), the slots here sit on an
absolute grid, so a late fix never shifts later slots, and each slot gets the *nearest*
candidate rather than the first one in its window.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def _to_ms(seconds: float, name: str) -> int:
    ms = round(float(seconds) * 1000.0)
    if not np.isfinite(seconds) or ms < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {seconds}")
    return ms


def regularize(
    t_ms: npt.ArrayLike,
    good_mask: npt.ArrayLike,
    interval_s: float,
    tolerance_s: float,
    start_ms: int | None = None,
) -> tuple[IntArray, IntArray]:
    """Regular slots and the fix chosen for each: ``(slot_ms, fix_index)``.

    Slots are ``start_ms + k * interval`` for k = 0, 1, ... up to the last slot within
    tolerance of the last good fix; ``start_ms`` defaults to the first good fix (amt's
    ``start = 1``). Pass the schedule's origin instead (e.g. the first *attempted* fix)
    when the first good fix may be off schedule, or every slot shifts with it. For each
    slot, ``fix_index`` is the index (into the input arrays) of the good fix nearest to it
    within ``± tolerance_s`` (inclusive), or -1 for a gap. Ties in distance go to the
    earlier fix (then the lower index, for identical timestamps).

    Each fix is used at most once: a fix is a candidate only for the slot nearest to it
    (a fix exactly half-way between two slots belongs to the earlier one). With
    ``tolerance_s < interval_s / 2`` - the usual case, e.g. amt's 15 min for 2 h - every
    fix is within tolerance of at most one slot, so this is exactly "the nearest good fix
    within tolerance". With a wider tolerance a slot never takes a fix that is closer to
    its neighbouring slot.

    Input need not be sorted (``t_ms`` in ms, any order; ``good_mask`` marks usable
    fixes, e.g. ``flags == 0``); results depend only on the (time, index) of the good
    fixes. Vectorized: one lexsort and O(n) array passes, no loop over fixes. Returns two
    empty arrays when there is no good fix. Raises ValueError for interval_s <= 0,
    tolerance_s < 0, or mismatched lengths.
    """
    t = np.asarray(t_ms, dtype=np.int64).ravel()
    good = np.asarray(good_mask, dtype=bool).ravel()
    if t.shape != good.shape:
        raise ValueError(f"t_ms and good_mask must have the same length, got {t.size}, {good.size}")
    interval = _to_ms(interval_s, "interval_s")
    if interval <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    tol = _to_ms(tolerance_s, "tolerance_s")
    idx = np.flatnonzero(good)
    if idx.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    tg = t[idx]
    start = int(tg.min()) if start_ms is None else int(start_ms)
    n_slots = (int(tg.max()) + tol - start) // interval + 1
    if n_slots <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rel = tg - start
    # Nearest slot, half-way going down: k = ceil((2 rel - I) / 2I), in exact integers.
    k = -((interval - 2 * rel) // (2 * interval))
    dist = np.abs(rel - k * interval)
    cand = (dist <= tol) & (k >= 0) & (k < n_slots)
    kc, dc, tc, ic = k[cand], dist[cand], tg[cand], idx[cand]
    # Within each slot: smallest distance, then earliest time, then lowest index.
    order = np.lexsort((ic, tc, dc, kc))
    kc, ic = kc[order], ic[order]
    first = np.ones(kc.size, dtype=bool)
    first[1:] = kc[1:] != kc[:-1]
    fix_index = np.full(n_slots, -1, dtype=np.int64)
    fix_index[kc[first]] = ic[first]
    slot_ms = start + interval * np.arange(n_slots, dtype=np.int64)
    return slot_ms, fix_index


def bursts_from_slots(fix_index: npt.ArrayLike, min_fixes: int = 1) -> IntArray:
    """Burst id per slot: runs of consecutive filled slots, numbered 0, 1, ... in order.

    Gaps (``fix_index == -1``) get -1. Runs shorter than ``min_fixes`` also get -1 and are
    not numbered (amt's ``filter_min_n_burst``, default 3 there, 1 here = keep all).
    A step or turning angle is defined only within a burst.
    """
    filled = np.asarray(fix_index).ravel() >= 0
    if filled.size == 0:
        return np.empty(0, np.int64)
    starts = filled & ~np.concatenate([[False], filled[:-1]])
    run = np.cumsum(starts) - 1
    length = np.bincount(run[filled], minlength=int(starts.sum()))
    keep = length >= max(1, int(min_fixes))
    new_id = np.cumsum(keep) - 1
    out = np.full(filled.size, -1, dtype=np.int64)
    ok = filled.copy()
    ok[filled] = keep[run[filled]]
    out[ok] = new_id[run[ok]]
    return out
