"""Teamwork Desk API v2 adapter (contracts section 4): tickets with their customer email.

One entity, `tickets`, read with `GET tickets.json?filter=<json>&orderBy=updatedAt&orderMode=asc
&pageSize=100&page=N&includes=customers,contacts,ticketstatuses`.

* The filter always names `state` (every state, soft-deleted ones included: the real API hides
  deleted tickets unless the filter asks for them, gotcha 5), plus `updatedAt >= since` when
  incremental. Deleted tickets therefore arrive as ordinary records with `state: "deleted"` and
  `deletedAt`; `deletions()` reports nothing.
* The customer email is not on the ticket: each record's payload is the ticket with `customer`
  replaced by the resolved customer object (its `contacts` resolved too), `status` resolved from
  `included.ticketstatuses`, and `customer_email` = `customer.email`, else the value of the
  customer's main contact (`isMain`), else its only contact (gotcha 3).
* End of data comes from `meta.page.hasMore` or `pagination.hasMorePages` (either block; the page
  count as a fallback), never from a short page alone (pageSize is clamped silently, gotcha 1).
* Deep paging: page numbers over a result set that changes while we walk it skip or repeat rows,
  so after every page the walk re-anchors: it re-queries from page 1 with `updatedAt >=` the
  newest value seen, skipping the ids already yielded at exactly that value. Only a run of more
  than a page of equal `updatedAt` values is crossed with page numbers.
* `0001-01-01` timestamps (system objects, gotcha 4) count as unknown (`updated_at` None).
* A customer's email can change without the `updatedAt` of their tickets moving. An incremental
  read therefore also asks which customers changed since the window start and re-reads those
  customers' tickets (one extra request when none changed), so matching sees the new address.
* Rate limit (120 requests/minute per key): the shared core pauses until `X-Rate-Limit-Reset`
  when `X-Rate-Limit-Remaining` reaches 0, so a walk paces itself instead of collecting 429s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from .http import AuthStrategy, HttpClient, Page, Record, RetryPolicy, parse_timestamp

PAGE_SIZE = 100  # the list endpoints clamp anything larger to 100
INCLUDES = "customers,contacts,ticketstatuses"
# Every state, deleted included: naming `state` is what makes the API return soft-deleted tickets.
ANY_STATE: dict[str, Any] = {"$or": [{"state": {"$eq": "deleted"}}, {"state": {"$ne": "deleted"}}]}
EPOCH_ZERO = datetime.min.replace(tzinfo=timezone.utc)  # sorts unknown (zero) timestamps first
CUSTOMER_CHUNK = 50  # customer ids per `customer $in` query when re-reading a changed customer's tickets


class _Bearer(AuthStrategy):
    def __init__(self, api_key: str):
        self._header = f"Bearer {api_key}"

    def apply(self, session, headers) -> None:
        headers["Authorization"] = self._header


def desk_timestamp(value: Any) -> datetime | None:
    """Parse a Desk timestamp; the `0001-01-01` zero time of system objects is unknown (None)."""
    if isinstance(value, str) and value.startswith("0001-01-01"):
        return None
    parsed = parse_timestamp(value)
    return None if parsed is None or parsed.year <= 1 else parsed


def _filter_time(moment: datetime) -> str:
    # Desk timestamps are whole seconds: flooring only widens the window (rows dedupe by id).
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def has_more(body: dict[str, Any]) -> bool | None:
    """Whether another page follows, from either pagination block (None if neither says)."""
    meta = (body.get("meta") or {}).get("page") or {}
    pagination = body.get("pagination") or {}
    for flag in (meta.get("hasMore"), pagination.get("hasMorePages")):
        if isinstance(flag, bool):
            return flag
    page, pages = pagination.get("page"), pagination.get("pages")
    if isinstance(page, int) and isinstance(pages, int):
        return page < pages
    return None


class TeamworkDeskConnector:
    system = "teamwork_desk"
    entities = ("tickets",)

    def __init__(self, base_url: str, api_key: str, policy: RetryPolicy | None = None, page_size: int = PAGE_SIZE):
        self.http = HttpClient("teamwork_desk", base_url, _Bearer(api_key), policy)
        self.page_size = page_size

    # ---- the engine's surface ------------------------------------------------------------
    def stream(self, entity: str, since: datetime | None) -> Iterator[Page]:
        """Pages of tickets changed at or after `since` (every ticket when None), deleted ones included."""
        if entity != "tickets":
            raise ValueError(f"teamwork_desk: unknown entity {entity!r}")
        return self._tickets(since)

    def deletions(self, entity: str, since: datetime | None) -> Iterator[list[tuple[str, datetime | None]]]:
        """Nothing: soft-deleted tickets come through `stream` with `state: "deleted"`."""
        return iter(())

    def custom_fields(self, entity: str) -> dict[str, dict[str, Any]]:
        return {}

    # ---- reads ---------------------------------------------------------------------------
    def _tickets(self, since: datetime | None) -> Iterator[Page]:
        lower = _filter_time(since) if since else None
        for rows, included in self._walk("tickets.json", "tickets", ANY_STATE, lower, INCLUDES):
            yield [self._record(row, included) for row in rows]
        if lower is None:
            return
        # Customers whose address changed: their tickets did not move, read them again.
        changed = [c["id"] for rows, _ in self._walk("customers.json", "customers", {}, lower, "contacts")
                   for c in rows]
        for i in range(0, len(changed), CUSTOMER_CHUNK):
            by_customer = {"$and": [{"customer": {"$in": changed[i:i + CUSTOMER_CHUNK]}}, ANY_STATE]}
            for rows, included in self._walk("tickets.json", "tickets", by_customer, None, INCLUDES):
                yield [self._record(row, included) for row in rows]

    def _walk(self, path: str, key: str, base: dict[str, Any], lower: str | None,
              includes: str) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
        """Rows ordered by updatedAt ascending, re-anchoring on the newest updatedAt after each page."""
        boundary: set[Any] = set()  # ids already yielded whose updatedAt equals `lower`
        page = 1
        while True:
            clauses = [base] if base else []
            if lower is not None:
                clauses.append({"updatedAt": {"$gte": lower}})
            params: dict[str, Any] = {"orderBy": "updatedAt", "orderMode": "asc", "pageSize": self.page_size,
                                      "page": page, "includes": includes}
            if clauses:
                flt = clauses[0] if len(clauses) == 1 else {"$and": clauses}
                params["filter"] = json.dumps(flt, separators=(",", ":"))
            body = self.http.get_json(path, params=params)
            rows = body.get(key) or []
            fresh = [r for r in rows if r.get("id") not in boundary]
            if fresh:
                yield fresh, body.get("included") or {}
            more = has_more(body)
            if not rows or more is False:
                return
            stamps = [(r.get("updatedAt"), desk_timestamp(r.get("updatedAt")) or EPOCH_ZERO) for r in rows]
            newest_raw, newest = max(stamps, key=lambda s: s[1])
            lower_dt = (desk_timestamp(lower) or EPOCH_ZERO) if lower else None
            if isinstance(newest_raw, str) and (lower_dt is None or newest > lower_dt):
                # Re-anchor: page 1 of `updatedAt >= newest`, minus what we already have at `newest`.
                boundary = {r.get("id") for r, s in zip(rows, stamps) if s[1] == newest}
                lower, page = newest_raw, 1
            else:  # a page-long run of one timestamp: cross it with page numbers
                boundary |= {r.get("id") for r in rows}
                page += 1

    @staticmethod
    def _record(row: dict[str, Any], included: dict[str, Any]) -> Record:
        customers = {c.get("id"): c for c in included.get("customers") or []}
        contacts = {c.get("id"): c for c in included.get("contacts") or []}
        statuses = {s.get("id"): s for s in included.get("ticketstatuses") or []}
        payload = dict(row)
        ref = row.get("customer") if isinstance(row.get("customer"), dict) else None
        customer = customers.get(ref.get("id")) if ref else None
        email = None
        if customer is not None:
            resolved = [contacts.get(c.get("id"), c) for c in customer.get("contacts") or [] if isinstance(c, dict)]
            customer = {**customer, "type": "customers", "contacts": resolved}
            email = customer.get("email") if (customer.get("email") or "").strip() else None
            if email is None:  # as stored (case, spaces): matching normalises, the payload stays faithful
                with_value = [c for c in resolved if (c.get("value") or "").strip()]
                main = [c for c in with_value if c.get("isMain")] or (with_value if len(with_value) == 1 else [])
                email = main[0]["value"] if main else None
            payload["customer"] = customer
        status = row.get("status")
        if isinstance(status, dict) and status.get("id") in statuses:
            payload["status"] = {**statuses[status["id"]], "type": "ticketstatuses"}
        payload["customer_email"] = email
        return Record(str(row["id"]), desk_timestamp(row.get("updatedAt")), payload)
