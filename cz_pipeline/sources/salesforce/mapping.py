"""How Salesforce payloads map onto the canonical `cs` columns, as SQL over a payload alias `p`
(jsonb), in the shape of the other CRMs' mapping tables. Casts are guarded by JSON type or a
pattern instead of `pg_input_is_valid` (PostgreSQL 16+), so the SQL runs on PostgreSQL 14-18,
and it holds no `%` (it may pass through DBAPI paramstyle escaping)."""

from __future__ import annotations

from cz_pipeline.core.sql import email_expr

_DATE_RE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TS_RE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})$"


def sf_date(field: str) -> str:
    return f"(CASE WHEN p->>'{field}' ~ '{_DATE_RE}' THEN (p->>'{field}')::date END)"


def sf_timestamp(field: str) -> str:
    return f"(CASE WHEN p->>'{field}' ~ '{_TS_RE}' THEN (p->>'{field}')::timestamptz END)"


def sf_number(field: str) -> str:
    return f"(CASE WHEN jsonb_typeof(p->'{field}') = 'number' THEN (p->>'{field}')::numeric END)"


def sf_bool(field: str) -> str:
    return f"(CASE WHEN jsonb_typeof(p->'{field}') = 'boolean' THEN (p->>'{field}')::boolean END)"


def _id_with_prefix(field: str, prefix: str) -> str:
    # Salesforce ids start with the object's key prefix: 001 Account, 006 Opportunity
    return f"CASE WHEN left(p->>'{field}', 3) = '{prefix}' THEN p->>'{field}' END"


SALESFORCE = {
    "accounts": {"name": "p->>'Name'", "owner_crm_user_id": "p->>'OwnerId'", "crm_url": "NULL::text",
                 "native_parent_crm_id": "NULLIF(p->>'ParentId', '')"},
    "contacts": {"account_crm_id": "p->>'AccountId'", "email": email_expr("p->>'Email'"),
                 "first_name": "p->>'FirstName'", "last_name": "p->>'LastName'", "title": "p->>'Title'"},
    "deals": {"account_crm_id": "p->>'AccountId'", "name": "p->>'Name'", "status_label": "p->>'StageName'",
              "status_type": f"CASE WHEN COALESCE({sf_bool('IsClosed')}, false) AND COALESCE({sf_bool('IsWon')}, false) "
                             f"THEN 'won' WHEN COALESCE({sf_bool('IsClosed')}, false) THEN 'lost' ELSE 'active' END",
              "amount": sf_number("Amount"), "currency": "p->>'CurrencyIsoCode'",
              "close_date": sf_date("CloseDate"),
              "start_date": sf_date("Start_Date__c"), "end_date": sf_date("End_Date__c")},
    "tasks": {"account_crm_id": _id_with_prefix("WhatId", "001"), "deal_crm_id": _id_with_prefix("WhatId", "006"),
              "contact_crm_id": "NULLIF(p->>'WhoId', '')", "assigned_crm_user_id": "p->>'OwnerId'",
              "subject": "p->>'Subject'", "due_date": sf_date("ActivityDate"),
              "is_complete": f"COALESCE({sf_bool('IsClosed')}, false)",
              "completed_at": f"CASE WHEN COALESCE({sf_bool('IsClosed')}, false) THEN {sf_timestamp('SystemModstamp')} END"},
    "users": {"email": "p->>'Email'", "first_name": "p->>'FirstName'", "last_name": "p->>'LastName'",
              "is_active": f"COALESCE({sf_bool('IsActive')}, true)"},
}
