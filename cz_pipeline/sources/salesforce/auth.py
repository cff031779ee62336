"""Salesforce OAuth 2.0 refresh-token grant and the store that keeps rotated refresh tokens.

`POST {login_url}/services/oauth2/token` (production `https://login.salesforce.com`, sandbox orgs
`https://test.salesforce.com`, or a My Domain host) answers an access token and the
`instance_url` every API call must go to. The answer has no expiry: the HTTP core calls
`refresh()` once after a 401 `INVALID_SESSION_ID` and retries once. When the org rotates refresh
tokens the answer carries a new one; it is saved in the `TokenStore` and used from then on (the
configured one is only the first). `invalid_grant` raises `ReauthorizationRequired` and calls the
`on_auth_invalid` hook once, so the caller can notify the tenant's admins.

Tokens never appear in logs, messages or exceptions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

import requests

from cz_pipeline.core.http import ApiError, AuthError, AuthStrategy, HttpClient, RetryPolicy

SYSTEM = "salesforce"
DEFAULT_LOGIN_URL = "https://login.salesforce.com"
SANDBOX_LOGIN_URL = "https://test.salesforce.com"
TOKEN_PATH = "/services/oauth2/token"


class ReauthorizationRequired(AuthError):
    """The refresh token was refused (`invalid_grant`): someone must re-authorise the integration."""


class TokenStore(Protocol):
    """Where a rotated refresh token lives between runs, keyed by an opaque grant key (a hash
    of the login host, client id and the configured refresh token: no secret in the key)."""

    def load(self, key: str) -> str | None: ...

    def save(self, key: str, refresh_token: str) -> None: ...


class MemoryTokenStore:
    """Process-local store (tests, one-off runs)."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}

    def load(self, key: str) -> str | None:
        return self._tokens.get(key)

    def save(self, key: str, refresh_token: str) -> None:
        self._tokens[key] = refresh_token


def grant_key(login_url: str, client_id: str, refresh_token: str) -> str:
    return hashlib.sha256("\0".join((login_url, client_id, refresh_token)).encode()).hexdigest()


class SalesforceOAuth(AuthStrategy):
    """Bearer sessions from the refresh-token grant; `instance_url` from the token answer."""

    def __init__(self, *, login_url: str | None, client_id: str, client_secret: str, refresh_token: str,
                 store: TokenStore | None = None, policy: RetryPolicy | None = None,
                 on_auth_invalid: Callable[[str], None] | None = None):
        self.login_url = (login_url or DEFAULT_LOGIN_URL).rstrip("/")
        if self.login_url.endswith(TOKEN_PATH):
            self.login_url = self.login_url[: -len(TOKEN_PATH)]
        self._client = (client_id, client_secret)
        self._configured_refresh = refresh_token
        self.key = grant_key(self.login_url, client_id, refresh_token)
        self.store = store or MemoryTokenStore()
        self.on_auth_invalid = on_auth_invalid
        self.login = HttpClient(SYSTEM, self.login_url, None, policy)  # no Authorization header
        self._session: str | None = None
        self.instance_url: str | None = None
        self.refreshes = 0  # token requests made
        self._notified = False

    @property
    def refresh_token(self) -> str:
        return self.store.load(self.key) or self._configured_refresh

    def session(self) -> str:
        if self._session is None:
            self._request_token()
        return self._session or ""

    def apply(self, session: requests.Session, headers: dict[str, str]) -> None:
        headers["Authorization"] = f"Bearer {self.session()}"

    def refresh(self, response: requests.Response) -> bool:
        """Once per call after a 401: a new session helps for INVALID_SESSION_ID only."""
        if _error_code(response) not in ("INVALID_SESSION_ID", None):
            return False
        self._session = None
        self._request_token()
        return True

    def _request_token(self) -> None:
        self.refreshes += 1
        client_id, client_secret = self._client
        resp = self.login.request("POST", TOKEN_PATH, ok=(200, 400, 401), data={
            "grant_type": "refresh_token", "client_id": client_id, "client_secret": client_secret,
            "refresh_token": self.refresh_token})
        body = _json(resp)
        error = str(body.get("error") or "")
        if resp.status_code != 200 or error or not body.get("access_token"):
            if error == "invalid_grant":
                message = ("Salesforce refused the refresh token (invalid_grant: revoked, expired or rotated "
                           "away): the integration must be re-authorised in Salesforce and the tenant's "
                           "refresh_token updated")
                if self.on_auth_invalid is not None and not self._notified:
                    self._notified = True
                    self.on_auth_invalid(message)
                raise ReauthorizationRequired(SYSTEM, "POST", self.login_url + TOKEN_PATH, resp.status_code, message)
            detail = error if error.replace("_", "").isalnum() else "no access_token in the answer"
            raise AuthError(SYSTEM, "POST", self.login_url + TOKEN_PATH, resp.status_code,
                            f"token refresh refused ({detail}); check the tenant's client_id and client_secret")
        if not body.get("instance_url"):
            raise ApiError(SYSTEM, "POST", self.login_url + TOKEN_PATH, 200, "the token answer names no instance_url")
        self._session = str(body["access_token"])
        self.instance_url = str(body["instance_url"]).rstrip("/")
        rotated = body.get("refresh_token")
        if rotated and rotated != self.refresh_token:
            self.store.save(self.key, str(rotated))


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(resp: requests.Response) -> str | None:
    """`errorCode` of Salesforce's `[{"message","errorCode"}]` error array (None when absent)."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return body[0].get("errorCode")
    return None
