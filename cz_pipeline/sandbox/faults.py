"""Fault and payload-rewrite definitions shared by every vendor sandbox: misbehaving answers
(error statuses, truncated or non-JSON bodies, HTML error pages, slow answers, a 401 echoing the
credentials), optionally hitting a seeded fraction of requests, and rewrites that put raw JSON
text on the wire for one field of one record (values no JSON encoder would produce)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Request, Response

FAULT_KINDS = ("status", "truncated", "non_json", "html", "slow", "auth_echo")
_DEFAULT_STATUS = {"status": 500, "truncated": 200, "non_json": 200, "html": 200, "auth_echo": 401}
HTML_ERROR_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
                   b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n")
NON_JSON_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


@dataclass
class Fault:
    """A misbehaving answer for requests whose path contains `path_contains` (and whose method is
    `method`, when set), after letting `skip` matching requests through.

    Without `rate`, the next `count` matching requests are hit. With `rate` (0..1), each matching
    request is hit with that probability, drawn from `random.Random(seed)` so a run is repeatable;
    `count` then caps the hits (None = no cap).

    Kinds: `status` (a JSON error body, or `body`, with `status`), `truncated` (the real answer cut
    in half, status 200 by default), `non_json` (a plain-text body), `html` (an HTML error page, 200
    by default, as proxies send), `slow` (the real answer after `delay_seconds`) and `auth_echo`
    (a 401 whose body repeats the request's Authorization header, to test redaction).
    """

    status: int | None = None
    count: int | None = 1
    skip: int = 0
    path_contains: str = ""
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "status"
    rate: float | None = None
    seed: int = 0
    delay_seconds: float = 0.0
    method: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.rate is not None and not 0.0 <= float(self.rate) <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate!r}")
        if self.status is None:
            self.status = _DEFAULT_STATUS.get(self.kind, 200)
        self._rng = random.Random(self.seed)

    def matches(self, req: Request) -> bool:
        return (not self.path_contains or self.path_contains in req.path) and \
            (not self.method or self.method.upper() == req.method)

    def answer(self, req: Request, real: Response | None) -> Response:
        """The faulty response; `real` is what the vendor fake answered (for truncated bodies)."""
        from .server import Response, json_response

        if self.kind == "truncated":
            body = real.body if real is not None else b""
            body = body[:max(1, len(body) // 2)] if len(body) > 1 else b"{"
            return Response(self.status or 200, body, {"Content-Type": "application/json", **self.headers})
        if self.kind == "non_json":
            return Response(self.status or 200, NON_JSON_BODY, {"Content-Type": "text/plain", **self.headers})
        if self.kind == "html":
            return Response(self.status or 200, HTML_ERROR_PAGE, {"Content-Type": "text/html; charset=utf-8",
                                                                   **self.headers})
        if self.kind == "auth_echo":
            echoed = req.headers.get("authorization", "")
            return json_response(self.status or 401, {"error": f"Unauthorized: credentials {echoed!r} were rejected",
                                                      "authorization": echoed}, self.headers)
        if self.body is None:
            return json_response(self.status or 500, {"error": f"injected fault {self.status}"}, self.headers)
        return json_response(self.status or 500, self.body, self.headers)


@dataclass
class Rewrite:
    """Put `raw` (exact JSON text) on the wire as `field` of every object whose `id` equals
    `record_id` (compared as text) in JSON answers whose path contains `path_contains`. `remove`
    drops the field instead. `count` limits how many answers are rewritten (None = all)."""

    record_id: str
    field: str
    raw: str | None = None
    remove: bool = False
    path_contains: str = ""
    count: int | None = None

    def __post_init__(self) -> None:
        if self.raw is None and not self.remove:
            raise ValueError("a rewrite needs `raw` (JSON text) or `remove: true`")
        self.record_id = str(self.record_id)


def rewrite_body(body: bytes, rewrites: list[Rewrite]) -> bytes | None:
    """Apply rewrites to a JSON body; None when nothing matched. Raw values are spliced in as
    text, so they can be JSON no encoder would produce (lone surrogates, 1,000+ nesting)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    raws: list[str] = []
    hit = False
    stack = [doc]
    while stack:  # iterative: rewritten documents may be deeper than the recursion limit
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            record_id = str(node.get("id")) if "id" in node else None
            stack.extend(node.values())
            for rw in rewrites:
                if record_id != rw.record_id:
                    continue
                hit = True
                if rw.remove:
                    node.pop(rw.field, None)
                else:
                    node[rw.field] = f"__cz_sandbox_raw_{len(raws)}__"
                    raws.append(rw.raw or "null")
    if not hit:
        return None
    text = json.dumps(doc, default=str)
    for i, raw in enumerate(raws):
        text = text.replace(f'"__cz_sandbox_raw_{i}__"', raw, 1)
    return text.encode("utf-8")


def nested_json(depth: int) -> str:
    """`{"a": {"a": ... null ...}}` nested `depth` levels, as text (json.dumps stops near 1,000)."""
    return '{"a": ' * depth + "null" + "}" * depth
