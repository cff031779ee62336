"""Parent/child account hierarchies (`cs.account_hierarchy`), computed in SQL.

Input: accounts with their parent's AccountExternalID (`cs.accounts.parent_account_external_id`:
Close from the configured lead field, Zoho/Salesforce from the native parent resolved to the
parent's AccountExternalID). Output, per account: parent, root, depth (root = 0) and path (root
first, the account last).

Broken links never break the tree: an account whose parent is itself (`self_parent`), whose parent
is not among the accounts (`dangling_parent`, also when a native parent id does not resolve to an
AccountExternalID at all), or that lies on a cycle (`hierarchy_cycle`) becomes
a root of its own (parent NULL in the hierarchy) and is reported with that reason. Accounts below a
cycle hang under the cycle member they reach first.

One statement, three recursive CTEs with cycle guards:
  1. `down`: top-down from the natural roots (no parent, self parent, dangling parent) — every
     account that reaches one of them; cheap (one pass per tree level).
  2. `up`: only the accounts left over lie on a cycle or below one; walking up from those (path
     guard) finds the cycle members: the walks that come back to their start.
  3. `down2`: top-down from the cycle members over the left-over accounts.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from cz_pipeline.config.tenants import TenantConfig
from cz_pipeline.core.sql import analyze_temp, set_work_mem
from cz_pipeline.model.mapping import canonical

ENTITY = "account_hierarchy"  # sync.quarantine entity
REASONS = ("self_parent", "dangling_parent", "hierarchy_cycle")


def nodes_sql(tenant: TenantConfig, accounts: str) -> str:
    """The hierarchy's input over `accounts` (a relation of the tenant's accounts with columns
    account_external_id, crm_id, parent_account_external_id; bind `:t` = tenant id), plus
    `unresolved_parent`: a native parent (Zoho/Salesforce CRM id) that did not resolve to an
    AccountExternalID — the parent record is missing or has no external id — so the link is
    dangling rather than absent."""
    native = canonical(tenant.crm, "accounts")["native_parent_crm_id"]
    if native == "NULL::text":
        return (f"(SELECT a.account_external_id, a.crm_id, a.parent_account_external_id, "
                f"NULL::text AS unresolved_parent FROM {accounts} a)")
    return f"""(SELECT a.account_external_id, a.crm_id, a.parent_account_external_id,
               CASE WHEN a.parent_account_external_id IS NULL THEN {native} END AS unresolved_parent
          FROM {accounts} a
          LEFT JOIN raw.leads r ON r.tenant_id = :t AND r.source_id = a.crm_id
          LEFT JOIN LATERAL (SELECT r.payload p) _ ON true)"""


def hierarchy_sql(nodes: str) -> str:
    """SELECT over `nodes` (a relation with columns account_external_id, crm_id,
    parent_account_external_id, unresolved_parent; account_external_id unique; see `nodes_sql`)
    yielding per account: account_external_id, crm_id, source_parent (the parent as given),
    parent_account_external_id (the parent in the tree, NULL for roots), root_account_external_id,
    depth, path, reason (NULL or one of REASONS) and cycle (the members of its cycle)."""
    return f"""
    WITH RECURSIVE
    n AS (SELECT account_external_id AS aid, crm_id, parent_account_external_id AS parent, unresolved_parent
            FROM {nodes} nn),
    f AS (SELECT n.aid, n.crm_id, n.parent, n.unresolved_parent,
                 CASE WHEN n.parent IS NULL AND n.unresolved_parent IS NOT NULL THEN 'dangling_parent'
                      WHEN n.parent IS NULL THEN NULL
                      WHEN n.parent = n.aid THEN 'self_parent'
                      WHEN NOT EXISTS (SELECT 1 FROM n p WHERE p.aid = n.parent) THEN 'dangling_parent'
                 END AS reason
            FROM n),
    down(aid, root, depth, path) AS (
        SELECT aid, aid, 0, ARRAY[aid] FROM f WHERE parent IS NULL OR reason IS NOT NULL
        UNION ALL
        SELECT c.aid, d.root, d.depth + 1, d.path || c.aid
          FROM down d JOIN f c ON c.parent = d.aid
         WHERE c.reason IS NULL AND c.aid <> ALL (d.path)),
    rest AS (SELECT f.* FROM f WHERE NOT EXISTS (SELECT 1 FROM down d WHERE d.aid = f.aid)),
    up(start, cur, path) AS (
        SELECT aid, parent, ARRAY[aid] FROM rest
        UNION ALL
        SELECT u.start, r.parent, u.path || u.cur
          FROM up u JOIN rest r ON r.aid = u.cur
         WHERE u.cur <> ALL (u.path)),
    cyc AS (SELECT DISTINCT ON (start) start AS aid, path AS cycle FROM up WHERE cur = start
             ORDER BY start, cardinality(path)),
    down2(aid, root, depth, path) AS (
        SELECT aid, aid, 0, ARRAY[aid] FROM cyc
        UNION ALL
        SELECT r.aid, d.root, d.depth + 1, d.path || r.aid
          FROM down2 d JOIN rest r ON r.parent = d.aid
         WHERE NOT EXISTS (SELECT 1 FROM cyc WHERE cyc.aid = r.aid) AND r.aid <> ALL (d.path)),
    tree AS (SELECT * FROM down UNION ALL SELECT * FROM down2)
    SELECT f.aid AS account_external_id, f.crm_id, f.parent AS source_parent, f.unresolved_parent,
           CASE WHEN f.reason IS NULL AND cyc.aid IS NULL THEN f.parent END AS parent_account_external_id,
           t.root AS root_account_external_id, t.depth, t.path,
           COALESCE(f.reason, CASE WHEN cyc.aid IS NOT NULL THEN 'hierarchy_cycle' END) AS reason,
           cyc.cycle
      FROM f JOIN tree t ON t.aid = f.aid
      LEFT JOIN cyc ON cyc.aid = f.aid"""


@dataclass
class HierarchyResult:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    rows: int = 0
    roots: int = 0
    max_depth: int = 0

    def as_metadata(self) -> dict[str, int]:
        return dict(self.__dict__)


def publish_hierarchy(conn: sa.Connection, tenant: TenantConfig) -> HierarchyResult:
    """Derive `cs.account_hierarchy` for one tenant from `cs.accounts`. Call inside a transaction.

    The hierarchy mirrors `cs.accounts` exactly (which already follows the routine/full removal
    rules), so accounts that left `cs.accounts` leave the hierarchy. Broken links go to
    `sync.quarantine` (entity 'account_hierarchy', source id = the account's CRM id) and leave it
    when fixed at the source."""
    t = {"t": tenant.tenant_id, "entity": ENTITY}
    conn.exec_driver_sql("DROP TABLE IF EXISTS pg_temp.hier")
    nodes = nodes_sql(tenant, "(SELECT * FROM cs.accounts WHERE tenant_id = :t)")
    set_work_mem(conn)
    conn.execute(sa.text(f"CREATE TEMP TABLE hier ON COMMIT DROP AS {hierarchy_sql(nodes)}"), t)
    analyze_temp(conn, "hier")
    result = HierarchyResult()

    result.quarantined = conn.execute(sa.text("""
        INSERT INTO sync.quarantine AS q (tenant_id, entity, source_id, reason, detail)
        SELECT :t, :entity, crm_id, reason,
               jsonb_strip_nulls(jsonb_build_object('account_external_id', account_external_id,
                                                    'parent_account_external_id', source_parent,
                                                    'parent_crm_id', unresolved_parent, 'cycle', cycle))
          FROM pg_temp.hier WHERE reason IS NOT NULL
        ON CONFLICT (tenant_id, entity, source_id, reason)
        DO UPDATE SET last_seen_at = now(), detail = EXCLUDED.detail"""), t).rowcount
    conn.execute(sa.text("""
        DELETE FROM sync.quarantine q WHERE q.tenant_id = :t AND q.entity = :entity
           AND NOT EXISTS (SELECT 1 FROM pg_temp.hier h WHERE h.crm_id = q.source_id AND h.reason = q.reason)"""), t)

    cols = ("parent_account_external_id", "root_account_external_id", "depth", "path")
    guard = " OR ".join(f"x.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in cols)
    result.inserted, result.updated = conn.execute(sa.text(f"""
        WITH merged AS (
            INSERT INTO cs.account_hierarchy AS x (tenant_id, account_external_id, {', '.join(cols)})
            SELECT :t, account_external_id, {', '.join(cols)} FROM pg_temp.hier
            ON CONFLICT (tenant_id, account_external_id) DO UPDATE
               SET {', '.join(f'{c} = EXCLUDED.{c}' for c in cols)} WHERE {guard}
            RETURNING (xmax = 0) AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged"""), t).one()
    result.deleted = conn.execute(sa.text("""
        DELETE FROM cs.account_hierarchy x WHERE x.tenant_id = :t AND NOT EXISTS (
            SELECT 1 FROM pg_temp.hier h WHERE h.account_external_id = x.account_external_id)"""), t).rowcount
    stats = conn.execute(sa.text("""
        SELECT count(*), count(*) FILTER (WHERE depth = 0), COALESCE(max(depth), 0) FROM pg_temp.hier""")).one()
    result.rows, result.roots, result.max_depth = stats
    conn.exec_driver_sql("DROP TABLE pg_temp.hier")
    return result
