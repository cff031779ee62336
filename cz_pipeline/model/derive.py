"""Set-based derivation of the customer-success model (`cs.*`) from `raw.*`, in SQL.

Every table is published the same way (`publish`), in one transaction per table and tenant:
  candidates (one SELECT over raw) -> quarantine the rejected ones with a reason
  -> guarded upsert of the good ones (`IS DISTINCT FROM`) -> removals.
Removals: a full sync makes `cs` exactly the current candidates (records deleted
at the source or no longer meeting the sync filter leave); a routine sync only removes records
whose raw row is tombstoned (a deletion the vendor reported explicitly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cz_pipeline.config.tenants import CrmConfig, Definition, FilterCondition, TenantConfig
from cz_pipeline.model.mapping import ACCOUNT_CORE, CONTACT_CORE, canonical, custom_fields_expr, text_expr, typed
from cz_pipeline.core.sql import analyze_temp, null, set_work_mem

DEAL_COLUMNS = {"name": "text", "status_label": "text", "status_type": "text", "amount": "numeric",
                "currency": "text", "start_date": "date", "end_date": "date", "close_date": "date"}
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


@dataclass
class PublishResult:
    table: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    rows: int = 0
    candidates: int = 0  # the candidates published (not quarantined)

    def as_metadata(self) -> dict[str, int]:
        return {"inserted": self.inserted, "updated": self.updated, "deleted": self.deleted,
                "quarantined": self.quarantined, "rows": self.rows, "candidates": self.candidates}


class _Params:
    """Collects bind parameters for generated SQL."""

    def __init__(self, **initial: Any):
        self.values: dict[str, Any] = dict(initial)

    def bind(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def _today(cfg: CrmConfig, params: _Params) -> str:
    return f"(now() AT TIME ZONE CAST({params.bind(cfg.timezone)} AS text))::date"


def condition_sql(cond: FilterCondition, expr: str, params: _Params, cfg: CrmConfig, sql_type: str | None = None) -> str:
    """One filter condition over a text expression (or a typed column when `sql_type` is given)."""
    op, value = cond.op, cond.value
    if op == "exists":
        return f"({expr}) IS NOT NULL"
    if op == "not_exists":
        return f"({expr}) IS NULL"
    if op in ("in", "not_in"):
        values = [_text(v) for v in value]
        test = f"COALESCE(({expr})::text = ANY({params.bind(values)}), false)"
        return test if op == "in" else f"NOT {test}"
    sym = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    if value == "today":
        lhs, rhs = (expr if sql_type == "date" else typed(expr, "date")), _today(cfg, params)
    elif sql_type and sql_type != "text":
        lhs, rhs = expr, f"CAST({params.bind(_text(value))} AS {sql_type})"
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        lhs, rhs = typed(expr, "numeric"), f"CAST({params.bind(str(value))} AS numeric)"
    else:
        lhs, rhs = f"({expr})::text", params.bind(_text(value))
    if op == "ne":
        return f"({lhs}) IS DISTINCT FROM {rhs}"
    return f"COALESCE(({lhs}) {sym} {rhs}, false)"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sync_filter_sql(cfg: CrmConfig, params: _Params) -> str:
    parts = [condition_sql(c, text_expr(c.field), params, cfg) for c in cfg.sync_filter]
    return " AND ".join(parts) if parts else "true"


def definition_cte(d: Definition, cfg: CrmConfig, params: _Params, name: str) -> tuple[str, str]:
    """A definition as one aggregate over the tenant's deals grouped by account (canonical columns
    in `dc`), to be LEFT JOINed on `<name>.account_crm_id`: linear in the number of deals, where
    a correlated subquery per account would rescan them all for every account. Returns the CTE
    and the expression of the value (count is 0, not NULL, for an account without deals)."""
    def column(field: str) -> tuple[str, str | None]:
        return (f"dc.{field}", DEAL_COLUMNS[field]) if field in DEAL_COLUMNS else (text_expr(field, "dc.p"), None)

    target, _ = column(d.field)
    where = ["dc.account_crm_id IS NOT NULL"]
    for cond in d.where:
        expr, sql_type = column(cond.field)
        where.append(condition_sql(cond, expr, params, cfg, sql_type))
    agg = "count(*)" if d.aggregate == "count" else f"{d.aggregate}({target})"
    cte = (f"{name} AS (SELECT dc.account_crm_id, {agg} AS v FROM dc "
           f"WHERE {' AND '.join(where)} GROUP BY dc.account_crm_id)")
    value = f"COALESCE({name}.v, 0)" if d.aggregate == "count" else f"{name}.v"
    return cte, value


def _deal_canon_cte(cfg: CrmConfig) -> str:
    cols = canonical(cfg, "deals")
    select = ", ".join(f"{expr} AS {name}" for name, expr in cols.items())
    return (f"dc AS (SELECT r.source_id, r.payload p, {select} FROM raw.deals r CROSS JOIN LATERAL "
            f"(SELECT r.payload p) _ WHERE r.tenant_id = :t AND r.deleted_at IS NULL)")


# ---- candidate queries --------------------------------------------------------------------------


def accounts_candidates(tenant: TenantConfig, params: _Params) -> str:
    cfg = tenant.crm
    m = canonical(cfg, "accounts")
    aid = text_expr(cfg.account_external_id)
    core = {"name": m["name"], "owner_crm_user_id": m["owner_crm_user_id"],
            "next_renewal_date": null("date"), "crm_url": m["crm_url"]}
    ctes, joins, values = [], [], {}
    for i, spec in enumerate(s for s in cfg.account_fields if s.definition):
        cte, values[spec.name] = definition_cte(spec.definition, cfg, params, f"def{i}")
        ctes.append(cte)
        joins.append(f"LEFT JOIN def{i} ON def{i}.account_crm_id = c.source_id")
    for spec in cfg.account_fields:
        if spec.name in ACCOUNT_CORE:
            sql_type = ACCOUNT_CORE[spec.name]
            if spec.definition:
                core[spec.name] = f"({values[spec.name]})::{sql_type}"
            else:
                expr = text_expr(spec.source)
                core[spec.name] = expr if sql_type == "text" else typed(expr, sql_type)
    custom = custom_fields_expr(cfg.account_fields, ACCOUNT_CORE)
    definitions = [s for s in cfg.account_fields if s.definition and s.name not in ACCOUNT_CORE]
    if definitions:
        extra = ", ".join(f"CAST({params.bind(s.name)} AS text), to_jsonb({values[s.name]})" for s in definitions)
        custom = f"({custom} || jsonb_strip_nulls(jsonb_build_object({extra})))"
    if cfg.parent_external_id:
        parent = text_expr(cfg.parent_external_id)
    elif m["native_parent_crm_id"] != null("text"):
        parent = (f"(SELECT {text_expr(cfg.account_external_id, 'pp.payload')} FROM raw.leads pp "
                  f"WHERE pp.tenant_id = :t AND pp.source_id = {m['native_parent_crm_id']})")
    else:
        parent = null("text")
    deal_ctes = "".join(f"{cte},\n    " for cte in [_deal_canon_cte(cfg), *ctes]) if ctes else ""
    field = params.bind(cfg.account_external_id)
    return f"""
    WITH {deal_ctes}l AS (SELECT r.source_id, r.payload p, r.source_updated_at, {aid} AS aid
            FROM raw.leads r CROSS JOIN LATERAL (SELECT r.payload p) _
           WHERE r.tenant_id = :t AND r.deleted_at IS NULL AND ({sync_filter_sql(cfg, params)})),
    c AS (SELECT l.*, count(*) OVER (PARTITION BY aid) AS n FROM l)
    SELECT c.source_id AS _source_id,
           CASE WHEN aid IS NULL THEN 'missing_account_external_id'
                WHEN n > 1 THEN 'duplicate_account_external_id' END AS _reason,
           jsonb_build_object('field', CAST({field} AS text), 'value', aid, 'name', {m['name']}) AS _detail,
           aid AS account_external_id, :system AS source_system, c.source_id AS crm_id,
           {core['name']} AS name, {parent} AS parent_account_external_id,
           {core['owner_crm_user_id']} AS owner_crm_user_id, {core['next_renewal_date']} AS next_renewal_date,
           {core['crm_url']} AS crm_url, {custom} AS custom_fields, c.source_updated_at
      FROM c {" ".join(joins)}"""


def contacts_candidates(tenant: TenantConfig, params: _Params, accounts: str = "cs.accounts") -> str:
    """`accounts`: the relation of accounts contacts attach to (tenant_id, crm_id,
    account_external_id); the quality checks pass the account candidates instead."""
    cfg = tenant.crm
    m = canonical(cfg, "contacts")
    core = {k: m[k] for k in CONTACT_CORE}
    for spec in cfg.contact_fields:
        if spec.name in CONTACT_CORE and spec.source:
            core[spec.name] = text_expr(spec.source)
    by_email = cfg.contact_external_id == "email"
    cid = f"lower({core['email']})" if by_email else text_expr(cfg.contact_external_id)
    invalid = f"WHEN cid !~ '{EMAIL_RE}' THEN 'invalid_contact_external_id'" if by_email else ""
    field = params.bind(cfg.contact_external_id)
    return f"""
    WITH x AS (SELECT r.source_id, r.payload p, r.source_updated_at, a.account_external_id, {cid} AS cid
                 FROM raw.contacts r CROSS JOIN LATERAL (SELECT r.payload p) _
                 JOIN {accounts} a ON a.tenant_id = r.tenant_id AND a.crm_id = {m['account_crm_id']}
                WHERE r.tenant_id = :t AND r.deleted_at IS NULL),
    c AS (SELECT x.*, count(*) OVER (PARTITION BY cid) AS n FROM x)
    SELECT c.source_id AS _source_id,
           CASE WHEN cid IS NULL THEN 'missing_contact_external_id' {invalid}
                WHEN n > 1 THEN 'duplicate_contact_external_id' END AS _reason,
           jsonb_build_object('field', CAST({field} AS text), 'value', cid,
                              'account_external_id', account_external_id) AS _detail,
           cid AS contact_external_id, c.source_id AS crm_id, account_external_id,
           {core['email']} AS email, {core['first_name']} AS first_name, {core['last_name']} AS last_name,
           {core['title']} AS title, {custom_fields_expr(cfg.contact_fields, CONTACT_CORE)} AS custom_fields,
           c.source_updated_at
      FROM c"""


def deals_candidates(tenant: TenantConfig, params: _Params) -> str:
    cfg = tenant.crm
    custom = ", ".join(f"'{name}', {text_expr(src, 'dc.p')}" for name, src in cfg.deal_fields.items()
                       if name not in DEAL_COLUMNS)
    custom_sql = f"jsonb_strip_nulls(jsonb_build_object({custom}))" if custom else "'{}'::jsonb"
    return f"""
    WITH {_deal_canon_cte(cfg)}
    SELECT dc.source_id AS _source_id, NULL::text AS _reason, NULL::jsonb AS _detail,
           dc.source_id AS crm_id, a.account_external_id, dc.name, dc.status_label, dc.status_type,
           dc.amount, dc.currency, dc.start_date, dc.end_date, dc.close_date,
           {custom_sql} AS custom_fields, r.source_updated_at
      FROM dc JOIN cs.accounts a ON a.tenant_id = :t AND a.crm_id = dc.account_crm_id
      JOIN raw.deals r ON r.tenant_id = :t AND r.source_id = dc.source_id"""


def tasks_candidates(tenant: TenantConfig, params: _Params, complete: bool) -> str:
    """A task belongs to the account it is related to; a task related to a deal or only to a
    contact (Zoho `What_Id` on Deals, `Who_Id`) belongs to that deal's or contact's account."""
    m = canonical(tenant.crm, "tasks")
    deal_account = canonical(tenant.crm, "deals")["account_crm_id"]
    contact_account = canonical(tenant.crm, "contacts")["account_crm_id"]
    return f"""
    SELECT r.source_id AS _source_id, NULL::text AS _reason, NULL::jsonb AS _detail,
           r.source_id AS crm_id, a.account_external_id, ct.contact_external_id,
           {m['assigned_crm_user_id']} AS assigned_crm_user_id, {m['subject']} AS subject,
           {m['due_date']} AS due_date, {m['completed_at']} AS completed_at, r.source_updated_at
      FROM raw.tasks r CROSS JOIN LATERAL (SELECT r.payload p) _
      CROSS JOIN LATERAL (SELECT {m['account_crm_id']} AS direct, {m['deal_crm_id']} AS deal_id,
                                 {m['contact_crm_id']} AS contact_id) k
      JOIN cs.accounts a ON a.tenant_id = r.tenant_id AND a.crm_id = COALESCE(
           k.direct,
           (SELECT {deal_account} FROM raw.deals d CROSS JOIN LATERAL (SELECT d.payload p) _d
             WHERE d.tenant_id = r.tenant_id AND d.source_id = k.deal_id AND d.deleted_at IS NULL),
           (SELECT {contact_account} FROM raw.contacts c CROSS JOIN LATERAL (SELECT c.payload p) _c
             WHERE c.tenant_id = r.tenant_id AND c.source_id = k.contact_id AND c.deleted_at IS NULL))
      LEFT JOIN cs.contacts ct ON ct.tenant_id = r.tenant_id AND ct.crm_id = k.contact_id
     WHERE r.tenant_id = :t AND r.deleted_at IS NULL AND ({m['is_complete']}) = {'true' if complete else 'false'}"""


def users_candidates(tenant: TenantConfig, params: _Params) -> str:
    cfg = tenant.crm
    m = canonical(cfg, "users")
    keep = "true"
    if cfg.users_filter_field:
        keep = f"lower(COALESCE({text_expr(cfg.users_filter_field)}, '')) IN ('yes', 'true', '1')"
    can_log_in = "true"
    if cfg.users_access_field:
        can_log_in = f"lower(COALESCE({text_expr(cfg.users_access_field)}, '')) IN ('yes', 'true', '1')"
    return f"""
    SELECT r.source_id AS _source_id, NULL::text AS _reason, NULL::jsonb AS _detail,
           r.source_id AS crm_id, {m['email']} AS email, {m['first_name']} AS first_name,
           {m['last_name']} AS last_name, {m['is_active']} AS is_active, {can_log_in} AS can_log_in,
           r.source_updated_at
      FROM raw.users r CROSS JOIN LATERAL (SELECT r.payload p) _
     WHERE r.tenant_id = :t AND r.deleted_at IS NULL AND {keep}"""


# ---- publishing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    table: str  # cs.<table>
    entity: str  # raw entity the rows come from (quarantine, tombstones)
    key: str
    columns: tuple[str, ...]
    rekey: bool = False  # rows may change their key while keeping crm_id
    exclusive_with: str | None = None  # a crm_id lives in this table or that one (tasks/activities)

    @property
    def on_account(self) -> bool:
        """Its rows belong to a published account (and leave with it)."""
        return "account_external_id" in self.columns


TABLES = {
    "accounts": TableSpec("accounts", "leads", "account_external_id",
                          ("source_system", "crm_id", "name", "parent_account_external_id", "owner_crm_user_id",
                           "next_renewal_date", "crm_url", "custom_fields", "source_updated_at"), rekey=True),
    "contacts": TableSpec("contacts", "contacts", "contact_external_id",
                          ("crm_id", "account_external_id", "email", "first_name", "last_name", "title",
                           "custom_fields", "source_updated_at"), rekey=True),
    "deals": TableSpec("deals", "deals", "crm_id",
                       ("account_external_id", "name", "status_label", "status_type", "amount", "currency",
                        "start_date", "end_date", "close_date", "custom_fields", "source_updated_at")),
    "tasks": TableSpec("tasks", "tasks", "crm_id",
                       ("account_external_id", "contact_external_id", "assigned_crm_user_id", "subject",
                        "due_date", "completed_at", "source_updated_at"), exclusive_with="activities"),
    "activities": TableSpec("activities", "tasks", "crm_id",
                            ("account_external_id", "contact_external_id", "assigned_crm_user_id", "subject",
                             "due_date", "completed_at", "source_updated_at"), exclusive_with="tasks"),
    "users": TableSpec("users", "users", "crm_id",
                       ("email", "first_name", "last_name", "is_active", "can_log_in", "source_updated_at")),
}


def candidates_sql(table: str, tenant: TenantConfig, params: _Params) -> str:
    if table == "accounts":
        return accounts_candidates(tenant, params)
    if table == "contacts":
        return contacts_candidates(tenant, params)
    if table == "deals":
        return deals_candidates(tenant, params)
    if table in ("tasks", "activities"):
        return tasks_candidates(tenant, params, complete=table == "activities")
    if table == "users":
        return users_candidates(tenant, params)
    raise ValueError(f"unknown cs table {table!r}")


def publish(conn: sa.Connection, tenant: TenantConfig, table: str, mode: str) -> PublishResult:
    """Derive `cs.<table>` for one tenant. Call inside a transaction."""
    spec = TABLES[table]
    params = _Params(t=tenant.tenant_id, system=tenant.crm.system, entity=spec.table)
    conn.exec_driver_sql("DROP TABLE IF EXISTS pg_temp.cand")
    set_work_mem(conn)
    conn.execute(sa.text(f"CREATE TEMP TABLE cand ON COMMIT DROP AS {candidates_sql(table, tenant, params)}"),
                 params.values)
    analyze_temp(conn, "cand")
    result = PublishResult(f"cs.{table}")
    t = {"t": tenant.tenant_id, "entity": spec.table}

    # Quarantine: one row per rejected record and reason; fixed records leave it.
    result.quarantined = conn.execute(sa.text("""
        INSERT INTO sync.quarantine AS q (tenant_id, entity, source_id, reason, detail)
        SELECT :t, :entity, _source_id, _reason, _detail FROM pg_temp.cand WHERE _reason IS NOT NULL
        ON CONFLICT (tenant_id, entity, source_id, reason)
        DO UPDATE SET last_seen_at = now(), detail = EXCLUDED.detail"""), t).rowcount
    conn.execute(sa.text("""
        DELETE FROM sync.quarantine q WHERE q.tenant_id = :t AND q.entity = :entity
           AND q.reason <> 'malformed_record'  -- set aside at ingest; the engine clears those
           AND NOT EXISTS (SELECT 1 FROM pg_temp.cand c WHERE c._source_id = q.source_id AND c._reason = q.reason)"""), t)

    if spec.rekey:  # a record whose external id changed: its old row goes, the new one comes
        result.deleted += conn.execute(sa.text(f"""
            DELETE FROM cs.{table} x USING pg_temp.cand c
             WHERE x.tenant_id = :t AND c._reason IS NULL AND x.crm_id = c.crm_id
               AND x.{spec.key} <> c.{spec.key}"""), t).rowcount

    cols = (spec.key, *spec.columns)
    col_list = ", ".join(cols)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in spec.columns)
    guard = " OR ".join(f"x.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in spec.columns)
    counts = conn.execute(sa.text(f"""
        WITH merged AS (
            INSERT INTO cs.{table} AS x (tenant_id, {col_list})
            SELECT :t, {col_list} FROM pg_temp.cand WHERE _reason IS NULL
            ON CONFLICT (tenant_id, {spec.key}) DO UPDATE SET {updates}, synced_at = now() WHERE {guard}
            RETURNING (xmax = 0) AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged"""), t).one()
    result.inserted, result.updated = counts

    if spec.exclusive_with:
        conn.execute(sa.text(f"""
            DELETE FROM cs.{spec.exclusive_with} x USING pg_temp.cand c
             WHERE x.tenant_id = :t AND c._reason IS NULL AND x.crm_id = c.crm_id"""), t)
    if mode == "full":
        result.deleted += conn.execute(sa.text(f"""
            DELETE FROM cs.{table} x WHERE x.tenant_id = :t AND NOT EXISTS (
                SELECT 1 FROM pg_temp.cand c WHERE c._reason IS NULL AND c.{spec.key} = x.{spec.key})"""), t).rowcount
    else:
        result.deleted += conn.execute(sa.text(f"""
            DELETE FROM cs.{table} x USING raw.{spec.entity} r
             WHERE x.tenant_id = :t AND r.tenant_id = :t AND r.source_id = x.crm_id
               AND r.deleted_at IS NOT NULL"""), t).rowcount
    if spec.on_account:  # rows of an account that left cs.accounts (e.g. deleted in the CRM) leave too
        result.deleted += conn.execute(sa.text(f"""
            DELETE FROM cs.{table} x WHERE x.tenant_id = :t AND NOT EXISTS (
                SELECT 1 FROM cs.accounts a WHERE a.tenant_id = :t
                   AND a.account_external_id = x.account_external_id)"""), t).rowcount
    result.candidates = conn.execute(sa.text("SELECT count(*) FROM pg_temp.cand WHERE _reason IS NULL")).scalar_one()
    result.rows = conn.execute(sa.text(f"SELECT count(*) FROM cs.{table} WHERE tenant_id = :t"), t).scalar_one()
    conn.exec_driver_sql("DROP TABLE pg_temp.cand")
    return result
