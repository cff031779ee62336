"""How each CRM's raw payloads map onto the canonical columns of the `cs` model, as SQL
expressions over a payload alias `p` (jsonb). The derivations in `derive.py` are written once
against these canonical names; only this table differs per CRM.

Field names come from validated configuration (`tenants.FIELD_RE`: letters, digits, `_`, `$`,
dots), so inlining them as SQL string literals is safe.
"""

from __future__ import annotations

from cz_pipeline.config.tenants import CrmConfig, FieldSpec


def json_expr(field: str, alias: str = "p") -> str:
    """jsonb value of a source field: a flat key (`custom.cf_x`, Close) or a dotted path
    (`Parent_Account.id`, Zoho)."""
    if "." in field:
        path = ",".join(field.split("."))
        return f"COALESCE({alias}->'{field}', {alias}#>'{{{path}}}')"
    return f"{alias}->'{field}'"


def text_expr(field: str, alias: str = "p") -> str:
    """Text of a source field; a lookup object `{name, id}` yields its id; blank → NULL."""
    j = json_expr(field, alias)
    return (f"NULLIF(btrim(CASE jsonb_typeof({j}) WHEN 'object' THEN {j}->>'id' "
            f"WHEN 'array' THEN {j}->>0 ELSE {j} #>> '{{}}' END), '')")


SAFE_CASTS = ("date", "timestamptz", "numeric", "boolean")


def typed(expr: str, sql_type: str) -> str:
    """A text expression cast to a type, NULL when the value does not parse (never an error).
    The `sync.try_<type>` functions are inlined by the planner and work on PostgreSQL 14-18."""
    if sql_type not in SAFE_CASTS:
        raise ValueError(f"no safe cast to {sql_type!r}")
    return f"sync.try_{sql_type}({expr})"


def _ts(field: str) -> str:
    return typed(f"(p->>'{field}')", "timestamptz")


def _date(field: str) -> str:
    return typed(f"left(p->>'{field}', 10)", "date")


_CLOSE_COMPLETE = typed("(p->>'is_complete')", "boolean")

CLOSE = {
    "accounts": {"name": "COALESCE(p->>'display_name', p->>'name')", "owner_crm_user_id": "NULL::text",
                 "crm_url": "p->>'html_url'", "native_parent_crm_id": "NULL::text"},
    "contacts": {"account_crm_id": "p->>'lead_id'",
                 "email": "NULLIF(btrim(p->'emails'->0->>'email'), '')",
                 "first_name": "NULLIF(split_part(btrim(p->>'name'), ' ', 1), '')",
                 "last_name": "NULLIF(btrim(substr(btrim(p->>'name'), length(split_part(btrim(p->>'name'), ' ', 1)) + 1)), '')",
                 "title": "NULLIF(p->>'title', '')"},
    "deals": {"account_crm_id": "p->>'lead_id'",
              "name": "COALESCE(NULLIF(p->>'note', ''), p->>'lead_name')",
              "status_label": "p->>'status_label'",
              "status_type": "CASE WHEN p->>'status_type' IN ('active', 'won', 'lost') THEN p->>'status_type' END",
              "amount": typed("(p->>'value')", "numeric") + " / 100",  # Close sends cents
              "currency": "p->>'value_currency'",
              "close_date": f"COALESCE({_date('date_won')}, {_date('date_lost')})",
              "start_date": "NULL::date", "end_date": "NULL::date"},
    "tasks": {"account_crm_id": "p->>'lead_id'", "deal_crm_id": "NULL::text", "contact_crm_id": "p->>'contact_id'",
              "assigned_crm_user_id": "p->>'assigned_to'", "subject": "p->>'text'",
              "due_date": f"COALESCE({_date('due_date')}, {_date('date')})",
              "is_complete": f"COALESCE({_CLOSE_COMPLETE}, false)",
              "completed_at": f"CASE WHEN {_CLOSE_COMPLETE} THEN {_ts('date_updated')} END"},
    "users": {"email": "p->>'email'", "first_name": "p->>'first_name'", "last_name": "p->>'last_name'",
              "is_active": "true"},
}

ZOHO = {
    "accounts": {"name": "p->>'Account_Name'", "owner_crm_user_id": "p->'Owner'->>'id'",
                 "crm_url": "NULL::text", "native_parent_crm_id": "p->'Parent_Account'->>'id'"},
    "contacts": {"account_crm_id": "p->'Account_Name'->>'id'", "email": "NULLIF(btrim(p->>'Email'), '')",
                 "first_name": "p->>'First_Name'", "last_name": "p->>'Last_Name'", "title": "p->>'Title'"},
    "deals": {"account_crm_id": "p->'Account_Name'->>'id'", "name": "p->>'Deal_Name'",
              "status_label": "p->>'Stage'",
              # starts_with, not ILIKE '…%': this SQL is also embedded in text that goes through
              # DBAPI paramstyle escaping, where a literal % is doubled
              "status_type": "CASE WHEN starts_with(lower(p->>'Stage'), 'closed won') THEN 'won' "
                             "WHEN starts_with(lower(p->>'Stage'), 'closed lost') THEN 'lost' ELSE 'active' END",
              "amount": typed("(p->>'Amount')", "numeric"), "currency": "p->>'Currency'",
              "close_date": typed("(p->>'Closing_Date')", "date"),
              "start_date": typed("(p->>'Start_Date')", "date"), "end_date": typed("(p->>'End_Date')", "date")},
    "tasks": {"account_crm_id": "CASE WHEN p->>'$se_module' = 'Accounts' THEN p->'What_Id'->>'id' END",
              "deal_crm_id": "CASE WHEN p->>'$se_module' = 'Deals' THEN p->'What_Id'->>'id' END",
              "contact_crm_id": "p->'Who_Id'->>'id'", "assigned_crm_user_id": "p->'Owner'->>'id'",
              "subject": "p->>'Subject'", "due_date": typed("(p->>'Due_Date')", "date"),
              "is_complete": "COALESCE(p->>'Status' = 'Completed', false)",
              "completed_at": f"CASE WHEN p->>'Status' = 'Completed' THEN COALESCE({_ts('Closed_Time')}, {_ts('Modified_Time')}) END"},
    "users": {"email": "p->>'email'", "first_name": "p->>'first_name'", "last_name": "p->>'last_name'",
              "is_active": "COALESCE(p->>'status' = 'active', true)"},
}

CANONICAL = {"close": CLOSE, "zoho_crm": ZOHO}

ACCOUNT_CORE = {"name": "text", "owner_crm_user_id": "text", "next_renewal_date": "date", "crm_url": "text"}
CONTACT_CORE = {"email": "text", "first_name": "text", "last_name": "text", "title": "text"}


def canonical(cfg: CrmConfig, entity: str) -> dict[str, str]:
    try:
        columns = dict(CANONICAL[cfg.system][entity])
    except KeyError:
        raise NotImplementedError(f"no canonical mapping for {cfg.system} {entity}") from None
    if entity == "deals":  # deal fields the CRM has no standard field for (e.g. Close start/end dates)
        for name, source in cfg.deal_fields.items():
            if name in ("start_date", "end_date", "close_date"):
                columns[name] = typed(text_expr(source), "date")
    return columns


def custom_fields_expr(specs: tuple[FieldSpec, ...], core: dict[str, str]) -> str:
    """jsonb object of the configured non-core source fields, typed as the source sends them."""
    pairs = [f"'{s.name}', {json_expr(s.source)}" for s in specs if s.source and s.name not in core]
    return f"jsonb_strip_nulls(jsonb_build_object({', '.join(pairs)}))" if pairs else "'{}'::jsonb"
