"""In-memory fake of the Close CRM API v1 (contract: docs/crm-api-contracts.md §1), served under
`/api/v1` by the shared sandbox server.

Records are stored flat, as the API renders them minus derived keys (status labels, names,
embedded children), so a `PUT` is a dict update and rendering adds the derived keys. Everything
runs under the app lock, so no further locking is needed here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import math
import operator
import random
import re
import string
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, NamedTuple

from .server import Request, Response, SandboxApp, json_response

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
STATUS_IDS = {label: "stat_" + _b62(f"close:status:{label}") for label in LEAD_STATUSES + [s for s, _ in OPP_STATUSES]}

_PREFIXES = {"lead": "lead_", "contact": "cont_", "opportunity": "oppo_", "task": "task_",
             "task_completed": "acti_", "user": "user_"}
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


# List endpoints; max `_limit` = the page sizes Airbyte uses successfully (contract §1.8).
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


class CloseSandbox(SandboxApp):
    name = "close"
    search_cursor_ttl = 30.0  # seconds; class attributes so a test can shrink them
    search_max_walk = 10_000
    event_limit = 50

    def __init__(self, *, api_key: str = "api_sandbox_key", seed: int = 0, n_leads: int = 60,
                 max_skip: int = 250_000, max_limit: int | None = None):
        super().__init__()
        self.api_key, self.max_skip, self.max_limit = api_key, max_skip, max_limit
        self.rng = random.Random(seed)
        kinds = [*_PREFIXES, *(r.kind for r in _LISTS.values())]
        self.db: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in kinds}  # kind -> id -> record
        self.roles: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self._meta: dict[str, Any] = {}
        self._static()
        self._generate(n_leads)

    # ---- ids and static configuration --------------------------------------------------
    def _id(self, kind: str) -> str:
        return _PREFIXES[kind] + "".join(self.rng.choice(_B62) for _ in range(43))

    def _static(self) -> None:
        made = ts(datetime(2024, 11, 4, 9, 30, tzinfo=UTC))
        for obj_type, name, label, typ, choices, multi in _CUSTOM_FIELDS:
            cid = CUSTOM_FIELD_IDS[name]
            self.db[f"cf_{obj_type}"][cid] = {
                "id": cid, "name": label, "description": None, "type": typ, "choices": choices,
                "accepts_multiple_values": multi, "editable_with_roles": [], "is_shared": False,
                "created_by": None, "updated_by": None, "date_created": made, "date_updated": made,
                "organization_id": ORG_ID}
        for label in LEAD_STATUSES:
            self.db["status_lead"][STATUS_IDS[label]] = {"id": STATUS_IDS[label], "label": label, "organization_id": ORG_ID}
        for label, typ in OPP_STATUSES:
            self.db["status_opportunity"][STATUS_IDS[label]] = {
                "id": STATUS_IDS[label], "label": label, "type": typ, "pipeline_id": PIPELINE_ID,
                "pipeline_name": "Sales", "organization_id": ORG_ID}
        self.db["pipeline"][PIPELINE_ID] = {"id": PIPELINE_ID, "name": "Sales", "organization_id": ORG_ID,
                                            "statuses": list(self.db["status_opportunity"].values())}

    # ---- deterministic dataset -----------------------------------------------------------
    def _between(self, a: datetime, b: datetime) -> datetime:
        return a + timedelta(microseconds=self.rng.randrange(max(1, (b - a) // timedelta(microseconds=1))))

    def _generate(self, n: int) -> None:
        rng, cf = self.rng, CUSTOM_FIELD_IDS
        people = rng.sample([(f, l) for f in _FIRST for l in _LAST], 5)
        for i, (first, last) in enumerate(people):
            uid, made = self._id("user"), ts(self._between(datetime(2024, 1, 1, tzinfo=UTC), _START))
            self.db["user"][uid] = {
                "id": uid, "first_name": first, "last_name": last,
                "email": f"{first.lower()}.{last.lower()}@czsandbox.example",
                "image": f"https://secure.gravatar.com/avatar/{_b62(uid, 32).lower()}",
                "date_created": made, "date_updated": made, "organizations": [ORG_ID]}
            self.roles[uid] = "admin" if i < 2 else "user"
        users = list(self.db["user"])
        # Exact status mix: 35% Customer, 15% Trial, 10% Bad Fit, rest Potential.
        statuses = ["Customer"] * (n * 7 // 20) + ["Trial"] * (n * 3 // 20) + ["Bad Fit"] * (n // 10)
        statuses += ["Potential"] * (n - len(statuses))
        rng.shuffle(statuses)
        names: set[str] = set()
        leads, children = [], []
        for status in statuses:
            name = f"{rng.choice(_COMPANIES)} {rng.choice(_SECTORS)} {rng.choice(_SUFFIXES)}"
            while name in names:
                name = f"{name} {len(names)}"
            names.add(name)
            slug = re.sub(r"[^a-z0-9]+", "", name.lower())
            made = self._between(_START, datetime(2026, 3, 31, tzinfo=UTC))
            lead = {"id": self._id("lead"), "name": name, "description": f"{status} account", "url": f"https://{slug}.example",
                    "status_id": STATUS_IDS[status], "addresses": [], "organization_id": ORG_ID,
                    "created_by": users[0], "updated_by": users[0], "date_created": made, "date_updated": made}
            if rng.random() < 0.5:
                lead["addresses"] = [{"label": "business", "address_1": f"{rng.randrange(1, 999)} Main St",
                                      "city": "Springfield", "state": "IL", "zipcode": "62701", "country": "US"}]
            leads.append(lead)
            children.append(self._gen_children(lead, status, slug, users))
        # Opportunity ties: a few share their exact date_updated (tie handling in incremental reads).
        opps = sorted((o for _, os, _ in children for o in os), key=lambda o: o["date_updated"])
        for i in range(0, len(opps) - 1, 7):
            opps[i]["date_updated"] = opps[i + 1]["date_updated"]
        for lead, (contacts, opps_, tasks) in zip(leads, children):
            kids = [c["date_updated"] for c in contacts + opps_ + tasks]
            lead["date_updated"] = max([self._between(lead["date_created"], _END), *kids])
        by_updated = sorted(leads, key=lambda l: l["date_updated"])
        for i in range(0, len(by_updated) - 1, 9):
            by_updated[i]["date_updated"] = by_updated[i + 1]["date_updated"]
        # Insert in creation order (the default list order); then the account-level custom fields.
        order = sorted(range(n), key=lambda i: leads[i]["date_created"])
        synced: list[dict[str, Any]] = []
        customers: list[dict[str, Any]] = []
        next_account = iter(range(1, n + 1))
        for i in order:
            lead, status = leads[i], statuses[i]
            if status in ("Customer", "Trial") or rng.random() < 0.5:
                lead[f"custom.{cf['account_id']}"] = f"A-{next(next_account):04d}"
            if status in ("Customer", "Trial"):
                if status == "Customer" and 1 <= len(customers) <= 2:  # first three Customers: root -> child -> grandchild
                    lead[f"custom.{cf['parent_account_id']}"] = customers[-1][f"custom.{cf['account_id']}"]
                elif status == "Customer" and customers and rng.random() < 0.2:
                    lead[f"custom.{cf['parent_account_id']}"] = rng.choice(synced)[f"custom.{cf['account_id']}"]
                if rng.random() < 0.5:
                    lead[f"custom.{cf['renewal_owner']}"] = rng.choice(users)
                if rng.random() < 0.7:
                    lead[f"custom.{cf['tier']}"] = rng.choice(["Enterprise", "Mid-Market", "SMB"])
                if rng.random() < 0.4:
                    products = rng.sample(["Analytics", "Automation", "Journeys"], rng.randint(1, 2))
                    lead[f"custom.{cf['products']}"] = sorted(products)
                synced.append(lead)
                customers += [lead] if status == "Customer" else []
            for obj in [lead] + [o for group in children[i] for o in group]:
                obj["date_created"], obj["date_updated"] = ts(obj["date_created"]), ts(obj["date_updated"])
            self.db["lead"][lead["id"]] = lead
            for kind, group in zip(("contact", "opportunity", "task"), children[i]):
                for obj in group:
                    self.db[kind][obj["id"]] = obj
                    if kind == "task" and obj["is_complete"]:
                        self._complete(obj, obj["date_updated"])

    def _gen_children(self, lead: dict[str, Any], status: str, slug: str, users: list[str]) -> tuple[list, list, list]:
        rng, cf, made = self.rng, CUSTOM_FIELD_IDS, lead["date_created"]
        base = {"lead_id": lead["id"], "organization_id": ORG_ID, "created_by": users[0], "updated_by": users[0]}
        contacts, opps, tasks = [], [], []
        for first, last in rng.sample([(f, l) for f in _FIRST for l in _LAST], rng.randint(1, 3)):
            email = f"{first}.{last}@{slug}.example"
            email = email if rng.random() < 0.2 else email.lower()  # some mixed case, as people type them
            phone = f"+1650555{rng.randrange(10000):04d}"
            created = made + timedelta(milliseconds=len(contacts) + 1)
            c = {"id": self._id("contact"), **base, "name": f"{first} {last}", "title": rng.choice(_TITLES),
                 "emails": [{"type": "office", "email": email, "email_lower": email.lower()}],
                 "phones": [{"type": "office", "phone": phone, "phone_formatted": f"+1 {phone[2:5]}-{phone[5:8]}-{phone[8:]}"}],
                 "urls": [], "date_created": created,
                 "date_updated": self._between(created, _END) if rng.random() < 0.5 else created}
            if rng.random() < 0.4:
                c[f"custom.{cf['nps']}"] = rng.choice(["Yes", "No"])
            contacts.append(c)
        weights = {"Customer": (20, 10, 50, 20), "Trial": (50, 30, 10, 10),  # Active, Verbal, Won, Lost
                   "Potential": (60, 10, 0, 30), "Bad Fit": (20, 0, 0, 80)}[status]
        for _ in range(rng.randint(0, 3)):
            label, typ = rng.choices(OPP_STATUSES, weights)[0]
            value = rng.randrange(50_000, 25_000_000)
            value -= value % 100 if rng.random() < 0.6 else 0
            created = self._between(made, _END)
            closed = self._between(created, _END).date().isoformat()
            o = {"id": self._id("opportunity"), **base, "status_id": STATUS_IDS[label], "value": value,
                 "value_period": rng.choice(["one_time", "annual", "monthly"]), "value_currency": "USD",
                 "confidence": {"active": rng.randrange(20, 90, 10), "won": 100, "lost": 0}[typ],
                 "date_won": closed if typ == "won" else None, "date_lost": closed if typ == "lost" else None,
                 "note": f"{label} deal", "contact_id": rng.choice(contacts)["id"] if rng.random() < 0.5 else None,
                 "user_id": rng.choice(users), "date_created": created,
                 "date_updated": self._between(created, _END) if rng.random() < 0.6 else created}
            if rng.random() < 0.8:
                start = date(2025, 1, 1) + timedelta(days=rng.randrange(730))
                o[f"custom.{cf['start_date']}"] = start.isoformat()
                o[f"custom.{cf['end_date']}"] = (start + timedelta(days=rng.choice([365, 730]))).isoformat()
            opps.append(o)
        for _ in range(rng.randint(0, 3)):
            created = self._between(made, _END)
            day = (date(2025, 1, 1) + timedelta(days=rng.randrange(910))).isoformat()
            done = rng.random() < 0.4
            t = {"id": self._id("task"), "_type": "lead", **base, "contact_id": None, "object_id": None, "object_type": None,
                 "text": rng.choice(_TASKS).format(c=contacts[0]["name"]), "assigned_to": rng.choice(users),
                 "date": day, "due_date": day, "is_dateless": False, "is_complete": done,
                 "date_created": created, "date_updated": self._between(created, _END) if done or rng.random() < 0.3 else created}
            tasks.append(t)
        return contacts, opps, tasks

    # ---- rendering -----------------------------------------------------------------------
    def _value(self, kind: str, obj: dict[str, Any], name: str) -> Any:
        """A stored or derived field, cheap enough for filtering and sorting every record."""
        if name in obj:
            return obj[name]
        if name == "display_name":
            return obj.get("name")
        if name == "status_label":
            return self._status(kind, obj)["label"]
        if name == "status_type":
            return self._status(kind, obj).get("type")
        if name == "view" and kind == "task":
            if obj["is_complete"]:
                return "archive"
            return "inbox" if obj["date"][:10] <= datetime.now(UTC).date().isoformat() else "future"
        if name == "html_url" and kind == "lead":
            return f"https://app.close.com/lead/{obj['id']}/"
        return None

    def _status(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.db[f"status_{kind}"][obj["status_id"]]

    def _user_name(self, uid: str | None) -> str | None:
        u = self.db["user"].get(uid or "")
        return f"{u['first_name']} {u['last_name']}" if u else None

    def _contact_name(self, cid: str | None) -> str | None:
        return (self.db["contact"].get(cid or "") or {}).get("name")

    def _children(self, lead_ids: set[str]) -> dict[str, dict[str, list]]:
        """Embedded children of some leads, in one pass per child store."""
        out: dict[str, dict[str, list]] = {lid: {"contacts": [], "opportunities": [], "tasks": []} for lid in lead_ids}
        for kind, key in (("contact", "contacts"), ("opportunity", "opportunities"), ("task", "tasks")):
            for obj in self.db[kind].values():
                if obj["lead_id"] in out and not (kind == "task" and obj["is_complete"]):  # lead embeds open tasks only
                    out[obj["lead_id"]][key].append(self._render(kind, obj))
        return out

    def _render(self, kind: str, obj: dict[str, Any], fields: list[str] | None = None,
                children: dict[str, list] | None = None) -> dict[str, Any]:
        out = dict(obj)
        if kind == "lead":
            out.update(display_name=obj["name"], status_label=self._value(kind, obj, "status_label"),
                       html_url=self._value(kind, obj, "html_url"), integration_links=[], source=None)
            if children is not None:
                out.update(children, contact_ids=[c["id"] for c in children["contacts"]])
                first = children["contacts"][0] if children["contacts"] else {}
                out["primary_email"] = (first.get("emails") or [None])[0]
                out["primary_phone"] = (first.get("phones") or [None])[0]
        elif kind == "contact":
            out["display_name"] = obj["name"]
        elif kind == "opportunity":
            status, value, conf = self._status(kind, obj), obj["value"] or 0, obj["confidence"] or 0
            annual = value * 12 if obj["value_period"] == "monthly" else value
            out.update(lead_name=self.db["lead"][obj["lead_id"]]["name"], status_label=status["label"],
                       status_type=status["type"], status_display_name=status["label"], pipeline_id=PIPELINE_ID,
                       pipeline_name="Sales", value_formatted=_money(value), expected_value=value * conf // 100,
                       annualized_value=annual, annualized_expected_value=annual * conf // 100,
                       contact_name=self._contact_name(obj["contact_id"]), user_name=self._user_name(obj["user_id"]),
                       is_stalled=False, integration_links=[], attachments=[])
        elif kind == "task":
            out.update(lead_name=self.db["lead"][obj["lead_id"]]["name"],
                       contact_name=self._contact_name(obj["contact_id"]), view=self._value(kind, obj, "view"),
                       assigned_to_name=self._user_name(obj["assigned_to"]),
                       created_by_name=self._user_name(obj["created_by"]), updated_by_name=self._user_name(obj["updated_by"]))
        elif kind == "task_completed":
            out["user_name"] = self._user_name(obj["user_id"])
        out.update([(k, out.pop(k)) for k in [k for k in out if k.startswith("custom.")]])  # custom keys last
        return out if fields is None else _select(out, fields)

    def _render_many(self, kind: str, objs: list[dict[str, Any]], fields: list[str] | None = None) -> list[dict[str, Any]]:
        """Render a page; leads get their children only when `_fields` asks for them."""
        if kind != "lead" or (fields is not None and not _EMBEDDED & set(fields)):
            return [self._render(kind, o, fields) for o in objs]
        kids = self._children({o["id"] for o in objs})
        return [self._render(kind, o, fields, kids[o["id"]]) for o in objs]

    def _render_one(self, kind: str, obj: dict[str, Any], fields: list[str] | None = None) -> dict[str, Any]:
        return self._render_many(kind, [obj], fields)[0]

    # ---- HTTP ------------------------------------------------------------------------------
    def route(self, req: Request) -> Response:
        if not req.path.startswith(PREFIX + "/"):
            return json_response(404, {"error": "Not found."})
        auth, user, password = req.headers.get("authorization", ""), "", "x"
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                pass
        if user != self.api_key or password:
            return json_response(401, {"error": "Invalid API key: send it as the Basic auth username, empty password."})
        if not req.path.endswith("/"):
            return json_response(404, {"error": "Not found. Close API paths end with a slash."})
        try:  # X-TZ-Offset (hours) decides "today" for date_won and local dates in searches
            tz_offset = float(req.headers.get("x-tz-offset") or 0)
        except ValueError:
            tz_offset = 0.0
        self._meta = {"request_method": req.method, "request_path": req.path, "tz_offset": tz_offset}
        try:
            return self._dispatch(req, req.path[len(PREFIX):].strip("/").split("/"))
        except _Invalid as exc:
            return json_response(400, exc.body)
        except _NotFound:
            return json_response(404, {"error": "Object not found."})

    def _dispatch(self, req: Request, parts: list[str]) -> Response:
        key, method = "/".join(parts), req.method
        fields = req.arg("_fields").split(",") if req.arg("_fields") else None
        if (method, key) == ("POST", "data/search"):
            return json_response(200, self._search(req))
        if (method, key) == ("GET", "me"):
            me = next(iter(self.db["user"].values()))
            return json_response(200, {**self._render("user", me), "organization_id": ORG_ID,
                                       "organizations": [{"id": ORG_ID, "name": "CZ Sandbox Org"}]})
        if method == "GET" and key == "event":
            return json_response(200, self._list_events(req))
        if method == "GET" and parts[0] == "event" and len(parts) == 2:
            return json_response(200, next((e for e in self.events if e["id"] == parts[1]), None) or self._missing())
        if method == "GET" and parts[0] == "organization" and len(parts) == 2:
            if parts[1] != ORG_ID:
                self._missing()
            return json_response(200, {"id": ORG_ID, "name": "CZ Sandbox Org", "currency": "USD",
                                       "lead_statuses": list(self.db["status_lead"].values()),
                                       "opportunity_statuses": list(self.db["status_opportunity"].values()),
                                       "memberships": [{"user_id": u, "role_id": r, "organization_id": ORG_ID}
                                                       for u, r in self.roles.items()]})
        if key in _LISTS:
            res = _LISTS[key]
            if method == "GET":
                return json_response(200, self._list(req, res, fields))
            if method == "POST" and res.kind in ("lead", "contact", "opportunity", "task"):
                obj = self._create(res.kind, _body(req))
                return json_response(200, self._render_one(res.kind, obj, fields))
        elif "/".join(parts[:-1]) in _LISTS:
            kind = _LISTS["/".join(parts[:-1])].kind
            obj = self._get(kind, parts[-1])
            if method == "GET":
                return json_response(200, self._render_one(kind, obj, fields))
            if method == "PUT" and kind in ("lead", "contact", "opportunity", "task"):
                return json_response(200, self._render_one(kind, self._update(kind, obj, _body(req)), fields))
            if method == "DELETE" and kind in ("lead", "contact", "opportunity", "task"):
                self._delete(kind, obj)
                return json_response(200, {})
        else:
            return json_response(404, {"error": "Not found."})
        return json_response(405, {"error": f"Method {method} not allowed."})

    def _missing(self) -> Any:
        raise _NotFound("not found")

    def _get(self, kind: str, oid: Any) -> dict[str, Any]:
        obj = self.db[kind].get(str(oid))
        if obj is None:
            raise _NotFound(f"{kind} {oid} not found")
        return obj

    # ---- lists -----------------------------------------------------------------------------
    def _page_args(self, req: Request, max_limit: int, default: int = 100) -> tuple[int, int]:
        max_limit = self.max_limit or max_limit
        try:
            skip, limit = int(req.arg("_skip") or 0), int(req.arg("_limit") or min(default, max_limit))
        except ValueError:
            raise _Invalid(field_errors={"_skip": "Must be an integer.", "_limit": "Must be an integer."})
        if limit < 0 or limit > max_limit:
            raise _Invalid([f"The limit you set is larger than the maximum limit for this resource (max_limit = {max_limit})."],
                           {"_limit": f"Ensure this value is less than or equal to {max_limit}."})
        if skip < 0 or skip > self.max_skip:
            raise _Invalid([f"The skip you set is larger than the maximum skip for this resource (max_skip = {self.max_skip}). "
                            "Please refine your search query."])
        return skip, limit

    def _list(self, req: Request, res: _Res, fields: list[str] | None) -> dict[str, Any]:
        skip, limit = self._page_args(req, res.max_limit)
        preds: list[Callable[[dict[str, Any]], bool]] = []
        for name, values in req.query.items():
            field, _, op = name.partition("__")
            if field in res.eq and op in ("", "in"):
                wanted = set(values[-1].split(",")) if op else {values[-1]}
                preds.append(lambda o, f=field, w=wanted: _as_param(self._value(res.kind, o, f)) in w)
            elif field in res.ranges and op in ("gte", "gt", "lte", "lt"):
                preds.append(_range_pred(lambda o, f=field: self._value(res.kind, o, f), op, _param_dt(name, values[-1])))
        order = req.arg("_order_by") or res.default_order
        if res.kind == "lead" and req.arg("query"):
            lead_preds, query_order = _lead_query(req.arg("query") or "")
            preds += [lambda o, p=p: p(o["date_updated"]) for p in lead_preds]
            order = query_order or order
        rows = [o for o in self.db[res.kind].values() if all(p(o) for p in preds)]
        for spec in reversed([s for s in order.split(",") if s]):
            field = spec.lstrip("-")
            if field not in res.order and not (res.kind == "lead" and field in ("date_updated", "date_created")):
                raise _Invalid(field_errors={"_order_by": f"Cannot order by {field}."})
            rows.sort(key=lambda o: _sort_key(self._value(res.kind, o, field)), reverse=spec.startswith("-"))
        out: dict[str, Any] = {"has_more": skip + limit < len(rows),
                               "data": self._render_many(res.kind, rows[skip:skip + limit], fields)}
        if res.kind in ("lead", "opportunity"):
            out["total_results"] = len(rows)
        if res.kind == "opportunity":
            for period in ("one_time", "monthly", "annual"):
                out[f"total_value_{period}"] = sum(o["value"] or 0 for o in rows if o["value_period"] == period)
            out["count_by_value_period"] = {p: sum(o["value_period"] == p for o in rows) for p in ("one_time", "monthly", "annual")}
        return out

    def _list_events(self, req: Request) -> dict[str, Any]:
        try:
            limit = int(req.arg("_limit") or self.event_limit)
            before = int(base64.urlsafe_b64decode((req.arg("_cursor") or "").encode()).decode() or len(self.events))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise _Invalid(field_errors={"_cursor": "Invalid cursor."})
        if not 0 < limit <= self.event_limit:
            raise _Invalid(field_errors={"_limit": f"Ensure this value is less than or equal to {self.event_limit}."})
        preds = [lambda e, k=k, v=req.arg(k): e[k] == v
                 for k in ("object_type", "object_id", "action", "lead_id", "user_id", "request_id") if req.arg(k)]
        for op in _OPS:
            if value := req.arg(f"date_updated__{op}"):
                preds.append(_range_pred(lambda e: e["date_updated"], op, _param_dt(f"date_updated__{op}", value)))
        # Newest first (stamps strictly increase); the cursor is the log position to continue below.
        hits = (i for i in range(min(before, len(self.events)) - 1, -1, -1) if all(p(self.events[i]) for p in preds))
        idx = list(itertools.islice(hits, limit + 1))
        more = len(idx) > limit
        return {"data": [self.events[i] for i in idx[:limit]], "cursor_previous": None,
                "cursor_next": base64.urlsafe_b64encode(str(idx[limit - 1]).encode()).decode() if more else None}

    # ---- writes ----------------------------------------------------------------------------
    def _clean(self, kind: str, obj: dict[str, Any], data: dict[str, Any], creating: bool = False) -> dict[str, Any]:
        """Validate a (partial) write; return the normalised key -> value changes."""
        if not isinstance(data, dict):
            raise _Invalid(["Expected a JSON object."])
        writable = _WRITABLE[kind] | ({"lead_id", "contact_id"} if creating and kind == "task" else set())
        errors: dict[str, str] = {}
        out: dict[str, Any] = {}
        for key, value in data.items():
            try:
                if key.startswith("custom."):
                    base, _, op = key.partition(".")[2].partition(".")
                    field = f"custom.{base}"
                    out[field] = self._custom(kind, field, value, op, out.get(field, obj.get(field)))
                elif key == "status" and kind in ("lead", "opportunity"):  # a label; status_id is preferred
                    ids = [s["id"] for s in self.db[f"status_{kind}"].values() if s["label"] == value]
                    out["status_id"] = ids[0] if ids else _fail("Invalid status.")
                elif key in writable:
                    out[key] = self._field(kind, key, value)
                elif key not in _READ_ONLY or kind == "task":
                    errors[key] = "This field cannot be updated." if kind == "task" else "Unknown field."
            except ValueError as exc:
                errors[key] = str(exc)
        if errors:
            raise _Invalid([], errors)
        return out

    def _field(self, kind: str, key: str, value: Any) -> Any:
        refs = {"status_id": f"status_{kind}", "user_id": "user", "assigned_to": "user", "contact_id": "contact", "lead_id": "lead"}
        if key in refs:
            if value is None and key == "contact_id":
                return None
            return value if isinstance(value, str) and value in self.db[refs[key]] else _fail(f"Invalid {key}.")
        if key in ("value", "confidence"):
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            return value if ok else _fail("Must be an integer.")
        if key == "is_complete":
            return value if isinstance(value, bool) else _fail("Must be a boolean.")
        if key == "value_period":
            return value if value in ("one_time", "monthly", "annual") else _fail("Invalid value period.")
        if key in ("date", "date_won", "date_lost"):
            if value is None and key != "date":
                return None
            return _date_or_dt(value)
        if key in ("emails", "phones", "urls", "addresses"):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                _fail("Must be a list of objects.")
            if key == "emails":  # addresses are not validated, as a fake for bad-data tests needs them
                return [{"type": v.get("type", "office"), "email": v.get("email"),
                         "email_lower": str(v.get("email") or "").lower()} for v in value]
            if key == "phones":
                return [{"type": v.get("type", "office"), "phone": v.get("phone"), "phone_formatted": v.get("phone")}
                        for v in value]
            return value
        return value if value is None or isinstance(value, str) else _fail("Must be a string.")

    def _custom(self, kind: str, key: str, value: Any, op: str, current: Any) -> Any:
        defn = self.db[f"cf_{kind}"].get(key[len("custom."):])
        if defn is None:
            _fail("Unknown custom field.")
        multi = defn["accepts_multiple_values"]
        if op:
            if op not in ("add", "remove") or not multi:
                _fail("Only multi-value fields accept .add and .remove.")
            item = self._custom(kind, key, [value], "", None)[0]  # validated like a plain write
            cur = list(current or [])
            return (cur + [item] if op == "add" else [v for v in cur if v != item]) or None
        if value is None:
            return None
        values = value if multi and isinstance(value, list) else [value]
        typ, out = defn["type"], []
        for v in values:
            if typ == "number":
                v = v if isinstance(v, (int, float)) and not isinstance(v, bool) else _number(v)
            elif typ == "date":
                v = parse_dt(v).date().isoformat() if _is_date(v) else _fail("Invalid date.")
            elif typ == "datetime":
                v = ts(parse_dt(v)) if _is_date(v) else _fail("Invalid datetime.")
            elif typ == "choices" and v not in defn["choices"]:
                _fail(f"{v!r} is not a valid choice.")
            elif typ == "user" and v not in self.db["user"]:
                _fail("Invalid user.")
            elif typ == "text":
                v = str(v)
            out.append(v)
        return out if multi else out[0]

    def _write(self, kind: str, obj: dict[str, Any], changes: dict[str, Any], stamp: str) -> None:
        for k, v in changes.items():
            if v is None and k.startswith("custom."):
                obj.pop(k, None)  # custom keys are absent when unset
            else:
                obj[k] = v
        obj["date_updated"] = stamp
        if kind == "user":
            return
        obj["updated_by"] = self._api_user()
        if kind != "lead":  # a child's change bumps its lead (no lead event, as in Close)
            self.db["lead"][obj["lead_id"]]["date_updated"] = stamp

    def _api_user(self) -> str:
        return next(iter(self.db["user"]))

    def _create(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _Invalid(["Expected a JSON object."])
        data = dict(data)
        stamp, user = ts(self.now()), self._api_user()
        base = {"id": self._id(kind), "date_created": stamp, "date_updated": stamp}
        if kind != "user":
            base.update(organization_id=ORG_ID, created_by=user, updated_by=user)
        nested = data.pop("contacts", None) if kind == "lead" else None
        task_type = data.pop("_type", "lead") if kind == "task" else None
        if task_type not in (None, "lead", "outgoing_call"):
            raise _Invalid([], {"_type": "Only lead and outgoing_call tasks can be created."})
        if kind in ("contact", "opportunity", "task") and "lead_id" not in data:
            if kind != "contact":
                raise _Invalid([], {"lead_id": "This field is required."})
            # Close makes a new lead for a contact created without one
            data["lead_id"] = self._create("lead", {"name": data.get("name") or ""})["id"]
        defaults: dict[str, dict[str, Any]] = {
            "lead": {"name": "", "description": "", "url": None, "status_id": STATUS_IDS["Potential"], "addresses": []},
            "contact": {"lead_id": None, "name": "", "title": "", "emails": [], "phones": [], "urls": []},
            "opportunity": {"lead_id": None, "status_id": STATUS_IDS["Active"], "value": None, "value_period": "one_time",
                            "value_currency": "USD", "confidence": 0, "date_won": None, "date_lost": None, "note": "",
                            "contact_id": None, "user_id": user},
            "task": {"_type": task_type, "lead_id": None, "contact_id": None, "object_id": None,
                     "object_type": None, "text": "", "assigned_to": user, "date": self._local_today(),
                     "due_date": None, "is_dateless": "date" not in data, "is_complete": False},
            "user": {"first_name": "", "last_name": "", "email": "", "image": None, "organizations": [ORG_ID]},
        }
        role = data.pop("role_id", "user") if kind == "user" else None
        obj = {**base, **defaults[kind]}
        clean = self._clean(kind, obj, {k: v for k, v in data.items() if k != "id"}, creating=True)
        obj.update({k: v for k, v in clean.items() if v is not None or not k.startswith("custom.")})
        if kind == "task":
            obj["due_date"] = None if obj["is_dateless"] else obj["date"][:10]
        self.db[kind][obj["id"]] = obj
        if kind == "user":
            self.roles[obj["id"]] = role
            return obj
        if kind != "lead":
            self.db["lead"][obj["lead_id"]]["date_updated"] = stamp
        self._event(kind, obj, "created")
        for contact in nested or []:
            self._create("contact", {**contact, "lead_id": obj["id"]})
        if kind == "task" and obj["is_complete"]:
            self._complete(obj, stamp, emit=True)
        return obj

    def _update(self, kind: str, obj: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        changes = self._clean(kind, obj, data)
        before = self._render(kind, obj)
        if kind == "opportunity" and "status_id" in changes:  # won/lost stamps the day, reverting keeps it
            typ = self.db["status_opportunity"][changes["status_id"]]["type"]
            field = {"won": "date_won", "lost": "date_lost"}.get(typ)
            if field and not changes.get(field, obj[field]):
                changes[field] = self._local_today()
        if kind == "task" and "date" in changes:
            changes.update(due_date=changes["date"][:10], is_dateless=False)
        if all(obj.get(k) == v for k, v in changes.items()):
            return obj  # nothing changes: no bump, no event
        was_complete = obj.get("is_complete")
        stamp = ts(self.now())
        self._write(kind, obj, changes, stamp)
        if kind == "user":
            return obj
        if kind == "task" and obj["is_complete"] != was_complete:
            if obj["is_complete"]:
                self._complete(obj, stamp, emit=True)
            else:  # reopening drops the completion activity
                for act in [a for a in self.db["task_completed"].values() if a["task_id"] == obj["id"]]:
                    self._delete("task_completed", act)
        self._event(kind, obj, "updated", before)
        return obj

    def _touch(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        before = self._render(kind, obj)
        self._write(kind, obj, {}, ts(self.now()))
        if kind != "user":
            self._event(kind, obj, "updated", before)
        return obj

    def _delete(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "lead":  # cascade, with a deleted event per child
            for child in ("task_completed", "task", "opportunity", "contact"):
                for o in [o for o in self.db[child].values() if o["lead_id"] == obj["id"]]:
                    self._delete(child, o)
        elif kind == "user":
            self.roles.pop(obj["id"], None)
        elif obj["lead_id"] in self.db["lead"]:
            self.db["lead"][obj["lead_id"]]["date_updated"] = ts(self.now())
        del self.db[kind][obj["id"]]
        if kind != "user":
            self._event(kind, obj, "deleted")

    def _complete(self, task: dict[str, Any], stamp: str, emit: bool = False) -> None:
        act = {"id": self._id("task_completed"), "_type": "TaskCompleted", "task_id": task["id"], "task_text": task["text"],
               "task_assigned_to": task["assigned_to"], "lead_id": task["lead_id"], "contact_id": task["contact_id"],
               "user_id": task["assigned_to"], "organization_id": ORG_ID, "created_by": task["assigned_to"],
               "updated_by": task["assigned_to"], "date_created": stamp, "date_updated": stamp}
        self.db["task_completed"][act["id"]] = act
        if emit:
            self._event("task_completed", act, "created")

    def _local_today(self) -> str:
        return (datetime.now(UTC) + timedelta(hours=self._meta.get("tz_offset", 0.0))).date().isoformat()

    def _event(self, kind: str, obj: dict[str, Any], action: str, before: dict[str, Any] | None = None) -> None:
        now = self.now().astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")  # no offset, as in Close
        after = self._render(kind, obj) if action != "deleted" else {}
        previous = before if before is not None else self._render(kind, obj) if action == "deleted" else {}
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)) if before is not None else []
        self.events.append({
            "id": "ev_" + "".join(self.rng.choice(_B62) for _ in range(22)), "date_created": now, "date_updated": now,
            "action": action, "object_type": f"task.{obj['_type']}" if kind == "task" else
            {"task_completed": "activity.task_completed"}.get(kind, kind),
            "object_id": obj["id"], "lead_id": obj["id"] if kind == "lead" else obj.get("lead_id"),
            "organization_id": ORG_ID, "user_id": self._api_user(),
            "request_id": "req_" + "".join(self.rng.choice(_B62) for _ in range(22)),
            "api_key_id": None, "oauth_client_id": None, "oauth_scope": None,
            "meta": {k: v for k, v in self._meta.items() if k.startswith("request_")},
            "changed_fields": changed, "data": after,
            "previous_data": {k: previous.get(k) for k in changed} if action == "updated" else previous})

    # ---- control endpoint -------------------------------------------------------------------
    def mutate(self, body: dict[str, Any]) -> Any:
        op, kind = body.get("op"), body.get("object")
        if kind not in ("lead", "contact", "opportunity", "task", "user"):
            raise ValueError(f"unknown object {kind!r}")
        self._meta = {"request_method": {"create": "POST", "delete": "DELETE"}.get(str(op), "PUT"),
                      "request_path": f"{PREFIX}/{kind}/" + (f"{body.get('id')}/" if op != "create" else "")}
        if op == "create":
            return self._render_one(kind, self._create(kind, body.get("data") or {}))
        obj = self._get(kind, body.get("id"))
        if op == "update":
            return self._render_one(kind, self._update(kind, obj, body.get("data") or {}))
        if op == "touch":
            return self._render_one(kind, self._touch(kind, obj))
        if op == "delete":
            self._delete(kind, obj)
            return {}
        raise ValueError(f"unknown op {op!r}")

    def dump(self, object_name: str) -> list[dict[str, Any]]:
        if object_name == "event":
            return list(reversed(self.events))
        if object_name not in self.db:
            raise KeyError(f"unknown object {object_name!r}")
        return self._render_many(object_name, list(self.db[object_name].values()))

    # ---- rate limiting (contract §1.12) ---------------------------------------------------------
    def rate_limit_headers(self, limit: int, remaining: int, reset_seconds: float) -> dict[str, str]:
        return {"RateLimit": f"limit={limit}, remaining={remaining}, reset={math.ceil(reset_seconds)}"}

    def rate_limited_response(self, limit: int, reset_seconds: float) -> Response:
        reset = max(1, math.ceil(reset_seconds))
        legacy = {"rate_reset": reset, "message": "API rate limit exceeded. Please retry after the reset."}
        return json_response(429, {"error": legacy},
                             {"RateLimit": f"limit={limit}, remaining=0, reset={reset}", "Retry-After": str(reset)})

    # ---- Advanced Filtering (contract §1.9a) -------------------------------------------------------
    def _search(self, req: Request) -> dict[str, Any]:
        body = _body(req)
        if not isinstance(body, dict) or not isinstance(body.get("query"), dict):
            raise _Invalid([], {"query": "This field is required."})
        limit = body.get("_limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= 200:
            raise _Invalid([], {"_limit": "Ensure this value is between 1 and 200."})
        fields = body.get("_fields") or {}
        if not isinstance(fields, dict) or any(not isinstance(v, list) or len(v) > 100 for v in fields.values()):
            raise _Invalid([], {"_fields": "List is too long." if isinstance(fields, dict) else "Must be an object."})
        pred = self._compile(body["query"], {})
        hits = [(k, o) for k in ("lead", "contact") for o in self.db[k].values() if pred(k, o)]
        for s in reversed(body.get("sort") or []):
            if not isinstance(s, dict):
                raise _Invalid([], {"sort": "Each sort entry must be an object."})
            getter = self._field_getter(s.get("field") or {})
            hits.sort(key=lambda h: _sort_key(getter(*h)), reverse=s.get("direction") == "desc")
        total, cap = len(hits), body.get("results_limit")
        if cap is not None:
            if not isinstance(cap, int) or cap < 0:
                raise _Invalid([], {"results_limit": "Must be a non-negative integer or null."})
            hits = hits[:cap]
        query_json = json.dumps({k: v for k, v in body.items() if k != "cursor"}, sort_keys=True)
        identity = hashlib.sha256(query_json.encode()).hexdigest()[:16]  # a cursor only fits its own query
        offset = 0
        if body.get("cursor"):
            try:
                q, offset, issued = base64.urlsafe_b64decode(body["cursor"].encode()).decode().split(":")
                offset, issued = int(offset), float(issued)
            except (ValueError, AttributeError, binascii.Error, UnicodeDecodeError):
                raise _Invalid(["Invalid cursor."], {"cursor": "Invalid cursor."})
            if q != identity:
                raise _Invalid(["Invalid cursor."], {"cursor": "This cursor belongs to a different query."})
            if time.time() - issued > self.search_cursor_ttl:
                raise _Invalid(["Cursor expired."], {"cursor": "Cursor has expired. Please restart the query."})
            if offset >= self.search_max_walk:
                raise _Invalid(["Too many results."], {"cursor": f"Cursor pagination is limited to {self.search_max_walk} "
                                                                 "results. Please refine your query."})
        page = hits[offset:offset + limit]
        end = offset + len(page)
        out: dict[str, Any] = {
            "data": [{"__object_type": k, **(self._render_one(k, o, fields[k]) if k in fields else {"id": o["id"]})}
                     for k, o in page],
            "cursor": base64.urlsafe_b64encode(f"{identity}:{end}:{time.time()}".encode()).decode() if end < len(hits) else None}
        if body.get("include_counts"):
            out["count"] = {"total": total, "limited": len(hits)}
        return out

    def _compile(self, node: Any, cache: dict) -> Callable[[str, dict[str, Any]], bool]:
        if not isinstance(node, dict):
            raise _Invalid([], {"query": "Each query node must be an object."})
        typ, neg = node.get("type"), bool(node.get("negate"))
        if typ in ("and", "or"):
            subs = [self._compile(q, cache) for q in node.get("queries") or []]
            combine = all if typ == "and" else any
            fn = lambda k, o: combine(s(k, o) for s in subs)  # noqa: E731
        elif typ == "match_all":
            fn = lambda k, o: True  # noqa: E731
        elif typ == "object_type":
            if node.get("object_type") not in ("lead", "contact"):
                raise _Invalid([], {"query": f"Unsupported object_type {node.get('object_type')!r}."})
            fn = lambda k, o: k == node["object_type"]  # noqa: E731
        elif typ == "id":
            fn = lambda k, o: o["id"] == node.get("value")  # noqa: E731
        elif typ == "field_condition":
            fn = self._condition(node.get("field") or {}, node.get("condition") or {})
        elif typ == "has_related":
            this, rel = node.get("this_object_type"), node.get("related_object_type")
            if (this, rel) not in (("lead", "contact"), ("lead", "opportunity"), ("contact", "lead")):
                raise _Invalid([], {"query": f"Unsupported has_related {this} -> {rel}."})
            sub = self._compile(node.get("related_query") or {"type": "match_all"}, cache)
            fn = lambda k, o: k == this and any(sub(rel, r) for r in self._related(o, rel, cache))  # noqa: E731
        else:
            raise _Invalid([], {"query": f"Unknown query type {typ!r}."})
        return (lambda k, o: not fn(k, o)) if neg else fn

    def _related(self, obj: dict[str, Any], rel: str, cache: dict) -> list[dict[str, Any]]:
        if rel == "lead":
            return [self.db["lead"][obj["lead_id"]]]
        if rel not in cache:
            cache[rel] = defaultdict(list)
            for r in self.db[rel].values():
                cache[rel][r["lead_id"]].append(r)
        return cache[rel][obj["id"]]

    def _field_getter(self, field: dict[str, Any]) -> Callable[[str, dict[str, Any]], Any]:
        if field.get("type") == "regular_field":
            kind, name = field.get("object_type"), field.get("field_name")
            if name not in _SEARCH_FIELDS.get(kind or "", ()):
                raise _Invalid([], {"query": f"Unknown field {kind}.{name}."})
            return lambda k, o: self._value(k, o, name) if k == kind else None
        if field.get("type") == "custom_field":
            cid = field.get("custom_field_id")
            if not any(cid in self.db[f"cf_{t}"] for t in ("lead", "contact", "opportunity")):
                raise _Invalid([], {"query": f"Unknown custom field {cid}."})
            return lambda k, o: o.get(f"custom.{cid}")
        raise _Invalid([], {"query": "A field needs type regular_field or custom_field."})

    def _condition(self, field: dict[str, Any], cond: dict[str, Any]) -> Callable[[str, dict[str, Any]], bool]:
        get, typ = self._field_getter(field), cond.get("type")
        if typ == "moment_range":
            lo, hi = (self._moment(cond.get(k)) for k in ("on_or_after", "before"))
            dt = lambda v: parse_dt(v) if _is_date(v) else None  # noqa: E731
            return lambda k, o: (d := dt(get(k, o))) is not None and (lo is None or d >= lo) and (hi is None or d < hi)
        if typ == "text":
            value, mode = str(cond.get("value", "")).lower(), cond.get("mode", "full_words")
            words = lambda s: re.findall(r"\w+", str(s or "").lower())  # noqa: E731
            if mode == "exact_value":
                return lambda k, o: str(get(k, o) or "").lower() == value
            if mode == "phrase":
                return lambda k, o: " ".join(words(value)) in " ".join(words(get(k, o)))
            return lambda k, o: set(words(value)) <= set(words(get(k, o)))
        if typ in ("term", "reference"):
            wanted = set(cond.get("values") or cond.get("object_ids") or [])
            return lambda k, o: bool(set(v if isinstance(v := get(k, o), list) else [v]) & wanted)
        if typ == "exists":
            return lambda k, o: get(k, o) not in (None, "", [])
        if typ == "number_range":
            bounds = [(op, cond[op]) for op in ("gt", "gte", "lt", "lte") if cond.get(op) is not None]
            return lambda k, o: isinstance(v := get(k, o), (int, float)) and all(_OPS[op](v, b) for op, b in bounds)
        if typ == "boolean":
            return lambda k, o: bool(get(k, o)) == bool(cond.get("value"))
        raise _Invalid([], {"query": f"Unsupported condition type {typ!r}."})

    def _moment(self, m: Any) -> datetime | None:
        if m is None:
            return None
        tz = timezone(timedelta(hours=self._meta.get("tz_offset", 0.0)))
        try:
            if m["type"] == "fixed_utc":
                return parse_dt(m["value"])
            if m["type"] == "now":
                return datetime.now(UTC)
            if m["type"] == "fixed_local_date":
                day = datetime.combine(date.fromisoformat(m["value"]), datetime.min.time(), tz)
                return (day + timedelta(days=1 if m["which"] == "end" else 0)).astimezone(UTC)
            if m["type"] == "offset":
                base = self._moment(m["moment"]) or datetime.now(UTC)
                units = ("weeks", "days", "hours", "minutes", "seconds")
                delta = timedelta(**{k: v for k, v in m["offset"].items() if k in units})
                at = (base - delta if m.get("direction", "past") == "past" else base + delta).astimezone(tz)
                if m.get("which_day_end") in ("start", "end"):
                    at = at.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=m["which_day_end"] == "end")
                return at.astimezone(UTC)
        except (KeyError, TypeError, ValueError):
            pass
        raise _Invalid([], {"query": f"Invalid moment {m!r}."})


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
