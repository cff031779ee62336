"""The shared HTTP core of every connector: one `requests` session per connector with retries and
backoff on 5xx/timeouts, rate-limit handling (429 + `Retry-After`, Close's `RateLimit` header,
Teamwork's `X-Rate-Limit-*`), proactive pacing when a vendor says no requests remain, a hook
for auth refresh, and errors that never carry a secret (no headers, no query strings).

Plain Python, no Dagster imports.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

log = logging.getLogger(__name__)
_LIMIT_HEADERS = ("retry-after", "ratelimit", "x-ratelimit", "sforce-limit")

RETRYABLE_STATUS = {500, 502, 503, 504}
DEEP_JSON_RECURSION_LIMIT = 6000  # decoding depth allowed for a page; records deeper than the
# engine's serialisation limit are then quarantined one by one
_RATELIMIT_PART = re.compile(r"(limit|remaining|reset)\s*=\s*(\d+(?:\.\d+)?)")


def _close_ratelimit(header: str) -> tuple[float, float, float] | None:
    """Close's `RateLimit: limit=100, remaining=50, reset=5`, its keys in any order."""
    parts = {k: float(v) for k, v in _RATELIMIT_PART.findall(header or "")}
    if not {"remaining", "reset"} <= parts.keys():
        return None
    return parts.get("limit", 0.0), parts["remaining"], parts["reset"]


class ApiError(RuntimeError):
    """A vendor API call failed for good. The message names the system and the call, never a secret."""

    def __init__(self, system: str, method: str, url: str, status: int | None, detail: str):
        self.system, self.status = system, status
        super().__init__(f"{system}: {method} {_path(url)} failed" + (f" with HTTP {status}" if status else "") + f": {detail}")


class AuthError(ApiError):
    """Credentials were refused: stop the tenant's sync, never retry in a loop."""


class AllowanceExhausted(ApiError):
    """The vendor's request allowance is used up (or the share we may use of it): stop the sync
    now; retrying before the allowance recovers only spends what is left."""


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_rate_limit_wait: float = 120.0
    timeout: float = 60.0


class AuthStrategy:
    """How a connector authenticates. `apply` decorates each request; `refresh` is called once
    after a 401 and returns True if a retry with new credentials makes sense."""

    def apply(self, session: requests.Session, headers: dict[str, str]) -> None:
        pass

    def refresh(self, response: requests.Response) -> bool:
        return False


def rate_limit_wait(response: requests.Response) -> float | None:
    """Seconds the vendor asks us to wait, from whichever header it uses (None if none)."""
    h = response.headers
    m = _close_ratelimit(h.get("RateLimit", ""))
    if m and response.status_code == 429:
        return m[2]
    for name in ("Retry-After", "RateLimit-Reset"):
        value = h.get(name)
        if value:
            try:
                return float(value)
            except ValueError:
                try:  # HTTP-date form of Retry-After
                    from email.utils import parsedate_to_datetime
                    return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
                except (TypeError, ValueError):
                    pass
    reset = h.get("X-Rate-Limit-Reset")
    if reset:
        return _reset_seconds(reset)
    if m:
        return m[2]
    return None


def _reset_seconds(value: str) -> float | None:
    """Teamwork documents X-Rate-Limit-Reset ambiguously: accept an epoch second or a delay."""
    try:
        number = float(value)
    except ValueError:
        return None
    if number > 1_000_000_000:  # an epoch timestamp
        return max(0.0, number - time.time())
    return max(0.0, number)


def pacing_wait(response: requests.Response) -> float:
    """Seconds to pause before the next call when the vendor reports no requests remaining."""
    h = response.headers
    m = _close_ratelimit(h.get("RateLimit", ""))
    if m and m[1] <= 0:
        return m[2]
    remaining = h.get("X-Rate-Limit-Remaining")
    if remaining is not None and remaining.strip().lstrip("-").isdigit() and int(remaining) <= 0:
        return _reset_seconds(h.get("X-Rate-Limit-Reset", "")) or 1.0
    return 0.0


