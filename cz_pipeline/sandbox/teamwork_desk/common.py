"""Teamwork Desk fake: constants (statuses, lookups, filterable fields), timestamp format and
error bodies.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ..server import Request, Response, json_response


PREFIX = "/desk/api/v2"
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50
ZERO_TIME = "0001-01-01T00:00:00Z"

STATUSES = [
    {"id": 1, "name": "Active", "code": "active", "color": "#4bbf73"},
    {"id": 3, "name": "Waiting on customer", "code": "waiting", "color": "#ffa785"},
    {"id": 4, "name": "On-hold", "code": "on-hold", "color": "#8e8e8e"},
    {"id": 5, "name": "Solved", "code": "solved", "color": "#3c8dbc"},
    {"id": 6, "name": "Closed", "code": "closed", "color": "#333333"},
    {"id": 7, "name": "Spam", "code": "spam", "color": "#d9534f"},
]
LOOKUPS: dict[str, list[dict[str, Any]]] = {
    "ticketstatuses": STATUSES,
    "ticketpriorities": [{"id": i, "name": n.title(), "code": n} for i, n in
                         enumerate(("low", "medium", "high", "urgent"), start=1)],
    "tickettypes": [{"id": 143616, "name": "Question"}, {"id": 143617, "name": "Problem"},
                    {"id": 143618, "name": "Feature request"}],
    "ticketsources": [{"id": 1, "name": "Email"}, {"id": 2, "name": "Web form"}, {"id": 3, "name": "API"}],
    "inboxes": [{"id": 9760, "name": "Support", "email": "support@acme.teamwork.com"},
                {"id": 9761, "name": "Billing", "email": "billing@acme.teamwork.com"}],
    "users": [{"id": 2, "firstName": "Teamwork", "lastName": "System", "email": "system@acme.teamwork.com"},
              {"id": 238860, "firstName": "Ada", "lastName": "Agent", "email": "ada@acme.example"},
              {"id": 238861, "firstName": "Ben", "lastName": "Agent", "email": "ben@acme.example"}],
    "tags": [{"id": 7, "name": "vip", "color": "#f0ad4e"}, {"id": 8, "name": "bug", "color": "#d9534f"},
             {"id": 9, "name": "billing", "color": "#5bc0de"}],
}
SYSTEM_USER, API_USER, AGENTS = 2, 238860, (238860, 238861)
# ticket fields holding a reference, and the `type` of what they point to
TICKET_REFS = {"agent": "users", "inbox": "inboxes", "status": "ticketstatuses", "priority": "ticketpriorities",
               "source": "ticketsources", "type": "tickettypes"}
TICKET_FILTERS = {"id": "int", "subject": "str", "previewText": "str", "originalRecipient": "str", "state": "str",
                  "createdAt": "ts", "updatedAt": "ts", "deletedAt": "ts",
                  **{f: "int" for f in ("customer", "contact", "agent", "inbox", "status", "priority", "source",
                                        "type", "createdBy", "updatedBy")}}
CUSTOMER_FILTERS = {"id": "int", "email": "str", "contacts.value": "str", "firstName": "str", "lastName": "str",
                    "externalId": "str", "state": "str", "createdAt": "ts", "updatedAt": "ts"}
LOOKUP_FILTERS = {"id": "int", "name": "str"}
QUERYABLE = {"tickets": (TICKET_FILTERS, ("id", "createdAt", "updatedAt")),
             "customers": (CUSTOMER_FILTERS, ("id", "createdAt", "updatedAt", "email"))}
INCLUDABLE = {"customers", "contacts", *LOOKUPS}
CUSTOMER_EDITABLE = ("firstName", "lastName", "organization", "externalId", "phone", "jobTitle")

DEFAULT_EMAILS = ["jane.doe@acme.example", "bob.smith@globex.example", "priya.patel@initech.example",
                  "li.wei@umbrella.example", "maria.garcia@hooli.example", "tom.jones@vandelay.example"]
UNKNOWN_EMAILS = ["someone@unknown.example", "nobody@unknown.example", "ghost@unknown.example"]
SUBJECTS = ["Cannot log in", "Invoice question", "Export is slow", "Feature request: SSO", "Password reset",
            "Billing address change", "API returns 500", "How do I add users?", "Cancel my plan", "Data import failed"]


def fmt_ts(dt: datetime) -> str:
    # isoformat, not strftime: strftime renders year 1 as "1" on glibc
    return dt.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


@lru_cache(maxsize=65536)
def parse_ts(value: str) -> datetime:
    dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def ref(id_: int | None, kind: str) -> dict[str, Any] | None:
    return None if id_ is None else {"id": id_, "type": kind}


class NotFound(Exception):
    pass


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"message": detail, "errors": [{"status": str(status), "detail": detail}]}, headers)




def _int_arg(req: Request, name: str, default: int) -> int:
    raw = req.arg(name)
    try:
        return default if raw in (None, "") else int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
