"""The live silence timer of `stream.watch` (no broker: Faust's in-memory tables)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import orjson

from collarstream.core.track import Context
from collarstream.stream.watch import install_watchers

H_MS = 3_600_000
T0 = 1_746_057_600_000  # 2025-05-01T00:00:00Z


class _Event:
    """Stands in for the Faust event whose partition a table write borrows."""


def _rec(animal: str, t_ms: int) -> dict[str, Any]:
    return {
        "animal": animal,
        "tag": "",
        "t_ms": t_ms,
        "lon": 77.0,
        "lat": 43.0,
        "received_ms": t_ms,
        "interval_s": 4 * 3600.0,
        "delay_ms": 0,
    }


def test_timer_judges_the_newest_record_whether_in_memory_or_restored() -> None:
    """Records reach the table only at commits; the timer must read the newer of memory
    and table (a collar whose stored record is old but which spoke since is not silent)."""
    now = T0 + 30 * H_MS

    async def run() -> tuple[list[bytes], dict[bytes, bytes]]:
        app = faust.App("test-silence", store="memory://", broker="kafka://127.0.0.1:1")
        topic = app.topic(
            "positions",
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        sent: list[bytes] = []

        async def send(key: bytes, alert: dict[str, Any]) -> None:
            assert alert["kind"] == "silent-collar"
            sent.append(key)

        w = install_watchers(app, Context(None), topic, send, now_ms=lambda: now)
        table = app.tables["animal_to_last_fix"]
        table.data[b"old"] = orjson.dumps(_rec("old", T0))  # restored: silent for 30 h
        table.data[b"back"] = orjson.dumps(_rec("back", T0))  # restored, then it spoke:
        w.on_record(b"back", _rec("back", now - H_MS), _Event())
        w.on_record(b"fresh", _rec("fresh", now - 2 * H_MS), _Event())  # memory only
        w.on_record(b"fresh", _rec("fresh", now - 3 * H_MS), _Event())  # older: ignored
        w.on_record(b"quiet", _rec("quiet", T0 + 2 * H_MS), _Event())  # memory, silent
        await w.check_silence()
        await w.check_silence()  # raised once
        return sent, dict(table.data)

    sent, stored = asyncio.run(run())
    assert sorted(sent) == [b"old", b"quiet"]
    # Nothing is written before a commit's flush.
    assert orjson.loads(stored[b"back"])["t_ms"] == T0 and b"fresh" not in stored
