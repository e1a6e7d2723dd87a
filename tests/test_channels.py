"""Delivery channels against real servers on loopback: an aiohttp receiver that checks
signatures and can go down, an aiosmtpd relay (with STARTTLS and AUTH), and the
dispatcher's isolation, overflow and shutdown rules. Each test runs its own event loop."""

from __future__ import annotations

import asyncio
import doctest
import email
import email.policy
import io
import math
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from hypothesis import given, settings
from hypothesis import strategies as st

from collarstream.delivery import mail, signature, webhook
from collarstream.delivery.channels import (
    PermanentError,
    TransientError,
    build_channel,
)
from collarstream.delivery.dispatcher import (
    Dispatcher,
    RecordingObserver,
    delivery_from_dead_letter,
)
from collarstream.delivery.kafka_channel import KafkaChannel
from collarstream.delivery.mail import EmailChannel
from collarstream.delivery.model import ChannelSpec, Delivery, SmtpSettings, Subscriber
from collarstream.delivery.retry import RetryPolicy, deliver
from collarstream.delivery.signature import SignatureError, sign, verify
from collarstream.delivery.terminal import TerminalChannel
from collarstream.delivery.webhook import WebhookChannel

SECRET = b"whsec_test_secret"
FAST = RetryPolicy(initial_s=0.01, factor=2, max_delay_s=0.05, max_elapsed_s=10)


