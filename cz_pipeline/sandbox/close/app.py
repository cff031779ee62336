"""Close fake: the HTTP routes (auth, dispatch, offset lists with filters and caps, the event log),
the control operations and Close's rate-limit answers.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import random
from typing import Any, Callable

from ..server import Request, Response, SandboxApp, json_response
from .common import (
    ORG_ID, PREFIX, _Invalid, _LISTS, _NotFound, _OPS, _PREFIXES, _Res, _as_param, _body, _lead_query,
    _param_dt, _range_pred, _sort_key,
)
from .activities import CREATABLE, CloseActivities
from .data import CloseData
from .render import CloseRender
from .search import CloseSearch
from .writes import CloseWrites


class CloseSandbox(CloseData, CloseRender, CloseWrites, CloseSearch, CloseActivities, SandboxApp):
    name = "close"
    search_cursor_ttl = 30.0  # seconds; class attributes so a test can shrink them
    search_max_walk = 10_000
    event_limit = 50

    def __init__(self, *, api_key: str = "api_sandbox_key", seed: int = 0, n_leads: int = 60,
                 max_skip: int = 250_000, max_limit: int | None = None, n_activities: int | None = None,
                 activity_max_skip: int | None = None):
        """`n_activities` generated activities (default 6 per lead); `activity_max_skip` caps
        `_skip` on activity lists (default `max_skip`)."""
        super().__init__()
        self.api_key, self.max_skip, self.max_limit = api_key, max_skip, max_limit
        self.activity_max_skip = max_skip if activity_max_skip is None else activity_max_skip
        self.rng = random.Random(seed)
        kinds = [*_PREFIXES, *(r.kind for r in _LISTS.values())]
        self.db: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in kinds}  # kind -> id -> record
        self.roles: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self._meta: dict[str, Any] = {}
        self.inactive_users: set[str] = set()
        self._activity_sorted: tuple[list[str], list[tuple[str, str, str]]] | None = None
        self._static()
        self._generate(n_leads)
        self._org_roles()
        self._generate_activities(seed, 6 * n_leads if n_activities is None else n_activities)

    def _org_roles(self) -> None:
        """One of each membership kind: admins, a superuser, plain users, one inactive member."""
        users = list(self.db["user"])
        if len(users) >= 5:
            self.roles[users[2]] = "superuser"
            self.inactive_users.add(users[4])

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
            org = self._organization()
            return json_response(200, org if fields is None else {k: org[k] for k in fields if k in org})
        if parts[0] == "activity":
            status, body = self._activity_route(req, parts[1:], fields)
            return json_response(status, body)
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
    def _page_args(self, req: Request, max_limit: int, default: int = 100,
                   max_skip: int | None = None) -> tuple[int, int]:
        max_limit = self.max_limit or max_limit
        max_skip = self.max_skip if max_skip is None else max_skip
        try:
            skip, limit = int(req.arg("_skip") or 0), int(req.arg("_limit") or min(default, max_limit))
        except ValueError:
            raise _Invalid(field_errors={"_skip": "Must be an integer.", "_limit": "Must be an integer."})
        if limit < 0 or limit > max_limit:
            raise _Invalid([f"The limit you set is larger than the maximum limit for this resource (max_limit = {max_limit})."],
                           {"_limit": f"Ensure this value is less than or equal to {max_limit}."})
        if skip < 0 or skip > max_skip:
            raise _Invalid([f"The skip you set is larger than the maximum skip for this resource (max_skip = {max_skip}). "
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

    # ---- control endpoint -------------------------------------------------------------------
    def mutate(self, body: dict[str, Any]) -> Any:
        op, kind = body.get("op"), body.get("object")
        if kind == "activity" or kind in CREATABLE:
            return self._mutate_activity(op, str(kind), body)
        if kind == "membership" and op == "update":
            return self._mutate_membership(body)
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
        if object_name == "activity":  # every type, completed tasks included, newest first
            return [self._render(store, self.db[store][oid]) for _, oid, store in reversed(self._activity_index()[1])]
        if object_name == "membership":
            org = self._organization()
            return [{**m, "is_active": True} for m in org["memberships"]] + \
                [{**m, "is_active": False} for m in org["inactive_memberships"]]
        if object_name not in self.db:
            raise KeyError(f"unknown object {object_name!r}")
        return self._render_many(object_name, list(self.db[object_name].values()))

    # ---- rate limiting ---------------------------------------------------------
    def rate_limit_headers(self, limit: int, remaining: int, reset_seconds: float) -> dict[str, str]:
        return {"RateLimit": f"limit={limit}, remaining={remaining}, reset={math.ceil(reset_seconds)}"}

    def rate_limited_response(self, limit: int, reset_seconds: float) -> Response:
        reset = max(1, math.ceil(reset_seconds))
        legacy = {"rate_reset": reset, "message": "API rate limit exceeded. Please retry after the reset."}
        return json_response(429, {"error": legacy},
                             {"RateLimit": f"limit={limit}, remaining=0, reset={reset}", "Retry-After": str(reset)})
