"""Notifications to a tenant's admins: one channel for every product. Each message is recorded
in `sync.notifications` and sent by SMTP when `CZ_SMTP_URL` is set (see `mail.py`).

Incidents are announced once, not every 15 minutes: `sync.incidents` holds the open ones (one
per tenant and kind); opening an open incident sends nothing, and closing one sends a single
"working again" message."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa

from .mail import Mailer, SmtpConfigError

log = logging.getLogger(__name__)

CREDENTIALS_REFUSED = "credentials_refused"
SYNC_FAILING = "sync_failing"
FAILURE_STREAK = 3  # consecutive failed syncs before the admins hear of it


def notify(engine: sa.Engine, tenant_id: str, recipients: Sequence[str], kind: str, subject: str,
           body: str) -> int:
    """Record a message, send it if SMTP is configured, and return its id. Delivery errors are
    recorded on the row, never raised: a notification must not fail the work that triggered it."""
    recipients = sorted(set(recipients))
    with engine.begin() as conn:
        notification_id = conn.execute(sa.text(
            "INSERT INTO sync.notifications (tenant_id, kind, recipients, subject, body) "
            "VALUES (:t, :k, :r, :s, :b) RETURNING id"),
            {"t": tenant_id, "k": kind, "r": recipients, "s": subject, "b": body}).scalar_one()
    error = None
    try:
        mailer = Mailer.from_env()
        if mailer is None:
            error = "not sent: CZ_SMTP_URL is not set"
        elif not recipients:
            error = "not sent: the tenant has no notify recipients"
        else:
            mailer.send(list(recipients), subject, body)
    except (OSError, SmtpConfigError, ValueError) as exc:  # smtplib errors are OSErrors
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("tenant %r: notification %s (%s) not delivered: %s", tenant_id, notification_id, kind, error)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE sync.notifications SET sent_at = CASE WHEN :e IS NULL THEN now() END, "
                             "error = :e WHERE id = :i"), {"e": error, "i": notification_id})
    return notification_id


def open_incident(engine: sa.Engine, tenant_id: str, recipients: Sequence[str], kind: str, subject: str,
                  body: str) -> int | None:
    """Announce an incident unless it is already open; the notification id, or None."""
    with engine.begin() as conn:
        opened = conn.execute(sa.text(
            "INSERT INTO sync.incidents (tenant_id, kind, detail) VALUES (:t, :k, :d) "
            "ON CONFLICT (tenant_id, kind) DO NOTHING RETURNING opened_at"),
            {"t": tenant_id, "k": kind, "d": body[:2000]}).first()
    return notify(engine, tenant_id, recipients, kind, subject, body) if opened else None


def close_incident(engine: sa.Engine, tenant_id: str, recipients: Sequence[str], kind: str, subject: str,
                   body: str) -> int | None:
    """End an open incident with one message; nothing when none is open."""
    with engine.begin() as conn:
        closed = conn.execute(sa.text(
            "DELETE FROM sync.incidents WHERE tenant_id = :t AND kind = :k RETURNING opened_at"),
            {"t": tenant_id, "k": kind}).first()
    if not closed:
        return None
    return notify(engine, tenant_id, recipients, f"{kind}_resolved", subject,
                  f"{body}\n\n(The problem was first reported at {closed.opened_at:%Y-%m-%d %H:%M} UTC.)")


def _open_kinds(engine: sa.Engine, tenant_id: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT kind FROM sync.incidents WHERE tenant_id = :t"),
                                {"t": tenant_id}).scalars())


def credentials_refused(engine: sa.Engine, tenant_id: str, recipients: Sequence[str], system: str,
                        message: str) -> int | None:
    return open_incident(
        engine, tenant_id, recipients, CREDENTIALS_REFUSED,
        f"[cz_pipeline] {tenant_id}: {system} refused the credentials",
        f"The sync of tenant {tenant_id} stopped: {system} refused its credentials.\n\n{message}\n\n"
        "Syncs resume by themselves once the credentials work again; you will get one more message then.")


def sync_failed(engine: sa.Engine, tenant_id: str, recipients: Sequence[str], message: str) -> int | None:
    """After a failed sync: announce the tenant once it has failed FAILURE_STREAK syncs in a row."""
    if SYNC_FAILING in _open_kinds(engine, tenant_id):  # announced already: skip the ledger scan
        return None
    with engine.connect() as conn:
        streak = conn.execute(sa.text(
            "SELECT consecutive_failures FROM sync.tenant_status WHERE tenant_id = :t"), {"t": tenant_id}).scalar()
    if (streak or 0) < FAILURE_STREAK:
        return None
    return open_incident(
        engine, tenant_id, recipients, SYNC_FAILING,
        f"[cz_pipeline] {tenant_id}: {streak} syncs failed in a row",
        f"The last {streak} syncs of tenant {tenant_id} failed. The latest error:\n\n{message}")


def sync_succeeded(engine: sa.Engine, tenant_id: str, recipients: Sequence[str], system: str,
                   run_id: str | None) -> None:
    """After an entity synced: the credentials work (that incident ends now). A failure streak
    ends with a whole sync that succeeded, which is known once the run is over, so it is
    announced by the next run's first entity."""
    open_kinds = _open_kinds(engine, tenant_id)  # the common case, nothing open, is one key lookup
    if CREDENTIALS_REFUSED in open_kinds:
        close_incident(engine, tenant_id, recipients, CREDENTIALS_REFUSED,
                       f"[cz_pipeline] {tenant_id}: {system} accepts the credentials again",
                       f"The sync of tenant {tenant_id} works again: {system} accepted its credentials.")
    if SYNC_FAILING not in open_kinds:
        return
    with engine.connect() as conn:
        previous = conn.execute(sa.text(
            "SELECT status FROM sync.tenant_syncs WHERE tenant_id = :t AND sync_id IS DISTINCT FROM :r "
            "ORDER BY finished_at DESC LIMIT 1"), {"t": tenant_id, "r": run_id}).scalar()
    if previous == "success":
        close_incident(engine, tenant_id, recipients, SYNC_FAILING,
                       f"[cz_pipeline] {tenant_id}: syncs work again",
                       f"A whole sync of tenant {tenant_id} succeeded again.")


__all__ = ["CREDENTIALS_REFUSED", "FAILURE_STREAK", "Mailer", "SYNC_FAILING", "close_incident",
           "credentials_refused", "notify", "open_incident", "sync_failed", "sync_succeeded"]
