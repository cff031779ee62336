"""How Zoho CRM payloads map onto the canonical `cs` columns, as SQL over a payload alias `p` (jsonb)."""

from __future__ import annotations

from cz_pipeline.core.sql import email_expr, null, typed


def _ts(field: str) -> str:
    return typed(f"(p->>'{field}')", "timestamptz")


ZOHO = {
    "accounts": {"name": "p->>'Account_Name'", "owner_crm_user_id": "p->'Owner'->>'id'",
                 "crm_url": null("text"), "native_parent_crm_id": "p->'Parent_Account'->>'id'"},
    "contacts": {"account_crm_id": "p->'Account_Name'->>'id'", "email": email_expr("p->>'Email'"),
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
