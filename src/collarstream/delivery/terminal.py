"""Terminal channel: one line per delivery (subject and text) for the demo and debugging."""

from __future__ import annotations

import sys
from typing import TextIO

from collarstream.delivery.model import Delivery


class TerminalChannel:
    kind = "terminal"
    label = "terminal"

    def __init__(self, stream: TextIO | None = None) -> None:
        # Looked up at send time by default so pytest's capsys and redirects see it.
        self._stream = stream

    async def send(self, d: Delivery) -> None:
        stream = self._stream or sys.stdout
        text = " ".join(d.text.split())  # one line, whatever the template did
        stream.write(f"[{d.subscriber_id}] {d.subject} — {text}\n")
        stream.flush()
