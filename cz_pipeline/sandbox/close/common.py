"""Close fake: constants (ids, custom fields, statuses, list resources), timestamp format and the
small parsing and validation helpers shared by the other modules of the package.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
import string
from datetime import date, datetime, timezone
from typing import Any, Callable, NamedTuple

from ..server import Request


PREFIX = "/api/v1"
UTC = timezone.utc
_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def _b62(seed: str, n: int = 43) -> str:
    """Deterministic base62 id body derived from a name (not from the dataset seed)."""
    num = int.from_bytes(hashlib.sha512(seed.encode()).digest(), "big")
    out = []
    for _ in range(n):
        num, r = divmod(num, 62)
        out.append(_B62[r])
    return "".join(out)


ORG_ID = "orga_" + _b62("close:organization")
PIPELINE_ID = "pipe_" + _b62("close:pipeline:sales")

# (object type, friendly name, display name, type, choices, accepts_multiple_values)
_CUSTOM_FIELDS = [
    ("lead", "account_id", "Account External ID", "text", None, False),
    ("lead", "parent_account_id", "Parent Account ID", "text", None, False),
    ("lead", "renewal_owner", "Renewal Owner", "user", None, False),
    ("lead", "churnscore", "Primary ChurnScore", "number", None, False),
    ("lead", "cz_url", "ChurnZero Profile URL", "text", None, False),
    ("lead", "tier", "Tier", "choices", ["Enterprise", "Mid-Market", "SMB"], False),
    ("lead", "products", "Products", "choices", ["Analytics", "Automation", "Journeys"], True),
    ("contact", "nps", "NPS Opt-in", "choices", ["Yes", "No"], False),
    ("contact", "nps_rating", "Most Recent NPS Rating", "number", None, False),
    ("contact", "nps_date", "Most Recent NPS Date", "date", None, False),
    ("contact", "nps_comments", "Most Recent NPS Comments", "text", None, False),
    ("opportunity", "start_date", "Start Date", "date", None, False),
    ("opportunity", "end_date", "End Date", "date", None, False),
]
CUSTOM_FIELD_IDS: dict[str, str] = {f[1]: "cf_" + _b62(f"close:custom_field:{f[1]}") for f in _CUSTOM_FIELDS}

LEAD_STATUSES = ["Potential", "Trial", "Customer", "Bad Fit"]
OPP_STATUSES = [("Active", "active"), ("Verbal", "active"), ("Won", "won"), ("Lost", "lost")]
# A custom opportunity status no generated opportunity uses ("Verbal" is custom too: Close ships Active/Won/Lost).
UNUSED_OPP_STATUSES = [("On Hold", "active")]
STATUS_IDS = {label: "stat_" + _b62(f"close:status:{label}")
              for label in LEAD_STATUSES + [s for s, _ in OPP_STATUSES + UNUSED_OPP_STATUSES]}

_PREFIXES = {"lead": "lead_", "contact": "cont_", "opportunity": "oppo_", "task": "task_",
             "task_completed": "acti_", "activity": "acti_", "user": "user_"}
# Writable keys per object; anything else known is read-only (ignored), anything unknown is a 400.
_WRITABLE = {
    "lead": {"name", "description", "url", "status_id", "addresses"},
    "contact": {"name", "title", "emails", "phones", "urls", "lead_id"},
    "opportunity": {"status_id", "value", "value_period", "value_currency", "confidence", "note",
                    "contact_id", "user_id", "date_won", "date_lost", "lead_id"},
    "task": {"assigned_to", "date", "is_complete", "text"},  # the only updatable task keys [C6]
    "user": {"first_name", "last_name", "email", "image"},
}
_READ_ONLY = {"id", "organization_id", "created_by", "updated_by", "date_created", "date_updated",
              "display_name", "status_label", "status_type", "html_url", "lead_name", "contacts",
              "opportunities", "tasks", "contact_ids", "_type", "view"}
_EMBEDDED = {"contacts", "opportunities", "tasks", "contact_ids", "primary_email", "primary_phone"}
_SEARCH_FIELDS = {
    "lead": {"id", "name", "display_name", "description", "url", "status_id", "status_label",
             "date_created", "date_updated", "created_by", "updated_by", "html_url"},
    "contact": {"id", "lead_id", "name", "display_name", "title", "date_created", "date_updated",
                "created_by", "updated_by"},
    "opportunity": {"id", "lead_id", "status_id", "status_label", "status_type", "value", "value_period",
                    "confidence", "note", "contact_id", "user_id", "date_won", "date_created", "date_updated"},
}


class _Res(NamedTuple):
    kind: str
    max_limit: int
    eq: tuple[str, ...] = ()  # equality filters (`x=` and `x__in=`)
    ranges: tuple[str, ...] = ()  # `x__gte/gt/lte/lt` filters
    order: tuple[str, ...] = ()  # allowed `_order_by` fields
    default_order: str = ""


# List endpoints; max `_limit` = the page sizes Airbyte uses successfully.
_LISTS = {
    "lead": _Res("lead", 200),
    "contact": _Res("contact", 100, ("lead_id",)),  # no date filter, as in the real API
    "opportunity": _Res("opportunity", 250, ("id", "lead_id", "user_id", "status_id", "status_type",
                                             "status_label", "value_period", "contact_id"),
                        ("date_updated", "date_created", "date_won"),
                        ("date_won", "date_updated", "date_created", "value", "confidence")),
    "task": _Res("task", 1000, ("id", "lead_id", "_type", "assigned_to", "is_complete", "view", "contact_id"),
                 ("date", "due_date", "date_updated", "date_created"), ("date", "date_created")),
    "activity/task_completed": _Res("task_completed", 100, ("lead_id", "user_id", "contact_id"),
                                    ("date_created", "date_updated"), ("date_created",), "-date_created"),
    "user": _Res("user", 1000, (), (), ("first_name", "last_name")),
    "custom_field/lead": _Res("cf_lead", 1000),
    "custom_field/contact": _Res("cf_contact", 1000),
    "custom_field/opportunity": _Res("cf_opportunity", 1000),
    "status/lead": _Res("status_lead", 100),
    "status/opportunity": _Res("status_opportunity", 100),
    "pipeline": _Res("pipeline", 100),
}

_COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Soylent", "Wonka", "Tyrell",
              "Cyberdyne", "Oscorp", "Stark", "Wayne", "Gringotts", "Aperture", "Black Mesa", "Pied Piper",
              "Dunder Mifflin", "Prestige", "Monarch"]
_SECTORS = ["Analytics", "Logistics", "Robotics", "Foods", "Health", "Energy", "Media", "Software", "Capital", "Labs"]
_SUFFIXES = ["Inc", "LLC", "Corp", "Group", "Ltd"]
_FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Radia", "Edsger",
          "Frances", "John", "Katherine", "Tim", "Hedy", "Donald", "Sophie", "Guido", "Anita", "Niklaus"]
_LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Perlman",
         "Dijkstra", "Allen", "McCarthy", "Johnson", "Berners-Lee", "Lamarr", "Knuth", "Wilson", "Rossum",
         "Borg", "Wirth"]
_TITLES = ["CEO", "CTO", "VP Customer Success", "Head of Operations", "Product Manager", "Engineer", "Buyer"]
_TASKS = ["Follow up with {c}", "Send renewal quote", "Schedule QBR with {c}", "Check onboarding progress",
          "Call {c} about expansion", "Review support tickets"]
_START, _END = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC)


def ts(dt: datetime) -> str:
    """Close object timestamp: UTC, microseconds, `+00:00`."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_dt(value: Any) -> datetime:
    """Tolerant ISO parser: `Z`, offsets, naive (= UTC), date-only, and `+` turned into a space
    by an unencoded query string."""
    s = str(value).strip()
    s = re.sub(r" (\d\d:?\d\d)$", r"+\1", s)
    dt = datetime.fromisoformat(s)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _money(cents: int) -> str:
    return f"${cents // 100:,}" if cents % 100 == 0 else f"${cents / 100:,.2f}"


