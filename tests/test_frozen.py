"""`core.frozen.evolve`: `dataclasses.replace` without `__init__`, for the reducer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from collarstream.core.frozen import evolve
from collarstream.core.track import TrackState


def test_evolve_equals_replace_and_leaves_the_original() -> None:
    s = TrackState.new("SL-1", n_fences=2)
    flags = np.ones(0, np.uint16)
    got = evolve(s, flags=flags, tag="T7")
    want = dataclasses.replace(s, flags=flags, tag="T7")
    assert type(got) is TrackState
    assert got.__dict__.keys() == want.__dict__.keys()
    assert all(got.__dict__[k] is want.__dict__[k] for k in got.__dict__)
    assert s.tag == "" and s.flags is not flags  # a copy, not an update
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.tag = "x"  # type: ignore[misc]


def test_evolve_rejects_what_is_not_a_field() -> None:
    with pytest.raises(TypeError, match=r"no fields.*'flag'"):
        evolve(TrackState.new("SL-1"), flag=None)
