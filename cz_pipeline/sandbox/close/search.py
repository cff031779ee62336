"""Close fake: the Advanced Filtering API (`POST /data/search/`): query compiler (and/or, field
conditions, has_related, moments), sorting, cursors that expire and fit only their own query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

from ..server import Request
from .common import UTC, _Invalid, _OPS, _SEARCH_FIELDS, _body, _is_date, _sort_key, parse_dt


class CloseSearch:
    """Compiles a search query into a predicate over leads and contacts."""

    # ---- Advanced Filtering -------------------------------------------------------
    def _search(self, req: Request) -> dict[str, Any]:
        body = _body(req)
        if not isinstance(body, dict) or not isinstance(body.get("query"), dict):
            raise _Invalid([], {"query": "This field is required."})
        limit = body.get("_limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= 200:
            raise _Invalid([], {"_limit": "Ensure this value is between 1 and 200."})
        fields = body.get("_fields") or {}
        if not isinstance(fields, dict) or any(not isinstance(v, list) or len(v) > 100 for v in fields.values()):
            raise _Invalid([], {"_fields": "List is too long." if isinstance(fields, dict) else "Must be an object."})
        pred = self._compile(body["query"], {})
        hits = [(k, o) for k in ("lead", "contact") for o in self.db[k].values() if pred(k, o)]
        for s in reversed(body.get("sort") or []):
            if not isinstance(s, dict):
                raise _Invalid([], {"sort": "Each sort entry must be an object."})
            getter = self._field_getter(s.get("field") or {})
            hits.sort(key=lambda h: _sort_key(getter(*h)), reverse=s.get("direction") == "desc")
        total, cap = len(hits), body.get("results_limit")
        if cap is not None:
            if not isinstance(cap, int) or cap < 0:
                raise _Invalid([], {"results_limit": "Must be a non-negative integer or null."})
            hits = hits[:cap]
        query_json = json.dumps({k: v for k, v in body.items() if k != "cursor"}, sort_keys=True)
        identity = hashlib.sha256(query_json.encode()).hexdigest()[:16]  # a cursor only fits its own query
        offset = 0
        if body.get("cursor"):
            try:
                q, offset, issued = base64.urlsafe_b64decode(body["cursor"].encode()).decode().split(":")
                offset, issued = int(offset), float(issued)
            except (ValueError, AttributeError, binascii.Error, UnicodeDecodeError):
                raise _Invalid(["Invalid cursor."], {"cursor": "Invalid cursor."})
            if q != identity:
                raise _Invalid(["Invalid cursor."], {"cursor": "This cursor belongs to a different query."})
            if time.time() - issued > self.search_cursor_ttl:
                raise _Invalid(["Cursor expired."], {"cursor": "Cursor has expired. Please restart the query."})
            if offset >= self.search_max_walk:
                raise _Invalid(["Too many results."], {"cursor": f"Cursor pagination is limited to {self.search_max_walk} "
                                                                 "results. Please refine your query."})
        page = hits[offset:offset + limit]
        end = offset + len(page)
        out: dict[str, Any] = {
            "data": [{"__object_type": k, **(self._render_one(k, o, fields[k]) if k in fields else {"id": o["id"]})}
                     for k, o in page],
            "cursor": base64.urlsafe_b64encode(f"{identity}:{end}:{time.time()}".encode()).decode() if end < len(hits) else None}
        if body.get("include_counts"):
            out["count"] = {"total": total, "limited": len(hits)}
        return out

    def _compile(self, node: Any, cache: dict) -> Callable[[str, dict[str, Any]], bool]:
        if not isinstance(node, dict):
            raise _Invalid([], {"query": "Each query node must be an object."})
        typ, neg = node.get("type"), bool(node.get("negate"))
        if typ in ("and", "or"):
            subs = [self._compile(q, cache) for q in node.get("queries") or []]
            combine = all if typ == "and" else any
            fn = lambda k, o: combine(s(k, o) for s in subs)  # noqa: E731
        elif typ == "match_all":
            fn = lambda k, o: True  # noqa: E731
        elif typ == "object_type":
            if node.get("object_type") not in ("lead", "contact"):
                raise _Invalid([], {"query": f"Unsupported object_type {node.get('object_type')!r}."})
            fn = lambda k, o: k == node["object_type"]  # noqa: E731
        elif typ == "id":
            fn = lambda k, o: o["id"] == node.get("value")  # noqa: E731
        elif typ == "field_condition":
            fn = self._condition(node.get("field") or {}, node.get("condition") or {})
        elif typ == "has_related":
            this, rel = node.get("this_object_type"), node.get("related_object_type")
            if (this, rel) not in (("lead", "contact"), ("lead", "opportunity"), ("contact", "lead")):
                raise _Invalid([], {"query": f"Unsupported has_related {this} -> {rel}."})
            sub = self._compile(node.get("related_query") or {"type": "match_all"}, cache)
            fn = lambda k, o: k == this and any(sub(rel, r) for r in self._related(o, rel, cache))  # noqa: E731
        else:
            raise _Invalid([], {"query": f"Unknown query type {typ!r}."})
        return (lambda k, o: not fn(k, o)) if neg else fn

    def _related(self, obj: dict[str, Any], rel: str, cache: dict) -> list[dict[str, Any]]:
        if rel == "lead":
            return [self.db["lead"][obj["lead_id"]]]
        if rel not in cache:
            cache[rel] = defaultdict(list)
            for r in self.db[rel].values():
                cache[rel][r["lead_id"]].append(r)
        return cache[rel][obj["id"]]

    def _field_getter(self, field: dict[str, Any]) -> Callable[[str, dict[str, Any]], Any]:
        if field.get("type") == "regular_field":
            kind, name = field.get("object_type"), field.get("field_name")
            if name not in _SEARCH_FIELDS.get(kind or "", ()):
                raise _Invalid([], {"query": f"Unknown field {kind}.{name}."})
            return lambda k, o: self._value(k, o, name) if k == kind else None
        if field.get("type") == "custom_field":
            cid = field.get("custom_field_id")
            if not any(cid in self.db[f"cf_{t}"] for t in ("lead", "contact", "opportunity")):
                raise _Invalid([], {"query": f"Unknown custom field {cid}."})
            return lambda k, o: o.get(f"custom.{cid}")
        raise _Invalid([], {"query": "A field needs type regular_field or custom_field."})

    def _condition(self, field: dict[str, Any], cond: dict[str, Any]) -> Callable[[str, dict[str, Any]], bool]:
        get, typ = self._field_getter(field), cond.get("type")
        if typ == "moment_range":
            lo, hi = (self._moment(cond.get(k)) for k in ("on_or_after", "before"))
            dt = lambda v: parse_dt(v) if _is_date(v) else None  # noqa: E731
            return lambda k, o: (d := dt(get(k, o))) is not None and (lo is None or d >= lo) and (hi is None or d < hi)
        if typ == "text":
            value, mode = str(cond.get("value", "")).lower(), cond.get("mode", "full_words")
            words = lambda s: re.findall(r"\w+", str(s or "").lower())  # noqa: E731
            if mode == "exact_value":
                return lambda k, o: str(get(k, o) or "").lower() == value
            if mode == "phrase":
                return lambda k, o: " ".join(words(value)) in " ".join(words(get(k, o)))
            return lambda k, o: set(words(value)) <= set(words(get(k, o)))
        if typ in ("term", "reference"):
            wanted = set(cond.get("values") or cond.get("object_ids") or [])
            return lambda k, o: bool(set(v if isinstance(v := get(k, o), list) else [v]) & wanted)
        if typ == "exists":
            return lambda k, o: get(k, o) not in (None, "", [])
        if typ == "number_range":
            bounds = [(op, cond[op]) for op in ("gt", "gte", "lt", "lte") if cond.get(op) is not None]
            return lambda k, o: isinstance(v := get(k, o), (int, float)) and all(_OPS[op](v, b) for op, b in bounds)
        if typ == "boolean":
            return lambda k, o: bool(get(k, o)) == bool(cond.get("value"))
        raise _Invalid([], {"query": f"Unsupported condition type {typ!r}."})

    def _moment(self, m: Any) -> datetime | None:
        if m is None:
            return None
        tz = timezone(timedelta(hours=self._meta.get("tz_offset", 0.0)))
        try:
            if m["type"] == "fixed_utc":
                return parse_dt(m["value"])
            if m["type"] == "now":
                return datetime.now(UTC)
            if m["type"] == "fixed_local_date":
                day = datetime.combine(date.fromisoformat(m["value"]), datetime.min.time(), tz)
                return (day + timedelta(days=1 if m["which"] == "end" else 0)).astimezone(UTC)
            if m["type"] == "offset":
                base = self._moment(m["moment"]) or datetime.now(UTC)
                units = ("weeks", "days", "hours", "minutes", "seconds")
                delta = timedelta(**{k: v for k, v in m["offset"].items() if k in units})
                at = (base - delta if m.get("direction", "past") == "past" else base + delta).astimezone(tz)
                if m.get("which_day_end") in ("start", "end"):
                    at = at.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=m["which_day_end"] == "end")
                return at.astimezone(UTC)
        except (KeyError, TypeError, ValueError):
            pass
        raise _Invalid([], {"query": f"Invalid moment {m!r}."})
