"""In-memory fake of the Salesforce REST API and its OAuth token endpoint on one loopback server.

`POST /services/oauth2/token` (refresh_token grant; `instance_url` names this server or a
configured URL; optional refresh-token rotation; 400 `invalid_grant` for a revoked token) and
`/services/data/vNN.N/…`: `query` and `queryAll` (a SOQL subset, see `soql.py`), opaque
`nextRecordsUrl` locators honouring `Sforce-Query-Options: batchSize=N` (200–2,000, optionally
capped lower), `sobjects/`, `sobjects/{Object}/describe`, `sobjects/{Object}/deleted/`,
`GET/PATCH sobjects/{Object}/{Id}`, `POST sobjects/{Object}/`. Every API answer carries
`Sforce-Limit-Info: api-usage=N/M`; errors are Salesforce's `[{"message","errorCode"}]` arrays.

Control operations (`mutate`) and ground truth (`dump`) are documented on those methods.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from cz_pipeline.sandbox.server import Request, Response, SandboxApp, empty_response, json_response

from .org import Org
from .schema import API_VERSION, OBJECTS, fmt_datetime, render_value
from .soql import Compiler, SoqlError, _parse_datetime

TOKEN_PATH = "/services/oauth2/token"
DATA_PREFIX = "/services/data/"
MIN_BATCH, MAX_BATCH = 200, 2000
_VERSION = re.compile(r"v\d+\.\d+")


def sf_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, [{"message": message, "errorCode": code, "fields": []}], headers)


class SalesforceSandbox(SandboxApp):
    name = "salesforce"

    def __init__(self, *, client_id: str = "sf_client", client_secret: str = "sf_secret",
                 refresh_token: str = "sf_refresh", seed: int = 0, n_accounts: int = 30,
                 contacts_per_account: int = 2, opportunities_per_account: int = 3, closed_share: float = 0.7,
                 extra_custom_fields: int = 0, api_limit: int = 100_000, batch_size_cap: int = MAX_BATCH,
                 rotate_refresh_tokens: bool = False, instance_url: str | None = None,
                 max_url_length: int = 16_384):
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_tokens = {refresh_token}
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.instance_url = instance_url  # None: the host the token request came to
        self.sessions: set[str] = set()
        self.expire_after: int | None = None  # API requests until every session expires
        self.api_usage, self.api_limit = 0, api_limit
        self.batch_size_cap = batch_size_cap
        self.max_url_length = max_url_length
        self.token_requests: list[dict[str, str]] = []  # host and grant of every token request
        self.api_hosts: Counter[str] = Counter()
        self.queries: list[dict[str, Any]] = []  # {"endpoint", "q", "batch_size"} of every query
        self.writes: list[dict[str, Any]] = []  # PATCH/POST bodies, for write-back tests
        self.locators: dict[str, dict[str, Any]] = {}
        self._ms = datetime(1970, 1, 1, tzinfo=timezone.utc)
        self.org = Org(seed=seed, n_accounts=n_accounts, contacts_per_account=contacts_per_account,
                       opportunities_per_account=opportunities_per_account, closed_share=closed_share,
                       extra_custom_fields=extra_custom_fields, clock=self.stamp)
        self.compiler = Compiler(set(OBJECTS), self.org.resolve, self.org.getter, lambda: self.stamp().date())

    def stamp(self) -> datetime:
        """Salesforce keeps milliseconds: strictly increasing ms so every write has its own stamp."""
        now = self.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if now <= self._ms:
            now = self._ms + timedelta(milliseconds=1)
        self._ms = now
        return now

    # ---- control ---------------------------------------------------------------------------
    def mutate(self, body: dict[str, Any]) -> Any:
        """`object` is an sObject name, "oauth" or "limits".
        sObjects: create {data}, update {id, data} (bumps SystemModstamp), delete {id} (IsDeleted,
        `/deleted/` feed; an opportunity takes its contact roles and line items along),
        remove_field {field} / restore_field {field} (describe and SOQL stop/start knowing it).
        oauth: expire_sessions {after_requests?} (every session answers 401 INVALID_SESSION_ID,
        now or after N more API requests), revoke_refresh_token {refresh_token?} (all when omitted),
        issue_refresh_token, rotation {enabled}.
        limits: set {usage?, limit?} (the daily API allowance `Sforce-Limit-Info` reports)."""
        op, obj = body.get("op"), body.get("object")
        if obj == "oauth":
            return self._mutate_oauth(op, body)
        if obj == "limits" and op == "set":
            self.api_usage = int(body.get("usage", self.api_usage))
            self.api_limit = int(body.get("limit", self.api_limit))
            return {"usage": self.api_usage, "limit": self.api_limit}
        if obj not in OBJECTS:
            raise KeyError(f"unknown object {obj!r}")
        try:
            if op == "create":
                return self.org.render(obj, self.org.create(obj, body.get("data") or {}))
            if op == "update":
                return self.org.render(obj, self.org.update(obj, str(body["id"]), body.get("data") or {}))
            if op == "delete":
                return {"id": body["id"], "deletedDate": fmt_datetime(self.org.delete(obj, str(body["id"])))}
            if op in ("remove_field", "restore_field"):
                name = str(body["field"])
                if name not in self.org.fields[obj]:
                    raise KeyError(f"{obj} has no field {name}")
                (self.org.removed[obj].add if op == "remove_field" else self.org.removed[obj].discard)(name)
                return {"removed": sorted(self.org.removed[obj])}
        except SoqlError as exc:
            raise ValueError(f"{exc.code}: {exc}") from None
        raise ValueError(f"unknown op {op!r}")

    def _mutate_oauth(self, op: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if op == "expire_sessions":
            after = body.get("after_requests")
            if after is None:
                self.sessions.clear()
            self.expire_after = None if after is None else int(after)
            return {"expire_after": self.expire_after}
        if op == "revoke_refresh_token":
            token = body.get("refresh_token")
            self.refresh_tokens = set() if token is None else self.refresh_tokens - {token}
            return {"refresh_tokens": len(self.refresh_tokens)}
        if op == "issue_refresh_token":
            token = f"5Aep861{secrets.token_urlsafe(24)}"
            self.refresh_tokens.add(token)
            return {"refresh_token": token}
        if op == "rotation":
            self.rotate_refresh_tokens = bool(body.get("enabled", True))
            return {"rotation": self.rotate_refresh_tokens}
        raise ValueError(f"unknown oauth op {op!r}")

    def dump(self, object_name: str) -> list[dict[str, Any]]:
        """Every record of an object that is not deleted (all fields, API rendering, removed
        fields left out); `deleted:<Object>` lists the deleted ones; "writes" the recorded
        PATCH/POST calls; "token_requests" the host and grant of every token request."""
        if object_name == "writes":
            return list(self.writes)
        if object_name == "token_requests":
            return list(self.token_requests)
        deleted = object_name.startswith("deleted:")
        obj = object_name.split(":", 1)[-1]
        if obj not in OBJECTS:
            raise KeyError(f"unknown object {object_name!r}")
        return [self.org.render(obj, r) for r in self.org.records[obj].values() if r["IsDeleted"] == deleted]

    # ---- HTTP ------------------------------------------------------------------------------
    def _limit_headers(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_usage}/{self.api_limit}"}

    def route(self, req: Request) -> Response:
        if req.path.rstrip("/") == TOKEN_PATH and req.method == "POST":
            return self._token(req)
        if not req.path.startswith(DATA_PREFIX):
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        self.api_hosts[req.headers.get("host", "")] += 1
        resp = self._api(req)
        resp.headers = {**self._limit_headers(), **resp.headers}
        return resp

    def _api(self, req: Request) -> Response:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if self.expire_after is not None:
            self.expire_after -= 1
            if self.expire_after < 0:
                self.sessions.clear()
                self.expire_after = None
        if scheme != "Bearer" or token.strip() not in self.sessions:
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self.api_usage >= self.api_limit:
            return sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_usage += 1
        parts = req.path[len(DATA_PREFIX):].strip("/").split("/")
        if parts == [""]:
            return json_response(200, [{"label": "Winter '24", "url": f"{DATA_PREFIX}v{API_VERSION}",
                                        "version": API_VERSION}])
        if not _VERSION.fullmatch(parts[0]):
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        rest, method = parts[1:], req.method
        if req.method == "POST" and req.arg("_HttpMethod") == "PATCH":
            method = "PATCH"
        try:
            if rest and rest[0] in ("query", "queryAll") and method == "GET":
                if len(rest) == 2:
                    return self._next_page(rest[1])
                return self._query(req, everything=rest[0] == "queryAll")
            if rest == ["sobjects"] and method == "GET":
                return json_response(200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [
                    {"name": o, "label": o, "queryable": True, "custom": False} for o in OBJECTS]})
            if len(rest) >= 2 and rest[0] == "sobjects":
                return self._sobject(req, method, rest[1], rest[2:])
        except SoqlError as exc:
            return sf_error(400, exc.code, str(exc))
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    def _token(self, req: Request) -> Response:
        p = req.form()
        self.token_requests.append({"host": req.headers.get("host", ""), "grant_type": p.get("grant_type", "")})
        if p.get("grant_type") != "refresh_token":
            return json_response(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})
        if p.get("client_id") != self.client_id or p.get("client_secret") != self.client_secret:
            return json_response(400, {"error": "invalid_client_id", "error_description": "client identifier invalid"})
        if p.get("refresh_token") not in self.refresh_tokens:
            return json_response(400, {"error": "invalid_grant", "error_description": "expired access/refresh token"})
        session = f"00DHs0000001AbC!{secrets.token_urlsafe(32)}"
        self.sessions.add(session)
        issued = self.now()
        answer = {"access_token": session,
                  "instance_url": self.instance_url or f"http://{req.headers.get('host', '127.0.0.1')}",
                  "id": "https://login.salesforce.com/id/00DHs0000001AbCEAA/005Hs000001QwErIAK",
                  "token_type": "Bearer", "issued_at": str(int(issued.timestamp() * 1000)),
                  "signature": secrets.token_urlsafe(32), "scope": "refresh_token api"}
        if self.rotate_refresh_tokens:
            self.refresh_tokens.discard(p["refresh_token"])
            answer["refresh_token"] = f"5Aep861{secrets.token_urlsafe(24)}"
            self.refresh_tokens.add(answer["refresh_token"])
        return json_response(200, answer)

    # ---- queries ---------------------------------------------------------------------------
    def _batch_size(self, req: Request) -> int:
        m = re.search(r"batchSize\s*=\s*(\d+)", req.headers.get("sforce-query-options", ""))
        size = min(MAX_BATCH, max(MIN_BATCH, int(m.group(1)))) if m else MAX_BATCH
        return min(size, self.batch_size_cap)

    def _query(self, req: Request, everything: bool) -> Response:
        q = req.arg("q")
        if not q:
            return sf_error(400, "MALFORMED_QUERY", "A query string has to be specified")
        full_url = req.path + "?" + urlencode(req.query, doseq=True)
        if len(full_url) > self.max_url_length:
            return sf_error(414, "URI_TOO_LONG", "The request URI is too long")
        self.queries.append({"endpoint": "queryAll" if everything else "query", "q": q,
                             "batch_size": self._batch_size(req)})
        query = self.compiler.compile(q)
        rows = [r for r in self.org.records[query.obj].values()
                if (everything or not r["IsDeleted"]) and (query.where is None or query.where(r))]
        for path, desc, nulls_last in reversed(query.order):
            get = self.org.getter(query.obj, path)
            present = sorted((r for r in rows if get(r) is not None), key=get, reverse=desc)
            absent = [r for r in rows if get(r) is None]
            rows = present + absent if nulls_last else absent + present
        rows = rows[query.offset:]
        if query.limit is not None:
            rows = rows[:query.limit]
        locator = f"01gHs{secrets.token_hex(6)}"
        self.locators[locator] = {"obj": query.obj, "fields": query.fields, "ids": [r["Id"] for r in rows],
                                  "batch": self._batch_size(req), "endpoint": "queryAll" if everything else "query"}
        return self._page(locator, 0)

    def _next_page(self, token: str) -> Response:
        locator, _, offset = token.rpartition("-")
        if locator not in self.locators or not offset.isdigit():
            return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(locator, int(offset))

    def _page(self, locator: str, offset: int) -> Response:
        state = self.locators[locator]
        ids = state["ids"][offset:offset + state["batch"]]
        obj = state["obj"]
        records = [self.org.render(obj, self.org.records[obj][i], state["fields"]) for i in ids]
        body: dict[str, Any] = {"totalSize": len(state["ids"]), "done": offset + len(ids) >= len(state["ids"]),
                                "records": records}
        if not body["done"]:
            body["nextRecordsUrl"] = f"{DATA_PREFIX}v{API_VERSION}/{state['endpoint']}/{locator}-{offset + len(ids)}"
        else:
            del self.locators[locator]
        return json_response(200, body)

    # ---- sObjects --------------------------------------------------------------------------
    def _sobject(self, req: Request, method: str, obj: str, rest: list[str]) -> Response:
        if obj not in OBJECTS:
            return sf_error(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{obj}'")
        if rest == ["describe"] and method == "GET":
            return json_response(200, self.org.describe(obj))
        if rest == ["deleted"] and method == "GET":
            return self._deleted(req, obj)
        if not rest and method == "POST":
            data = req.json() or {}
            rec = self.org.create(obj, data)
            self.writes.append({"method": "POST", "object": obj, "id": rec["Id"], "body": data})
            return json_response(201, {"id": rec["Id"], "success": True, "errors": []})
        if len(rest) == 1 and method == "GET":
            rec = self.org.records[obj].get(rest[0])
            if rec is None or rec["IsDeleted"]:
                return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
            return json_response(200, self.org.render(obj, rec))
        if len(rest) == 1 and method == "PATCH":
            data = req.json() or {}
            try:
                self.org.update(obj, rest[0], data)
            except KeyError:
                return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
            self.writes.append({"method": "PATCH", "object": obj, "id": rest[0], "body": data})
            return empty_response(204)
        return sf_error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")

    def _deleted(self, req: Request, obj: str) -> Response:
        try:
            start = _parse_datetime(req.arg("start") or "")
            end = _parse_datetime(req.arg("end") or "")
        except ValueError:
            return sf_error(400, "MALFORMED_QUERY", "start and end must be ISO-8601 date-times")
        earliest = self.org.earliest_deleted_available()
        if start < earliest:
            return sf_error(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 15 days ago")
        rows = self.org.deleted_between(obj, start, end)
        return json_response(200, {"deletedRecords": [{"id": i, "deletedDate": fmt_datetime(w)} for i, w in rows],
                                   "earliestDateAvailable": render_value(earliest),
                                   "latestDateCovered": render_value(min(end, self.stamp()))})
