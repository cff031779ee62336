"""A local SMTP sink (aiosmtpd) for the demo and the tests: it accepts every message, keeps it
in memory and, given a path, appends it to an mbox file any mail reader opens."""

from __future__ import annotations

import mailbox
import socket
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller


class _Keep:
    def __init__(self, sink: "MailSink"):
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        self.sink._keep(message, list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class MailSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, mbox_path: str | Path | None = None):
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.mbox_path = Path(mbox_path) if mbox_path else None
        self._lock = threading.Lock()
        if port == 0:  # aiosmtpd checks the port it was given by connecting to it: pick a free one
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
        self._controller = Controller(_Keep(self), hostname=host, port=port)
        self._controller.start()
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def _keep(self, message: EmailMessage, recipients: list[str]) -> None:
        with self._lock:
            self.messages.append((recipients, message))
            if self.mbox_path is not None:
                self.mbox_path.parent.mkdir(parents=True, exist_ok=True)
                box = mailbox.mbox(self.mbox_path)
                try:
                    box.add(message)
                    box.flush()
                finally:
                    box.close()

    def stop(self) -> None:
        self._controller.stop()
