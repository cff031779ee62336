"""Client of the sandboxes' control endpoint (`/_sandbox/...`): what tests and the demo use to
mutate vendor data, inject faults, rewrite payloads and read request statistics over HTTP. Every
vendor sandbox answers the same fault, rewrite and statistics operations."""

from __future__ import annotations

import json
from typing import Any

import requests

from .faults import nested_json

_UNSET: Any = object()


class SandboxControl:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self._http = requests.Session()

    def _call(self, method: str, op: str, **kwargs: Any) -> Any:
        resp = self._http.request(method, f"{self.base_url}/_sandbox/{op}", timeout=30, **kwargs)
        resp.raise_for_status()
        return resp.json()

    def mutate(self, op: str, object: str, **fields: Any) -> Any:
        """`op` is vendor-defined (create, update, delete, ...); see each sandbox's `mutate`."""
        return self._call("POST", "mutate", json={"op": op, "object": object, **fields})

    # ---- faults --------------------------------------------------------------------------
    def fault(self, status: int, count: int = 1, skip: int = 0, path_contains: str = "", **extra: Any) -> None:
        """The next `count` matching requests answer `status` (JSON error body, or `body=`)."""
        self._call("POST", "faults", json={"status": status, "count": count, "skip": skip,
                                          "path_contains": path_contains, **extra})

    def inject(self, kind: str, *, count: int | None = 1, rate: float | None = None, seed: int = 0,
               skip: int = 0, path_contains: str = "", method: str = "", status: int | None = None,
               delay_seconds: float = 0.0, **extra: Any) -> None:
        """A fault of any kind: `status`, `truncated` (real body cut in half, 200), `non_json`
        (text/plain, 200), `html` (an HTML error page, 200), `slow` (real answer after
        `delay_seconds`), `auth_echo` (401 echoing the Authorization header). With `rate`, each
        matching request is hit with that probability (seeded by `seed`); `count` caps the hits."""
        self._call("POST", "faults", json={"kind": kind, "count": count, "rate": rate, "seed": seed, "skip": skip,
                                          "path_contains": path_contains, "method": method, "status": status,
                                          "delay_seconds": delay_seconds, **extra})

    def fault_rate(self, rate: float, kind: str = "status", *, seed: int = 0, status: int | None = None,
                   path_contains: str = "", **extra: Any) -> None:
        """Hit about `rate` of the matching requests, repeatably, until `clear_faults()`."""
        self.inject(kind, count=None, rate=rate, seed=seed, status=status, path_contains=path_contains, **extra)

    def truncated_body(self, count: int = 1, path_contains: str = "", **extra: Any) -> None:
        self.inject("truncated", count=count, path_contains=path_contains, **extra)

    def non_json_body(self, count: int = 1, path_contains: str = "", **extra: Any) -> None:
        self.inject("non_json", count=count, path_contains=path_contains, **extra)

    def html_error_page(self, count: int = 1, path_contains: str = "", **extra: Any) -> None:
        self.inject("html", count=count, path_contains=path_contains, **extra)

    def slow(self, delay_seconds: float, count: int = 1, path_contains: str = "", **extra: Any) -> None:
        self.inject("slow", count=count, delay_seconds=delay_seconds, path_contains=path_contains, **extra)

    def auth_echo_401(self, count: int = 1, path_contains: str = "", **extra: Any) -> None:
        self.inject("auth_echo", count=count, path_contains=path_contains, **extra)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    # ---- payload rewrites ------------------------------------------------------------------
    def rewrite(self, record_id: Any, field: str, value: Any = _UNSET, *, raw: str | None = None,
                remove: bool = False, nested_depth: int | None = None, path_contains: str = "",
                count: int | None = None) -> None:
        """Change what the wire carries for `field` of the record whose `id` is `record_id`:
        `value` (serialised with json.dumps, so `"a\\u0000b"` and `"\\ud800"` go out as escapes),
        `raw` (exact JSON text), `nested_depth` (an object nested that deep) or `remove=True`
        (e.g. drop `id`). The stored record is unchanged; `clear_rewrites()` ends it."""
        if nested_depth is not None:
            raw = nested_json(nested_depth)
        elif value is not _UNSET:
            raw = json.dumps(value)
        self._call("POST", "rewrites", json={"record_id": str(record_id), "field": field, "raw": raw,
                                            "remove": remove, "path_contains": path_contains, "count": count})

    def clear_rewrites(self) -> None:
        self._call("DELETE", "rewrites")

    # ---- limits and statistics ---------------------------------------------------------------
    def rate_limit(self, limit: int | None, window_seconds: float = 1.0) -> None:
        self._call("POST", "rate_limit", json={"limit": limit, "window_seconds": window_seconds})

    def stats(self) -> dict[str, int]:
        """Counters: `requests`, `faults`, `faults <kind>`, `throttled`, `rewritten`, `status <code>`,
        `<METHOD> <path>` and `path <path>` per request path."""
        return self._call("GET", "stats")

    def requests_to(self, path_contains: str) -> int:
        """How many API requests went to paths containing `path_contains` (any method)."""
        return sum(n for key, n in self.stats().items() if key.startswith("path ") and path_contains in key[5:])

    def reset_stats(self) -> None:
        self._call("DELETE", "stats")

    def state(self, object: str) -> list[dict[str, Any]]:
        return self._call("GET", "state", params={"object": object})["data"]
