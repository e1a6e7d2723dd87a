"""Kafka channel: the delivery body as JSON on a subscriber's topic, keyed by its id.

`send` is the worker's producer call (Faust: ``topic.send``), so this module does not
import a Kafka client. Keying by the delivery id makes repeats land in one partition
for consumers that compact or de-duplicate. Producer errors that say they are
retriable (aiokafka's and kafka-python's ``retriable`` flag) or time out are
transient; the others (say, a message too large) are permanent.
"""

from __future__ import annotations

import orjson

from collarstream.delivery.channels import KafkaSend, PermanentError, TransientError
from collarstream.delivery.model import Delivery


class KafkaChannel:
    kind = "kafka"

    def __init__(self, topic: str, send: KafkaSend) -> None:
        self.topic = topic
        self.label = f"kafka:{topic}"
        self._send = send

    def __repr__(self) -> str:
        return f"KafkaChannel({self.topic!r})"

    async def send(self, d: Delivery) -> None:
        try:
            await self._send(self.topic, d.id.encode(), orjson.dumps(d.body))
        except TimeoutError:
            raise TransientError("producer timeout") from None
        except (TransientError, PermanentError):
            raise
        except Exception as e:
            if getattr(e, "retriable", True):
                raise TransientError(f"producer: {type(e).__name__}") from None
            raise PermanentError(f"producer: {type(e).__name__}") from None
