"""In-memory fake of the Teamwork Desk API v2 (contract section 4), served on loopback.

Base URL `http://127.0.0.1:PORT/desk/api/v2`, auth `Authorization: Bearer <api_key>`. Implemented:
`GET /tickets.json`, `GET|PATCH /tickets/{id}.json`, `GET /customers.json`, `GET /customers/{id}.json`
and the lookups `GET /{ticketstatuses,ticketpriorities,tickettypes,ticketsources,inboxes,users,tags}.json`.

Behaviour a connector must cope with, reproduced on purpose:
* timestamps are whole seconds (`2015-11-18T18:56:08Z`), so writes within one second tie;
* `pageSize` above 100 is clamped silently; both `meta.page` and `pagination` blocks are sent;
* the customer email is not on the ticket: it sits in `included.customers[].email` (sometimes `""`)
  or in the customer's main contact (`included.contacts[].value`, `isMain`), with a non-main contact
  listed first for some customers;
* soft-deleted tickets (`state: "deleted"`, `deletedAt`) are hidden unless the filter names `state`;
* one system ticket has `createdAt: 0001-01-01T00:00:00Z`;
* changing a customer's email does NOT bump the `updatedAt` of that customer's tickets.

Unverified contract points chosen here: error bodies are `{"message", "errors": [{"detail"}]}`;
`meta.page.pageOffset` is the record offset; default order is `id asc`, default `pageSize` 50;
ties in `orderBy` are broken by `id` in the same direction (the real API may be unstable there);
`X-Rate-Limit-Reset` is the UTC epoch second at which the current window resets.
"""

from __future__ import annotations

import copy
import json
import math
import operator
import random
import re
import time
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable, Iterator

from cz_pipeline.sandbox.server import RateLimiter, Request, Response, SandboxApp, json_response

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


# ---- Mongo-style filter: compiled once per request, so a bad filter is a 400 even on no rows ----
Getter = Callable[[str], list[Any]]  # field name -> its values (a list: `contacts.value` is multi-valued)


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[[list[Any], Any], bool]:
    return lambda vals, arg: arg is not None and any(v is not None and op(v, arg) for v in vals)


OPS: dict[str, Callable[[list[Any], Any], bool]] = {
    "$eq": lambda vals, arg: arg in vals, "$ne": lambda vals, arg: arg not in vals,
    "$in": lambda vals, arg: any(v in arg for v in vals), "$nin": lambda vals, arg: not any(v in arg for v in vals),
    "$lt": _cmp(operator.lt), "$lte": _cmp(operator.le), "$gt": _cmp(operator.gt), "$gte": _cmp(operator.ge),
}


