"""Shared machinery for the vendor sandboxes: a threaded HTTP server on loopback, request and
response objects, fault injection, payload rewrites, a per-key rate limiter, request statistics
and the control endpoint (`/_sandbox/...`, which is not part of any vendor API).

A vendor fake subclasses `SandboxApp` and implements `route()` (the vendor API), `mutate()`
and `dump()` (the control operations), and the vendor-specific rate-limit answers. Faults and
rewrites work the same for every vendor, on top of whatever `route()` answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .faults import Fault, Rewrite, rewrite_body

CONTROL_PREFIX = "/_sandbox/"


@dataclass
class Request:
    method: str
    path: str  # without query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """Query-string and form-encoded body parameters merged (body wins)."""
        merged = {k: v[-1] for k, v in self.query.items()}
        if self.body and "json" not in self.headers.get("content-type", ""):
            merged.update({k: v[-1] for k, v in parse_qs(self.body.decode("utf-8")).items()})
        return merged


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, default=str).encode("utf-8")
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def empty_response(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status, b"", dict(headers or {}))


class RateLimiter:
    """Fixed-window limiter per key: `limit` requests per `window_seconds`."""

    def __init__(self, limit: int, window_seconds: float):
        self.limit = limit
        self.window_seconds = window_seconds
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> tuple[bool, int, float]:
        """Count one request; return (allowed, remaining, seconds until the window resets)."""
        now = time.monotonic()
        with self._lock:
            start, used = self._windows.get(key, (now, 0))
            if now - start >= self.window_seconds:
                start, used = now, 0
            reset = max(0.0, self.window_seconds - (now - start))
            if used >= self.limit:
                self._windows[key] = (start, used)
                return False, 0, reset
            used += 1
            self._windows[key] = (start, used)
            return True, self.limit - used, reset


class SandboxApp:
    """Base class of a vendor fake. Thread-safe: every request runs under `self.lock`."""

    name = "sandbox"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.rewrites: list[Rewrite] = []
        self.rate_limiter: RateLimiter | None = None
        self.stats: Counter[str] = Counter()
        self._last_now = datetime(1970, 1, 1, tzinfo=timezone.utc)

    # ---- clock -------------------------------------------------------------------------
    def now(self) -> datetime:
        """Wall-clock UTC time, strictly increasing (µs) so every write gets its own stamp."""
        with self.lock:
            now = datetime.now(timezone.utc)
            if now <= self._last_now:
                now = self._last_now + timedelta(microseconds=1)
            self._last_now = now
            return now

    # ---- to implement by vendors -------------------------------------------------------
    def route(self, req: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def mutate(self, body: dict[str, Any]) -> Any:  # pragma: no cover - abstract
        """Apply a control mutation (create/update/delete/...); return a JSON-able result."""
        raise NotImplementedError

    def dump(self, object_name: str) -> list[dict[str, Any]]:  # pragma: no cover - abstract
        """Ground truth: every live object of that kind, as the vendor stores it."""
        raise NotImplementedError

    def rate_limit_key(self, req: Request) -> str:
        return req.headers.get("authorization", "")

    def rate_limited_response(self, limit: int, reset_seconds: float) -> Response:
        return json_response(429, {"error": "rate limited"}, {"Retry-After": str(max(1, round(reset_seconds)))})

    def rate_limit_headers(self, limit: int, remaining: int, reset_seconds: float) -> dict[str, str]:
        """Headers added to every answered request while a rate limit is configured."""
        return {}

    # ---- request pipeline --------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        if req.path.startswith(CONTROL_PREFIX):
            with self.lock:
                return self._control(req)
        with self.lock:
            self.stats["requests"] += 1
            self.stats[f"{req.method} {req.path}"] += 1
            self.stats[f"path {req.path}"] += 1
            fault = self._take_fault(req)
            if fault is not None:
                self.stats["faults"] += 1
                self.stats[f"faults {fault.kind}"] += 1
        if fault is not None and fault.kind == "slow":
            time.sleep(max(0.0, float(fault.delay_seconds)))  # outside the lock: other requests go on
        elif fault is not None and fault.kind != "truncated":
            return fault.answer(req, None)
        resp = self._answer(req)
        if fault is not None and fault.kind == "truncated" and resp.status < 300:
            return fault.answer(req, resp)
        return resp

    def _answer(self, req: Request) -> Response:
        extra_headers: dict[str, str] = {}
        limiter = self.rate_limiter
        if limiter is not None:
            allowed, remaining, reset = limiter.hit(self.rate_limit_key(req))
            extra_headers = self.rate_limit_headers(limiter.limit, remaining, reset)
            if not allowed:
                with self.lock:
                    self.stats["throttled"] += 1
                resp = self.rate_limited_response(limiter.limit, reset)
                resp.headers = {**extra_headers, **resp.headers}
                return resp
        with self.lock:
            resp = self.route(req)
            self._apply_rewrites(req, resp)
        resp.headers = {**extra_headers, **resp.headers}
        with self.lock:
            self.stats[f"status {resp.status}"] += 1
        return resp

    def _apply_rewrites(self, req: Request, resp: Response) -> None:
        active = [rw for rw in self.rewrites if not rw.path_contains or rw.path_contains in req.path]
        if not active or not resp.body:
            return
        body = rewrite_body(resp.body, active)
        if body is None:
            return
        resp.body = body
        for rw in active:
            if rw.count is not None:
                rw.count -= 1
        self.rewrites = [rw for rw in self.rewrites if rw.count is None or rw.count > 0]
        self.stats["rewritten"] += 1

    def _take_fault(self, req: Request) -> Fault | None:
        for fault in self.faults:
            if not fault.matches(req):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            if fault.rate is not None and fault._rng.random() >= fault.rate:
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    def _control(self, req: Request) -> Response:
        op = req.path[len(CONTROL_PREFIX):].strip("/")
        body = req.json() or {}
        if op == "faults" and req.method == "POST":
            try:
                self.faults.append(Fault(**body))
            except (TypeError, ValueError) as exc:
                return json_response(400, {"error": str(exc)})
            return json_response(200, {"faults": len(self.faults)})
        if op == "rewrites" and req.method == "POST":
            try:
                self.rewrites.append(Rewrite(**body))
            except (TypeError, ValueError) as exc:
                return json_response(400, {"error": str(exc)})
            return json_response(200, {"rewrites": len(self.rewrites)})
        if op == "rewrites" and req.method == "DELETE":
            self.rewrites.clear()
            return json_response(200, {"rewrites": 0})
        if op == "faults" and req.method == "DELETE":
            self.faults.clear()
            return json_response(200, {"faults": 0})
        if op == "rate_limit" and req.method == "POST":
            limit = body.get("limit")
            self.rate_limiter = None if limit is None else RateLimiter(int(limit), float(body.get("window_seconds", 1.0)))
            return json_response(200, {"limit": limit})
        if op == "stats" and req.method == "GET":
            return json_response(200, dict(self.stats))
        if op == "stats" and req.method == "DELETE":
            self.stats.clear()
            return json_response(200, {})
        if op == "mutate" and req.method == "POST":
            try:
                return json_response(200, self.mutate(body))
            except (KeyError, ValueError) as exc:
                return json_response(400, {"error": str(exc)})
        if op == "state" and req.method == "GET":
            try:
                return json_response(200, {"data": self.dump(req.arg("object", "") or "")})
            except (KeyError, ValueError) as exc:
                return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": f"unknown control operation {req.method} {op}"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: SandboxApp  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        # headers and body are separate writes: without NODELAY, keep-alive clients wait ~40 ms
        # per request on Nagle + delayed ACK
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            resp = self.app.handle(req)
        except Exception as exc:  # a bug in a fake must show up as a 500, not a hung socket
            resp = json_response(500, {"error": f"sandbox error: {type(exc).__name__}: {exc}"})
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if resp.body and self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


class RunningSandbox:
    """A sandbox app served on loopback in a daemon thread."""

    def __init__(self, app: SandboxApp, host: str = "127.0.0.1", port: int = 0):
        handler = type(f"{type(app).__name__}Handler", (_Handler,), {"app": app})
        self.app = app
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sandbox-{app.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "RunningSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