class HttpClient:
    def __init__(self, system: str, base_url: str, auth: AuthStrategy | None = None,
                 policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 json_bodies: bool = True):
        self.system = system
        self.base_url = base_url.rstrip("/")
        self.auth = auth or AuthStrategy()
        self.policy = policy or RetryPolicy()
        self.session = requests.Session()
        self.sleep = sleep
        self.calls = 0  # requests sent, for the run ledger
        self.throttled = 0  # 429s received
        self.json_bodies = json_bodies  # successful answers must be JSON (retried when not)
        self._pause_until = 0.0
        self._secrets: set[str] = set()

    def add_secret(self, value: str | None) -> None:
        """A value that must never appear in an error (refresh tokens, client secrets)."""
        if value and len(value) >= 4:
            self._secrets.update({value, base64.b64encode(value.encode()).decode(),
                                  base64.b64encode(f"{value}:".encode()).decode()})

    def _remember_secrets(self, headers: dict[str, str]) -> None:
        # Whatever the auth strategy sent (header token, Basic credentials) is secret, even if a
        # vendor's error body echoes it back.
        for name, value in headers.items():
            if name.lower() in ("authorization", "x-api-key", "api-key") and value:
                self.add_secret(value)
                self.add_secret(value.split(" ", 1)[-1])
        auth = self.session.auth
        if isinstance(auth, tuple):
            for part in auth:
                self.add_secret(part)
            self.add_secret(":".join(auth))

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _error(self, exc: ApiError) -> ApiError:
        exc.args = (self.redact(str(exc)),)
        return exc

    def _decode(self, resp: requests.Response) -> bool:
        """Parse a JSON answer once (callers' `resp.json()` returns the parsed body); False when
        the body is not JSON. Deeply nested records parse too, so that the engine can set the
        one record aside instead of losing the page."""
        if resp.status_code == 204 or not resp.content:
            return True
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, DEEP_JSON_RECURSION_LIMIT))
        try:
            body = json.loads(resp.content)
        except (ValueError, RecursionError):
            return False
        finally:
            sys.setrecursionlimit(limit)
        resp.json = lambda **_: body  # type: ignore[method-assign]
        return True

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """Send one logical request, retrying what is transient. Returns a response whose status
        is in `ok`; raises AuthError on refused credentials and ApiError on anything else."""
        url = self.url(path)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            wait = self._pause_until - time.monotonic()
            if wait > 0:
                self.sleep(wait)
            headers = dict(kwargs.pop("headers", None) or {})
            self.auth.apply(self.session, headers)
            self._remember_secrets(headers)
            try:
                self.calls += 1
                resp = self.session.request(method, url, headers=headers, timeout=self.policy.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                kwargs["headers"] = headers
                if attempt >= self.policy.max_attempts:
                    raise self._error(ApiError(self.system, method, url, None,
                                               f"{type(exc).__name__} after {attempt} attempts")) from None
                log.info("%s: %s %s failed (%s); retry %d of %d", self.system, method, _path(url),
                         type(exc).__name__, attempt, self.policy.max_attempts - 1)
                self._backoff(attempt)
                continue
            kwargs["headers"] = headers
            pause = pacing_wait(resp)
            if pause:
                self._pause_until = time.monotonic() + min(pause, self.policy.max_rate_limit_wait)
                log.info("%s: pausing %.1fs before the next call: no requests left (%s)", self.system,
                         min(pause, self.policy.max_rate_limit_wait), _limit_header_text(resp))
            if resp.status_code in ok:
                if not self.json_bodies or self._decode(resp):
                    return resp
                # A truncated body, a non-JSON answer or an HTML page with status 200: transient
                # on every vendor we know (a proxy or a half-sent answer), so retried like a 5xx.
                if attempt < self.policy.max_attempts:
                    log.info("%s: %s %s answered invalid JSON (%s); retry %d of %d", self.system, method,
                             _path(url), _content_kind(resp), attempt, self.policy.max_attempts - 1)
                    self._backoff(attempt)
                    continue
                raise self._error(ApiError(self.system, method, url, resp.status_code,
                                           f"the answer was not valid JSON after {attempt} attempts "
                                           f"(truncated, or an HTML page: {_content_kind(resp)})"))
            if resp.status_code == 401 and not refreshed and self.auth.refresh(resp):
                refreshed = True
                continue
            if resp.status_code in (401, 403) and self._is_auth_failure(resp):
                raise self._error(AuthError(self.system, method, url, resp.status_code,
                                            "credentials were refused; the tenant's sync stops until they are fixed "
                                            f"({_error_text(resp)})"))
            if resp.status_code == 429:
                self.throttled += 1
                if attempt >= self.policy.max_attempts * 2:
                    raise self._error(ApiError(self.system, method, url, 429, "still rate limited after repeated waits"))
                wait_s = rate_limit_wait(resp)
                wait_s = min(wait_s if wait_s is not None else 2.0 ** min(attempt, 5), self.policy.max_rate_limit_wait)
                log.info("%s: rate limited on %s %s (429); waiting %.1fs (%s)", self.system, method,
                         _path(url), wait_s, _limit_header_text(resp))
                self.sleep(wait_s)
                continue
            if resp.status_code in RETRYABLE_STATUS and attempt < self.policy.max_attempts:
                log.info("%s: %s %s answered %s; retry %d of %d", self.system, method, _path(url),
                         resp.status_code, attempt, self.policy.max_attempts - 1)
                self._backoff(attempt)
                continue
            raise self._error(ApiError(self.system, method, url, resp.status_code, _error_text(resp)))

    def _is_auth_failure(self, resp: requests.Response) -> bool:
        return resp.status_code == 401 or "auth" in _error_text(resp).lower() or "token" in _error_text(resp).lower()

    def _backoff(self, attempt: int) -> None:
        delay = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempt - 1))
        self.sleep(delay * (0.5 + random.random() / 2))

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()


