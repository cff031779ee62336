"""Zoho CRM fake: routes for the token endpoint and `/crm/v8/...`, users, field metadata, upserts,
the control operations and Zoho's rate-limit answers.
"""

from __future__ import annotations

import random
import re
import secrets
import threading
import time
from datetime import timedelta, timezone
from typing import Any

from ..server import Request, Response, SandboxApp, empty_response, json_response
from .common import (
    API_PREFIX, JSON_TYPE, MAX_WRITE, MODULES, ORG_ID_BASE, SCOPE, SINGULAR, TOKEN_PATH, _FieldError,
    _error, _module_fields, _record_error,
)
from .data import ZohoData
from .records import ZohoRecords
from .query import ZohoQuery


class ZohoSandbox(ZohoData, ZohoRecords, ZohoQuery, SandboxApp):
    name = "zoho_crm"

    def __init__(self, *, client_id: str = "zoho_client", client_secret: str = "zoho_secret",
                 refresh_token: str = "zoho_refresh", seed: int = 0, n_accounts: int = 400,
                 contacts_per_account: tuple[int, int] = (3, 8), tz_offset: str = "+05:30",
                 token_ttl_seconds: int = 3600, max_discrete_records: int = 2000,
                 max_page_token_records: int = 100_000, if_modified_since_inclusive: bool = True):
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_tokens = {refresh_token}
        self.token_ttl_seconds = token_ttl_seconds
        self.max_discrete_records = max_discrete_records
        self.max_page_token_records = max_page_token_records
        self.if_modified_since_inclusive = if_modified_since_inclusive
        m = re.fullmatch(r"([+-])(\d\d):(\d\d)", tz_offset)
        if not m:
            raise ValueError(f"tz_offset must look like +05:30, got {tz_offset!r}")
        sign = -1 if m[1] == "-" else 1
        self.tz_offset = tz_offset
        self.tz = timezone(sign * timedelta(hours=int(m[2]), minutes=int(m[3])))
        self.fields = {mod: _module_fields(mod) for mod in MODULES}
        self.field_map = {mod: {f.api: f for f in fs} for mod, fs in self.fields.items()}
        self.records: dict[str, dict[str, dict[str, Any]]] = {mod: {} for mod in MODULES}
        self.deleted: dict[str, list[dict[str, Any]]] = {mod: [] for mod in MODULES}
        self.users: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, tuple[float, str]] = {}  # token -> (expires at, user id)
        self.page_tokens: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._account_number = 0
        self._local = threading.local()  # lets rate_limited_response know which host was hit
        self.started_at = self._stamp()
        self._generate(random.Random(seed), n_accounts, contacts_per_account)

    # ---- control -------------------------------------------------------------------------
    def mutate(self, body: dict[str, Any]) -> Any:
        """Control operations. `object` is a module (Accounts, Contacts, Deals, Tasks), "users" or
        "oauth". Modules/users: create {data}, update {id, data}, touch {id}, delete {id,
        permanent?}; values use API shapes (lookups {"id": ...}, ISO datetimes). oauth:
        revoke_refresh_token {refresh_token?}, issue_refresh_token, expire_access_tokens."""
        op, obj = body.get("op"), body.get("object")
        if obj == "oauth":
            if op == "revoke_refresh_token":
                token = body.get("refresh_token")
                self.refresh_tokens = set() if token is None else self.refresh_tokens - {token}
                return {"refresh_tokens": len(self.refresh_tokens)}
            if op == "issue_refresh_token":
                token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
                self.refresh_tokens.add(token)
                return {"refresh_token": token}
            if op == "expire_access_tokens":
                n = len(self.access_tokens)
                self.access_tokens.clear()
                return {"expired": n}
            raise ValueError(f"unknown oauth op {op!r}")
        if obj == "users":
            return self._mutate_user(op, body)
        if obj not in MODULES:
            raise KeyError(f"unknown object {obj!r}")
        data = body.get("data") or {}
        try:
            if op == "create":
                return self.render(obj, self._create(obj, data, api=False))
            rid = str(body.get("id"))
            if rid not in self.records[obj]:
                raise KeyError(f"{obj} {rid} not found")
            rec = self.records[obj][rid]
            if op == "update":
                self._write(obj, rec, data, api=False)
            elif op == "touch":
                self._write(obj, rec, {}, api=False)
            elif op == "delete":
                return self._delete(obj, rid, permanent=bool(body.get("permanent")))
            else:
                raise ValueError(f"unknown op {op!r}")
            return self.render(obj, rec)
        except _FieldError as exc:
            raise ValueError(f"{exc.api}: {exc}") from None

    def _mutate_user(self, op: str | None, body: dict[str, Any]) -> dict[str, Any]:
        data = dict(body.get("data") or {})
        now = self._stamp()
        if op == "create":
            uid = self._new_id()
            first, last = data.get("first_name"), data.get("last_name", "User")
            user = {**self.users[self.current_user], "id": uid, "first_name": first, "last_name": last,
                    "full_name": " ".join(p for p in (first, last) if p), "email": f"user{uid[-6:]}@example.com",
                    "status": "active", "role": {"name": "Sales Representative", "id": str(ORG_ID_BASE + 863)},
                    "profile": {"name": "Standard", "id": str(ORG_ID_BASE + 498)}, "zuid": str(60_000_000 + self._seq),
                    "created_time": now, "Modified_Time": now, "created_by": self.current_user,
                    "Modified_By": self.current_user}
            self.users[uid] = user
        else:
            user = self.users[str(body.get("id"))]  # KeyError for unknown ids
            if op == "delete":
                data = {"status": "deleted"}  # Zoho keeps deleted users (type=DeletedUsers)
            elif op not in ("update", "touch"):
                raise ValueError(f"unknown op {op!r}")
            user.update(Modified_Time=now, Modified_By=self.current_user)
        for key, value in data.items():
            if key in ("id", "full_name"):
                continue
            user[key] = self._parse_dt(value) if key in ("created_time", "Modified_Time") else value
        user["full_name"] = " ".join(p for p in (user["first_name"], user["last_name"]) if p)
        return self._render_user(user)

    def dump(self, object_name: str) -> list[dict[str, Any]]:
        """Every live record of a module (all fields, API rendering), "users", or "deleted:<Module>"."""
        if object_name == "users":
            return [self._render_user(u) for u in self.users.values()]
        if object_name.startswith("deleted:"):
            return [self._render_deleted(e) for e in self.deleted[object_name[len("deleted:"):]]]
        if object_name not in MODULES:
            raise KeyError(f"unknown object {object_name!r}")
        return [self.render(object_name, r) for r in self.records[object_name].values()]

    # ---- rate limiting -------------------------------------------------------------------
    def rate_limit_key(self, req: Request) -> str:
        # credits and concurrency are per org, so one bucket for the API; the accounts server
        # throttles separately and answers differently (see rate_limited_response)
        self._local.token_call = req.path.rstrip("/") == TOKEN_PATH
        return "accounts" if self._local.token_call else "crm"

    def rate_limited_response(self, limit: int, reset_seconds: float) -> Response:
        if getattr(self._local, "token_call", False):
            return json_response(400, {"error": "Access Denied", "error_description":
                                       "You have made too many requests continuously. Please try again after some time."})
        return json_response(429, {"code": "TOO_MANY_REQUESTS", "details": {},
                                   "message": "Too many requests: API credits or concurrency limit exceeded",
                                   "status": "error"}, {"Retry-After": str(max(1, round(reset_seconds)))})

    # ---- HTTP ----------------------------------------------------------------------------
    def route(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path == TOKEN_PATH and req.method == "POST":
            return self._token(req)
        if not path.startswith(API_PREFIX):
            return _error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")
        auth = req.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme not in ("Zoho-oauthtoken", "Bearer") or not token:
            return _error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        expires, _uid = self.access_tokens.get(token.strip(), (0.0, ""))
        if expires <= time.time():
            return _error(401, "INVALID_TOKEN", "invalid oauth token")
        self.stats["credits"] += 1  # most Zoho calls cost one credit
        parts = path[len(API_PREFIX):].split("/")
        if parts == ["users"] and req.method == "GET":
            return self._users(req)
        if parts == ["settings", "fields"] and req.method == "GET":
            return self._fields(req)
        if parts == ["settings", "modules"] and req.method == "GET":
            return json_response(200, {"modules": [
                {"api_name": m, "module_name": m, "plural_label": m, "singular_label": SINGULAR[m],
                 "id": str(ORG_ID_BASE + 100 + i), "api_supported": True} for i, m in enumerate(MODULES)]})
        module = parts[0]
        if module not in MODULES:
            return _error(400, "INVALID_MODULE", "the module name given seems to be invalid", resource_path_index=0)
        rest, method = parts[1:], req.method
        if not rest and method == "GET":
            return self._list(req, module)
        if not rest and method in ("PUT", "POST"):
            return self._save(req, module, None)
        if rest == ["deleted"] and method == "GET":
            return self._deleted(req, module)
        if rest == ["actions", "count"] and method == "GET":
            return json_response(200, {"count": len(self.records[module])})
        if len(rest) == 1 and rest[0].isdigit() and method == "GET":
            rec = self.records[module].get(rest[0])
            fields = [f for f in (req.arg("fields") or "").split(",") if f] or None
            return json_response(200, {"data": [self.render(module, rec, fields)]}) if rec else empty_response(204)
        if len(rest) == 1 and method == "PUT":
            return self._save(req, module, rest[0])
        return _error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")

    def _token(self, req: Request) -> Response:
        # Zoho Accounts reports most failures as HTTP 200 with an "error" key
        p = req.form()
        if p.get("grant_type") != "refresh_token":
            return json_response(200, {"error": "unsupported_grant_type"})
        if p.get("client_id") != self.client_id or p.get("client_secret") != self.client_secret:
            return json_response(200, {"error": "invalid_client"})
        if p.get("refresh_token") not in self.refresh_tokens:
            return json_response(200, {"error": "invalid_code"})
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self.access_tokens[token] = (time.time() + self.token_ttl_seconds, self.current_user)
        host = req.headers.get("host", "127.0.0.1")
        return json_response(200, {"access_token": token, "scope": SCOPE, "api_domain": f"http://{host}",
                                   "token_type": "Bearer", "expires_in": self.token_ttl_seconds})

    def _users(self, req: Request) -> Response:
        active = lambda u: u["status"] == "active"  # noqa: E731
        admin = lambda u: u["profile"]["name"] == "Administrator"  # noqa: E731
        kinds = {"AllUsers": lambda u: u["status"] != "deleted", "ActiveUsers": active,
                 "DeactiveUsers": lambda u: u["status"] in ("inactive", "disabled"),
                 "DeletedUsers": lambda u: u["status"] == "deleted", "ConfirmedUsers": lambda u: u["confirm"],
                 "NotConfirmedUsers": lambda u: not u["confirm"], "AdminUsers": admin,
                 "ActiveConfirmedUsers": lambda u: active(u) and u["confirm"],
                 "ActiveConfirmedAdmins": lambda u: active(u) and u["confirm"] and admin(u),
                 "CurrentUser": lambda u: u["id"] == self.current_user}
        kind = req.arg("type") or "AllUsers"
        if kind not in kinds:
            return _error(400, "INVALID_DATA", "invalid data", param_name="type", supported_values=list(kinds))
        try:
            ims = self._ims(req)
        except ValueError:
            return _error(400, "INVALID_DATA", "invalid data", param_name="If-Modified-Since")
        rows = [u for u in self.users.values() if kinds[kind](u)]
        if ims is not None:
            rows = [u for u in rows if self._after(u["Modified_Time"], ims)]
            if not rows:
                return empty_response(304)
        return self._paged(req, sorted(rows, key=lambda u: int(u["id"])), "users", self._render_user)

    def _fields(self, req: Request) -> Response:
        module = req.arg("module")
        if not module:
            return _error(400, "REQUIRED_PARAM_MISSING", "required param is missing", param_name="module")
        if module not in MODULES:
            return _error(400, "INVALID_MODULE", "the module name given seems to be invalid", param_name="module")
        out = []
        for i, f in enumerate(self.fields[module]):
            fid = str(ORG_ID_BASE + (MODULES.index(module) + 1) * 10_000 + i)
            label = f"{SINGULAR[module]} Owner" if f.api == "Owner" else f.api.replace("_", " ")
            lookup = {} if f.dtype != "lookup" else {
                "display_label": label, "api_name": f.api, "id": fid,
                "module": {"api_name": f.target, "id": str(ORG_ID_BASE + 100 + MODULES.index(f.target))}}
            out.append({
                "api_name": f.api, "field_label": label, "display_label": label, "data_type": f.dtype,
                "json_type": JSON_TYPE.get(f.dtype, "string"), "custom_field": f.custom, "lookup": lookup,
                "pick_list_values": [{"display_value": v, "actual_value": v, "id": f"{fid}{j}"} for j, v in enumerate(f.picks)],
                "length": 255, "read_only": f.read_only, "visible": True, "type": "used", "id": fid,
                "column_name": f"CUSTOMFIELD{i}" if f.custom else f.api.upper()})
        return json_response(200, {"fields": out})

    def _save(self, req: Request, module: str, rid: str | None) -> Response:
        """PUT /{Module}/{id}, PUT /{Module} (bulk update) and POST /{Module} (insert)."""
        creating = req.method == "POST"
        try:
            body = req.json()
        except ValueError:
            body = None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            return _error(400, "MANDATORY_NOT_FOUND", "required field not found", api_name="data", json_path="$.data")
        if len(data) > MAX_WRITE:
            return json_response(400, {"data": [_record_error(
                "LIMIT_EXCEEDED", "count of records in your request exceeds the limit",
                maximum_length=MAX_WRITE, api_name="data")]})
        results = []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                results.append(_record_error("INVALID_DATA", "invalid data", json_path=f"$.data[{i}]"))
                continue
            target = rid or (None if creating else item.get("id"))
            if not creating and not target:
                results.append(_record_error("MANDATORY_NOT_FOUND", "required field not found",
                                             api_name="id", json_path=f"$.data[{i}].id"))
                continue
            rec = None if creating else self.records[module].get(str(target))
            if not creating and rec is None:
                results.append(_record_error("INVALID_DATA", "the id given seems to be invalid",
                                             api_name="id", json_path=f"$.data[{i}].id"))
                continue
            try:
                if creating:
                    rec = self._create(module, item, api=True)
                else:
                    self._write(module, rec, item, api=True)  # validates everything before applying
            except _FieldError as exc:
                code = "MANDATORY_NOT_FOUND" if str(exc) == "required field not found" else "INVALID_DATA"
                results.append(_record_error(code, str(exc), api_name=exc.api, json_path=f"$.data[{i}].{exc.api}"))
                continue
            results.append({"code": "SUCCESS", "details": {
                "Modified_Time": self.fmt(rec["Modified_Time"]), "Modified_By": self._user_ref(self.current_user),
                "Created_Time": self.fmt(rec["Created_Time"]), "id": rec["id"],
                "Created_By": {k: rec["Created_By"][k] for k in ("name", "id")}, "$approval_state": "approved"},
                "message": "record added" if creating else "record updated", "status": "success"})
        ok = sum(r["status"] == "success" for r in results)
        status = (201 if creating else 200) if ok == len(results) else 400 if ok == 0 else 207
        return json_response(status, {"data": results})
