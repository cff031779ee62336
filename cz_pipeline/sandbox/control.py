"""Client of the sandboxes' control endpoint (`/_sandbox/...`): what tests and the demo use to
mutate vendor data, inject faults and read request statistics over HTTP."""

from __future__ import annotations

from typing import Any

import requests


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

    def fault(self, status: int, count: int = 1, skip: int = 0, path_contains: str = "", **extra: Any) -> None:
        self._call("POST", "faults", json={"status": status, "count": count, "skip": skip,
                                          "path_contains": path_contains, **extra})

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def rate_limit(self, limit: int | None, window_seconds: float = 1.0) -> None:
        self._call("POST", "rate_limit", json={"limit": limit, "window_seconds": window_seconds})

    def stats(self) -> dict[str, int]:
        return self._call("GET", "stats")

    def reset_stats(self) -> None:
        self._call("DELETE", "stats")

    def state(self, object: str) -> list[dict[str, Any]]:
        return self._call("GET", "state", params={"object": object})["data"]
