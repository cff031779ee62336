"""How Close payloads map onto the canonical `cs` columns, as SQL over a payload alias `p` (jsonb)."""

from __future__ import annotations

from cz_pipeline.core.sql import email_expr, null, typed


def _ts(field: str) -> str:
    return typed(f"(p->>'{field}')", "timestamptz")


def _date(field: str) -> str:
    return typed(f"left(p->>'{field}', 10)", "date")


_CLOSE_COMPLETE = typed("(p->>'is_complete')", "boolean")

CLOSE = {
    "accounts": {"name": "COALESCE(p->>'display_name', p->>'name')", "owner_crm_user_id": null("text"),
                 "crm_url": "p->>'html_url'", "native_parent_crm_id": null("text")},
    "contacts": {"account_crm_id": "p->>'lead_id'",
                 "email": email_expr("p->'emails'->0->>'email'"),
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
              "start_date": null("date"), "end_date": null("date")},
    "tasks": {"account_crm_id": "p->>'lead_id'", "deal_crm_id": null("text"), "contact_crm_id": "p->>'contact_id'",
              "assigned_crm_user_id": "p->>'assigned_to'", "subject": "p->>'text'",
              "due_date": f"COALESCE({_date('due_date')}, {_date('date')})",
              "is_complete": f"COALESCE({_CLOSE_COMPLETE}, false)",
              "completed_at": f"CASE WHEN {_CLOSE_COMPLETE} THEN {_ts('date_updated')} END"},
    "users": {"email": "p->>'email'", "first_name": "p->>'first_name'", "last_name": "p->>'last_name'",
              "is_active": "true"},
}
