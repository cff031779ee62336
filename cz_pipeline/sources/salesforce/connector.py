"""Salesforce REST adapter: the engine's surface (`stream`, `deletions`, `custom_fields`,
`unknown_fields`, `http.calls`) plus SOQL page reads for products (`query_pages`) and writes.

Reads: full (`since` None) through `/queryAll … WHERE IsDeleted = false` (queryAll also returns
archived activities), routine through `/query … WHERE SystemModstamp >= <literal>` (unquoted,
URL-encoded); deletions through `/queryAll … WHERE IsDeleted = true`, the deletion time being
the record's SystemModstamp. Pages follow `nextRecordsUrl` at whatever size the server picks
(`batchSize` is only asked for). Fields come from describe, re-read at every full read, and a
query refused with `INVALID_FIELD` (a field removed meanwhile) is re-described and sent again
once. A SELECT list whose URL would be too long is cut into chunks: the first drives the walk,
the others are fetched per page with `Id IN (…)` and merged by Id, so a page is complete when
yielded and memory stays at one page. Every answer's `Sforce-Limit-Info` feeds the API budget.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus

import requests

from cz_pipeline.core.http import ApiError, HttpClient, Page, Record, RetryPolicy, parse_timestamp

from .auth import MemoryTokenStore, SalesforceOAuth, TokenStore, _error_code
from .limits import DEFAULT_MAX_SHARE, ApiBudget, DailyApiLimitReached
from .pagination import NextUrlPaginator
from .soql import DEFAULT_MAX_URL_LENGTH, KEY_FIELDS, chunk_fields, datetime_literal, ids_per_query, select, string_literal
from .writes import SalesforceWrites

log = logging.getLogger(__name__)

SYSTEM = "salesforce"
TOKEN_KEY_ENV = "CZ_TOKEN_KEY"
API_VERSION = "60.0"
OBJECTS = {"leads": "Account", "contacts": "Contact", "deals": "Opportunity", "tasks": "Task", "users": "User"}
DEFAULT_BATCH_SIZE = 2000


class SalesforceHttpClient(HttpClient):
    """The shared core aimed at the token's `instance_url`, with the API budget checked before
    and read after every call; 403 REQUEST_LIMIT_EXCEEDED ends the run at once."""

    def __init__(self, auth: SalesforceOAuth, budget: ApiBudget, policy: RetryPolicy | None = None):
        super().__init__(SYSTEM, auth.login_url, auth, policy)
        self.oauth, self.budget = auth, budget
        self.session.hooks["response"].append(lambda resp, *a, **k: budget.observe(resp))

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        self.oauth.session()  # the first token names the instance to call
        self.base_url = self.oauth.instance_url or self.base_url
        url = self.url(path)
        self.budget.check(method, url)
        resp = super().request(method, url, ok=(*ok, 403), **kwargs)
        if resp.status_code == 403 and 403 not in ok:
            if _error_code(resp) == "REQUEST_LIMIT_EXCEEDED":
                raise DailyApiLimitReached(SYSTEM, method, url, 403, "daily API request limit reached: the org has "
                                           "used its rolling 24-hour allowance; the sync stops and is not retried")
            raise ApiError(SYSTEM, method, url, 403, _refusal_text(resp))
        return resp


def _refusal_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or "")[:300]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return f"{body[0].get('errorCode')}: {str(body[0].get('message'))[:300]}"
    return str(body)[:300]


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    """A record without `attributes` (also inside parent relationship objects)."""
    return {k: _strip(v) if isinstance(v, dict) else v for k, v in row.items() if k != "attributes"}


class SalesforceConnector(SalesforceWrites):
    system = SYSTEM
    entities = tuple(OBJECTS)

    def __init__(self, *, client_id: str, client_secret: str, refresh_token: str, login_url: str | None = None,
                 token_store: TokenStore | None = None, policy: RetryPolicy | None = None,
                 api_version: str = API_VERSION, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_api_share: float = DEFAULT_MAX_SHARE, max_url_length: int = DEFAULT_MAX_URL_LENGTH,
                 on_auth_invalid: Callable[[str], None] | None = None):
        """`on_auth_invalid(message)` is called once when Salesforce refuses the
        refresh token (`invalid_grant`), before `ReauthorizationRequired` is raised: the place to
        notify the tenant's admins."""
        self.auth = SalesforceOAuth(login_url=login_url, client_id=client_id, client_secret=client_secret,
                                    refresh_token=refresh_token, store=token_store, policy=policy,
                                    on_auth_invalid=on_auth_invalid)
        self.budget = ApiBudget(max_share=max_api_share)
        self.http = SalesforceHttpClient(self.auth, self.budget, policy)
        self.api_path = f"/services/data/v{api_version}"
        self.batch_size = batch_size
        self.max_url_length = max_url_length
        self._describes: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, cfg: Any, policy: RetryPolicy | None = None, context: Any = None) -> "SalesforceConnector":
        """A tenant's connector. With the warehouse in `context`, rotated refresh tokens are kept in
        `sync.oauth_tokens` encrypted under `CZ_TOKEN_KEY` (a Fernet key); without it (one-off
        use), only in memory."""
        from cz_pipeline.config.tenants import MissingSecretError, Secret

        creds = cfg.credentials
        login = creds.get("login_url")
        store: TokenStore = MemoryTokenStore()
        if context is not None and context.engine is not None:
            key = os.environ.get(TOKEN_KEY_ENV)
            if not key:
                raise MissingSecretError(f"environment variable {TOKEN_KEY_ENV} (the key that encrypts rotated "
                                         "Salesforce refresh tokens in the warehouse) is not set")
            from .token_store import WarehouseTokenStore

            store = WarehouseTokenStore(context.engine, context.tenant_id, key)
        return cls(client_id=creds["client_id"].get(), client_secret=creds["client_secret"].get(),
                   refresh_token=creds["refresh_token"].get(),
                   login_url=login.get() if isinstance(login, Secret) else login,
                   token_store=store, policy=policy)

    # ---- HTTP ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        return self.http.request(method, path, ok=ok, **kwargs)

    def api_usage(self) -> dict[str, Any]:
        """The org's API usage as last reported, for the run ledger."""
        return self.budget.as_metadata()

    # ---- metadata --------------------------------------------------------------------------
    def describe(self, obj: str, refresh: bool = False) -> dict[str, Any]:
        if refresh or obj not in self._describes:
            self._describes[obj] = self._call("GET", f"{self.api_path}/sobjects/{obj}/describe").json()
        return self._describes[obj]

    def field_names(self, obj: str) -> list[str]:
        return [f["name"] for f in self.describe(obj).get("fields") or [] if f.get("name")]

    def custom_fields(self, entity: str) -> dict[str, dict[str, Any]]:
        obj = OBJECTS.get(entity, entity)
        return {f["name"]: f for f in self.describe(obj).get("fields") or [] if f.get("custom")}

    def unknown_fields(self, entity: str, fields: list[str]) -> list[str]:
        """Configured fields whose name (or relationship, before a dot) describe lacks."""
        obj = OBJECTS.get(entity)
        if obj is None:
            return []
        described = self.describe(obj).get("fields") or []
        known = {f["name"] for f in described} | {f["relationshipName"] for f in described if f.get("relationshipName")}
        return [f for f in fields if f.split(".")[0] not in known]

    # ---- SOQL pages ------------------------------------------------------------------------
    def _query_url(self, soql: str, all_rows: bool) -> str:
        return f"{self.api_path}/{'queryAll' if all_rows else 'query'}?q={quote_plus(soql)}"

    def _url_length(self, soql: str, all_rows: bool) -> int:
        return len(self.http.base_url) + len(self._query_url(soql, all_rows))

    def query_pages(self, soql: str, all_rows: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Pages of records (without `attributes`) for any SOQL; `all_rows` uses queryAll
        (deleted and archived rows too). Products (win-loss) read through this."""
        headers = {"Sforce-Query-Options": f"batchSize={self.batch_size}"}

        def fetch(url: str | None) -> dict[str, Any]:
            target = url or self._query_url(soql, all_rows)
            body = self._call("GET", target, headers=headers).json()
            if not isinstance(body, dict):
                raise ApiError(SYSTEM, "GET", target, 200, "the query answer is not a JSON object")
            return body

        paginator = NextUrlPaginator(fetch, items=lambda b: [_strip(r) for r in b.get("records") or []],
                                     next_url=lambda b: None if b.get("done", True) else b.get("nextRecordsUrl"),
                                     system=SYSTEM)
        return paginator.pages()

    def _select_chunks(self, obj: str, where: str) -> list[list[str]]:
        self.http.oauth.session()
        self.http.base_url = self.auth.instance_url or self.http.base_url
        overhead = len(self.http.base_url) + len(self._query_url("", True)) + len(quote_plus(f" WHERE {where} ORDER BY SystemModstamp ASC"))
        keys = tuple(k for k in KEY_FIELDS if k in self.field_names(obj))
        return chunk_fields(self.field_names(obj), obj, max(200, self.max_url_length - overhead - 64), keys)

    def records(self, obj: str, where: str, *, all_rows: bool) -> Iterator[list[dict[str, Any]]]:
        """Pages of every described field of `obj` matching `where`, the SELECT list split and
        stitched by Id when one URL cannot hold it. INVALID_FIELD re-describes once."""
        for attempt in (1, 2):
            chunks = self._select_chunks(obj, where)
            try:
                first = True
                driving, *others = chunks
                order = "SystemModstamp ASC" if "SystemModstamp" in driving else None
                for rows in self.query_pages(select(driving, obj, where, order), all_rows=all_rows):
                    first = False
                    merged = {r["Id"]: r for r in rows}
                    for chunk in others:
                        self._stitch(obj, chunk, merged, all_rows)
                    yield list(merged.values())
                return
            except ApiError as exc:
                if attempt == 2 or not first or exc.status != 400 or "INVALID_FIELD" not in str(exc):
                    raise
                log.warning("salesforce: %s refused a field (%s); describing it again", obj, exc)
                self.describe(obj, refresh=True)

    def _stitch(self, obj: str, chunk: list[str], merged: dict[str, dict[str, Any]], all_rows: bool) -> None:
        base = select(chunk, obj, "Id IN ()")
        per_query = ids_per_query(self.max_url_length - self._url_length(base, all_rows) - 64)
        ids = list(merged)
        for i in range(0, len(ids), per_query):
            part = ids[i:i + per_query]
            where = f"Id IN ({', '.join(string_literal(x) for x in part)})"
            for rows in self.query_pages(select(chunk, obj, where), all_rows=all_rows):
                for row in rows:
                    target = merged.get(row.get("Id"))
                    if target is not None:  # the driving page's SystemModstamp stays (the older one)
                        target.update({k: v for k, v in row.items() if k not in KEY_FIELDS})

    # ---- the engine's surface ----------------------------------------------------------------
    def stream(self, entity: str, since: datetime | None) -> Iterator[Page]:
        """Pages of records changed at or after `since`; everything (not deleted) when None."""
        obj = OBJECTS.get(entity)
        if obj is None:
            raise ValueError(f"salesforce: unknown entity {entity!r}")
        return self._stream(obj, since)

    def _stream(self, obj: str, since: datetime | None) -> Iterator[Page]:
        if since is None:
            self.describe(obj, refresh=True)  # a full read always sees today's fields
            has_deleted = "IsDeleted" in self.field_names(obj)
            pages = self.records(obj, "IsDeleted = false" if has_deleted else "", all_rows=has_deleted)
        else:
            pages = self.records(obj, f"SystemModstamp >= {datetime_literal(since)}", all_rows=False)
        for rows in pages:
            yield [Record(str(r["Id"]), parse_timestamp(r.get("SystemModstamp")), r) for r in rows if r.get("Id")]

    def deletions(self, entity: str, since: datetime | None) -> Iterator[list[tuple[str, datetime | None]]]:
        """Records in the recycle bin changed since `since`, deleted at their SystemModstamp."""
        obj = OBJECTS.get(entity)
        if obj is None or "IsDeleted" not in self.field_names(obj):
            return
        where = "IsDeleted = true" + (f" AND SystemModstamp >= {datetime_literal(since)}" if since else "")
        for rows in self.query_pages(select(["Id", "SystemModstamp"], obj, where), all_rows=True):
            batch = [(str(r["Id"]), parse_timestamp(r.get("SystemModstamp"))) for r in rows if r.get("Id")]
            if batch:
                yield batch

    def check(self) -> dict[str, Any]:
        return self._call("GET", f"{self.api_path}/sobjects/").json()
