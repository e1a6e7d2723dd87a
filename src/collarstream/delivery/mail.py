"""Email channel: one message per delivery through an SMTP relay (stdlib smtplib).

The message has the delivery's subject, its text as the body, the JSON body as an
``application/json`` attachment, ``X-Collarstream-Delivery: <delivery id>`` and a
``Message-ID`` derived from the delivery id, so a repeat after an at-least-once
redelivery carries the same Message-ID and mail clients can see it is one message.

smtplib runs in a worker thread (`asyncio.to_thread`). It is the reference SMTP
client, has no extra dependency, and an alert volume of a few per hour per subscriber
does not need an async client; the dispatcher's per-lane queues keep a slow relay from
holding up other subscribers, and the default executor's threads bound concurrency.

STARTTLS is required (never a silent fall-back to plain text) when configured, with
certificate checks; AUTH only when a username is set, and only over TLS unless the
relay is on loopback. Errors: SMTP 4xx, dropped or refused connections and timeouts
are transient; SMTP 5xx and a relay that lacks STARTTLS or AUTH are permanent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

import orjson

from collarstream.delivery.channels import PermanentError, TransientError, is_loopback
from collarstream.delivery.model import Delivery, SmtpSettings

log = logging.getLogger(__name__)


class EmailChannel:
    kind = "email"

    def __init__(
        self,
        smtp: SmtpSettings,
        to: list[str],
        *,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not to:
            raise ValueError("email channel needs at least one recipient")
        if smtp.username and not smtp.starttls and not is_loopback(smtp.host):
            raise ValueError("SMTP AUTH without STARTTLS would send the password in clear")
        self.smtp = smtp
        self.to = list(to)
        self.label = f"smtp://{smtp.host}:{smtp.port}"  # recipients are personal data
        self._tls_context = tls_context

    def __repr__(self) -> str:
        return f"EmailChannel({self.label!r}, {len(self.to)} recipients)"

    def build_message(self, d: Delivery) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = d.subject
        msg["From"] = self.smtp.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = message_id(d.id, self.smtp.sender)
        msg["X-Collarstream-Delivery"] = d.id
        msg.set_content(d.text)
        msg.add_attachment(
            orjson.dumps(d.body, option=orjson.OPT_INDENT_2),
            maintype="application",
            subtype="json",
            filename=f"{d.kind}.json",
        )
        return msg

    async def send(self, d: Delivery) -> None:
        msg = self.build_message(d)
        await asyncio.to_thread(self._send_blocking, msg, d.id)

    def _send_blocking(self, msg: EmailMessage, delivery_id: str) -> None:
        s = self.smtp
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_s) as client:
                client.ehlo()
                if s.starttls:
                    client.starttls(context=self._tls_context or ssl.create_default_context())
                    client.ehlo()
                if s.username:
                    client.login(s.username, s.password or "")
                refused = client.send_message(msg, from_addr=s.sender, to_addrs=self.to)
        except smtplib.SMTPRecipientsRefused as e:
            raise _by_codes(
                "all recipients refused", [c for c, _ in e.recipients.values()]
            ) from None
        except smtplib.SMTPNotSupportedError as e:
            raise PermanentError(f"relay: {e}") from None
        except smtplib.SMTPResponseException as e:
            raise _by_codes(type(e).__name__, [e.smtp_code]) from None
        except smtplib.SMTPServerDisconnected:
            raise TransientError("SMTP connection dropped") from None
        except smtplib.SMTPException as e:
            raise TransientError(f"SMTP: {type(e).__name__}") from None
        except ssl.SSLError as e:  # before OSError: SSLError is one
            raise TransientError(f"TLS: {type(e).__name__}") from None
        except OSError as e:  # refused, unreachable, timeout
            raise TransientError(f"connection: {type(e).__name__}") from None
        if refused:
            # Some got it. Re-sending would repeat it to them (same Message-ID), which
            # at-least-once allows for a transient refusal but is pointless for 5xx.
            codes = [c for c, _ in refused.values()]
            if any(400 <= c < 500 for c in codes):
                raise TransientError(f"{len(refused)} recipients deferred")
            log.warning("delivery %s: %d recipients refused permanently", delivery_id, len(refused))
        log.debug("delivery %s sent via %s", delivery_id, self.label)


def message_id(delivery_id: str, sender: str) -> str:
    """A Message-ID that is the same for every send of one delivery.

    >>> message_id("alert-1", "alerts@example.org")
    '<cs.682dc44f5fe343288d2ff050df827ff8bcc2ba44@example.org>'
    """
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:40]
    domain = sender.rpartition("@")[2] or "collarstream.invalid"
    return f"<cs.{digest}@{domain}>"


def _by_codes(what: str, codes: list[int]) -> TransientError | PermanentError:
    # Any 4xx means the relay may take it later; only all-5xx is final.
    if any(400 <= c < 500 for c in codes) or not codes:
        return TransientError(f"{what}: SMTP {codes}")
    return PermanentError(f"{what}: SMTP {codes}")