def _coerce(kind: str, value: Any, field: str) -> Any:
    if value is None:
        return None
    try:
        return parse_ts(str(value)) if kind == "ts" else int(value) if kind == "int" else str(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid value {value!r} for filter field {field!r}") from None


def compile_filter(flt: Any, kinds: dict[str, str]) -> Callable[[Getter], bool]:
    if not isinstance(flt, dict):
        raise ValueError("filter must be a JSON object")
    preds: list[Callable[[Getter], bool]] = []
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise ValueError(f"{key} expects a non-empty list of filters")
            subs = [compile_filter(c, kinds) for c in cond]
            combine = all if key == "$and" else any
            preds.append(lambda get, subs=subs, combine=combine: combine(p(get) for p in subs))
        elif key in kinds:
            tests = []
            for op, raw in (cond if isinstance(cond, dict) else {"$eq": cond}).items():
                if op not in OPS:
                    raise ValueError(f"unknown operator {op!r} on {key!r}")
                if op in ("$in", "$nin"):
                    if not isinstance(raw, list):
                        raise ValueError(f"{op} on {key!r} expects a list")
                    tests.append((OPS[op], [_coerce(kinds[key], v, key) for v in raw]))
                else:
                    tests.append((OPS[op], _coerce(kinds[key], raw, key)))
            preds.append(lambda get, key=key, tests=tests: all(fn(get(key), arg) for fn, arg in tests))
        else:
            raise ValueError(f"{key!r} is not a filterable field")
    return lambda get: all(p(get) for p in preds)


def filter_fields(flt: Any) -> Iterator[str]:
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            for sub in cond:
                yield from filter_fields(sub)
        else:
            yield key


def _int_arg(req: Request, name: str, default: int) -> int:
    raw = req.arg(name)
    try:
        return default if raw in (None, "") else int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


class TeamworkDeskSandbox(SandboxApp):
    name = "teamwork_desk"
    ROUTES = [
        ("GET", re.compile(r"/tickets\.json"), "_list_tickets"),
        ("GET", re.compile(r"/tickets/(\d+)\.json"), "_get_ticket"),
        ("PATCH", re.compile(r"/tickets/(\d+)\.json"), "_patch_ticket"),
        ("GET", re.compile(r"/customers\.json"), "_list_customers"),
        ("GET", re.compile(r"/customers/(\d+)\.json"), "_get_customer"),
        ("GET", re.compile(r"/(" + "|".join(LOOKUPS) + r")\.json"), "_list_lookup"),
    ]

    def __init__(self, *, api_key: str = "tw_sandbox_key", seed: int = 0, n_tickets: int = 50,
                 customer_emails: list[str] | None = None, rate_limit_per_minute: int | None = 120):
        super().__init__()
        self.api_key = api_key
        if rate_limit_per_minute is not None:
            self.rate_limiter = RateLimiter(rate_limit_per_minute, 60)
        self.tickets: dict[int, dict[str, Any]] = {}  # stored in API shape, so rendering is a copy
        self.customers: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self._version = 0  # bumped by every write
        self._query_cache: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        self._seed(random.Random(seed), n_tickets,
                   DEFAULT_EMAILS if customer_emails is None else list(customer_emails))

    # ---- deterministic dataset -----------------------------------------------------------
    def _seed(self, rng: random.Random, n_tickets: int, emails: list[str]) -> None:
        # Offsets are seeded; absolute times hang off the start second so data looks recent,
        # and everything lies at least a minute before the sandbox started.
        anchor = self.now().replace(microsecond=0) - timedelta(seconds=60)
        addresses = []
        for i, given in enumerate(emails):  # case/whitespace variants of the given addresses
            addresses.append([given.strip().upper(), given, f"  {given.strip().lower()} "][i % 3])
        for k, address in enumerate(addresses + UNKNOWN_EMAILS):
            created = anchor - timedelta(days=400) + timedelta(seconds=rng.randint(0, 30 * 86400))
            stamp = created + timedelta(seconds=rng.randint(0, 300 * 86400))
            # k%4: 0,2 email on the customer and its contact; 1 only in the contact; 3 only in the
            # main contact, listed after a non-main former address
            self._insert_customer(address, k % 2 == 1, k % 4 == 3, fmt_ts(created), fmt_ts(stamp),
                                  first=address.strip().split("@")[0].split(".")[0].title())
        customer_ids = list(self.customers)
        owners = customer_ids[:n_tickets] + [rng.choice(customer_ids) for _ in range(n_tickets - len(customer_ids))]
        rng.shuffle(owners)
        rows = []
        for i, cid in enumerate(owners):
            updated = anchor - timedelta(seconds=rng.randint(0, 90 * 86400))
            if i % 7 == 6:
                updated = rows[-1][1]  # updatedAt ties across tickets
            created = updated - timedelta(seconds=rng.choice([0, rng.randint(60, 30 * 86400)]))
            rows.append((created, updated, cid))
        rows.sort(key=lambda r: r[0])  # ids grow with createdAt, like an auto-increment
        next_id = 14427600
        for created, updated, cid in rows:
            next_id += rng.randint(1, 5)
            inbox = rng.choice(LOOKUPS["inboxes"])
            subject = rng.choice(SUBJECTS)
            self.tickets[next_id] = {
                "id": next_id, "subject": subject, "previewText": f"Hi, {subject.lower()} - details inside.",
                "messageCount": rng.randint(1, 6), "originalRecipient": inbox["email"],
                "customer": ref(cid, "customers"), "contact": self._main_contact_ref(cid),
                "agent": ref(rng.choice(AGENTS), "users") if rng.random() < 0.85 else None,
                "inbox": ref(inbox["id"], "inboxes"),
                "status": ref(rng.choices([1, 3, 4, 5, 6, 7], [30, 15, 5, 25, 20, 5])[0], "ticketstatuses"),
                "priority": ref(rng.randint(1, 4), "ticketpriorities"), "source": ref(1, "ticketsources"),
                "type": ref(rng.choice(LOOKUPS["tickettypes"])["id"], "tickettypes"),
                "tags": [ref(t, "tags") for t in rng.sample([7, 8, 9], rng.randint(0, 2))],
                "isRead": rng.random() < 0.7,
                "createdAt": fmt_ts(created), "updatedAt": fmt_ts(updated),
                "createdBy": ref(SYSTEM_USER, "users"), "updatedBy": ref(rng.choice(AGENTS), "users"),
                "state": "active", "deletedAt": None,
            }
        ids = list(self.tickets)
        if ids:  # gotcha 4: a system-created ticket with the zero time
            system = self.tickets[ids[0]]
            system.update(createdAt=ZERO_TIME, subject="Welcome to Teamwork Desk", source=ref(3, "ticketsources"))
        for tid in rng.sample(ids[1:], 2) if len(ids) >= 10 else []:
            self.tickets[tid].update(state="deleted", deletedAt=self.tickets[tid]["updatedAt"])

    def _insert_customer(self, address: str, contact_only: bool, with_former: bool, created: str, updated: str,
                         first: str = "", last: str = "Customer") -> dict[str, Any]:
        cid = max(self.customers, default=550200) + 1
        values = [(f"former.{address.strip().lower()}", False)] if with_former else []
        contact_refs = []
        for value, is_main in values + [(address, True)]:
            kid = max(self.contacts, default=991000) + 1
            self.contacts[kid] = {"id": kid, "value": value, "isMain": is_main, "createdAt": created,
                                  "updatedAt": updated, "state": "active"}
            contact_refs.append(ref(kid, "contacts"))
        self.customers[cid] = {
            "id": cid, "firstName": first, "lastName": last, "email": "" if contact_only else address,
            "organization": "", "externalId": "", "phone": "", "jobTitle": "", "verifiedEmail": False,
            "trusted": False, "contacts": contact_refs, "createdAt": created, "updatedAt": updated,
            "createdBy": ref(SYSTEM_USER, "users"), "updatedBy": ref(SYSTEM_USER, "users"), "state": "active",
        }
        return self.customers[cid]

    def _main_contact_ref(self, cid: int) -> dict[str, Any] | None:
        main = [r for r in self.customers[cid]["contacts"] if self.contacts[r["id"]]["isMain"]]
        return main[0] if main else None

    def effective_email(self, cid: int) -> str:
        """The customer's address as stored: `email`, else the main contact's `value` (raw, unnormalised)."""
        customer = self.customers[cid]
        if customer["email"].strip():
            return customer["email"]
        main = self._main_contact_ref(cid)
        return self.contacts[main["id"]]["value"] if main else ""

    # ---- HTTP API ------------------------------------------------------------------------
    def route(self, req: Request) -> Response:
        if not req.path.startswith(PREFIX + "/"):
            return error_response(404, f"no such endpoint {req.path}")
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            return error_response(401, "invalid or missing API key")
        path, known_path = req.path[len(PREFIX):], False
        for method, pattern, handler in self.ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            known_path = True
            if method == req.method:
                try:
                    return getattr(self, handler)(req, *match.groups())
                except NotFound as exc:
                    return error_response(404, str(exc))
                except ValueError as exc:
                    return error_response(400, str(exc))
        return error_response(405 if known_path else 404, f"{req.method} {req.path} is not supported")

    def _values(self, row: dict[str, Any], field: str, kind: str) -> list[Any]:
        if field == "contacts.value":
            return [self.contacts[r["id"]]["value"] for r in row["contacts"]]
        value = row.get(field)
        if isinstance(value, dict):
            value = value.get("id")
        return [parse_ts(value) if kind == "ts" and value is not None else value]

    def _query(self, req: Request, table: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Filter (`filter`), order (`orderBy`, `orderMode`) and page (`page`, `pageSize`) a table."""
        kinds, orderable = QUERYABLE.get(table, (LOOKUP_FILTERS, ("id",)))
        order_by, mode = req.arg("orderBy") or "id", (req.arg("orderMode") or "asc").lower()
        if order_by not in orderable:
            raise ValueError(f"orderBy must be one of {', '.join(orderable)}")
        if mode not in ("asc", "desc"):
            raise ValueError("orderMode must be asc or desc")
        # Paging walks re-ask the same query page after page: keep its result until the next write.
        key = (req.arg("filter") or "", order_by, mode, self._version)
        cached = self._query_cache.get(table)
        if cached is not None and cached[0] == key:
            rows = cached[1]
        else:
            try:
                flt = json.loads(key[0] or "{}")
            except json.JSONDecodeError:
                raise ValueError("filter must be URL-encoded JSON") from None
            pred = compile_filter(flt, kinds)
            source = {"tickets": self.tickets, "customers": self.customers}
            rows = list(source[table].values()) if table in source else list(LOOKUPS[table])
            if "state" not in set(filter_fields(flt)):  # soft-deleted rows only when asked for (gotcha 5)
                rows = [r for r in rows if r.get("state") != "deleted"]
            rows = [r for r in rows if pred(lambda f, r=r: self._values(r, f, kinds[f]))]
            rows.sort(key=lambda r: (self._values(r, order_by, kinds.get(order_by, "str"))[0] or "", r["id"]),
                      reverse=mode == "desc")
            self._query_cache[table] = (key, rows)
        page = max(1, _int_arg(req, "page", 1))
        size = _int_arg(req, "pageSize", DEFAULT_PAGE_SIZE)
        size = DEFAULT_PAGE_SIZE if size < 1 else min(size, MAX_PAGE_SIZE)  # silent clamp (gotcha 1)
        total, offset = len(rows), (page - 1) * size
        pages, has_more = math.ceil(total / size), offset + size < total
        return rows[offset:offset + size], {
            "meta": {"page": {"pageOffset": offset, "pageSize": size, "count": total, "pages": pages,
                              "hasMore": has_more}},
            "pagination": {"records": total, "pageSize": size, "pages": pages, "page": page,
                           "hasMorePages": has_more},
        }

    def _included(self, req: Request, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        wanted = {w.strip() for w in (req.arg("includes") or "").split(",") if w.strip()}
        wanted = INCLUDABLE if "all" in wanted else wanted & INCLUDABLE
        refs: dict[str, list[int]] = {}

        def add(r: Any) -> None:
            if isinstance(r, dict) and r.get("type") in wanted and r["id"] not in refs.setdefault(r["type"], []):
                refs[r["type"]].append(r["id"])

        for row in rows:
            for value in row.values():
                for r in value if isinstance(value, list) else [value]:
                    add(r)
        for cid in refs.get("customers", []) if "contacts" in wanted else []:
            for r in self.customers[cid]["contacts"]:  # the address may live only in a contact
                add(r)
        tables = {"customers": self.customers, "contacts": self.contacts,
                  **{k: {o["id"]: o for o in v} for k, v in LOOKUPS.items()}}
        return {kind: [tables[kind][i] for i in refs.get(kind, []) if i in tables[kind]] for kind in sorted(wanted)}

    def _list_tickets(self, req: Request) -> Response:
        rows, paging = self._query(req, "tickets")
        return json_response(200, {"tickets": rows, "included": self._included(req, rows), **paging})

    def _ticket(self, tid: Any) -> dict[str, Any]:
        ticket = self.tickets.get(int(tid))
        if ticket is None:
            raise NotFound(f"ticket {tid} not found")
        return ticket

    def _get_ticket(self, req: Request, tid: str) -> Response:
        ticket = self._ticket(tid)
        return json_response(200, {"ticket": ticket, "included": self._included(req, [ticket])})

    def _patch_ticket(self, req: Request, tid: str) -> Response:
        ticket = self._ticket(tid)
        try:
            body = req.json()
        except ValueError:
            raise ValueError("body must be JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("ticket"), dict):
            raise ValueError('body must be {"ticket": {...}}')
        self._version += 1
        self._apply_ticket(ticket, body["ticket"])
        return json_response(200, {"ticket": ticket, "included": self._included(req, [ticket])})

    def _list_customers(self, req: Request) -> Response:
        rows, paging = self._query(req, "customers")
        return json_response(200, {"customers": rows, "included": self._included(req, rows), **paging})

    def _get_customer(self, req: Request, cid: str) -> Response:
        customer = self.customers.get(int(cid))
        if customer is None:
            raise NotFound(f"customer {cid} not found")
        return json_response(200, {"customer": customer, "included": self._included(req, [customer])})

    def _list_lookup(self, req: Request, kind: str) -> Response:
        rows, paging = self._query(req, kind)
        return json_response(200, {kind: rows, **paging})

    # ---- writes (API PATCH and control mutations) -----------------------------------------
    def _lookup_ref(self, kind: str, value: Any) -> dict[str, Any] | None:
        if value is None and kind == "users":
            return None  # unassign the agent
        key = value.get("id") if isinstance(value, dict) else value
        for obj in LOOKUPS[kind]:  # by id, or by name/code ("priority": "high" works on the real API)
            if obj["id"] == key or (isinstance(key, str) and key.strip().lower() in
                                    (str(obj["id"]), obj.get("code"), obj["name"].lower())):
                return ref(obj["id"], kind)
        raise ValueError(f"unknown {kind} {value!r}")

    def _apply_ticket(self, ticket: dict[str, Any], data: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in TICKET_REFS:
                changes[key] = self._lookup_ref(TICKET_REFS[key], value)
            elif key == "tags":
                changes[key] = [self._lookup_ref("tags", v) for v in value or []]
            elif key in ("subject", "previewText") and isinstance(value, str):
                changes[key] = value
            elif key == "customer":
                cid = value.get("id") if isinstance(value, dict) else value
                if cid not in self.customers:
                    raise ValueError(f"unknown customer {value!r}")
                changes.update(customer=ref(cid, "customers"), contact=self._main_contact_ref(cid))
            else:
                raise ValueError(f"ticket field {key!r} cannot be set")
        ticket.update(changes, updatedAt=fmt_ts(self.now()), updatedBy=ref(API_USER, "users"))

    def _customer_for(self, email: str) -> int:
        """Reuse a live customer whose address matches ignoring case/whitespace, else create one."""
        wanted = email.strip().lower()
        for cid, customer in self.customers.items():
            if customer["state"] != "deleted" and self.effective_email(cid).strip().lower() == wanted:
                return cid
        return self._create_customer({"email": email})["id"]

    def _create_customer(self, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data.get("email"), str) or not data["email"].strip():
            raise ValueError("customer needs an email")
        stamp = fmt_ts(self.now())
        customer = self._insert_customer(data["email"], bool(data.get("email_in_contact_only")), False, stamp, stamp,
                                         first=data.get("firstName", ""), last=data.get("lastName", ""))
        customer["createdBy"] = customer["updatedBy"] = ref(API_USER, "users")
        return customer

    def _update_customer(self, customer: dict[str, Any], data: dict[str, Any]) -> None:
        stamp = fmt_ts(self.now())
        for key, value in data.items():
            if key == "email":
                main = self._main_contact_ref(customer["id"])
                if main is None:  # no contact yet: give the customer one
                    kid = max(self.contacts, default=991000) + 1
                    self.contacts[kid] = {"id": kid, "value": value, "isMain": True, "createdAt": stamp,
                                          "updatedAt": stamp, "state": "active"}
                    customer["contacts"].append(ref(kid, "contacts"))
                else:
                    self.contacts[main["id"]].update(value=value, updatedAt=stamp)
                if customer["email"]:  # customers keeping the address only in a contact stay that way
                    customer["email"] = value
            elif key in CUSTOMER_EDITABLE:
                customer[key] = value
            else:
                raise ValueError(f"customer field {key!r} cannot be set")
        customer.update(updatedAt=stamp, updatedBy=ref(API_USER, "users"))

    def _create_ticket(self, data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        email = data.pop("customer_email", None)
        if not isinstance(email, str) or not email.strip():
            raise ValueError("ticket needs a customer_email")
        cid, stamp = self._customer_for(email), fmt_ts(self.now())
        tid = max(self.tickets, default=14427600) + 1
        inbox = self._lookup_ref("inboxes", data.pop("inbox", 9760))
        subject = data.pop("subject", "New ticket")
        ticket = {
            "id": tid, "subject": subject, "previewText": data.pop("previewText", subject), "messageCount": 1,
            "originalRecipient": next(i["email"] for i in LOOKUPS["inboxes"] if i["id"] == inbox["id"]),
            "customer": ref(cid, "customers"), "contact": self._main_contact_ref(cid), "agent": None,
            "inbox": inbox, "status": ref(1, "ticketstatuses"), "priority": ref(2, "ticketpriorities"),
            "source": ref(1, "ticketsources"), "type": ref(143616, "tickettypes"), "tags": [], "isRead": False,
            "createdAt": stamp, "updatedAt": stamp, "createdBy": ref(API_USER, "users"),
            "updatedBy": ref(API_USER, "users"), "state": "active", "deletedAt": None,
        }
        self._apply_ticket(ticket, data)  # validates the remaining fields before the ticket exists
        ticket["updatedAt"] = stamp
        self.tickets[tid] = ticket
        return ticket

    # ---- control endpoint ------------------------------------------------------------------
    def mutate(self, body: dict[str, Any]) -> Any:
        """Ops: ticket create (`data`: customer_email, subject, + ticket fields) / update (`id`, `data`)
        / touch (`id`) / delete (`id`, soft); customer create (`data`: email, firstName, lastName,
        email_in_contact_only) / update (`id`, `data`) / touch / delete (`id`, soft). Writes bump updatedAt."""
        self._version += 1  # invalidates cached query results
        op, obj, data = body.get("op"), body.get("object"), body.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError("data must be an object")
        table = {"ticket": self.tickets, "customer": self.customers}.get(obj)
        if table is None or op not in ("create", "update", "touch", "delete"):
            raise ValueError(f"unsupported mutation {op!r} on {obj!r}")
        if op == "create":
            row = self._create_ticket(data) if obj == "ticket" else self._create_customer(data)
        else:
            try:
                row = table[int(body.get("id"))]
            except (TypeError, ValueError, KeyError):
                raise KeyError(f"no {obj} with id {body.get('id')!r}") from None
            if op == "delete":
                stamp = fmt_ts(self.now())
                row.update(state="deleted", updatedAt=stamp, updatedBy=ref(API_USER, "users"),
                           **({"deletedAt": stamp} if obj == "ticket" else {}))
            elif obj == "ticket":  # touch = update with no data: only updatedAt moves
                data = dict(data) if op == "update" else {}
                if "customer_email" in data:
                    data["customer"] = self._customer_for(data.pop("customer_email"))
                self._apply_ticket(row, data)
            else:
                self._update_customer(row, data if op == "update" else {})
        return self._dump_row(obj, row)

    def _dump_row(self, obj: str, row: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(row)
        if obj == "ticket":
            out["customer_email"] = self.effective_email(row["customer"]["id"])
        elif obj == "customer":
            out["effective_email"] = self.effective_email(row["id"])
        return out

    def dump(self, object_name: str) -> list[dict[str, Any]]:
        """Every ticket / customer / contact by id, deleted ones included; tickets carry
        `customer_email` and customers `effective_email` (the stored address, not normalised)."""
        obj = object_name.rstrip("s")
        table = {"ticket": self.tickets, "customer": self.customers, "contact": self.contacts}.get(obj)
        if table is None:
            raise ValueError(f"unknown object {object_name!r}")
        return [self._dump_row(obj, table[i]) for i in sorted(table)]

    # ---- rate limit (120/min per key on the real service) --------------------------------
    def rate_limit_headers(self, limit: int, remaining: int, reset_seconds: float) -> dict[str, str]:
        # The docs call Reset "remaining window ... in UTC epoch seconds"; we send the epoch
        # second at which the window resets (a timestamp, not a duration).
        return {"X-Rate-Limit-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining),
                "X-Rate-Limit-Reset": str(math.ceil(time.time() + reset_seconds))}

    def rate_limited_response(self, limit: int, reset_seconds: float) -> Response:
        headers = {**self.rate_limit_headers(limit, 0, reset_seconds),
                   "Retry-After": str(max(1, math.ceil(reset_seconds)))}
        return error_response(429, f"rate limit of {limit} requests per window exceeded", headers)
