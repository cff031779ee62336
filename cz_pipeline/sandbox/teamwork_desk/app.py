"""Teamwork Desk fake: routes (tickets, customers, lookups with filter, orderBy, paging, included),
the control operations and the rate-limit answers.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import time
from typing import Any

from ..server import RateLimiter, Request, Response, SandboxApp, json_response
from .common import (
    API_USER, DEFAULT_EMAILS, DEFAULT_PAGE_SIZE, INCLUDABLE, LOOKUPS, LOOKUP_FILTERS, MAX_PAGE_SIZE,
    NotFound, PREFIX, QUERYABLE, _int_arg, error_response, fmt_ts, parse_ts, ref,
)
from .filters import compile_filter, filter_fields
from .data import TeamworkData
from .writes import TeamworkWrites


class TeamworkDeskSandbox(TeamworkData, TeamworkWrites, SandboxApp):
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
