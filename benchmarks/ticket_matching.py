"""Benchmark: match N helpdesk tickets against N contacts (`cs.tickets` publication, one statement).

    .venv/bin/python benchmarks/ticket_matching.py            # N = 100 000
    .venv/bin/python benchmarks/ticket_matching.py --n 1000000

Generates a throw-away tenant in SQL (`generate_series`): N contacts in `cs.contacts` (1 % of
them share an address with another contact) and N tickets in `raw.tickets` whose customer email
hits a unique contact, no contact, or a shared one, in mixed case and padded with spaces. Then
times three publications: the first (every ticket inserted and logged), a re-run with nothing
changed (the diff finds nothing to write), and a re-match after N/100 contacts are added (some
unmatched tickets match, some matched ones become ambiguous). Uses the embedded Postgres (or
CZ_WAREHOUSE_URL); the tenant's rows are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from cz_pipeline.model.tickets import publish_tickets
from cz_pipeline.warehouse.embedded import get_engine
from cz_pipeline.warehouse.migrations import migrate

CONTACTS_SQL = """
INSERT INTO cs.contacts (tenant_id, contact_external_id, crm_id, account_external_id, email)
SELECT :t, 'c' || i, 'crm' || i, 'a' || (i / 5),
       CASE WHEN i % 100 = 0 THEN 'user' || (i - 1) || '@example.com' ELSE 'user' || i || '@example.com' END
  FROM generate_series(1, :n) AS i"""

# Ticket i writes to user (i * 7 mod 1.2N): ~1/6 of the addresses have no contact.
TICKETS_SQL = """
INSERT INTO raw.tickets (tenant_id, source_system, source_id, payload, source_updated_at)
SELECT :t, 'teamwork_desk', i::text,
       jsonb_build_object('id', i, 'subject', 'Ticket ' || i, 'state', 'active',
                          'status', jsonb_build_object('id', 1, 'name', 'Active'),
                          'createdAt', to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                          'updatedAt', to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                          'customer_email', CASE i % 3 WHEN 0 THEN upper(e) WHEN 1 THEN '  ' || e || ' ' ELSE e END),
       ts
  FROM generate_series(1, :n) AS i,
       LATERAL (SELECT 'user' || ((i::bigint * 7) % (:n * 6 / 5) + 1) || '@example.com' AS e,
                       timestamptz '2024-01-01' + i * interval '1 second' AS ts) x"""

MORE_CONTACTS_SQL = """
INSERT INTO cs.contacts (tenant_id, contact_external_id, crm_id, account_external_id, email)
SELECT :t, 'new' || i, 'crmnew' || i, 'a1', 'user' || (:n + i) || '@example.com'
  FROM generate_series(1, :n / 200) AS i
UNION ALL
SELECT :t, 'dup' || i, 'crmdup' || i, 'a2', 'user' || (i * 3 + 1) || '@example.com'
  FROM generate_series(1, :n / 200) AS i"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="tickets and contacts (default 100000)")
    args = parser.parse_args()
    engine = get_engine(os.environ.get("CZ_WAREHOUSE_URL"))
    migrate(engine)
    tenant = f"bench_{uuid.uuid4().hex[:8]}"
    params = {"t": tenant, "n": args.n}
    try:
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            conn.execute(_text(CONTACTS_SQL), params)
            conn.execute(_text(TICKETS_SQL), params)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "ANALYZE cs.contacts; ANALYZE raw.tickets; ANALYZE cs.tickets")
        print(f"generated {args.n:,} contacts and {args.n:,} tickets in {time.perf_counter() - start:.1f}s")

        def publish(label: str) -> None:
            start = time.perf_counter()
            with engine.begin() as conn:
                r = publish_tickets(conn, tenant, "https://bench.teamwork.com/desk/api/v2")
            print(f"{label:<34} {time.perf_counter() - start:7.2f}s  inserted {r.inserted:>9,}  updated "
                  f"{r.updated:>7,}  match changes {r.match_changes:>9,}  {r.by_status}")

        publish("first match (all new)")
        publish("again, nothing changed")
        with engine.begin() as conn:
            conn.execute(_text(MORE_CONTACTS_SQL), params)
        publish(f"re-match after +{2 * (args.n // 200):,} contacts")
    finally:
        with engine.begin() as conn:
            for table in ("cs.tickets", "cs.contacts", "raw.tickets", "sync.ticket_match_log"):
                conn.exec_driver_sql(f"DELETE FROM {table} WHERE tenant_id = %s", (tenant,))


def _text(sql: str):
    import sqlalchemy as sa

    return sa.text(sql)


if __name__ == "__main__":
    main()
