"""The worker's processes take what start-up loaded out of the cyclic collector's reach
(`stream.heap`): full collections walked ~200 k long-lived objects, 100-200 ms each."""

from __future__ import annotations

import asyncio
import gc

import faust

from collarstream.stream.app import CollarWorker
from collarstream.stream.heap import freeze_heap


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freeze_heap_keeps_what_lives_now_from_later_collections() -> None:
    old = _Cycle()
    try:
        assert freeze_heap() >= 1
        assert not any(o is old for o in gc.get_objects())  # not walked any more
        new = _Cycle()
        assert any(o is new for o in gc.get_objects())  # made later: collected as before
    finally:
        gc.unfreeze()


def test_the_worker_freezes_its_heap_once_started() -> None:
    app = faust.App("collarstream-heap-test", broker="kafka://127.0.0.1:9")  # never started
    worker = CollarWorker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    gc.unfreeze()
    try:
        asyncio.run(worker.on_startup_finished())
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