def _path(url: str) -> str:
    """The path of a URL for errors and logs: never its query (it may hold tokens, e.g. a Zoho
    refresh, or personal data)."""
    return urlsplit(url).path


def _limit_header_text(resp: requests.Response) -> str:
    found = [f"{k}: {v}" for k, v in resp.headers.items() if k.lower().startswith(_LIMIT_HEADERS)]
    return "; ".join(found) or "no rate-limit header"


def _content_kind(resp: requests.Response) -> str:
    kind = (resp.headers.get("Content-Type") or "no content type").split(";")[0]
    return f"{kind}, {len(resp.content)} bytes"


def _error_text(resp: requests.Response, limit: int = 300) -> str:
    """A short, secret-free description of an error body."""
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "")[:limit]
    if isinstance(body, dict):
        for key in ("message", "error", "errors", "code"):
            if body.get(key):
                return str(body[key])[:limit]
    return str(body)[:limit]


def parse_timestamp(value: Any) -> datetime | None:
    """Tolerant ISO-8601 parse to an aware UTC datetime: `Z`, `+00:00`, `+0000`, `+05:30`, µs or
    not; naive values are UTC (Close event log). None for empty or unparseable values."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):  # Salesforce: +0000
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00:00+05:00 leaves the datetime range
        return None


@dataclass(frozen=True)
class Record:
    """One source record as landed: its id, its change time (UTC) and the full payload."""

    source_id: str
    updated_at: datetime | None
    payload: dict[str, Any]
    # Set by a connector that could not read the record properly (e.g. no id, a timestamp out
    # of range): the engine then quarantines it instead of landing it.
    problem: str | None = None


def record_from(row: dict[str, Any], system: str, *stamp_fields: str, id_field: str = "id") -> Record:
    """A Record from a vendor row, never raising: a missing/null id or an unreadable change
    time becomes the record's `problem` (the engine sets such records aside)."""
    raw_id = row.get(id_field)
    stamp_field = next((f for f in stamp_fields if row.get(f)), None)
    updated = parse_timestamp(row.get(stamp_field)) if stamp_field else None
    problem = None
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        problem = f"{id_field}: missing or null"
    elif isinstance(raw_id, (dict, list)):
        problem = f"{id_field}: not a scalar"
    elif stamp_field and updated is None and isinstance(row.get(stamp_field), str):
        problem = f"{stamp_field}: not a timestamp that can be normalised to UTC"
    return Record("" if raw_id is None else str(raw_id), updated, row, problem)


Page = list[Record]
PageStream = Iterator[Page]
