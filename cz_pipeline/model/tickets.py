"""`cs.tickets` for one tenant: helpdesk tickets matched to contacts by Customer Email, in SQL.

A ticket is matched by `lower(btrim(customer_email))` to a UNIQUE `cs.contacts` row of the same
tenant (index `contacts_email_idx`): it gets that contact's ContactExternalID and AccountExternalID
and `match_status = 'matched'`. No contact → `'no_contact'`; two or more → `'ambiguous'`; both stay
in `cs.tickets`, unassociated (never dropped). Tickets never create contacts.

Everything is ONE statement (`PUBLISH_SQL`, data-modifying CTEs over one snapshot): a hash
aggregate of the tenant's contacts by normalised email, a hash join with the tenant's live
tickets, a diff against the current `cs.tickets`, then the guarded upsert of the rows that differ,
the removals and the audit rows. It reads `raw.tickets` and `cs.contacts` only, so it re-matches
every ticket whenever contacts change (the asset runs after `cs/contacts` in every sync) without
reading a ticket from the API again: a new contact with an unmatched ticket's email matches it, a
second contact with a matched ticket's email makes it ambiguous, and a contact that disappears
undoes its matches.

Scale (benchmarks/ticket_matching.py): the work is two hash joins and one hash aggregate over the
tenant's rows, all in memory (`SET LOCAL work_mem`); only the rows that differ are written. 1M
tickets × 1M contacts: ~6 s per publication with nothing or a few thousand matches changed, ~20 s
for the first publication (1M rows inserted and logged) on a busy 2-core machine. A publication
that inserts or removes many rows runs ANALYZE so the next one is planned on real numbers.

Decisions:
* Deleted tickets (Teamwork `state: "deleted"`, or tombstoned in raw by a full sync) leave
  `cs.tickets` in every sync mode — the vendor reports the deletion explicitly — and keep their
  raw row (`state`, `deletedAt`) and an audit row `removed` saying why.
* `ticket_url` is `{site}/desk/tickets/{id}`, the site being the configured base URL up to
  `/desk/api` (`https://acme.teamwork.com/desk/api/v2` → `https://acme.teamwork.com/desk/tickets/123`).
* `0001-01-01` timestamps (system tickets) are NULL.
* Tenants keying contacts by email quarantine CRM contacts sharing an address (so neither is in
  `cs.contacts`); those contacts still make the address `ambiguous` (several contacts match
  → the ticket stays unassociated), and the audit reason says they are quarantined.

Audit trail: `sync.ticket_match_log` gets a row when a ticket is first published, whenever its
match (status, contact, account or normalised email) changes, and when it is removed — with a
human reason ("matched contact …", "no contact with customer email …", "2 contacts share customer
email …: a, b", "ticket deleted in Teamwork Desk …"). "Why is this ticket not on the account?" is
one query (`WHY_SQL`), newest first:

    SELECT changed_at, match_status, reason, customer_email, contact_external_id,
           account_external_id, previous_status, previous_account_external_id
      FROM sync.ticket_match_log
     WHERE tenant_id = :tenant AND ticket_id = :ticket
     ORDER BY id DESC;
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from cz_pipeline.core.sql import email_expr, set_work_mem
from cz_pipeline.model.mapping import typed

WHY_SQL = """
    SELECT changed_at, match_status, reason, customer_email, contact_external_id,
           account_external_id, previous_status, previous_account_external_id
      FROM sync.ticket_match_log
     WHERE tenant_id = :tenant AND ticket_id = :ticket
     ORDER BY id DESC"""

ANALYZE_AFTER = 10_000  # rows inserted/deleted in one publication that warrant fresh statistics
COLUMNS = ("subject", "status", "customer_email", "created_at", "updated_at", "ticket_url",
           "contact_external_id", "account_external_id", "match_status")


def _desk_ts(field_name: str) -> str:
    value = f"(t.p->>'{field_name}')"
    return f"(CASE WHEN {value} LIKE '0001-01-01%' THEN NULL ELSE {typed(value, 'timestamptz')} END)"


def _row(alias: str) -> str:
    return "(" + ", ".join(f"{alias}.{c}" for c in COLUMNS) + ")"


PUBLISH_SQL = f"""
WITH t AS (  -- the few fields the model needs, from the landed payloads
    SELECT r.source_id AS ticket_id, t.p->>'subject' AS subject,
           COALESCE(t.p->'status'->>'name', t.p->'status'->>'code', t.p->'status'->>'id') AS status,
           {email_expr("t.p->>'customer_email'")} AS customer_email,
           {_desk_ts('createdAt')} AS created_at, r.source_updated_at AS updated_at  -- parsed on landing
      FROM raw.tickets r CROSS JOIN LATERAL (SELECT r.payload AS p) t
     WHERE r.tenant_id = :t AND r.deleted_at IS NULL AND COALESCE(r.payload->>'state', '') <> 'deleted'
),
c AS (  -- CRM contacts by normalised email; n > 1 means ambiguous. Contacts keyed by email that
         -- share one are quarantined as duplicates (not in cs.contacts) but still count here.
    SELECT em, sum(n) AS n, min(contact_external_id) AS contact_external_id,
           min(account_external_id) AS account_external_id
      FROM (SELECT lower(btrim(email)) AS em, 1 AS n, contact_external_id, account_external_id
              FROM cs.contacts WHERE tenant_id = :t AND btrim(email) <> ''
            UNION ALL
            SELECT lower(btrim(detail->>'value')), 1, NULL, NULL
              FROM sync.quarantine
             WHERE tenant_id = :t AND entity = 'contacts' AND reason = 'duplicate_contact_external_id'
               AND detail->>'field' = 'email') s
     GROUP BY 1
),
cand AS (
    SELECT t.ticket_id, t.subject, t.status, t.customer_email, t.created_at, t.updated_at,
           :site || '/desk/tickets/' || t.ticket_id AS ticket_url,
           CASE WHEN c.n = 1 THEN c.contact_external_id END AS contact_external_id,
           CASE WHEN c.n = 1 THEN c.account_external_id END AS account_external_id,
           CASE WHEN c.n = 1 THEN 'matched' WHEN c.n > 1 THEN 'ambiguous' ELSE 'no_contact' END AS match_status,
           lower(t.customer_email) AS em, COALESCE(c.n, 0) AS n
      FROM t LEFT JOIN c ON c.em = lower(t.customer_email)
),
diff AS MATERIALIZED (  -- one full join with cs.tickets: the rows that are new, differ, or are gone
    SELECT n.*, o.ticket_id AS old_id, lower(btrim(o.customer_email)) AS old_em, o.match_status AS old_status, o.contact_external_id AS old_contact, o.account_external_id AS old_account
      FROM cand n FULL JOIN (SELECT * FROM cs.tickets WHERE tenant_id = :t) o ON o.ticket_id = n.ticket_id
     WHERE n.ticket_id IS NULL OR o.ticket_id IS NULL OR {_row('n')} IS DISTINCT FROM {_row('o')}
),
chg AS (SELECT d.*, d.old_id IS NULL AS is_new FROM diff d WHERE d.ticket_id IS NOT NULL),
gone AS (  -- an id array probing the primary key: a good plan whatever the statistics say
    DELETE FROM cs.tickets x
     WHERE x.tenant_id = :t AND x.ticket_id = ANY (ARRAY(SELECT d.old_id FROM diff d WHERE d.ticket_id IS NULL))
    RETURNING x.ticket_id, x.customer_email, x.match_status, x.contact_external_id, x.account_external_id
),
up AS (
    INSERT INTO cs.tickets AS x (tenant_id, ticket_id, {", ".join(COLUMNS)})
    SELECT :t, ticket_id, {", ".join(COLUMNS)} FROM chg
    ON CONFLICT (tenant_id, ticket_id) DO UPDATE
       SET {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS)}, synced_at = now()
     WHERE {_row('x')} IS DISTINCT FROM {_row('EXCLUDED')}
    RETURNING (xmax = 0) AS inserted
),
q AS (  -- contacts quarantined under the address a ticket would match (tenants keyed by email)
    SELECT lower(btrim(detail->>'value')) AS em, count(*) AS n, string_agg(DISTINCT reason, ', ') AS reasons
      FROM sync.quarantine
     WHERE tenant_id = :t AND entity = 'contacts' AND detail->>'value' IS NOT NULL
     GROUP BY 1
),
logged AS (
    INSERT INTO sync.ticket_match_log (tenant_id, ticket_id, match_status, customer_email, contact_external_id,
                                       account_external_id, previous_status, previous_contact_external_id,
                                       previous_account_external_id, reason, dagster_run_id)
    SELECT :t, g.ticket_id, g.match_status, g.customer_email, g.contact_external_id, g.account_external_id,
           g.old_status, g.old_contact, g.old_account,
           CASE g.match_status
             WHEN 'matched' THEN format('matched contact %s (account %s) by customer email %s',
                                        g.contact_external_id, COALESCE(g.account_external_id, 'none'), g.em)
             WHEN 'ambiguous' THEN format(
                 '%s contacts share customer email %s: %s; the ticket stays unassociated', g.n, g.em,
                 COALESCE((SELECT string_agg(x.contact_external_id || COALESCE(' (account ' || x.account_external_id || ')', ''),
                                             ', ' ORDER BY x.contact_external_id)
                             FROM cs.contacts x  -- only for the changed ambiguous tickets, through contacts_email_idx
                            WHERE x.tenant_id = :t AND lower(btrim(x.email)) = g.em),
                          'quarantined as duplicate ContactExternalIDs'))
             ELSE CASE WHEN g.em IS NULL THEN 'the ticket has no customer email'
                       ELSE format('no contact with customer email %s', g.em)
                            || CASE WHEN q.n IS NULL THEN ''
                                    ELSE format(' (%s CRM contact(s) with this email are quarantined: %s)',
                                                q.n, q.reasons) END
                  END
           END,
           :run
      FROM chg g LEFT JOIN q ON q.em = g.em
     WHERE g.is_new OR (g.match_status, g.contact_external_id, g.account_external_id, g.em)
                       IS DISTINCT FROM (g.old_status, g.old_contact, g.old_account, g.old_em)
    RETURNING 1
),
removed AS (
    INSERT INTO sync.ticket_match_log (tenant_id, ticket_id, match_status, customer_email, previous_status,
                                       previous_contact_external_id, previous_account_external_id, reason,
                                       dagster_run_id)
    SELECT :t, g.ticket_id, 'removed', g.customer_email, g.match_status, g.contact_external_id,
           g.account_external_id,
           CASE WHEN r.payload->>'state' = 'deleted'
                THEN 'ticket deleted in Teamwork Desk' || COALESCE(' at ' || (r.payload->>'deletedAt'), '')
                WHEN r.deleted_at IS NOT NULL
                THEN 'ticket no longer returned by the helpdesk (a full sync did not see it)'
                ELSE 'ticket no longer in raw.tickets' END,
           :run
      FROM gone g LEFT JOIN raw.tickets r ON r.tenant_id = :t AND r.source_id = g.ticket_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM up WHERE inserted) AS inserted,
       (SELECT count(*) FROM up WHERE NOT inserted) AS updated,
       (SELECT count(*) FROM gone) AS deleted,
       (SELECT count(*) FROM logged) + (SELECT count(*) FROM removed) AS match_changes
