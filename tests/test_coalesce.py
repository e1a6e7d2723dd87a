"""stream.coalesce: adaptive micro-batches, and the drain every offset commit waits for."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collarstream.stream.coalesce import Coalescer, wait_until_idle


def test_a_commit_waits_for_what_was_put_before_it_not_for_an_empty_coalescer() -> None:
    async def run() -> list[str]:
        c: Coalescer[str] = Coalescer(10)
        log: list[str] = []
        await c.put("a")
        await c.put("b")
        mark, items = await c.take()
        assert (mark, items) == (2, ["a", "b"])
        await c.put("c")
        drain = asyncio.create_task(c.drain())  # the commit begins: a, b, c acked
        await asyncio.sleep(0)
        await c.put("d")  # after the commit began: not waited for
        c.done(mark)
        await asyncio.sleep(0)
        assert not drain.done()  # c's outputs are not sent yet
        mark, items = await c.take()
        assert (mark, items) == (4, ["c", "d"])
        await c.put("e")  # keeps the coalescer busy
        c.done(mark)
        await asyncio.wait_for(drain, timeout=1)
        log.append("drained")
        return log

    assert asyncio.run(run()) == ["drained"]


def test_put_waits_while_limit_items_are_pending_and_take_returns_at_most_limit() -> None:
    async def run() -> None:
        c: Coalescer[int] = Coalescer(3)
        for k in range(3):
            await c.put(k)
        blocked = asyncio.create_task(c.put(3))
        await asyncio.sleep(0.01)
        assert not blocked.done() and len(c) == 3
        mark, items = await c.take()
        assert (mark, items) == (3, [0, 1, 2])
        await asyncio.wait_for(blocked, timeout=1)
        assert await c.take() == (4, [3])

    asyncio.run(run())


def test_takes_grow_with_the_backlog_while_the_worker_is_busy() -> None:
    """Idle, each item is taken alone and at once; while a take is being worked on,
    what arrives meanwhile is the next take."""

    async def run() -> list[int]:
        c: Coalescer[int] = Coalescer(1000)
        sizes: list[int] = []

        async def worker() -> None:
            while sum(sizes) < 50:
                mark, items = await c.take()
                sizes.append(len(items))
                await asyncio.sleep(0.02 if len(sizes) > 1 else 0)  # busy
                c.done(mark)

        task = asyncio.create_task(worker())
        await c.put(0)
        await asyncio.sleep(0.005)  # the first item was taken alone, at once
        for k in range(1, 50):
            await c.put(k)
            await asyncio.sleep(0.001)
        await asyncio.wait_for(task, timeout=5)
        return sizes

    sizes = asyncio.run(run())
    assert sizes[0] == 1 and max(sizes) >= 5 and len(sizes) < 25


@given(ops=st.lists(st.sampled_from(["put", "take", "done"]), max_size=60))
@settings(max_examples=300, deadline=None)
def test_takes_are_every_item_once_in_order_and_drain_follows_done(ops: list[str]) -> None:
    async def run() -> None:
        c: Coalescer[int] = Coalescer(4)
        put, taken, marks = 0, [], []
        for op in ops:
            if op == "put" and len(c) < 4:
                await c.put(put)
                put += 1
            elif op == "take" and len(c):
                mark, items = await c.take()
                assert 1 <= len(items) <= 4 and mark == len(taken) + len(items)
                taken += items
                marks.append(mark)
            elif op == "done" and marks:
                c.done(marks.pop(0))
            drain = asyncio.create_task(c.drain())
            await asyncio.sleep(0)
            # drained exactly when every item put so far is done
            assert drain.done() == (put == 0 or (not marks and taken == list(range(put))))
            drain.cancel()
        assert taken == list(range(len(taken)))

    asyncio.run(run())


def test_done_out_of_order_is_an_error() -> None:
    async def run() -> None:
        c: Coalescer[int] = Coalescer(4)
        await c.put(1)
        await c.put(2)
        c.done(2)
        with pytest.raises(RuntimeError, match="in order"):
            c.done(1)

    asyncio.run(run())


def test_background_work_waits_for_idle_but_not_past_its_bound() -> None:
    # Home-range estimates wait while fixes are pending (wait_until_idle), at most
    # max_wait_s: idle at once -> no wait; idle after ~0.1 s -> True then; never idle ->
    # False once the bound has passed.
    async def run() -> list[tuple[bool, float]]:
        loop = asyncio.get_running_loop()
        out = []
        for busy_for, bound in ((0.0, 1.0), (0.1, 1.0), (10.0, 0.15)):
            t0 = loop.time()
            idle = await wait_until_idle(lambda b=busy_for, t=t0: loop.time() - t < b, bound, 0.01)
            out.append((idle, loop.time() - t0))
        return out

    (a, ta), (b, tb), (c, tc) = asyncio.run(run())
    assert a and ta < 0.01
    assert b and tb >= 0.1
    assert not c and tc >= 0.15  # (ignoring the bound, it would go idle at 10 s: True)
