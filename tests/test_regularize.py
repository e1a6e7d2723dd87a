"""regularize / bursts_from_slots: nearest fix per slot, each fix once, vs a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collarstream.core.regularize import bursts_from_slots, regularize

H = 3_600_000  # one hour in ms


def _brute_force(
    t: np.ndarray, good: np.ndarray, interval_s: float, tol_s: float, start: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule, one fix and one slot at a time (independent of the lexsort)."""
    iv, tol = round(interval_s * 1000), round(tol_s * 1000)
    gi = [i for i in range(t.size) if good[i]]
    if not gi:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    s0 = min(int(t[i]) for i in gi) if start is None else start
    n_slots = (max(int(t[i]) for i in gi) + tol - s0) // iv + 1
    if n_slots <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    best: dict[int, tuple[int, int, int]] = {}
    for i in gi:
        rel = int(t[i]) - s0
        # Nearest slot over a generous neighbourhood; ties go to the earlier slot.
        base = rel // iv
        k = min(range(base - 2, base + 3), key=lambda j: (abs(rel - j * iv), j))
        d = abs(rel - k * iv)
        if d > tol or not 0 <= k < n_slots:
            continue
        key = (d, int(t[i]), i)
        if k not in best or key < best[k]:
            best[k] = key
    fix = np.array([best[k][2] if k in best else -1 for k in range(n_slots)], np.int64)
    return s0 + iv * np.arange(n_slots, dtype=np.int64), fix


def test_nearest_not_first_fix_in_window() -> None:
    # Slot at 1 h: fixes at 0:50 (in tolerance, first) and 1:01 (nearest). "First fix in the
    # window" would take 0:50; the nearest is 1:01.
    t = np.array([0, 50 * 60_000, 61 * 60_000, 2 * H + 5_000], np.int64)
    slots, fix = regularize(t, np.ones(4, bool), 3600, 15 * 60)
    np.testing.assert_array_equal(slots, [0, H, 2 * H])
    np.testing.assert_array_equal(fix, [0, 2, 3])


def test_gaps_bad_fixes_ties_and_start() -> None:
    t = np.array([0, 2 * H - 60_000, 2 * H + 60_000, 3 * H, 5 * H + 10], np.int64)
    good = np.array([True, True, True, False, True])
    slots, fix = regularize(t, good, 3600, 600)
    np.testing.assert_array_equal(slots, np.arange(6) * H)
    # Slot 1 and 4 are gaps, slot 2 ties at ±1 min -> the earlier fix, slot 3's fix is bad.
    np.testing.assert_array_equal(fix, [0, -1, 1, -1, -1, 4])
    # An explicit start before the track adds leading gaps; a fix before start - tol is out.
    slots, fix = regularize(t, good, 3600, 600, start_ms=-2 * H)
    assert slots[0] == -2 * H and list(fix[:3]) == [-1, -1, 0]
    assert regularize(t, np.zeros(5, bool), 3600, 600)[0].size == 0
    with pytest.raises(ValueError):
        regularize(t, good, 0, 10)
    with pytest.raises(ValueError):
        regularize(t, good, 3600, -1)
    with pytest.raises(ValueError):
        regularize(t, good[:2], 3600, 10)


def test_each_fix_used_once_with_wide_tolerance() -> None:
    # Tolerance wider than half the interval: one fix between two slots serves only the
    # slot nearer to it.
    t = np.array([0, 40 * 60_000, 2 * H], np.int64)
    _, fix = regularize(t, np.ones(3, bool), 3600, 45 * 60)
    np.testing.assert_array_equal(fix, [0, 1, 2])  # 0:40 is nearer 1:00 than 0:00
    t = np.array([0, 20 * 60_000, 2 * H], np.int64)
    _, fix = regularize(t, np.ones(3, bool), 3600, 45 * 60)
    np.testing.assert_array_equal(fix, [0, -1, 2])  # 0:20 belongs to slot 0, which has 0:00


