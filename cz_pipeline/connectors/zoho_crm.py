"""Zoho CRM API v8 adapter (contracts section 2). Plain Python on the shared HTTP core.

Auth: OAuth2 refresh-token flow against the tenant's accounts server (data-centre specific), params
in the query string; `Authorization: Zoho-oauthtoken …`; the API host is the token response's
`api_domain`. Tokens are refreshed shortly before they expire and once on a 401 `INVALID_TOKEN`;
a refused refresh (Zoho answers HTTP 200 with an `error` body) raises `AuthError` at once. The
access token is shared by every connector of the process for the same grant, so one run costs one
refresh, not one per entity (Zoho caps live access tokens per refresh token and throttles refreshes).

Reads: `fields` is mandatory and capped at 50, so a module's fields (all api_names from
`/settings/fields`) are cut into batches that each carry `id` and `Modified_Time`. Batch 1 drives
the walk (`page`/`per_page` for the first 2,000 records, then `page_token`); for every page of it
the other batches are fetched for exactly that page's ids (`ids=…`) and merged by id. Memory stays
at one page (≤200 records × all fields) whatever the module's size, and a page is complete when
it is yielded. The alternative — walking each batch over the whole module and merging at the
end — needs the whole module in memory, and zipping independent walks page by page is only
correct while nobody edits the CRM (a record modified mid-walk moves in `Modified_Time` order).

Incremental reads send `If-Modified-Since` and sort by `Modified_Time` ascending; 304/204 mean
no records (their bodies are empty and never parsed). A routine read first probes with a one-record
request, so "nothing changed" costs one credit per module (no field metadata, no batches).
Deletions come from `/{Module}/deleted`. Calls are sequential (concurrency 1, well within every
edition's limit); `credits` counts the billable API calls for the run ledger.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

from ..tenants import CrmConfig, Secret
from .http import ApiError, AuthError, AuthStrategy, HttpClient, Page, Record, RetryPolicy, parse_timestamp

SYSTEM = "zoho_crm"
API_PATH = "/crm/v8"
DEFAULT_ACCOUNTS_URL = "https://accounts.zoho.com"
TOKEN_PATH = "/oauth/v2/token"
MODULES = {"leads": "Accounts", "contacts": "Contacts", "deals": "Deals", "tasks": "Tasks"}
MAX_FIELDS = 50  # v8 limit on `fields`
PER_PAGE = 200
DISCRETE_RECORDS = 2000  # `page` reaches this many records; `page_token` goes on from there
IDS_PER_REQUEST = 100  # ids per sub-request of the other field batches
KEY_FIELDS = ("id", "Modified_Time")  # in every batch: the merge key and the change time
EXPIRY_MARGIN = 60.0  # refresh an access token this many seconds before Zoho says it expires
TOKEN_THROTTLE_ATTEMPTS = 4  # the accounts server's 400 "Access Denied" throttle: retries, then fail


class ZohoHttpClient(HttpClient):
    """The shared core plus a `credits` counter: responses of `/crm/…` that Zoho bills (every
    answered call; 401 and 429 are refused before they cost anything)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.credits = 0
        self.session.hooks["response"].append(self._count_credit)

    def _count_credit(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        if resp.status_code not in (401, 429) and urlsplit(resp.url).path.startswith("/crm/"):
            self.credits += 1


# ---- OAuth -------------------------------------------------------------------------------------

_TOKENS: dict[str, tuple[str, float, str | None]] = {}  # grant key -> (access token, expires at, api_domain)
_TOKENS_LOCK = threading.Lock()


def clear_token_cache() -> None:
    """Forget every cached access token of the process (tests; a rotated grant)."""
    with _TOKENS_LOCK:
        _TOKENS.clear()


class ZohoOAuth(AuthStrategy):
    """Refresh-token flow. The access token lives in process memory only (never logged, never in
    a message); it is shared by connectors of the same grant (keyed by a hash of the grant)."""

    def __init__(self, accounts_url: str, client_id: str, client_secret: str, refresh_token: str,
                 policy: RetryPolicy | None = None, sleep=time.sleep, clock=time.time):
        accounts_url = accounts_url.rstrip("/")
        self.token_url = accounts_url if accounts_url.endswith(TOKEN_PATH) else accounts_url + TOKEN_PATH
        self._params = {"refresh_token": refresh_token, "client_id": client_id,
                        "client_secret": client_secret, "grant_type": "refresh_token"}
        self._key = hashlib.sha256("\0".join((self.token_url, client_id, client_secret, refresh_token))
                                   .encode()).hexdigest()
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.accounts = HttpClient(SYSTEM, self.token_url, None, self.policy, sleep)  # no auth header
        self.refreshes = 0  # token requests this strategy made

    # the cached grant ------------------------------------------------------------------------
    def _cached(self) -> tuple[str, float, str | None] | None:
        with _TOKENS_LOCK:
            return _TOKENS.get(self._key)

    @property
    def api_domain(self) -> str | None:
        return self.token()[1]

    def token(self) -> tuple[str, str | None]:
        """A valid access token (refreshed when missing or about to expire) and the api_domain."""
        cached = self._cached()
        if cached is None or cached[1] - EXPIRY_MARGIN <= self.clock():
            cached = self._refresh(stale=cached[0] if cached else None)
        return cached[0], cached[2]

    def apply(self, session: requests.Session, headers: dict[str, str]) -> None:
        headers["Authorization"] = f"Zoho-oauthtoken {self.token()[0]}"

    def refresh(self, response: requests.Response) -> bool:
        """Called by the HTTP core once after a 401: a new token helps for INVALID_TOKEN (expired
        or revoked access token), not for a scope mismatch."""
        try:
            code = (response.json() or {}).get("code")
        except ValueError:
            code = None
        if code not in ("INVALID_TOKEN", "AUTHENTICATION_FAILURE", None):
            return False
        sent = (response.request.headers.get("Authorization") or "").partition(" ")[2] if response.request else ""
        self._refresh(stale=sent or None)
        return True

    def _refresh(self, stale: str | None) -> tuple[str, float, str | None]:
        with _TOKENS_LOCK:
            cached = _TOKENS.get(self._key)
            # another connector already replaced the token we found stale: use the new one
            if cached is not None and cached[0] != stale and cached[1] - EXPIRY_MARGIN > self.clock():
                return cached
            if cached is not None and cached[0] == stale:
                del _TOKENS[self._key]  # refused or expiring: never hand it out again
            fresh = self._request_token()
            _TOKENS[self._key] = fresh
            return fresh

    def _request_token(self) -> tuple[str, float, str | None]:
        for attempt in range(1, TOKEN_THROTTLE_ATTEMPTS + 1):
            self.refreshes += 1
            # params in the query string, as Zoho documents (the core never prints query strings)
            resp = self.accounts.request("POST", self.token_url, ok=(200, 400), params=self._params)
            try:
                body = resp.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise ApiError(SYSTEM, "POST", self.token_url, resp.status_code,
                               "the accounts server answered the token refresh with something other than JSON")
            error = body.get("error")
            if resp.status_code == 400:
                throttled = str(error).lower() == "access denied"
                if throttled and attempt < TOKEN_THROTTLE_ATTEMPTS:
                    # "You have made too many requests continuously": wait, then try again
                    self.sleep(min(self.policy.max_rate_limit_wait, 5.0 * 2 ** (attempt - 1)))
                    continue
                # not AuthError: a throttle passes, so the run may be retried later
                raise ApiError(SYSTEM, "POST", self.token_url, 400,
                               "the accounts server still throttles token refreshes after "
                               f"{attempt} attempts" if throttled else
                               f"token refresh failed ({_safe(error) or 'bad request'})")
            if error or not body.get("access_token"):
                # Zoho reports a bad, expired or revoked refresh token as HTTP 200 {"error": "invalid_code"}
                raise AuthError(SYSTEM, "POST", self.token_url, resp.status_code,
                                f"the Zoho accounts server refused the refresh token ({_safe(error) or 'no access_token'}); "
                                "the grant was revoked or the client credentials are wrong: re-authorize the "
                                "Zoho connection and update the tenant's credentials")
            expires_in = float(body.get("expires_in") or 3600)
            return str(body["access_token"]), self.clock() + expires_in, body.get("api_domain")
        raise AssertionError("unreachable")  # pragma: no cover


def _safe(value: Any) -> str:
    """An error code from the accounts server, short and printable (never a token)."""
    text = str(value or "")
    return text[:60] if text.replace("_", "").replace(" ", "").isalnum() else ""


def _ims(moment: datetime, *, inclusive: bool = False) -> str:
    """`If-Modified-Since` (ISO with offset). Zoho filters inclusively at whole seconds. For
    records the engine's `since` is the newest Modified_Time already landed minus the overlap,
    so like Airbyte we ask from the next second: what sits exactly on `since` was landed by the
    previous run (the overlap window, when configured, re-reads everything around it), and an
    unchanged module answers 304. Deletions are not bounded by that cursor, so they are asked
    for inclusively (applying a tombstone twice is a no-op)."""
    moment = moment.astimezone(timezone.utc).replace(microsecond=0)
    return (moment if inclusive else moment + timedelta(seconds=1)).isoformat(timespec="seconds")


def _module(entity_or_module: str) -> str:
    return MODULES.get(entity_or_module, entity_or_module)


class ZohoCrmConnector:
    system = SYSTEM
    entities = ("leads", "contacts", "deals", "tasks", "users")

    def __init__(self, *, client_id: str, client_secret: str, refresh_token: str,
                 accounts_url: str | None = None, api_domain: str | None = None, base_url: str | None = None,
                 policy: RetryPolicy | None = None, sleep=time.sleep, clock=time.time):
        self.auth = ZohoOAuth(accounts_url or DEFAULT_ACCOUNTS_URL, client_id, client_secret, refresh_token,
                              policy, sleep, clock)
        self._pinned_domain = api_domain  # an explicit api_domain in the config wins over the token's
        fallback = (api_domain or base_url or "https://www.zohoapis.com").rstrip("/")
        self.http = ZohoHttpClient(SYSTEM, _api_base(fallback), self.auth, policy, sleep)
        self._fields: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def from_config(cls, cfg: CrmConfig, policy: RetryPolicy | None = None) -> "ZohoCrmConnector":
        creds = cfg.credentials

        def literal(key: str) -> str | None:  # endpoints: written literally or as {env: …}
            value = creds.get(key)
            return value.get() if isinstance(value, Secret) else value

        return cls(client_id=creds["client_id"].get(), client_secret=creds["client_secret"].get(),
                   refresh_token=creds["refresh_token"].get(), accounts_url=literal("accounts_url"),
                   api_domain=literal("api_domain"), base_url=cfg.base_url, policy=policy)

    @property
    def credits(self) -> int:
        """API credits used by this connector (most v8 calls cost one)."""
        return self.http.credits

    # ---- HTTP ---------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        if self._pinned_domain is None:
            domain = self.auth.api_domain  # the data centre's API host, from the token response
            if domain:
                self.http.base_url = _api_base(domain.rstrip("/"))
        return self.http.request(method, path, ok=ok, **kwargs)

    def _get(self, path: str, params: dict[str, Any], since: datetime | None = None, *,
             inclusive: bool = False) -> dict[str, Any] | None:
        """One GET; None for 204/304 (empty bodies, never parsed)."""
        headers = {"If-Modified-Since": _ims(since, inclusive=inclusive)} if since is not None else {}
        resp = self._call("GET", path, ok=(200, 204, 304), params=params, headers=headers)
        if resp.status_code != 200 or not resp.content:
            return None
        return resp.json()

    # ---- discovery ------------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        return self._get("users", {"type": "CurrentUser"}) or {}

    def fields(self, module: str) -> list[dict[str, Any]]:
        """Field metadata of a module (cached per connector; metadata may answer 204)."""
        module = _module(module)
        if module not in self._fields:
            body = self._get("settings/fields", {"module": module}) or {}
            self._fields[module] = [f for f in body.get("fields") or [] if f.get("api_name")]
        return self._fields[module]

    def custom_fields(self, entity: str) -> dict[str, dict[str, Any]]:
        """Custom field definitions keyed by api_name (api names survive relabelling)."""
        if entity not in MODULES:
            return {}
        return {f["api_name"]: f for f in self.fields(entity) if f.get("custom_field")}

    def unknown_fields(self, entity: str, fields: list[str]) -> list[str]:
        """Configured fields whose api name (before any `.id`) the module's metadata lacks."""
        if entity not in MODULES:
            return []
        known = {f["api_name"] for f in self.fields(entity)} | set(KEY_FIELDS)
        return [f for f in fields if f.split(".")[0] not in known]

    def field_batches(self, module: str) -> list[list[str]]:
        """Every api_name of the module in batches of ≤50, each holding `id` and `Modified_Time`.
        A polymorphic lookup (`What_Id`) is useless without `$se_module`, the module it points
        to: that system key is not in the metadata, so it is asked for next to the lookup."""
        names: list[str] = []
        for f in self.fields(module):
            if f["api_name"] not in KEY_FIELDS:
                names.append(f["api_name"])
                if f["api_name"] == "What_Id":
                    names.append("$se_module")
        size = MAX_FIELDS - len(KEY_FIELDS)
        chunks = [names[i:i + size] for i in range(0, len(names), size)] or [[]]
        return [[*KEY_FIELDS, *chunk] for chunk in chunks]

    # ---- streams --------------------------------------------------------------------------------
    def stream(self, entity: str, since: datetime | None) -> Iterator[Page]:
        """Pages of records changed at or after `since` (everything when None)."""
        if entity == "users":
            return self._users(since)
        if entity not in MODULES:
            raise ValueError(f"zoho_crm: unknown entity {entity!r}")
        return self._records(MODULES[entity], since)

    def _records(self, module: str, since: datetime | None) -> Iterator[Page]:
        if since is not None:
            # probe: one record's key fields. 304/204 = nothing changed, for one credit.
            probe = self._get(module, {"fields": ",".join(KEY_FIELDS), "per_page": 1,
                                       "sort_by": "Modified_Time", "sort_order": "asc"}, since)
            if not probe or not probe.get("data"):
                return
        driving, *others = self.field_batches(module)
        # Incremental: oldest change first (the contract's Modified_Time order). Full: by id, so
        # edits made during the walk do not move records between pages.
        order = {"sort_by": "Modified_Time" if since is not None else "id", "sort_order": "asc"}
        for rows in self._walk(module, {"fields": ",".join(driving), **order}, since):
            merged = {str(r["id"]): dict(r) for r in rows}
            for batch in others:
                self._complete(module, batch, merged)
            yield [self._record(r) for r in merged.values()]

    def _walk(self, module: str, params: dict[str, Any], since: datetime | None) -> Iterator[list[dict[str, Any]]]:
        """Pages of the driving batch: `page` 1..10 (2,000 records), then `page_token`."""
        page, token = 1, None
        while True:
            query = {**params, "per_page": PER_PAGE, **({"page_token": token} if token else {"page": page})}
            body = self._get(module, query, since)
            rows = (body or {}).get("data") or []
            if rows:
                yield rows
            info = (body or {}).get("info") or {}
            if not rows or not info.get("more_records"):
                return
            if token is None and page * PER_PAGE < DISCRETE_RECORDS:
                page += 1
                continue
            token = info.get("next_page_token")
            if not token:
                raise ApiError(SYSTEM, "GET", self.http.url(module), 200,
                               f"more than {DISCRETE_RECORDS} records but no next_page_token to continue")

    def _complete(self, module: str, batch: list[str], merged: dict[str, dict[str, Any]]) -> None:
        """Fetch one more field batch for the ids of a page and merge it in. A record changed
        since the driving page was read keeps the driving page's Modified_Time (the older one),
        so the next routine sync reads it again; one deleted meanwhile keeps the fields it had."""
        ids = list(merged)
        for i in range(0, len(ids), IDS_PER_REQUEST):
            chunk = ids[i:i + IDS_PER_REQUEST]
            body = self._get(module, {"fields": ",".join(batch), "ids": ",".join(chunk), "per_page": PER_PAGE})
            for row in (body or {}).get("data") or []:
                target = merged.get(str(row.get("id")))
                if target is not None:
                    target.update({k: v for k, v in row.items() if k not in KEY_FIELDS})

    def _users(self, since: datetime | None) -> Iterator[Page]:
        page = 1
        while True:
            body = self._get("users", {"type": "AllUsers", "page": page, "per_page": PER_PAGE}, since)
            rows = (body or {}).get("users") or []
            if rows:
                yield [Record(str(u["id"]), parse_timestamp(u.get("Modified_Time")), u) for u in rows]
            if not rows or not ((body or {}).get("info") or {}).get("more_records"):
                return
            page += 1

    def deletions(self, entity: str, since: datetime | None) -> Iterator[list[tuple[str, datetime | None]]]:
        """Records Zoho reports deleted (recycle bin and permanent) since `since`, with their
        deletion time in UTC. Users are never deleted this way (the full-sync diff handles them)."""
        if entity not in MODULES:
            return
        module = MODULES[entity]
        page = 1
        while True:
            body = self._get(f"{module}/deleted", {"type": "all", "page": page, "per_page": PER_PAGE}, since,
                             inclusive=True)
            rows = (body or {}).get("data") or []
            batch = [(str(r["id"]), parse_timestamp(r.get("deleted_time"))) for r in rows if r.get("id")]
            if batch:
                yield batch
            if not rows or not ((body or {}).get("info") or {}).get("more_records"):
                return
            page += 1

    # ---- writes ---------------------------------------------------------------------------------
    def update_record(self, module: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`PUT /{Module}/{id}` with `{"data": [{...}]}`; returns the result's `details` (id,
        Modified_Time, …). A refused record raises ApiError with Zoho's code and the field."""
        module = _module(module)
        path = f"{module}/{record_id}"
        resp = self._call("PUT", path, ok=(200, 201, 202, 207, 400), json={"data": [dict(fields)]})
        try:
            results = resp.json().get("data") or []
        except (ValueError, AttributeError):
            results = []
        result = results[0] if results and isinstance(results[0], dict) else {}
        if result.get("status") != "success":
            details = result.get("details") or {}
            where = f" (field {details['api_name']})" if isinstance(details, dict) and details.get("api_name") else ""
            raise ApiError(SYSTEM, "PUT", self.http.url(path), resp.status_code,
                           f"{result.get('code') or 'update refused'}: {result.get('message') or ''}{where}")
        return result.get("details") or {}

    # ---- records --------------------------------------------------------------------------------
    @staticmethod
    def _record(row: dict[str, Any]) -> Record:
        return Record(str(row["id"]), parse_timestamp(row.get("Modified_Time")), row)


def _api_base(domain: str) -> str:
    """`https://www.zohoapis.eu` → `https://www.zohoapis.eu/crm/v8` (an API path already given stays)."""
    return domain if urlsplit(domain).path.rstrip("/").startswith("/crm/") else domain + API_PATH