def run(coro: Coroutine[Any, Any, Any], timeout_s: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def delivery(i: int | str, sid: str = "sub-a", **kw: Any) -> Delivery:
    body = {"id": f"alert-{i}", "location-long": 76.9, "location-lat": 43.2}
    return Delivery(
        id=f"{sid}:alert-{i}",
        subscriber_id=sid,
        kind="alert",
        body=body,
        subject=f"Leopard near Almaty ({i})",
        text="F01 is within 5 km\nof the city edge.",
        **kw,
    )


# --- a webhook receiver --------------------------------------------------------------


@dataclass
class Hit:
    path: str
    key: str
    body: dict[str, Any]
    at: float  # time.monotonic()
    status: int


@dataclass
class Receiver:
    """POST /{path}: verifies the signature, records the hit, answers `status[path]`."""

    secret: bytes = SECRET
    status: dict[str, int] = field(default_factory=dict)
    retry_after: str | None = None
    delay_s: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Down: connections are refused until `start` again (same port)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def accepted(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path and h.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            verify(self.secret, raw, request.headers.get(signature.HEADER, ""))
        except SignatureError:
            return web.Response(status=401)
        path = request.match_info["path"]
        status = self.status.get(path, 200)
        self.headers.append(dict(request.headers))
        key = request.headers["Idempotency-Key"]
        self.hits.append(Hit(path, key, orjson.loads(raw), time.monotonic(), status))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        extra = {"Retry-After": self.retry_after} if self.retry_after else {}
        return web.Response(status=status, headers=extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- signatures -----------------------------------------------------------------------


def test_signature_accepts_own_and_rejects_tampering() -> None:
    body, t = b'{"id":"a1","location-lat":43.2}', 1_718_000_000
    header = sign(SECRET, body, t)
    verify(SECRET, body, header, now=t + 299)
    rotated = f"{header},v1={'0' * 64}"  # old and new secret during a rotation
    verify(SECRET, body, rotated, now=t)
    bad = [
        (b"other-secret", body, header, t, "mismatch"),
        (SECRET, body + b" ", header, t, "mismatch"),
        (SECRET, body, header.replace("t=17", "t=18"), 1_818_000_000, "mismatch"),
        (SECRET, body, header, t + 301, "tolerance"),  # stale
        (SECRET, body, header, t - 301, "tolerance"),  # from the future
        (SECRET, body, "", t, "missing"),
        (SECRET, body, "v1=abc", t, "needs"),
        (SECRET, body, f"t={t}", t, "needs"),
        (SECRET, body, f"t=abc,v1={'0' * 64}", t, "timestamp"),
        (SECRET, body, "garbage", t, "malformed"),
    ]
    for secret, b, h, now, why in bad:
        with pytest.raises(SignatureError, match=why):
            verify(secret, b, h, now=now)


def test_documented_stdlib_recipe_agrees_with_verify() -> None:
    doc = signature.__doc__ or ""
    start = doc.index("    import hmac")
    snippet = "\n".join(line[4:] for line in doc[start:].split("\n>>>")[0].splitlines())
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    body = b'{"id":"a1"}'
    now = int(time.time())
    assert namespace["verify"](SECRET, body, sign(SECRET, body, now))
    assert not namespace["verify"](SECRET, body + b"x", sign(SECRET, body, now))
    assert not namespace["verify"](SECRET, body, sign(SECRET, body, now - 400))
    assert not namespace["verify"](SECRET, body, "t=1")


@pytest.mark.parametrize("module", [signature, webhook, mail])
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


# --- webhook --------------------------------------------------------------------------


def test_webhook_posts_signed_json_with_idempotency_headers() -> None:
    async def main() -> None:
        rx = await Receiver().start()
        async with aiohttp.ClientSession() as session:
            ch = WebhookChannel(rx.url("a"), SECRET, 2.0, session=session)
            await ch.send(delivery(1))
        await rx.stop()
        [hit] = rx.hits
        assert hit.body == delivery(1).body and hit.key == "sub-a:alert-1"
        h = rx.headers[0]
        assert h["Content-Type"] == "application/json"
        assert h["Collarstream-Delivery"] == "sub-a:alert-1"
        assert h["User-Agent"].startswith("collarstream")

    run(main())


def test_webhook_wrong_secret_is_rejected_by_receiver_as_permanent() -> None:
    async def main() -> None:
        rx = await Receiver().start()
        ch = WebhookChannel(rx.url("a"), b"not-the-secret", 2.0)
        with pytest.raises(PermanentError, match="401"):
            await ch.send(delivery(1))
        await ch.aclose()
        await rx.stop()
        assert rx.hits == []

    run(main())


@pytest.mark.parametrize(
    ("status", "expected", "retry_after"),
    [
        (200, None, None),
        (204, None, None),
        (301, PermanentError, None),
        (400, PermanentError, None),
        (404, PermanentError, None),
        (410, PermanentError, None),
        (408, TransientError, None),
        (429, TransientError, 7.0),
        (500, TransientError, None),
        (502, TransientError, None),
        (503, TransientError, 7.0),
    ],
)
def test_webhook_classifies_status(
    status: int, expected: type[Exception] | None, retry_after: float | None
) -> None:
    async def main() -> None:
        rx = await Receiver(status={"a": status}, retry_after="7").start()
        ch = WebhookChannel(rx.url("a"), SECRET, 2.0)
        try:
            if expected is None:
                await ch.send(delivery(1))
            else:
                with pytest.raises(expected) as info:
                    await ch.send(delivery(1))
                assert getattr(info.value, "retry_after_s", None) == retry_after
        finally:
            await ch.aclose()
            await rx.stop()

    run(main())


def test_webhook_timeout_and_refused_are_transient() -> None:
    async def main() -> None:
        rx = await Receiver(delay_s=0.3).start()
        slow = WebhookChannel(rx.url("a"), SECRET, 0.05)
        with pytest.raises(TransientError, match="timeout"):
            await slow.send(delivery(1))
        await slow.aclose()
        await rx.stop()
        dead = WebhookChannel(f"http://127.0.0.1:{free_port()}/a", SECRET, 1.0)
        with pytest.raises(TransientError, match="connection"):
            await dead.send(delivery(1))
        await dead.aclose()

    run(main())


def test_outage_delays_only_its_own_subscriber_and_every_delivery_arrives() -> None:
    """Subscriber A's endpoint answers 503, then refuses connections, then recovers;
    B's endpoint (another server) is healthy throughout."""
    n, outage_s = 6, 1.0

    async def main() -> None:
        rx_a = await Receiver(status={"a": 503}).start()
        rx_b = await Receiver().start()
        dead: list[dict[str, Any]] = []

        async def dead_letter(record: dict[str, Any]) -> None:
            dead.append(record)

        obs = RecordingObserver()
        async with aiohttp.ClientSession() as session:
            ch_a = WebhookChannel(rx_a.url("a"), SECRET, 1.0, session=session)
            ch_b = WebhookChannel(rx_b.url("b"), SECRET, 1.0, session=session)
            dispatcher = Dispatcher(obs, FAST, dead_letter)
            t0 = time.monotonic()
            receipts = []
            for i in range(n):
                receipts.append(await dispatcher.submit(delivery(i, "sub-a"), [ch_a]))
                receipts.append(await dispatcher.submit(delivery(i, "sub-b"), [ch_b]))
            await asyncio.sleep(outage_s / 2)
            await rx_a.stop()  # now connection refused
            await asyncio.sleep(outage_s / 2)
            rx_a.status.clear()
            await rx_a.start()
            await asyncio.wait_for(asyncio.gather(*receipts), 10)
            assert await dispatcher.drain(1.0)
            await dispatcher.close()
        await rx_a.stop()
        await rx_b.stop()

        assert dead == []
        b_hits = rx_b.accepted("b")
        assert [h.key for h in b_hits] == [f"sub-b:alert-{i}" for i in range(n)]
        assert max(h.at for h in b_hits) - t0 < outage_s / 2, "B waited for A's outage"
        a_hits = rx_a.accepted("a")
        # in order, each once accepted, only after the outage
        assert [h.key for h in a_hits] == [f"sub-a:alert-{i}" for i in range(n)]
        assert min(h.at for h in a_hits) - t0 >= outage_s
        rejected = [h for h in rx_a.hits if h.status == 503]
        assert rejected and all(h.key == f"sub-a:{h.body['id']}" for h in rejected)
        assert rejected[0].key == a_hits[0].key  # the repeat carries the same key
        assert obs.count("delivered", "sub-a") == obs.count("delivered", "sub-b") == n
        assert obs.count("retried", "sub-a") >= 2 and obs.count("retried", "sub-b") == 0

    run(main())


def test_retries_exhausted_and_permanent_errors_are_dead_lettered() -> None:
    async def main() -> None:
        rx = await Receiver(status={"down": 503, "gone": 410}).start()
        dead: list[dict[str, Any]] = []

        async def dead_letter(record: dict[str, Any]) -> None:
            dead.append(record)

        obs = RecordingObserver()
        policy = RetryPolicy(initial_s=0.01, max_delay_s=0.02, max_elapsed_s=0.2)
        down = WebhookChannel(rx.url("down"), SECRET, 1.0)
        gone = WebhookChannel(rx.url("gone"), SECRET, 1.0)
        dispatcher = Dispatcher(obs, policy, dead_letter)
        d = delivery(1, fix_received_ms=time.time_ns() // 1_000_000)
        await asyncio.wait_for(await dispatcher.submit(d, [down, gone]), 5)
        await dispatcher.close()
        for ch in (down, gone):
            await ch.aclose()
        await rx.stop()

        by_target = {r["target"]: r for r in dead}
        exhausted, final = by_target[down.label], by_target[gone.label]
        assert exhausted["attempts"] > 2 and "gave up" in exhausted["reason"]
        assert final["attempts"] == 1 and final["reason"] == "HTTP 410"
        for r in dead:
            assert r["delivery-id"] == d.id and r["subscriber-id"] == "sub-a"
            assert r["channel"] == "webhook" and r["body"] == d.body
            assert r["first-attempt"] <= r["last-attempt"]
            assert delivery_from_dead_letter(r) == d
        assert obs.count("failed") == 2 and obs.count("delivered") == 0

    run(main())


# --- dispatcher rules with an in-memory channel ---------------------------------------


@dataclass
class GateChannel:
    """Sends nothing until `gate` opens; records what it was given."""

    kind: str = "terminal"
    label: str = "gate"
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    sent: list[str] = field(default_factory=list)
    times_ms: list[int] = field(default_factory=list)

    async def send(self, d: Delivery) -> None:
        await self.gate.wait()
        self.sent.append(d.id)
        self.times_ms.append(time.time_ns() // 1_000_000)


def test_full_lane_dead_letters_its_oldest_queued_delivery() -> None:
    async def main() -> None:
        dead: list[dict[str, Any]] = []

        async def dead_letter(record: dict[str, Any]) -> None:
            dead.append(record)

        obs = RecordingObserver()
        ch = GateChannel()
        dispatcher = Dispatcher(obs, FAST, dead_letter, queue_size=2)
        receipts = [await dispatcher.submit(delivery(0), [ch])]
        await asyncio.sleep(0.01)  # 0 is now in flight, waiting on the gate
        receipts += [await dispatcher.submit(delivery(i), [ch]) for i in range(1, 5)]
        assert [r["delivery-id"] for r in dead] == ["sub-a:alert-1", "sub-a:alert-2"]
        assert {r["reason"] for r in dead} == {"queue-full"}
        assert dead[0]["attempts"] == 0 and dead[0]["first-attempt"] is None
        assert obs.count("dropped") == 2
        ch.gate.set()
        await asyncio.wait_for(asyncio.gather(*receipts), 5)  # dead-lettered counts as settled
        assert ch.sent == ["sub-a:alert-0", "sub-a:alert-3", "sub-a:alert-4"]
        await dispatcher.close()

    run(main())


def test_close_dead_letters_queued_and_in_flight() -> None:
    async def main() -> None:
        dead: list[dict[str, Any]] = []

        async def dead_letter(record: dict[str, Any]) -> None:
            dead.append(record)

        obs = RecordingObserver()
        ch = GateChannel()
        dispatcher = Dispatcher(obs, FAST, dead_letter)
        receipts = [await dispatcher.submit(delivery(i), [ch]) for i in range(3)]
        await asyncio.sleep(0.01)
        assert dispatcher.pending() == 3
        assert not await dispatcher.drain(0.05)
        await dispatcher.close()
        assert [r["reason"] for r in dead] == ["shutdown"] * 3
        assert [r["attempts"] for r in dead] == [1, 0, 0]  # the first was in flight
        assert all(r.done() and r.exception() is None for r in receipts)
        assert obs.count("dropped") == 3
        with pytest.raises(RuntimeError):
            await dispatcher.submit(delivery(9), [ch])

    run(main())


def test_failed_dead_letter_fails_the_receipt() -> None:
    async def main() -> None:
        async def broken(record: dict[str, Any]) -> None:
            raise OSError("dlq unavailable")

        ch = GateChannel()
        dispatcher = Dispatcher(RecordingObserver(), FAST, broken)
        receipt = await dispatcher.submit(delivery(0), [ch])
        await dispatcher.close()
        with pytest.raises(OSError):
            await receipt

    run(main())


def test_not_before_holds_a_delivery_back_without_holding_other_lanes() -> None:
    async def main() -> None:
        async def dead_letter(record: dict[str, Any]) -> None:
            raise AssertionError(record["reason"])

        held, prompt = GateChannel(), GateChannel()
        held.gate.set()
        prompt.gate.set()
        dispatcher = Dispatcher(RecordingObserver(), FAST, dead_letter)
        not_before = time.time_ns() // 1_000_000 + 300
        r1 = await dispatcher.submit(delivery(1, not_before_ms=not_before), [held])
        r2 = await dispatcher.submit(delivery(2, "sub-b"), [prompt])
        await asyncio.wait_for(r2, 1)
        assert held.sent == []
        await asyncio.wait_for(r1, 2)
        assert held.times_ms[0] >= not_before
        await dispatcher.close()

    run(main())


# --- retry policy ---------------------------------------------------------------------


class AlwaysDown:
    kind, label = "webhook", "down"

    def __init__(self, retry_after_s: float | None = None, ok_after: int | None = None) -> None:
        self.retry_after_s = retry_after_s
        self.ok_after = ok_after
        self.calls = 0

    async def send(self, d: Delivery) -> None:
        self.calls += 1
        if self.ok_after is None or self.calls <= self.ok_after:
            raise TransientError("HTTP 503", self.retry_after_s)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def clock(self) -> float:
        return self.now


def full_jitter_cap(initial: float, factor: float, max_delay: float, k: int) -> float:
    # In logs: initial * factor**k overflows a float for k near 1000.
    if math.log(initial) + k * math.log(factor) >= math.log(max_delay):
        return max_delay
    return initial * factor**k


@settings(max_examples=100, deadline=None)
@given(
    initial=st.floats(0.01, 10),
    factor=st.floats(1.1, 4),
    max_delay=st.floats(0.5, 600),
    max_elapsed=st.floats(0, 100),  # at most a few hundred attempts per example
    seed=st.integers(0, 2**32),
)
def test_backoff_delays_are_full_jitter_within_caps_and_budget(
    initial: float, factor: float, max_delay: float, max_elapsed: float, seed: int
) -> None:
    policy = RetryPolicy(initial, factor, max_delay, max_elapsed, rng=random.Random(seed))
    fake, obs = FakeTime(), RecordingObserver()
    ch = AlwaysDown()
    outcome = asyncio.run(deliver(ch, delivery(1), policy, obs, fake.sleep, fake.clock))
    assert outcome.status == "failed" and outcome.attempts == ch.calls == len(fake.sleeps) + 1
    for k, s in enumerate(fake.sleeps):
        assert 0 <= s <= full_jitter_cap(initial, factor, max_delay, k) * (1 + 1e-9)
    assert sum(fake.sleeps) <= max_elapsed * (1 + 1e-9)
    assert obs.count("retried") == len(fake.sleeps) and obs.count("failed") == 1
    again = RetryPolicy(initial, factor, max_delay, max_elapsed, rng=random.Random(seed))
    fake2 = FakeTime()
    asyncio.run(deliver(AlwaysDown(), delivery(1), again, obs, fake2.sleep, fake2.clock))
    assert fake2.sleeps == fake.sleeps  # deterministic given the Random


def test_retry_after_is_a_floor_and_gives_up_beyond_budget() -> None:
    policy = RetryPolicy(0.01, 2, 1.0, 100, rng=random.Random(1))
    fake = FakeTime()
    ch = AlwaysDown(retry_after_s=30, ok_after=2)
    d = delivery(1, fix_received_ms=time.time_ns() // 1_000_000 - 2000)
    obs = RecordingObserver()
    outcome = asyncio.run(deliver(ch, d, policy, obs, fake.sleep, fake.clock))
    assert outcome.status == "delivered" and fake.sleeps == [30, 30]
    [(_, kind, sid, latency)] = [c for c in obs.calls if c[0] == "delivered"]
    assert (kind, sid) == ("webhook", "sub-a") and 2 <= latency < 10
    fake = FakeTime()
    outcome = asyncio.run(deliver(AlwaysDown(500), d, policy, obs, fake.sleep, fake.clock))
    assert outcome.status == "failed" and fake.sleeps == []


def test_unexpected_adapter_error_fails_without_retrying() -> None:
    class Buggy:
        kind, label = "kafka", "buggy"

        async def send(self, d: Delivery) -> None:
            raise TypeError("bug")

    obs = RecordingObserver()
    outcome = asyncio.run(deliver(Buggy(), delivery(1), FAST, obs))
    assert outcome.status == "failed" and outcome.attempts == 1 and "TypeError" in str(outcome)


# --- email ----------------------------------------------------------------------------


@dataclass
class MailSink:
    """aiosmtpd handler: keeps messages; `rcpt_reply`/`data_reply` force SMTP errors."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    rcpt_reply: str | None = None
    data_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        return "250 Message accepted"


def smtp_server(handler: MailSink, **kw: Any) -> Controller:
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), server_hostname="localhost", **kw
    )
    controller.start()
    return controller


def test_email_arrives_with_subject_text_attachment_and_stable_message_id() -> None:
    sink = MailSink()
    controller = smtp_server(sink)
    try:
        smtp = SmtpSettings(host="127.0.0.1", port=controller.port, sender="alerts@example.org")
        ch = EmailChannel(smtp, ["ranger@example.org", "lab@example.org"])
        d = delivery(1)
        run(ch.send(d))
        run(ch.send(d))  # an at-least-once repeat
    finally:
        controller.stop()
    first, repeat = sink.messages
    assert first["Subject"] == d.subject and first["X-Collarstream-Delivery"] == d.id
    assert first["Message-ID"] == repeat["Message-ID"] == mail.message_id(d.id, smtp.sender)
    body = first.get_body(("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n").strip() == d.text
    [attachment] = list(first.iter_attachments())
    assert attachment.get_content_type() == "application/json"
    assert orjson.loads(attachment.get_content()) == d.body


def test_email_over_starttls_with_auth() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data == (b"collar", b"s3cret")
        return AuthResult(success=ok, handled=False)  # handled=False: server replies 535

    sink = MailSink()
    controller = smtp_server(
        sink,
        tls_context=server_ctx,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    try:
        base = SmtpSettings(host="127.0.0.1", port=controller.port, starttls=True)
        good = SmtpSettings(**{**base.__dict__, "username": "collar", "password": "s3cret"})
        run(EmailChannel(good, ["r@example.org"], tls_context=client_ctx).send(delivery(1)))
        wrong = SmtpSettings(**{**base.__dict__, "username": "collar", "password": "nope"})
        with pytest.raises(PermanentError, match="535"):
            run(EmailChannel(wrong, ["r@example.org"], tls_context=client_ctx).send(delivery(2)))
        # Without our CA the relay's certificate is not trusted: never send in clear.
        untrusting = EmailChannel(good, ["r@example.org"], tls_context=ssl.create_default_context())
        with pytest.raises(TransientError, match="TLS"):
            run(untrusting.send(delivery(3)))
    finally:
        controller.stop()
    assert [m["X-Collarstream-Delivery"] for m in sink.messages] == ["sub-a:alert-1"]


@pytest.mark.parametrize(
    ("rcpt", "data", "expected"),
    [
        ("450 4.2.1 mailbox busy", None, TransientError),
        ("550 5.1.1 no such user", None, PermanentError),
        (None, "451 4.3.0 try later", TransientError),
        (None, "554 5.7.1 rejected", PermanentError),
    ],
)
def test_smtp_replies_map_to_transient_or_permanent(
    rcpt: str | None, data: str | None, expected: type[Exception]
) -> None:
    controller = smtp_server(MailSink(rcpt_reply=rcpt, data_reply=data))
    try:
        ch = EmailChannel(SmtpSettings(host="127.0.0.1", port=controller.port), ["x@example.org"])
        with pytest.raises(expected):
            run(ch.send(delivery(1)))
    finally:
        controller.stop()


def test_smtp_refused_is_transient_and_missing_starttls_is_permanent() -> None:
    refused = EmailChannel(SmtpSettings(host="127.0.0.1", port=free_port()), ["x@example.org"])
    with pytest.raises(TransientError, match="connection"):
        run(refused.send(delivery(1)))
    controller = smtp_server(MailSink())
    try:
        smtp = SmtpSettings(host="127.0.0.1", port=controller.port, starttls=True)
        with pytest.raises(PermanentError, match="STARTTLS"):
            run(EmailChannel(smtp, ["x@example.org"]).send(delivery(1)))
    finally:
        controller.stop()
    with pytest.raises(ValueError, match="clear"):
        EmailChannel(SmtpSettings(host="smtp.example.org", username="u"), ["x@example.org"])


# --- kafka, terminal, factory ---------------------------------------------------------


def test_kafka_channel_keys_by_delivery_id_and_maps_producer_errors() -> None:
    sent: list[tuple[str, bytes, bytes]] = []

    async def send(topic: str, key: bytes, value: bytes) -> None:
        sent.append((topic, key, value))

    run(KafkaChannel("alerts.sub-a", send).send(delivery(1)))
    assert sent == [("alerts.sub-a", b"sub-a:alert-1", orjson.dumps(delivery(1).body))]

    class Retriable(Exception):
        retriable = True

    class TooLarge(Exception):
        retriable = False

    def failing(exc: Exception) -> Callable[[str, bytes, bytes], Awaitable[None]]:
        async def send(topic: str, key: bytes, value: bytes) -> None:
            raise exc

        return send

    for exc, expected in [
        (Retriable(), TransientError),
        (TimeoutError(), TransientError),
        (TooLarge(), PermanentError),
    ]:
        with pytest.raises(expected):
            run(KafkaChannel("t", failing(exc)).send(delivery(1)))


def test_terminal_prints_one_line_per_delivery() -> None:
    out = io.StringIO()
    run(TerminalChannel(out).send(delivery(1)))
    assert (
        out.getvalue() == "[sub-a] Leopard near Almaty (1) — F01 is within 5 km of the city edge.\n"
    )


def test_build_channel_checks_options() -> None:
    sub, smtp = Subscriber(id="s1", name="Rangers"), SmtpSettings()

    def build(kind: str, **options: object) -> object:
        return build_channel(ChannelSpec(kind, options), sub, smtp)  # type: ignore[arg-type]

    assert isinstance(
        build("webhook", url="https://example.org/h?token=x", secret="k"), WebhookChannel
    )
    assert build("webhook", url="https://example.org/h?token=x", secret="k").label == (  # type: ignore[attr-defined]
        "https://example.org/h"
    )
    assert isinstance(build("webhook", url="http://127.0.0.1:9/h", secret="k"), WebhookChannel)
    assert isinstance(build("email", to="a@example.org"), EmailChannel)
    assert isinstance(build("terminal"), TerminalChannel)
    with pytest.raises(ValueError, match="https"):
        build("webhook", url="http://example.org/h", secret="k")
    with pytest.raises(ValueError, match="secret"):
        build("webhook", url="https://example.org/h")
    with pytest.raises(ValueError, match="kafka_send"):
        build("kafka", topic="t")
    with pytest.raises(ValueError, match="to"):
        build("email")
