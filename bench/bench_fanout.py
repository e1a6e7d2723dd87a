"""Fan-out benchmark: alerts delivered to 100 webhook subscribers on loopback.

    python bench/bench_fanout.py [--subscribers 100] [--alerts 40] [--baseline-alerts 3]
                                 [--repeats 5]

A receiver child process (aiohttp, one path per subscriber, verifies every signature
with `signature.verify` and answers 204) stands in for the subscribers; it is the same
for both senders, so the ratio compares senders only.

* Dispatcher: `Dispatcher` + one `WebhookChannel` per subscriber over one shared
  aiohttp session; every alert is submitted for every subscriber at once and the clock
  runs until every receipt resolves. Then latency: 20 alerts at a steady 10 alerts/s,
  each delivery timed submit -> 2xx (the observer's `delivered` latency, with
  fix_received_ms = submit time; millisecond resolution).
* Baseline, same run: the naive way, a sequential signed urllib POST to each
  subscriber in turn with a new connection each time.

Prints medians over the repeats: alerts/s (alert = delivered to all subscribers), the
ratio, and delivery latency p50/p99. Only `time.perf_counter` measures throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
import urllib.request
from typing import Any

import aiohttp
import orjson

from collarstream.delivery.dispatcher import Dispatcher, RecordingObserver
from collarstream.delivery.model import Delivery
from collarstream.delivery.retry import RetryPolicy
from collarstream.delivery.signature import HEADER, sign, verify
from collarstream.delivery.webhook import WebhookChannel

SECRET = b"bench-secret"
LATENCY_ALERTS, LATENCY_RATE = 20, 10.0  # alerts/s, each to every subscriber
BODY = {"id": "alert", "kind": "urban-edge", "location-long": 76.9, "location-lat": 43.2}


def _receiver(port_out: Any) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        verify(SECRET, raw, request.headers[HEADER])
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{sub}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        port_out.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _delivery(alert: int, sub: int, now_ms: int) -> Delivery:
    return Delivery(
        id=f"s{sub}:a{alert}",
        subscriber_id=f"s{sub}",
        kind="alert",
        body={**BODY, "id": f"a{alert}"},
        subject="bench",
        text="bench",
        fix_received_ms=now_ms,
    )


async def run_dispatcher(port: int, subscribers: int, alerts: int) -> tuple[float, list[float]]:
    async def dead_letter(record: dict[str, Any]) -> None:
        raise RuntimeError(f"dead letter in a benchmark: {record['reason']}")

    obs = RecordingObserver()
    connector = aiohttp.TCPConnector(limit=subscribers)
    async with aiohttp.ClientSession(connector=connector) as session:
        channels = [
            WebhookChannel(f"http://127.0.0.1:{port}/s{i}", SECRET, 10.0, session=session)
            for i in range(subscribers)
        ]
        dispatcher = Dispatcher(obs, RetryPolicy(initial_s=0.05), dead_letter)
        # Warm-up: open the pool's connections and start the lanes outside the clock.
        await asyncio.gather(
            *[await dispatcher.submit(_delivery(-1, i, 0), [c]) for i, c in enumerate(channels)]
        )
        obs.calls.clear()
        start = time.perf_counter()
        receipts = []
        for a in range(alerts):
            now_ms = time.time_ns() // 1_000_000
            for i, c in enumerate(channels):
                receipts.append(await dispatcher.submit(_delivery(a, i, now_ms), [c]))
        await asyncio.gather(*receipts)
        elapsed = time.perf_counter() - start
        assert obs.count("delivered") == alerts * subscribers
        # Latency at a steady load the senders keep up with, not the backlog above.
        obs.calls.clear()
        receipts = []
        for a in range(LATENCY_ALERTS):
            now_ms = time.time_ns() // 1_000_000
            for i, c in enumerate(channels):
                receipts.append(await dispatcher.submit(_delivery(a, i, now_ms), [c]))
            await asyncio.sleep(1 / LATENCY_RATE)
        await asyncio.gather(*receipts)
        await dispatcher.close()
    latencies = [c[3] for c in obs.calls if c[0] == "delivered"]
    return alerts / elapsed, latencies


def run_baseline(port: int, subscribers: int, alerts: int) -> float:
    start = time.perf_counter()
    for a in range(alerts):
        body = orjson.dumps({**BODY, "id": f"a{a}"})
        for i in range(subscribers):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/s{i}",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"s{i}:a{a}",
                    HEADER: sign(SECRET, body, int(time.time())),
                },
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 204
    return alerts / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--alerts", type=int, default=40)
    ap.add_argument("--baseline-alerts", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    parent, child = mp.Pipe()
    receiver = mp.Process(target=_receiver, args=(child,), daemon=True)
    receiver.start()
    try:
        port = parent.recv()
        fast, base, p50, p99 = [], [], [], []
        for r in range(args.repeats):
            rate, lat = asyncio.run(run_dispatcher(port, args.subscribers, args.alerts))
            b = run_baseline(port, args.subscribers, args.baseline_alerts)
            fast.append(rate)
            base.append(b)
            p50.append(percentile(lat, 0.50))
            p99.append(percentile(lat, 0.99))
            print(
                f"repeat {r + 1}: dispatcher {rate:8.1f} alerts/s  baseline {b:6.1f} alerts/s  "
                f"p50 {p50[-1] * 1000:6.1f} ms  p99 {p99[-1] * 1000:6.1f} ms",
                flush=True,
            )
        med_fast, med_base = statistics.median(fast), statistics.median(base)
        n = args.subscribers
        print(f"\nfan-out to {n} webhook subscribers on loopback, medians of {args.repeats}:")
        print(f"  Dispatcher+WebhookChannel : {med_fast:8.1f} alerts/s ({med_fast * n:.0f} POST/s)")
        print(f"  sequential urllib baseline: {med_base:8.1f} alerts/s ({med_base * n:.0f} POST/s)")
        print(f"  ratio                     : {med_fast / med_base:8.1f}x")
        print(
            f"  delivery latency (submit -> 2xx) at {LATENCY_RATE:.0f} alerts/s: "
            f"p50 {statistics.median(p50) * 1000:.1f} ms, "
            f"p99 {statistics.median(p99) * 1000:.1f} ms"
        )
    finally:
        receiver.terminate()
        receiver.join(5)


if __name__ == "__main__":
    main()
