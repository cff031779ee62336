"""Zoho CRM API v8 adapter. Plain Python on the shared HTTP core.

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

Incremental reads send `If-Modified-Since` at the second `since` falls in (the contract leaves
open whether servers filter inclusively or strictly after, so the header never skips ahead) and
walk by id like full reads; 304/204 mean no records (their bodies are empty and never parsed). A
routine read first probes for the newest change, so "nothing changed" costs one credit per module
(no field metadata, no batches). Deletions come from `/{Module}/deleted`. Every walk stops on a
repeated page or page token (a server that ignores `page` cannot loop it), and a missing
`more_records` counts as "more" only after a full page. A field the server refuses in `fields`
(400 naming it, e.g. the `$se_module` system key) is dropped for the rest of the run instead of
failing the sync. Calls are sequential (concurrency 1, well within every edition's limit);
`credits` counts the billable API calls for the run ledger.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

from cz_pipeline.config.tenants import CrmConfig, Secret
from cz_pipeline.core.http import ApiError, AuthError, AuthStrategy, HttpClient, Page, Record, RetryPolicy, _error_text, parse_timestamp

log = logging.getLogger(__name__)

SYSTEM = "zoho_crm"
API_PATH = "/crm/v8"
DEFAULT_ACCOUNTS_URL = "https://accounts.zoho.com"
TOKEN_PATH = "/oauth/v2/token"
MODULES = {"leads": "Accounts", "contacts": "Contacts", "deals": "Deals", "tasks": "Tasks"}
MAX_FIELDS = 50  # v8 limit on `fields`
PER_PAGE = 200
DISCRETE_PAGES = 10  # `page` 1..10 (2,000 records at 200); `page_token` goes on from there
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
            # the refresh throttle is documented as HTTP 400 "Access Denied"; the accounts server
            # reports most other failures as HTTP 200 + error, so a 200 "Access Denied" is the
            # same throttle (waiting helps), not a revoked grant
            throttled = str(error).lower() == "access denied"
            if throttled:
                if attempt < TOKEN_THROTTLE_ATTEMPTS:
                    # "You have made too many requests continuously": wait, then try again
                    self.sleep(min(self.policy.max_rate_limit_wait, 5.0 * 2 ** (attempt - 1)))
                    continue
                # not AuthError: a throttle passes, so the run may be retried later
                raise ApiError(SYSTEM, "POST", self.token_url, resp.status_code,
                               f"the accounts server still throttles token refreshes after {attempt} attempts")
            if resp.status_code == 400 and not error:
                raise ApiError(SYSTEM, "POST", self.token_url, 400, "token refresh failed (bad request)")
            if error or not body.get("access_token"):
                # Zoho reports a bad, expired or revoked refresh token as HTTP 200 {"error": "invalid_code"};
                # an OAuth-style 400 {"error": "invalid_code"|"invalid_client"|…} means the same
                raise AuthError(SYSTEM, "POST", self.token_url, resp.status_code,
                                f"the Zoho accounts server refused the refresh token ({_safe(error) or 'no access_token'}); "
                                "the grant was revoked or the client credentials are wrong: re-authorize the "
                                "Zoho connection and update the tenant's credentials")
            try:
                expires_in = float(body.get("expires_in") or 3600)
            except (TypeError, ValueError):
                expires_in = 3600.0  # the documented lifetime; a 401 INVALID_TOKEN refreshes anyway
            return str(body["access_token"]), self.clock() + expires_in, body.get("api_domain")
        raise AssertionError("unreachable")  # pragma: no cover


def _safe(value: Any) -> str:
    """An error code from the accounts server, short and printable (never a token)."""
    text = str(value or "")
    return text[:60] if text.replace("_", "").replace(" ", "").isalnum() else ""


def _second(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def _ims(moment: datetime) -> str:
    """`If-Modified-Since` (ISO with offset) at the whole second `moment` falls in. Airbyte adds a
    second because real Zoho filters inclusively, but the contract's verified wording is
    "modified after", and either reading may be implemented: on a strict
    server `since + 1s` would silently skip everything changed in the second after `since`.
    Flooring is safe under both readings; what an inclusive server sends again is merged as a
    no-op, and `_records` keeps an unchanged module at one 304-or-probe credit."""
    return _second(moment).isoformat(timespec="seconds")


def _more(info: dict[str, Any], rows: list[Any]) -> bool:
    """`info.more_records`; a server that leaves it out has more only after a full page."""
    more = info.get("more_records")
    if more is not None:
        return str(more).lower() in ("true", "1")
    try:
        return len(rows) >= int(info.get("per_page") or PER_PAGE)
    except (TypeError, ValueError):
        return len(rows) >= PER_PAGE


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
        self.refused_fields: dict[str, set[str]] = {}  # module -> api names the server refused in `fields`

    @classmethod
    def from_config(cls, cfg: CrmConfig, policy: RetryPolicy | None = None, context: Any = None) -> "ZohoCrmConnector":
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

    def _get(self, path: str, params: dict[str, Any], since: datetime | None = None) -> dict[str, Any] | None:
        """One GET; None for 204/304 (empty bodies, never parsed)."""
        return self._body(self._send(path, params, since, ok=(200, 204, 304)))

    def _send(self, path: str, params: dict[str, Any], since: datetime | None,
              ok: tuple[int, ...]) -> requests.Response:
        headers = {"If-Modified-Since": _ims(since)} if since is not None else {}
        return self._call("GET", path, ok=ok, params=params, headers=headers)

    def _body(self, resp: requests.Response) -> dict[str, Any] | None:
        if resp.status_code != 200 or not resp.content.strip():
            return None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):  # a clear error instead of a JSONDecodeError deep in a walk
            raise ApiError(SYSTEM, "GET", resp.url, 200, "the answer is not a JSON object")
        return body

    def _list(self, path: str, fields: list[str], params: dict[str, Any],
              since: datetime | None = None) -> dict[str, Any] | None:
        """A GET that carries `fields`. The contract only says `fields` takes API names; an
        implementation that validates them may refuse one we ask for (`$se_module` is a system
        key, not a metadata field). A 400 naming a field drops that field for the rest of the
        run (logged, never silent) instead of failing the whole module; other 400s still fail."""
        module = path.split("/")[0]
        refused = self.refused_fields.setdefault(module, set())
        while True:
            wanted = [f for f in fields if f not in refused]
            resp = self._send(path, {**params, "fields": ",".join(wanted)}, since, ok=(200, 204, 304, 400))
            if resp.status_code != 400:
                return self._body(resp)
            bad = _refused_field(resp, wanted)
            if bad is None:
                raise ApiError(SYSTEM, "GET", resp.url, 400, _error_text(resp))
            log.warning("zoho_crm: %s refuses field %r in `fields`; reading the module without it", module, bad)
            refused.add(bad)

    # ---- discovery ------------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        return self._get("users", {"type": "CurrentUser"}) or {}

    def fields(self, module: str) -> list[dict[str, Any]]:
        """Field metadata of a module (cached per connector). Metadata may answer 204 (contract
        2.9 #9); reading on with no field list would land bare `{id, Modified_Time}` payloads over
        the good ones (and a full sync would still count every record as seen), so it fails."""
        module = _module(module)
        if module not in self._fields:
            body = self._get("settings/fields", {"module": module}) or {}
            fields = [f for f in body.get("fields") or [] if isinstance(f, dict) and f.get("api_name")]
            if not fields:
                raise ApiError(SYSTEM, "GET", self.http.url("settings/fields"), None,
                               f"no field metadata for module {module}: cannot choose the fields to read")
            self._fields[module] = fields
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
        to: that system key is not in the metadata, so it is asked for next to the lookup (a
        server that refuses it gets the request again without it, see `_list`)."""
        names: list[str] = []
        for f in self.fields(module):
            if f["api_name"] not in KEY_FIELDS:
                names.append(f["api_name"])
                if f["api_name"] == "What_Id":
                    names.append("$se_module")
        names = list(dict.fromkeys(names))  # a name listed twice would count twice against the 50
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
        if since is not None and not self._changed_after(module, since):
            return
        driving, *others = self.field_batches(module)
        # By id, incremental or full: an edit made during the walk moves a record to the end of a
        # Modified_Time order, shifting every later record one place back and so skipping the one
        # at the next page boundary (its older Modified_Time then falls behind the cursor for good).
        # In id order edits never move records; only a record entering the window adds a duplicate.
        order = {"sort_by": "id", "sort_order": "asc"}
        for rows in self._walk(module, driving, order, since):
            merged = {str(r["id"]): dict(r) for r in rows if r.get("id") is not None}
            for batch in others:
                self._complete(module, batch, merged)
            yield [self._record(r) for r in merged.values()]

    def _changed_after(self, module: str, since: datetime) -> bool:
        """The probe: the newest change in the window, key fields only, one credit. 304/204 =
        nothing changed. An inclusive server also returns what sits exactly on the floored
        `since` second; when nothing is newer than that second, that is what the previous run
        landed (the engine's `since` is a landed Modified_Time minus the overlap), so the module
        counts as unchanged, as Airbyte's +1 s would have it, without risking a strict server's
        next second. Newest-first and the max over rows: right even if `per_page` is ignored."""
        probe = self._list(module, list(KEY_FIELDS),
                           {"per_page": 1, "sort_by": "Modified_Time", "sort_order": "desc"}, since)
        rows = (probe or {}).get("data") or []
        floor = _second(since)
        stamps = [parse_timestamp(r.get("Modified_Time")) for r in rows if isinstance(r, dict)]
        return any(stamp is None or stamp > floor for stamp in stamps)

    def _walk(self, module: str, fields: list[str], params: dict[str, Any],
              since: datetime | None) -> Iterator[list[dict[str, Any]]]:
        """Pages of the driving batch: `page` 1..10 (2,000 records), then `page_token`. Ends on
        `more_records` false, an empty page or 204/304; fails (never spins) when the server repeats
        a page or a token, or says there is more without a token to get it."""
        page, token, previous, tokens = 1, None, None, set()
        while True:
            query = {**params, "per_page": PER_PAGE, **({"page_token": token} if token else {"page": page})}
            body = self._list(module, fields, query, since)
            rows = (body or {}).get("data") or []
            ids = [str(r.get("id")) for r in rows]
            if rows and ids == previous:
                raise ApiError(SYSTEM, "GET", self.http.url(module), 200,
                               f"page {page} repeats the previous page's records: the walk would never end")
            if rows:
                yield rows
            info = (body or {}).get("info") or {}
            if not rows or not _more(info, rows):
                return
            previous = ids
            if token is None and page < DISCRETE_PAGES:
                page += 1
                continue
            token = info.get("next_page_token")
            if not token:
                raise ApiError(SYSTEM, "GET", self.http.url(module), 200,
                               f"more than {DISCRETE_PAGES} pages but no next_page_token to continue")
            if token in tokens:
                raise ApiError(SYSTEM, "GET", self.http.url(module), 200,
                               "next_page_token repeats an earlier one: the walk would never end")
            tokens.add(token)  # ≤ 500 tokens: Zoho stops page_token walks at 100,000 records

    def _complete(self, module: str, batch: list[str], merged: dict[str, dict[str, Any]]) -> None:
        """Fetch one more field batch for the ids of a page and merge it in. A record changed
        since the driving page was read keeps the driving page's Modified_Time (the older one),
        so the next routine sync reads it again; one deleted meanwhile keeps the fields it had.
        An answer that is not limited to the ids asked for (a server ignoring `ids`) or that
        says there are more records leaves the ids it lacks to one-record reads, so a record
        is never landed with a field batch silently missing."""
        ids = list(merged)
        unsure: list[str] = []
        for i in range(0, len(ids), IDS_PER_REQUEST):
            chunk = ids[i:i + IDS_PER_REQUEST]
            asked = set(chunk)
            body = self._list(module, batch, {"ids": ",".join(chunk), "per_page": PER_PAGE})
            rows = (body or {}).get("data") or []
            got = set()
            for row in rows:
                rid = str(row.get("id"))
                if rid in asked:
                    merged[rid].update({k: v for k, v in row.items() if k not in KEY_FIELDS})
                    got.add(rid)
            if len(got) < len(asked) and (len(got) < len(rows) or _more((body or {}).get("info") or {}, rows)):
                unsure.extend(r for r in chunk if r not in got)
        for rid in unsure:
            body = self._list(f"{module}/{rid}", batch, {})
            for row in (body or {}).get("data") or []:
                if str(row.get("id")) == rid:
                    merged[rid].update({k: v for k, v in row.items() if k not in KEY_FIELDS})

    def _pages(self, path: str, params: dict[str, Any], key: str,
               since: datetime | None) -> Iterator[list[dict[str, Any]]]:
        """`page`/`per_page` listings (`/users`, `/{Module}/deleted`): ends on `more_records` false,
        an empty page or 204/304; fails instead of looping when a page repeats the previous one
        (a server ignoring `page` while saying there is more)."""
        page, previous = 1, None
        while True:
            body = self._get(path, {**params, "page": page, "per_page": PER_PAGE}, since)
            rows = [r for r in (body or {}).get(key) or [] if isinstance(r, dict)]
            ids = [str(r.get("id")) for r in rows]
            if rows and ids == previous:
                raise ApiError(SYSTEM, "GET", self.http.url(path), 200,
                               f"page {page} repeats the previous page's records: the walk would never end")
            if rows:
                yield rows
            if not rows or not _more((body or {}).get("info") or {}, rows):
                return
            previous = ids
            page += 1

    def _users(self, since: datetime | None) -> Iterator[Page]:
        for rows in self._pages("users", {"type": "AllUsers"}, "users", since):
            page = [Record(str(u["id"]), parse_timestamp(u.get("Modified_Time")), u) for u in rows if u.get("id")]
            if page:
                yield page

    def deletions(self, entity: str, since: datetime | None) -> Iterator[list[tuple[str, datetime | None]]]:
        """Records Zoho reports deleted (recycle bin and permanent) since `since`, with their
        deletion time in UTC. Users are never deleted this way (the full-sync diff handles them)."""
        if entity not in MODULES:
            return
        for rows in self._pages(f"{MODULES[entity]}/deleted", {"type": "all"}, "data", since):
            batch = [(str(r["id"]), parse_timestamp(r.get("deleted_time"))) for r in rows if r.get("id")]
            if batch:
                yield batch

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


def _refused_field(resp: requests.Response, wanted: list[str]) -> str | None:
    """The field a 400 answer to a `fields` request refuses, when it can be told: the error's
    `details.api_name` or `details.param_name` naming a requested field, or, for an error about
    `fields` as a whole, the one requested name that is not a metadata field (`$se_module`)."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("code") not in ("INVALID_DATA", "INVALID_FIELD", "PATTERN_NOT_MATCHED"):
        return None
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    for key in ("api_name", "param_name", "field"):
        if details.get(key) in wanted:
            return str(details[key])
    if details.get("param_name") in (None, "fields") and "$se_module" in wanted:
        return "$se_module"
    return None


def _api_base(domain: str) -> str:
    """`https://www.zohoapis.eu` → `https://www.zohoapis.eu/crm/v8` (an API path already given stays)."""
    return domain if urlsplit(domain).path.rstrip("/").startswith("/crm/") else domain + API_PATH
