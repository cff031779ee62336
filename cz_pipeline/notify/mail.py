"""SMTP delivery through the standard library. `CZ_SMTP_URL` (`smtp://user@host:port`, or
`smtps://` for implicit TLS) names the server, `CZ_SMTP_PASSWORD` the password, `CZ_SMTP_FROM`
the sender. STARTTLS is used whenever the server offers it. Unset URL: nothing is sent."""

from __future__ import annotations

import os
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

SMTP_URL_ENV = "CZ_SMTP_URL"
SMTP_PASSWORD_ENV = "CZ_SMTP_PASSWORD"
SMTP_FROM_ENV = "CZ_SMTP_FROM"
DEFAULT_SENDER = "cz_pipeline@localhost"
TIMEOUT_SECONDS = 15


class SmtpConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Mailer:
    host: str
    port: int
    implicit_tls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = DEFAULT_SENDER

    def __repr__(self) -> str:  # never the password
        return f"Mailer({'smtps' if self.implicit_tls else 'smtp'}://{self.username + '@' if self.username else ''}{self.host}:{self.port})"

    @classmethod
    def from_env(cls) -> "Mailer | None":
        url = os.environ.get(SMTP_URL_ENV, "").strip()
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise SmtpConfigError(f"{SMTP_URL_ENV}: expected smtp://[user@]host[:port] or smtps://…")
        if parts.password:
            raise SmtpConfigError(f"{SMTP_URL_ENV}: put the password in {SMTP_PASSWORD_ENV}, not in the URL")
        implicit = parts.scheme == "smtps"
        return cls(host=parts.hostname, port=parts.port or (465 if implicit else 25), implicit_tls=implicit,
                   username=unquote(parts.username) if parts.username else None,
                   password=os.environ.get(SMTP_PASSWORD_ENV) or None,
                   sender=os.environ.get(SMTP_FROM_ENV) or DEFAULT_SENDER)

    def send(self, recipients: list[str], subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, ", ".join(recipients), subject
        msg.set_content(body)
        smtp_cls = smtplib.SMTP_SSL if self.implicit_tls else smtplib.SMTP
        with smtp_cls(self.host, self.port, timeout=TIMEOUT_SECONDS) as smtp:
            smtp.ehlo()
            if not self.implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls()
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(msg)