class _Invalid(ValueError):
    """A 400 with Close's validation body; a ValueError so control mutations turn into 400 too."""

    def __init__(self, errors: list[str] | None = None, field_errors: dict[str, Any] | None = None):
        self.body = {"errors": errors or [], "field-errors": field_errors or {}}
        super().__init__(json.dumps(self.body))


class _NotFound(KeyError):
    pass



# ---- small helpers -------------------------------------------------------------------------------
def _fail(message: str) -> Any:
    raise ValueError(message)


def _body(req: Request) -> Any:
    try:
        return req.json() or {}
    except ValueError:
        raise _Invalid(["Invalid JSON body."])


def _select(out: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """`_fields`: plain names, `custom` (all set custom keys) or `custom.cf_x`."""
    picked: dict[str, Any] = {}
    for f in fields:
        if f == "custom":
            picked.update((k, v) for k, v in out.items() if k.startswith("custom."))
        elif f in out:
            picked[f] = out[f]
    return picked


def _is_date(v: Any) -> bool:
    try:
        parse_dt(v)
        return v is not None
    except (TypeError, ValueError):
        return False


def _date_or_dt(v: Any) -> str:
    """Task dates and date_won: a date stays a date, a datetime is normalised."""
    if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        return date.fromisoformat(v).isoformat()
    return ts(parse_dt(v)) if _is_date(v) else _fail("Invalid date.")


def _number(v: Any) -> float | int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _fail("Invalid number.")
    return int(f) if f.is_integer() else f


def _as_param(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else "" if v is None else str(v)


def _param_dt(name: str, value: str) -> datetime:
    try:
        return parse_dt(value)
    except ValueError:
        raise _Invalid([], {name: "Invalid date/time."})


_OPS = {"gte": operator.ge, "gt": operator.gt, "lte": operator.le, "lt": operator.lt}


def _range_pred(get: Callable[[Any], Any], op: str, bound: datetime) -> Callable[[Any], bool]:
    return lambda o: (v := get(o)) is not None and _OPS[op](parse_dt(v), bound)


def _sort_key(v: Any) -> tuple:
    """Nulls first; dates compare as instants; strings, numbers by value."""
    if v is None:
        return (0, 0)
    if isinstance(v, str) and re.match(r"\d{4}-\d{2}-\d{2}", v):
        return (1, parse_dt(v).timestamp())
    return (1, v)


_QUERY_TOKEN = re.compile(r'\s*(?:sort:(-?)(date_updated|updated|date_created|created)'
                          r'|(date_updated|updated)\s*(>=|<=|>|<)\s*(?:"([^"]*)"|(\S+)))')


def _lead_query(query: str) -> tuple[list[Callable[[str], bool]], str]:
    """The deprecated lead `query` param, limited to what connectors send: `date_updated>="…"`
    (also `>`, `<=`, `<`, unquoted) and `sort:[-]date_updated`. Anything else is a 400 here."""
    preds, order, pos = [], "", 0
    ops = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt"}
    while pos < len(query.rstrip()):
        m = _QUERY_TOKEN.match(query, pos)
        if not m:
            raise _Invalid(["The sandbox supports only date_updated comparisons and sort:date_updated in query, "
                            f"got {query[pos:].strip()!r}."])
        if m.group(2):
            order = m.group(1) + ("date_updated" if "updated" in m.group(2) else "date_created")
        else:
            preds.append(_range_pred(lambda v: v, ops[m.group(4)], _param_dt("query", m.group(5) or m.group(6))))
        pos = m.end()
    return preds, order
