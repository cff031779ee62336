"""Benchmark: publish cs.accounts for a Close tenant of N leads, with and without a definition.

    .venv/bin/python benchmarks/cs_accounts.py                 # sizes 2000 8000 32000
    .venv/bin/python benchmarks/cs_accounts.py --leads 1000000

Generates a throw-away tenant in SQL (`generate_series`): N leads meeting the sync filter and
1.5 N deals with start and end dates, then times, per size: a plain guarded upsert of the same
rows (the anchor), the publication without a definition, and with the next-renewal-date
definition (max end date of the deals running today). Each figure is printed beside the anchor
as a ratio; a linear derivation keeps the ratio flat as N grows. Uses the embedded Postgres (or
CZ_WAREHOUSE_URL); the tenant's rows are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import sqlalchemy as sa

from cz_pipeline.config.tenants import parse_tenants
from cz_pipeline.model.derive import publish
from cz_pipeline.sandbox.close import CUSTOM_FIELD_IDS
from cz_pipeline.warehouse.embedded import get_engine
from cz_pipeline.warehouse.migrations import migrate

CF = {name: f"custom.{cid}" for name, cid in CUSTOM_FIELD_IDS.items()}

LEADS_SQL = f"""
INSERT INTO raw.leads (tenant_id, source_system, source_id, payload, source_updated_at)
SELECT :t, 'close', 'lead_' || i,
       jsonb_build_object('id', 'lead_' || i, 'display_name', 'Account ' || i, 'status_label', 'Customer',
                          '{CF["account_id"]}', 'A-' || i, 'date_updated', '2024-01-01T00:00:00+00:00'),
       timestamptz '2024-01-01'
  FROM generate_series(1, :n) AS i"""

# 1.5 deals per lead: every lead one, every other lead a second; running today or ended.
DEALS_SQL = f"""
INSERT INTO raw.deals (tenant_id, source_system, source_id, payload, source_updated_at)
SELECT :t, 'close', 'opp_' || i || '_' || k,
       jsonb_build_object('id', 'opp_' || i || '_' || k, 'lead_id', 'lead_' || i, 'status_type', 'active',
                          '{CF["start_date"]}', to_char(current_date - 30 * k, 'YYYY-MM-DD'),
                          '{CF["end_date"]}', to_char(current_date + (i % 400) - 200, 'YYYY-MM-DD')),
       timestamptz '2024-01-01'
  FROM generate_series(1, :n) AS i, generate_series(1, 2) AS k
 WHERE k = 1 OR i % 2 = 0"""

ANCHOR_SQL = f"""
INSERT INTO cs.accounts AS x (tenant_id, account_external_id, source_system, crm_id, name)
SELECT :t, r.payload->>'{CF["account_id"]}', 'close', r.source_id, r.payload->>'display_name'
  FROM raw.leads r WHERE r.tenant_id = :t AND r.deleted_at IS NULL
ON CONFLICT (tenant_id, account_external_id) DO UPDATE SET name = EXCLUDED.name
 WHERE x.name IS DISTINCT FROM EXCLUDED.name"""


def tenant_config(tenant_id: str, definition: bool):
    fields = {"tier": {"source": CF["tier"]}}
    if definition:
        fields["next_renewal_date"] = {"definition": {
            "from": "deals", "aggregate": "max", "field": "end_date",
            "where": [{"field": "start_date", "op": "lte", "value": "today"},
                      {"field": "end_date", "op": "gte", "value": "today"}]}}
    crm = {"system": "close", "base_url": "http://127.0.0.1:1/api/v1", "credentials": {"api_key": {"env": "UNUSED"}},
           "account_external_id": CF["account_id"],
           "sync_filter": [{"field": "status_label", "op": "in", "value": ["Customer", "Trial"]}],
           "account_fields": fields, "deal_fields": {"start_date": CF["start_date"], "end_date": CF["end_date"]}}
    return parse_tenants({"tenants": {tenant_id: {"crm": crm}}})[tenant_id]


def clear(conn: sa.Connection, tenant: str, tables: tuple[str, ...]) -> None:
    for table in tables:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE tenant_id = :t"), {"t": tenant})


def timed(engine: sa.Engine, work) -> float:
    start = time.perf_counter()
    with engine.begin() as conn:
        work(conn)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, nargs="+", default=[2000, 8000, 32000])
    args = parser.parse_args()
    engine = get_engine(os.environ.get("CZ_WAREHOUSE_URL"))
    migrate(engine)
    print(f"{'leads':>9} {'deals':>9} {'anchor upsert':>14} {'no definition':>20} {'with definition':>20}")
    for n in args.leads:
        tenant = f"bench_{uuid.uuid4().hex[:8]}"
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(LEADS_SQL), {"t": tenant, "n": n})
                conn.execute(sa.text(DEALS_SQL), {"t": tenant, "n": n})
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE raw.leads; ANALYZE raw.deals")
            deals = n + n // 2
            anchor = timed(engine, lambda c: c.execute(sa.text(ANCHOR_SQL), {"t": tenant}))
            with engine.begin() as conn:
                clear(conn, tenant, ("cs.accounts",))
            plain = timed(engine, lambda c: publish(c, tenant_config(tenant, False), "accounts", "full"))
            with engine.begin() as conn:
                clear(conn, tenant, ("cs.accounts",))
            with_def = timed(engine, lambda c: publish(c, tenant_config(tenant, True), "accounts", "full"))
            print(f"{n:>9,} {deals:>9,} {anchor:>13.2f}s {plain:>9.2f}s ({plain / anchor:4.1f}x) "
                  f"{with_def:>9.2f}s ({with_def / anchor:4.1f}x)")
        finally:
            with engine.begin() as conn:
                clear(conn, tenant, ("cs.accounts", "raw.leads", "raw.deals", "sync.quarantine"))


if __name__ == "__main__":
    main()
