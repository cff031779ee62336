"""Salesforce record writes: `PATCH /sobjects/{Object}/{Id}` (204 on success) and
`POST /sobjects/{Object}/` (201 with the new id). Refusals raise `ApiError` naming the object,
Salesforce's error code and the fields it names."""

from __future__ import annotations

from typing import Any

import requests

from cz_pipeline.core.http import ApiError

SYSTEM = "salesforce"


def _refusal(obj: str, resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
    fields = first.get("fields") or []
    where = f" (fields: {', '.join(map(str, fields))})" if fields else ""
    return f"{obj}: {first.get('errorCode') or 'write refused'}: {str(first.get('message') or '')[:300]}{where}"


class SalesforceWrites:
    """Mixed into the connector: needs `_call(method, path, ok=…, **kwargs)` and `api_path`."""

    api_path: str

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        raise NotImplementedError

    def update_record(self, obj: str, record_id: str, fields: dict[str, Any]) -> None:
        path = f"{self.api_path}/sobjects/{obj}/{record_id}"
        resp = self._call("PATCH", path, ok=(200, 204, 400, 404), json=dict(fields))
        if resp.status_code not in (200, 204):
            raise ApiError(SYSTEM, "PATCH", path, resp.status_code, _refusal(obj, resp))

    def create_record(self, obj: str, fields: dict[str, Any]) -> str:
        path = f"{self.api_path}/sobjects/{obj}/"
        resp = self._call("POST", path, ok=(200, 201, 400), json=dict(fields))
        if resp.status_code == 400:
            raise ApiError(SYSTEM, "POST", path, 400, _refusal(obj, resp))
        return str(resp.json()["id"])
