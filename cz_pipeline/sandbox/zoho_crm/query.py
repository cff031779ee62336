"""Zoho CRM fake: the Get Records query: `fields` selection, `ids`, sort, `If-Modified-Since`,
`page`/`page_token` paging with their caps, and the deleted-records list.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from ..server import Request, Response, empty_response, json_response
from .common import MAX_FIELDS, MAX_PER_PAGE, PAGE_TOKEN_TTL, SORT_FIELDS, _FieldError, _error, _record_error


class ZohoQuery:
    """Record listing."""

    def _int_arg(self, req: Request, name: str, default: int) -> int:
        raw = req.arg(name)
        if raw in (None, ""):
            return default
        if not raw.isdigit() or int(raw) < 1:
            raise _FieldError(name)
        return int(raw)

    def _ims(self, req: Request) -> datetime | None:
        raw = req.headers.get("if-modified-since")
        return self._parse_dt(raw.strip()) if raw else None

    def _after(self, stamp: datetime, ims: datetime) -> bool:
        return stamp >= ims if self.if_modified_since_inclusive else stamp > ims

    def _list(self, req: Request, module: str) -> Response:
        """GET /{Module}: one handler for every module."""
        if not req.arg("fields"):
            return _error(400, "REQUIRED_PARAM_MISSING", "required param is missing", param_name="fields")
        fields = [f.strip() for f in req.arg("fields", "").split(",") if f.strip()]
        if len(fields) > MAX_FIELDS:
            return _error(400, "LIMIT_EXCEEDED", "limit exceeded", limit=MAX_FIELDS, param_name="fields")
        sort_by, sort_order = req.arg("sort_by") or "id", req.arg("sort_order") or "desc"
        if sort_by not in SORT_FIELDS:
            return _error(400, "INVALID_DATA", "invalid data", param_name="sort_by", supported_values=SORT_FIELDS)
        if sort_order not in ("asc", "desc"):
            return _error(400, "INVALID_DATA", "invalid data", param_name="sort_order", supported_values=["asc", "desc"])
        try:
            per_page = min(self._int_arg(req, "per_page", MAX_PER_PAGE), MAX_PER_PAGE)
            page = self._int_arg(req, "page", 1)
            ims = self._ims(req)
        except _FieldError as exc:
            return _error(400, "INVALID_DATA", "invalid data", param_name=exc.api)
        except ValueError:
            return _error(400, "INVALID_DATA", "invalid data", param_name="If-Modified-Since")
        ids = [i for i in (req.arg("ids") or "").split(",") if i]
        token_arg = req.arg("page_token")
        if token_arg and req.arg("page"):
            return _error(400, "AMBIGUITY_DURING_PROCESSING", "ambiguity while processing the request",
                          ambiguity_due_to=[{"param_name": "page_token"}, {"param_name": "page"}])
        # a page token is bound to every other parameter of the query that issued it
        bound = (module, tuple(fields), sort_by, sort_order, per_page, ims, tuple(ids))
        now = self.now()
        after, served, prev = None, (page - 1) * per_page, None
        if token_arg:
            state = self.page_tokens.get(token_arg)
            if state is None or state["bound"] != bound:
                return _error(400, "TOKEN_BOUND_DATA_MISMATCH", "The page_token given seems to be invalid or "
                              "input param is added or altered or deleted", param_name="page_token")
            if state["expires"] <= now:
                return _error(400, "EXPIRED_VALUE", "Page token expired", api_name="page_token",
                              json_path="$.query.page_token")
            if state["served"] >= self.max_page_token_records:
                return _error(400, "PAGINATION_LIMIT_EXCEEDED", f"You can only get upto "
                              f"{self.max_page_token_records} records using page_token param", param_name="page_token")
            after, served, page, prev = state["after"], state["served"], state["page"], state["prev"]
        elif page * per_page > self.max_discrete_records:
            return _error(400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED", f"You can only get the first "
                          f"{self.max_discrete_records} records without using page_token param",
                          limit=self.max_discrete_records)

        rows = list(self.records[module].values())
        if ids:
            rows = [r for r in rows if r["id"] in ids]
        if ims is not None:
            rows = [r for r in rows if self._after(r["Modified_Time"], ims)]
            if not rows:
                return empty_response(304)

        def key(r: dict[str, Any]) -> tuple:
            return (int(r["id"]),) if sort_by == "id" else (r[sort_by], int(r["id"]))

        desc = sort_order == "desc"
        rows.sort(key=key, reverse=desc)
        if after is not None:  # keyset continuation: stable under inserts/deletes between pages
            rows = [r for r in rows if (key(r) < after if desc else key(r) > after)]
            start = 0
        else:
            start = served
        limit = per_page if token_arg is None else min(per_page, self.max_page_token_records - served)
        chunk = rows[start:start + limit]
        if not chunk:
            return empty_response(204)
        more = len(rows) > start + len(chunk)
        next_token = expiry = None
        if more:
            next_token, expiry = secrets.token_hex(24), now + PAGE_TOKEN_TTL
            self.page_tokens = {t: s for t, s in self.page_tokens.items() if s["expires"] > now}
            self.page_tokens[next_token] = {"bound": bound, "after": key(chunk[-1]), "served": served + len(chunk),
                                            "page": page + 1, "prev": token_arg, "expires": expiry}
        info = {"call": False, "per_page": per_page, "count": len(chunk), "page": page, "sort_by": sort_by,
                "sort_order": sort_order, "more_records": more, "next_page_token": next_token,
                "previous_page_token": prev, "page_token_expiry": self.fmt(expiry) if expiry else None,
                "email": False}
        return json_response(200, {"data": [self.render(module, r, fields) for r in chunk], "info": info})

    def _paged(self, req: Request, rows: list[Any], key: str, render) -> Response:
        """Plain page/per_page listing used by /deleted and /users."""
        try:
            per_page = min(self._int_arg(req, "per_page", MAX_PER_PAGE), MAX_PER_PAGE)
            page = self._int_arg(req, "page", 1)
        except _FieldError as exc:
            return _error(400, "INVALID_DATA", "invalid data", param_name=exc.api)
        chunk = rows[(page - 1) * per_page: page * per_page]
        if not chunk:
            return empty_response(204)
        info = {"per_page": per_page, "count": len(chunk), "page": page, "more_records": len(rows) > page * per_page}
        return json_response(200, {key: [render(r) for r in chunk], "info": info})

    def _deleted(self, req: Request, module: str) -> Response:
        kind = req.arg("type") or "all"
        if kind not in ("all", "recycle", "permanent"):
            return json_response(400, {"data": [_record_error(  # this error really is wrapped in data[]
                "PATTERN_NOT_MATCHED", "Please check whether the input values are correct", param_name="type")]})
        try:
            ims = self._ims(req)
        except ValueError:
            return _error(400, "INVALID_DATA", "invalid data", param_name="If-Modified-Since")
        rows = [e for e in self.deleted[module] if kind == "all" or e["type"] == kind]
        if ims is not None:
            rows = [e for e in rows if self._after(e["deleted_time"], ims)]
            if not rows:
                return empty_response(304)
        rows.sort(key=lambda e: (e["deleted_time"], int(e["id"])), reverse=True)
        return self._paged(req, rows, "data", self._render_deleted)
