"""Teamwork Desk API v2 adapter: tickets with their customer email.

One entity, `tickets`, read with `GET tickets.json?filter=<json>&orderBy=updatedAt&orderMode=asc
&pageSize=100&page=N&includes=customers,contacts,ticketstatuses`.

The adapter relies only on what the contract states, and degrades where it marks a point
(inferred)/(unverified) or leaves it open, because other implementations of the same contract differ:

* Main read: the contract's incremental composition (`updatedAt >= since`, nothing else), so it
  does not depend on how a server treats `state`. Soft-deleted tickets are then asked for
  explicitly with `filter={"state":{"$eq":"deleted"}}` (whether the default list shows
  them is unverified), bounded on routine reads by `deletedAt >= since` (a documented filter field),
  not `updatedAt`: whether deleting a ticket moves its `updatedAt` is not stated. They arrive as ordinary records with `state: "deleted"`;
  `deletions()` reports nothing. A server that refuses that filter (400/404/422...) or ignores it
  only costs the explicit read: deleted tickets then come from the default list, or are tombstoned
  by the next full sync. Clauses are combined in one object (implicit AND, as the SDK's
  FilterBuilder does), never `$and`, so `state` stays a top-level key.
* The customer email is not on the ticket: each record's payload is the ticket with `customer`
  replaced by the resolved customer object (its `contacts` resolved too), `status` resolved from
  `included.ticketstatuses`, and `customer_email` = `customer.email`, else the value of the
  customer's main contact (`isMain`), else its only contact. `included` may lack the
  customer (includes ignored) → `GET customers/{id}.json` once per customer; the reference may
  embed the customer (webhook shape) → used as is; ids are compared as text; `included` as a
  JSON:API list or a map keyed by id is accepted. Statuses without a name and missing from
  `included` are looked up once in `ticketstatuses.json`; a server that rejects the
  `ticketstatuses` include with a 400 is asked again without it.
* End of data comes from `meta.page.hasMore` or `pagination.hasMorePages` (either block; page
  counts as a fallback), never from a short page alone (pageSize is clamped silently).
* Deep paging: page numbers over a result set that changes while we walk it skip or repeat rows,
  so after every page the walk re-anchors: it re-queries from page 1 with `updatedAt >=` the
  newest value seen, skipping the ids already yielded at exactly that value. Only a run of more
  than a page of equal `updatedAt` values is crossed with page numbers. Re-anchoring is only safe
  if the server honours both the filter and the ascending order: a page older than the bound or
  out of order switches the walk to plain page numbers from the start (filtering client-side).
  Every step either raises the bound or brings new ids; a page that repeats known ids ends it.
* `0001-01-01` timestamps (system objects) count as unknown (`updated_at` None).
* A customer's email can change without the `updatedAt` of their tickets moving. An incremental
  read therefore also asks which customers changed since the window start (customers' `updatedAt`
  is a documented filter field, but not every server supports it) and re-reads those
  customers' tickets. This enrichment is optional: a server that refuses it (400/403/404/405/422/501)
  does not fail the sync.
* Rate limit (120 requests/minute per key): the shared core pauses until `X-Rate-Limit-Reset`
  (epoch second or delay) when `X-Rate-Limit-Remaining` reaches 0, and waits on 429. Every wait is
  at least `MIN_WAIT`: a reset reported as `0` or a past second must not become a burst of retries.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from cz_pipeline.core.http import ApiError, AuthStrategy, HttpClient, Page, Record, RetryPolicy, parse_timestamp

log = logging.getLogger(__name__)

PAGE_SIZE = 100  # the list endpoints clamp anything larger to 100
INCLUDES = "customers,contacts,ticketstatuses"
BASIC_INCLUDES = "customers,contacts"  # for a server that rejects the `ticketstatuses` include
DELETED: dict[str, Any] = {"state": {"$eq": "deleted"}}  # the contract's own wording
EPOCH_ZERO = datetime.min.replace(tzinfo=timezone.utc)  # sorts unknown (zero) timestamps first
CUSTOMER_CHUNK = 50  # customer ids per `customer $in` query when re-reading a changed customer's tickets
# Answers that mean "this server does not offer that" (not "try again"): an optional read is skipped.
UNSUPPORTED = {400, 403, 404, 405, 410, 422, 501}
MIN_WAIT = 0.5  # seconds; floor of every rate-limit / backoff pause
LOOKUP_GIVE_UP = 3  # consecutive refused customers/{id}.json lookups before we stop asking


class _Bearer(AuthStrategy):
    def __init__(self, api_key: str):
        self._header = f"Bearer {api_key}"

    def apply(self, session, headers) -> None:
        headers["Authorization"] = self._header


class UnexpectedShape(ApiError):
    """A 200 answer without the list the contract promises: never read as "no rows" (a full sync
    would tombstone every ticket)."""


def desk_timestamp(value: Any) -> datetime | None:
    """Parse a Desk timestamp; the `0001-01-01` zero time of system objects is unknown (None)."""
    if isinstance(value, str) and value.startswith("0001-01-01"):
        return None
    parsed = parse_timestamp(value)
    return None if parsed is None or parsed.year <= 1 else parsed


def _stamp(value: Any) -> datetime:
    return desk_timestamp(value) or EPOCH_ZERO


def _filter_time(moment: datetime) -> str:
    # Desk timestamps are whole seconds: flooring only widens the window (rows dedupe by id).
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(value: Any) -> str | None:
    # ids compared as text: a reference may say "550214" where `included` says 550214
    return None if value is None else str(value)


def has_more(body: dict[str, Any], page: int | None = None) -> bool | None:
    """Whether another page follows, from either pagination block (None if neither says).
    `page` is the page we asked for, for a block that gives `pages` without `page`."""
    meta = body.get("meta")
    meta_page = meta.get("page") if isinstance(meta, dict) else None
    meta_page = meta_page if isinstance(meta_page, dict) else {}
    pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
    flags = [f for f in (meta_page.get("hasMore"), pagination.get("hasMorePages")) if isinstance(f, bool)]
    if flags:  # the blocks should agree; if not, read on: one empty page more is the only cost
        return any(flags)
    for current, pages in ((pagination.get("page", page), pagination.get("pages")), (page, meta_page.get("pages"))):
        if isinstance(current, int) and isinstance(pages, int):
            return current < pages
    return None


def included_index(included: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """`included` as {type: {id text: object}}. The contract's shape is a map of lists; a JSON:API
    list of typed objects and lists keyed by id are accepted too."""
    if isinstance(included, list):
        grouped: dict[str, list[Any]] = {}
        for obj in included:
            if isinstance(obj, dict) and isinstance(obj.get("type"), str):
                grouped.setdefault(obj["type"], []).append(obj)
        included = grouped
    if not isinstance(included, dict):
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, objs in included.items():
        values = objs.values() if isinstance(objs, dict) else objs if isinstance(objs, list) else ()
        out[kind] = {_key(o.get("id")): o for o in values if isinstance(o, dict) and o.get("id") is not None}
    return out


def customer_email(customer: dict[str, Any]) -> str | None:
    """`customer.email`, else its main contact's value, else its only contact's (as stored: case and
    spaces are normalised by matching, the payload stays faithful). Contacts must be resolved."""
    email = customer.get("email")
    if isinstance(email, str) and email.strip():
        return email
    with_value = [c for c in customer.get("contacts") or []
                  if isinstance(c, dict) and isinstance(c.get("value"), str) and c["value"].strip()]
    main = [c for c in with_value if c.get("isMain")] or (with_value if len(with_value) == 1 else [])
    return main[0]["value"] if main else None


def _customer_key(row: dict[str, Any]) -> str | None:
    ref = row.get("customer")
    return _key(ref.get("id") if isinstance(ref, dict) else ref)


def _unsupported(exc: ApiError) -> bool:
    return isinstance(exc, UnexpectedShape) or exc.status in UNSUPPORTED


class TeamworkDeskConnector:
    system = "teamwork_desk"
    entities = ("tickets",)

    def __init__(self, base_url: str, api_key: str, policy: RetryPolicy | None = None, page_size: int = PAGE_SIZE,
                 sleep: Callable[[float], None] = time.sleep):
        # A 429 whose X-Rate-Limit-Reset is 0 or an already-past epoch second (the header's wording
        # is ambiguous) would otherwise be retried at once, a dozen times in a few ms.
        self.http = HttpClient("teamwork_desk", base_url, _Bearer(api_key), policy,
                               sleep=lambda seconds: sleep(max(seconds, MIN_WAIT)))
        self.page_size = page_size
        self.notes: list[str] = []  # optional reads that were skipped, and why
        self._includes = INCLUDES
        self._includes_ok = False  # a request with the full `includes` succeeded: a 400 is not about them
        self._customers: dict[str | None, dict[str, Any] | None] = {}
        self._lookups_refused = 0
        self._statuses: dict[str | None, dict[str, Any]] | None = None

    @classmethod
    def from_config(cls, cfg: Any, policy: RetryPolicy | None = None, context: Any = None) -> "TeamworkDeskConnector":
        return cls(cfg.base_url, cfg.credentials["api_key"].get(), policy)

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
        self._customers, self._statuses, self._lookups_refused = {}, None, 0  # fresh per read
        lower = _filter_time(since) if since else None
        # 1. The documented incremental read: no `state` clause, whatever the server's default is.
        for rows, included in self._walk("tickets.json", "tickets", {}, lower, ticket_includes=True):
            yield [self._record(row, included) for row in rows]
        # 2. Soft-deleted tickets, asked for explicitly. Routine reads bound them by `deletedAt`
        #    (a documented filter field), not `updatedAt`: whether a delete moves updatedAt is unstated.
        deleted_filter = {**DELETED, **({"deletedAt": {"$gte": lower}} if lower else {})}
        for rows, included in self._optional(
                self._walk("tickets.json", "tickets", deleted_filter, None, ticket_includes=True), "deleted tickets"):
            deleted = [r for r in rows if str(r.get("state") or "").lower() == "deleted"]
            if deleted:
                yield [self._record(row, included) for row in deleted]
            if len(deleted) < len(rows):  # the server ignores the state filter: the main read is all it lists
                self.notes.append("deleted tickets: the server ignored the state filter")
                break
        if lower is None:
            return
        # 3. Customers whose address changed: their tickets did not move, read them again.
        seen: dict[str | None, Any] = {}
        for rows, _ in self._optional(self._walk("customers.json", "customers", {}, lower, ordered=False),
                                      "changed customers"):
            seen.update((_key(c["id"]), c["id"]) for c in rows)
        changed = list(seen.values())
        for i in range(0, len(changed), CUSTOMER_CHUNK):
            chunk = changed[i:i + CUSTOMER_CHUNK]
            in_chunk = {_key(c) for c in chunk}
            read_all = False
            for rows, included in self._optional(self._walk("tickets.json", "tickets", {"customer": {"$in": chunk}},
                                                             None, ticket_includes=True), "changed customers' tickets"):
                owners = [_customer_key(r) for r in rows]
                read_all = read_all or any(o not in in_chunk for o in owners)
                # a server ignoring the customer filter lists every ticket: keep the changed customers' ones
                kept = [r for r, o in zip(rows, owners) if o in seen]
                if kept:
                    yield [self._record(row, included) for row in kept]
            if read_all:  # ... and that one walk already read the tickets of every changed customer
                break

    def _optional(self, pages: Iterable[Any], what: str) -> Iterator[Any]:
        """An enrichment read: a server that does not offer it skips it instead of failing the sync
        (transient errors and refused credentials still fail, so the sync is retried)."""
        try:
            yield from pages
        except ApiError as exc:
            if not _unsupported(exc):
                raise
            self.notes.append(f"{what}: skipped ({exc})")
            log.warning("teamwork_desk: %s skipped: %s", what, exc)

    def _get(self, path: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        try:
            body = self.http.get_json(path, params=params)
            self._includes_ok = self._includes_ok or params.get("includes") == INCLUDES
        except ApiError as exc:
            if exc.status == 400 and params.get("includes") == INCLUDES and not self._includes_ok:
                # A server validating `includes` may not know `ticketstatuses`: names are looked up instead.
                body = self.http.get_json(path, params={**params, "includes": BASIC_INCLUDES})
                self._includes = BASIC_INCLUDES
                self.notes.append("the ticketstatuses include was refused; statuses are looked up")
            else:
                raise
        if not isinstance(body, dict) or not isinstance(body.get(key), list):
            raise UnexpectedShape("teamwork_desk", "GET", self.http.url(path), None,
                                  f"the answer has no {key!r} list")
        return body

    def _walk(self, path: str, key: str, base: dict[str, Any], lower: str | None, *, ticket_includes: bool = False,
              ordered: bool = True) -> Iterator[tuple[list[dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]]:
        """Rows with `updatedAt >= lower` matching `base`, ordered by updatedAt ascending and
        re-anchored on the newest updatedAt after each page; plain page numbers when unordered."""
        start, floor = lower, (_stamp(lower) if lower else None)
        anchoring = ordered
        boundary: set[Any] = set()  # anchoring: ids already yielded whose updatedAt equals `lower`
        previous: list[Any] | None = None  # plain paging: the ids of the last page
        page = 1
        while True:
            # One object, implicit AND (the SDK's FilterBuilder shape): `state` stays a top-level key,
            # which a server lifting its default "no deleted tickets" only for a top-level `state` needs.
            flt = {**base, **({"updatedAt": {"$gte": lower}} if lower is not None else {})}
            params: dict[str, Any] = {"pageSize": self.page_size, "page": page}
            if ordered:
                params.update(orderBy="updatedAt", orderMode="asc")
            if ticket_includes:
                params["includes"] = self._includes
            if flt:
                params["filter"] = json.dumps(flt, separators=(",", ":"))
            body = self._get(path, params, key)
            rows = [r for r in body[key] if isinstance(r, dict) and r.get("id") is not None]
            stamps = [_stamp(r.get("updatedAt")) for r in rows]
            bound = _stamp(lower) if lower else None
            ignored_filter = bound is not None and any(s < bound for s in stamps)
            if anchoring and (ignored_filter or any(a > b for a, b in zip(stamps, stamps[1:]))):
                # The server ignored the updatedAt filter or the ascending order: re-anchoring would
                # skip rows. Walk plain page numbers from the start instead.
                anchoring = False
                if (lower, page) != (start, 1):
                    lower, page, boundary = start, 1, set()
                    continue
            more = has_more(body, page)
            if not anchoring:
                ids = [r["id"] for r in rows]
                if not rows or ids == previous:  # a page repeated: the server ignores or clamps `page`
                    return
                previous = ids
                kept = [r for r, s in zip(rows, stamps) if floor is None or s >= floor]
                if kept:
                    yield kept, included_index(body.get("included"))
                if more is False:
                    return
                page += 1
                continue
            fresh = [r for r in rows if r["id"] not in boundary]
            if fresh:
                yield fresh, included_index(body.get("included"))
            if not rows or more is False:
                return
            newest = max(stamps)
            newest_raw = rows[stamps.index(newest)].get("updatedAt")
            if isinstance(newest_raw, str) and (bound is None or newest > bound):
                # Re-anchor: page 1 of `updatedAt >= newest`, minus what we already have at `newest`.
                boundary = {r["id"] for r, s in zip(rows, stamps) if s == newest}
                lower, page = newest_raw, 1
            elif page > 1 and not fresh:  # a page repeated: the server ignores or clamps `page`
                return
            else:  # a page-long run of one timestamp: cross it with page numbers
                boundary |= {r["id"] for r in rows}
                page += 1

    # ---- records -------------------------------------------------------------------------
    def _record(self, row: dict[str, Any], included: dict[str, dict[str, dict[str, Any]]]) -> Record:
        contacts = included.get("contacts") or {}
        payload = dict(row)
        customer = self._customer(row.get("customer"), included)
        email = None
        if customer is not None:
            resolved = [contacts.get(_key(c.get("id")), c) for c in customer.get("contacts") or [] if isinstance(c, dict)]
            customer = {**customer, "type": "customers", "contacts": resolved}
            email = customer_email(customer)
            payload["customer"] = customer
        elif isinstance(row.get("contact"), dict):
            # Nothing known about the customer: the contact the ticket came from is the best address.
            contact = contacts.get(_key(row["contact"].get("id")), row["contact"])
            value = contact.get("value")
            email = value if isinstance(value, str) and value.strip() else None
        status = row.get("status")
        if isinstance(status, dict) and not status.get("name") and status.get("id") is not None:
            found = (included.get("ticketstatuses") or {}).get(_key(status["id"])) or \
                self._status_lookup().get(_key(status["id"]))
            if found:
                payload["status"] = {**found, "type": "ticketstatuses"}
        payload["customer_email"] = email
        return Record(str(row["id"]), desk_timestamp(row.get("updatedAt")), payload)

    def _customer(self, ref: Any, included: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
        if not isinstance(ref, dict):
            return None
        found = (included.get("customers") or {}).get(_key(ref.get("id")))
        if found is not None:
            return found
        if set(ref) - {"id", "type", "meta"}:  # the customer embedded in the ticket (webhook shape)
            return ref
        return self._lookup_customer(ref.get("id"))

    def _lookup_customer(self, cid: Any) -> dict[str, Any] | None:
        """`included` lacked the customer: `GET customers/{id}.json?includes=contacts`, once per customer."""
        key = _key(cid)
        if key is None or self._lookups_refused >= LOOKUP_GIVE_UP:
            return None
        if key not in self._customers:
            customer = None
            try:
                body = self.http.get_json(f"customers/{quote(key, safe='')}.json", params={"includes": "contacts"})
            except ApiError as exc:
                if not _unsupported(exc):
                    raise
                self._lookups_refused += 1
                if self._lookups_refused == LOOKUP_GIVE_UP:
                    self.notes.append(f"customers/{{id}}.json refused {LOOKUP_GIVE_UP} times: no more lookups")
                body = None
            if isinstance(body, dict):
                self._lookups_refused = 0
                obj = body.get("customer")
                if obj is None and isinstance(body.get("customers"), list) and body["customers"]:
                    obj = body["customers"][0]
                if obj is None and "id" in body:
                    obj = body
                if isinstance(obj, dict):
                    contacts = included_index(body.get("included")).get("contacts") or {}
                    customer = {**obj, "contacts": [contacts.get(_key(c.get("id")), c)
                                                    for c in obj.get("contacts") or [] if isinstance(c, dict)]}
            self._customers[key] = customer
        return self._customers[key]

    def _status_lookup(self) -> dict[str | None, dict[str, Any]]:
        """Statuses by id from `ticketstatuses.json` (path inferred in the contract), read once."""
        if self._statuses is None:
            self._statuses = {}
            try:
                body = self._get("ticketstatuses.json", {"pageSize": self.page_size}, "ticketstatuses")
            except ApiError as exc:
                if not _unsupported(exc):
                    raise
                self.notes.append(f"ticket statuses: lookup skipped ({exc})")
            else:
                self._statuses = {_key(s.get("id")): s for s in body["ticketstatuses"]
                                  if isinstance(s, dict) and s.get("id") is not None}
        return self._statuses
