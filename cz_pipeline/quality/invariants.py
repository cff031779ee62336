"""Dataset-level invariants of the published `cs` tables, checked inside each publication.

A `cs` table publishes in one transaction; before it commits, the invariants of what analysts
would see are evaluated in SQL over the table as written (the tenant's rows only):
- unique keys (the table's key and, where it has one, the CRM id),
- every contact, deal, task and activity belongs to a published account,
- the hierarchy is acyclic: every path starts at a root (depth 0) and extends its parent's path
  by the account itself, without repeating an account; every hierarchy row is a published account.
Dirty source records never break them (they are quarantined before); a violation is a bug or a
corrupted table, so by default any violation blocks: the transaction rolls back and analysts keep
the last good rows. A tenant may tolerate a share per invariant (`thresholds.<name>`).

Every evaluation is recorded in `sync.check_results` (asset `cs/<table>`); each successful
publication in `sync.publications`, the baseline of the account-count check. No Dagster imports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from cz_pipeline.config.tenants import TenantConfig
from cz_pipeline.quality.checks import RETENTION_DAYS, SAMPLE_SIZE, CheckOutcome, record

R = TypeVar("R")
EXPECTATION = "published_set_invariant"


@dataclass(frozen=True)
class Invariant:
    name: str
    table: str
    description: str
    offenders: str  # SELECT of the offending rows (column `id` first), bind `:t` = tenant id


def _unique(table: str, *keys: str) -> Invariant:
    parts = " UNION ALL ".join(
        f"SELECT {k} AS id, '{k}' AS key, count(*) AS copies FROM cs.{table} WHERE tenant_id = :t "
        f"GROUP BY {k} HAVING count(*) > 1" for k in keys)
    return Invariant(f"{table}_unique_keys", table, f"cs.{table}: {', '.join(keys)} unique per tenant.", parts)


def _on_account(table: str) -> Invariant:
    return Invariant(
        f"{table}_on_published_account", table, f"cs.{table}: every row belongs to an account in cs.accounts.",
        f"""SELECT x.crm_id AS id, x.account_external_id FROM cs.{table} x
             WHERE x.tenant_id = :t AND NOT EXISTS (
                   SELECT 1 FROM cs.accounts a WHERE a.tenant_id = :t AND a.account_external_id = x.account_external_id)""")


INVARIANTS: tuple[Invariant, ...] = (
    _unique("accounts", "account_external_id", "crm_id"),
    _unique("account_hierarchy", "account_external_id"),
    Invariant("hierarchy_acyclic", "account_hierarchy",
              "cs.account_hierarchy: acyclic — each path runs from a root (depth 0) to the account, extends its "
              "parent's path and repeats no account; every row is an account in cs.accounts.",
              """SELECT h.account_external_id AS id, h.parent_account_external_id AS parent, h.depth,
                        array_to_string(h.path, ' > ') AS path
                   FROM cs.account_hierarchy h
                  WHERE h.tenant_id = :t AND (
                        h.path IS NULL OR cardinality(h.path) <> h.depth + 1
                     OR h.path[cardinality(h.path)] IS DISTINCT FROM h.account_external_id
                     OR h.path[1] IS DISTINCT FROM h.root_account_external_id
                     OR (SELECT count(DISTINCT e) FROM unnest(h.path) e) <> cardinality(h.path)
                     OR (h.parent_account_external_id IS NULL) <> (h.depth = 0)
                     OR (h.parent_account_external_id IS NOT NULL AND NOT EXISTS (
                           SELECT 1 FROM cs.account_hierarchy p
                            WHERE p.tenant_id = :t AND p.account_external_id = h.parent_account_external_id
                              AND p.path = h.path[1:h.depth]))
                     OR NOT EXISTS (SELECT 1 FROM cs.accounts a
                                     WHERE a.tenant_id = :t AND a.account_external_id = h.account_external_id))"""),
    _unique("contacts", "contact_external_id", "crm_id"),
    _on_account("contacts"),
    _unique("deals", "crm_id"),
    _on_account("deals"),
    _unique("tasks", "crm_id"),
    _on_account("tasks"),
    _unique("activities", "crm_id"),
    _on_account("activities"),
)
INVARIANTS_BY_NAME = {i.name: i for i in INVARIANTS}


def invariants_for(table: str) -> list[Invariant]:
    return [i for i in INVARIANTS if i.table == table]


def threshold_for(tenant: TenantConfig, invariant: Invariant) -> float:
    """Dataset-level: 0 (any violation blocks) unless the tenant names the invariant."""
    return tenant.quality.thresholds.get(invariant.name, 0.0)


class InvariantViolation(RuntimeError):
    """A publication broke an invariant of the published set and was rolled back."""

    def __init__(self, tenant_id: str, table: str, failed: list[CheckOutcome], outcomes: list[CheckOutcome]):
        self.tenant_id, self.table, self.failed, self.outcomes = tenant_id, table, failed, outcomes
        super().__init__(
            f"tenant {tenant_id!r}: cs.{table} was not published: "
            + "; ".join(f"{o.name}: {o.message}" for o in failed)
            + f". Analysts keep the last good cs.{table} rows.")


def evaluate(conn: sa.Connection, tenant: TenantConfig, table: str) -> list[CheckOutcome]:
    """Evaluate the invariants of `cs.<table>` for the tenant as `conn` sees it (call inside the
    publishing transaction, after the writes)."""
    t = {"t": tenant.tenant_id}
    total = conn.execute(sa.text(f"SELECT count(*) FROM cs.{table} WHERE tenant_id = :t"), t).scalar_one()
    out = []
    for inv in invariants_for(table):
        offending, sample = conn.execute(sa.text(f"""
            WITH o AS ({inv.offenders})
            SELECT (SELECT count(*) FROM o),
                   (SELECT COALESCE(jsonb_agg(to_jsonb(s)), '[]') FROM (SELECT * FROM o ORDER BY 1 LIMIT :n) s)"""),
            {**t, "n": SAMPLE_SIZE}).one()
        share = offending / total if total else 0.0
        threshold = threshold_for(tenant, inv)
        passed = offending == 0 or share <= threshold + 1e-12 and threshold > 0
        message = (f"{'holds' if passed else 'VIOLATED'}: {offending} of {total} rows offending "
                   f"(threshold {threshold:.1%}) — {inv.description}")
        out.append(CheckOutcome(inv.name, table, True, passed, offending, total, share, threshold, EXPECTATION,
                                None if passed else EXPECTATION, sample if isinstance(sample, list) else json.loads(sample),
                                message, asset=f"cs/{table}"))
    return out


def publish_checked(engine: sa.Engine, tenant: TenantConfig, table: str, publish: Callable[[sa.Connection], R],
                    *, mode: str | None = None, dagster_run_id: str | None = None) -> tuple[R, list[CheckOutcome]]:
    """Run `publish(conn)` in one transaction and commit only if the invariants of cs.<table>
    hold; record the evaluation (and the publication). Raises InvariantViolation after rolling
    back."""
    failed: list[CheckOutcome] = []
    try:
        with engine.begin() as conn:
            result = publish(conn)
            outcomes = evaluate(conn, tenant, table)
            for o in outcomes:
                o.dagster_run_id = dagster_run_id
            failed = [o for o in outcomes if not o.passed]
            if failed:
                raise InvariantViolation(tenant.tenant_id, table, failed, outcomes)
            record(conn, tenant.tenant_id, outcomes)
            conn.execute(sa.text("""
                INSERT INTO sync.publications (tenant_id, table_name, rows, candidates, quarantined, mode,
                                               dagster_run_id)
                VALUES (:t, :table, :rows, :candidates, :quarantined, :mode, :run)"""),
                {"t": tenant.tenant_id, "table": table, "rows": getattr(result, "rows", 0),
                 "candidates": getattr(result, "candidates", getattr(result, "rows", 0)),
                 "quarantined": getattr(result, "quarantined", 0), "mode": mode, "run": dagster_run_id})
            conn.execute(sa.text(f"""
                DELETE FROM sync.publications WHERE tenant_id = :t AND table_name = :table
                   AND published_at < now() - interval '{RETENTION_DAYS} days'
                   AND id < (SELECT max(id) FROM sync.publications WHERE tenant_id = :t AND table_name = :table)"""),
                {"t": tenant.tenant_id, "table": table})
    except InvariantViolation as exc:
        with engine.begin() as conn:
            record(conn, tenant.tenant_id, exc.outcomes)
        raise
    return result, outcomes