times = st.lists(st.integers(0, 40 * H), min_size=0, max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    times,
    st.data(),
    st.sampled_from([60.0, 600.0, 3600.0, 4 * 3600.0]),
    st.floats(0.0, 1.5),
    st.one_of(st.none(), st.integers(-3 * H, 3 * H)),
)
def test_matches_brute_force(
    ts: list[int], data: st.DataObject, interval_s: float, tol_frac: float, start: int | None
) -> None:
    t = np.array(ts, np.int64)
    good = np.array(data.draw(st.lists(st.booleans(), min_size=t.size, max_size=t.size)), bool)
    tol_s = round(tol_frac * interval_s, 3)
    slots, fix = regularize(t, good, interval_s, tol_s, start)
    ref_slots, ref_fix = _brute_force(t, good, interval_s, tol_s, start)
    np.testing.assert_array_equal(slots, ref_slots)
    np.testing.assert_array_equal(fix, ref_fix)
    used = fix[fix >= 0]
    assert np.unique(used).size == used.size  # each fix at most once
    assert np.all(good[used])


@settings(max_examples=300, deadline=None)
@given(times, st.sampled_from([600.0, 3600.0]), st.floats(0.0, 0.499), st.randoms())
def test_chosen_fix_is_the_nearest_in_tolerance(
    ts: list[int], interval_s: float, tol_frac: float, rnd: object
) -> None:
    t = np.array(ts, np.int64)
    good = np.ones(t.size, bool)
    tol = round(tol_frac * interval_s * 1000)
    slots, fix = regularize(t, good, interval_s, tol / 1000)
    for s, f in zip(slots, fix, strict=True):
        d = np.abs(t - s)
        within = d <= tol
        if f < 0:
            assert not within.any()  # a gap only when no good fix is in tolerance
        else:
            assert d[f] == d[within].min()
            # Ties go to the earlier fix.
            assert t[f] == t[within & (d == d[f])].min()
    # Input order does not matter: permute, map indices back, same chosen times.
    perm = np.array(rnd.sample(range(t.size), t.size), np.intp)  # type: ignore[attr-defined]
    slots_p, fix_p = regularize(t[perm], good[perm], interval_s, tol / 1000)
    np.testing.assert_array_equal(slots_p, slots)
    chosen = np.where(fix >= 0, t[np.maximum(fix, 0)], -1)
    chosen_p = np.where(fix_p >= 0, t[perm][np.maximum(fix_p, 0)], -1)
    np.testing.assert_array_equal(chosen_p, chosen)


def test_bursts_from_slots() -> None:
    fix = np.array([3, 4, -1, 7, -1, -1, 8, 9, 10, -1])
    np.testing.assert_array_equal(bursts_from_slots(fix), [0, 0, -1, 1, -1, -1, 2, 2, 2, -1])
    # Runs shorter than min_fixes are dropped and the rest renumbered.
    np.testing.assert_array_equal(
        bursts_from_slots(fix, min_fixes=2), [0, 0, -1, -1, -1, -1, 1, 1, 1, -1]
    )
    assert bursts_from_slots(np.array([], np.int64)).size == 0
    assert list(bursts_from_slots(np.array([-1, -1]))) == [-1, -1]


@given(st.lists(st.integers(-1, 5), max_size=80), st.integers(1, 4))
def test_bursts_property(fix_list: list[int], min_fixes: int) -> None:
    fix = np.array(fix_list, np.int64)
    b = bursts_from_slots(fix, min_fixes)
    # Brute force: walk the slots.
    ref, run, cur = [], [], 0
    for f in [*fix_list, -1]:
        if f >= 0:
            run.append(len(ref))
            ref.append(-1)
        else:
            if len(run) >= min_fixes:
                for j in run:
                    ref[j] = cur
                cur += 1
            run = []
            ref.append(-1)
    np.testing.assert_array_equal(b, ref[: len(fix_list)])