"""


@dataclass
class TicketPublishResult:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    match_changes: int = 0  # audit rows written
    rows: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, int]:
        out = {"inserted": self.inserted, "updated": self.updated, "deleted": self.deleted,
               "match_changes": self.match_changes, "rows": self.rows}
        for status in ("matched", "no_contact", "ambiguous"):
            out[status] = self.by_status.get(status, 0)
        return out


def site_url(base_url: str) -> str:
    """The Desk site a ticket link hangs off: the base URL up to `/desk/api`."""
    parts = urlsplit(base_url.strip())
    path = parts.path
    cut = path.find("/desk/api")
    prefix = path[:cut] if cut >= 0 else path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{prefix}"


def ticket_url(base_url: str, ticket_id: str | int) -> str:
    return f"{site_url(base_url)}/desk/tickets/{ticket_id}"


def publish_tickets(conn: sa.Connection, tenant_id: str, base_url: str,
                    dagster_run_id: str | None = None) -> TicketPublishResult:
    """Derive `cs.tickets` for one tenant and log match changes. Call inside a transaction."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"{tenant_id}/cs.tickets"})
    # The joins hash a tenant's contacts and tickets: give them memory rather than temp files.
    set_work_mem(conn)
    row = conn.execute(sa.text(PUBLISH_SQL), {"t": tenant_id, "site": site_url(base_url),
                                              "run": dagster_run_id}).one()
    result = TicketPublishResult(inserted=row.inserted, updated=row.updated, deleted=row.deleted,
                                 match_changes=row.match_changes)
    counts = conn.execute(sa.text("SELECT match_status, count(*) FROM cs.tickets WHERE tenant_id = :t GROUP BY 1"),
                          {"t": tenant_id}).all()
    result.by_status = {status: n for status, n in counts}
    result.rows = sum(result.by_status.values())
    if result.inserted + result.deleted > max(ANALYZE_AFTER, result.rows // 10):
        conn.exec_driver_sql("ANALYZE cs.tickets")  # a tenant's first load: plan the next run with real numbers
    return result


def why(conn: sa.Connection, tenant_id: str, ticket_id: str) -> list[dict[str, Any]]:
    """The audit history of one ticket, newest first (`WHY_SQL`)."""
    return [dict(r) for r in conn.execute(sa.text(WHY_SQL), {"tenant": tenant_id, "ticket": str(ticket_id)}).mappings()]
