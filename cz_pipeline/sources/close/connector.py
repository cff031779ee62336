"""Close CRM API v1 adapter.

Entities: leads and contacts through the Advanced Filtering API (`POST /data/search/`) for both
full and incremental reads, so both modes land payloads of the same shape and neither hits the
`_skip` cap; opportunities (deals), tasks, task-completed activities and users through the list
endpoints with `_skip`/`_limit`, deals and tasks re-anchoring on their sort field every page.

Tolerant of what the contract leaves open
(`has_more` or `cursor` absent, `__object_type` and a nested `custom` dict on search hits, naive
or offset timestamps, either wording of the 400 for page caps), and every walk is bounded: each
request either moves the anchor forward or reads rows it has not seen, else it fails loudly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from cz_pipeline.core.http import ApiError, AuthStrategy, HttpClient, Page, Record, RetryPolicy, parse_timestamp, record_from

LEAD_FIELDS = ["id", "name", "display_name", "status_id", "status_label", "description", "url", "html_url",
               "organization_id", "created_by", "updated_by", "date_created", "date_updated", "custom"]
CONTACT_FIELDS = ["id", "lead_id", "name", "title", "emails", "phones", "organization_id", "created_by",
                  "updated_by", "date_created", "date_updated", "custom"]
SEARCH_PAGE = 200
CUSTOM_FIELD_OBJECTS = {"leads": "lead", "contacts": "contact", "deals": "opportunity"}


class _BasicApiKey(AuthStrategy):
    """HTTP Basic with the API key as user name and an empty password."""

    def __init__(self, api_key: str):
        self._auth = (api_key, "")

    def apply(self, session, headers) -> None:
        session.auth = self._auth


def _utc(moment: datetime) -> datetime:
    # A naive datetime is UTC (as Close's naive event stamps are), never the host's local time.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _fixed_utc(moment: datetime) -> str:
    # The search API wants `…THH:MM:SS.mmmZ`; µs `+00:00` values have been rejected. Flooring to
    # the millisecond only widens the window (rows are deduplicated by id).
    moment = _utc(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _list_param(moment: datetime) -> str:
    # List filters (`date_updated__gte=`): the format Close renders its own timestamps in (UTC,
    # `+00:00`), so any server that parses its own payloads parses this. A DB session in another
    # time zone would otherwise hand us e.g. `+02:00`.
    return _utc(moment).isoformat()


def _ascending(stamps: list[datetime | None]) -> bool:
    known = [s for s in stamps if s is not None]
    return all(a <= b for a, b in zip(known, known[1:]))


def _smaller_limit(exc: ApiError, skip: int, limit: int) -> int | None:
    """The page size to retry with when a 400 says `_limit` is above the resource's (unpublished)
    maximum; None when the 400 is about something else (e.g. the `_skip` cap)."""
    text = str(exc).lower()
    if exc.status != 400 or limit <= 1 or "skip" in text:
        return None
    # "… maximum limit … (max_limit = N)" or "_limit: Ensure this value is less than or equal to N".
    # The bare "less than or equal to" wording also names the skip cap, which needs skip > 0.
    if "limit" not in text and not ("less than or equal to" in text and skip == 0):
        return None
    m = re.search(r"(?:max_limit\s*=\s*|less than or equal to\s*)(\d+)", text)
    cap = int(m.group(1)) if m else 0
    return cap if 0 < cap < limit else limit // 2


class CloseConnector:
    system = "close"
    entities = ("leads", "contacts", "deals", "tasks", "activities", "users")
    search_page_size = SEARCH_PAGE

    def __init__(self, base_url: str, api_key: str, policy: RetryPolicy | None = None):
        self.http = HttpClient("close", base_url, _BasicApiKey(api_key), policy)

    @classmethod
    def from_config(cls, cfg: Any, policy: RetryPolicy | None = None, context: Any = None) -> "CloseConnector":
        return cls(cfg.base_url or "", cfg.credentials["api_key"].get(), policy)

    # ---- discovery -----------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        return self.http.get_json("me/")

    def custom_fields(self, entity: str) -> dict[str, dict[str, Any]]:
        """Custom field definitions of the entity's object, keyed `custom.cf_…` (re-discovered
        every run: ids survive renames, deleted fields vanish)."""
        obj = CUSTOM_FIELD_OBJECTS.get(entity)
        if obj is None:
            return {}
        out = {}
        for page in self._offset_walk(f"custom_field/{obj}/", {}, 1000):
            for definition in page:
                out[f"custom.{definition.payload['id']}"] = definition.payload
        return out

    def unknown_fields(self, entity: str, fields: list[str]) -> list[str]:
        """Configured custom fields (`custom.cf_…`) missing from the object's definitions. Close
        publishes no metadata for its standard fields, so only custom ones can be checked."""
        custom = [f for f in fields if f.startswith("custom.")]
        if not custom:
            return []
        known = self.custom_fields(entity)
        return [f for f in custom if ".".join(f.split(".")[:2]) not in known]

    # ---- streams ---------------------------------------------------------------------------
    def stream(self, entity: str, since: datetime | None) -> Iterator[Page]:
        """Pages of records changed at or after `since` (everything when None)."""
        if entity == "leads":
            return self._search_walk("lead", LEAD_FIELDS, since)
        if entity == "contacts":
            return self._search_walk("contact", CONTACT_FIELDS, since)
        if entity == "deals":
            params = {"_order_by": "date_updated"}
            if since:
                params["date_updated__gte"] = _list_param(since)
            return self._offset_walk("opportunity/", params, 250, anchor="date_updated")
        if entity == "tasks":
            # /task/ can only order by date or date_created; filter on date_updated.
            params = {"_order_by": "date_created"}
            if since:
                params["date_updated__gte"] = _list_param(since)
            return self._offset_walk("task/", params, 1000, anchor="date_created")
        if entity == "activities":
            params = {}
            if since:  # a completion creates the activity; date_created is its time
                params["date_created__gte"] = _list_param(since)
            return self._offset_walk("activity/task_completed/", params, 100)
        if entity == "users":
            return self._offset_walk("user/", {}, 1000)
        raise ValueError(f"close: unknown entity {entity!r}")

    def deletions(self, entity: str, since: datetime | None) -> Iterator[list[tuple[str, datetime | None]]]:
        """Close deletions are applied by the full-sync diff only (only a full sync removes)."""
        return iter(())

    # ---- paging ----------------------------------------------------------------------------
    def _offset_walk(self, path: str, params: dict[str, Any], limit: int, anchor: str | None = None) -> Iterator[Page]:
        """`_skip`/`_limit` pages. With an `anchor` (the `_order_by` field, ascending) every page
        re-anchors on `<anchor>__gte=<last value>` with `_skip=0` (keyset paging), skipping only
        within a run of equal values: an edit during the walk then cannot shift an unseen row
        back past our offset (ordered by date_updated, every edit would), and `_skip` stays far
        below the per-resource cap. Rows already yielded at the anchor value come back and are
        dropped."""
        params = dict(params)
        skip = 0
        keyset = anchor is not None
        anchor_at: datetime | None = None  # the current `__gte` anchor, once re-anchored
        boundary: set[tuple[str, Any]] = set()  # (id, anchor value) already yielded at anchor_at
        previous: set[Any] = set()  # ids of the previous page
        while True:
            try:
                body = self.http.get_json(path, params={**params, "_skip": skip, "_limit": limit})
            except ApiError as exc:
                # Per-resource `_limit` maxima are unpublished: take the one the 400 names, or halve.
                smaller = _smaller_limit(exc, skip, limit)
                if smaller is not None:
                    limit = smaller
                    continue
                raise  # e.g. the `_skip` cap inside a run of equal anchor values: no way forward
            rows = body.get("data") or []
            ids = [r.get("id") for r in rows]
            if skip and rows and set(ids) <= previous | {i for i, _ in boundary}:
                # A server that ignores `_skip` (or `has_more` that never ends) would loop forever.
                raise ApiError("close", "GET", self.http.url(path), None,
                               f"paging made no progress at _skip={skip}: the page repeats rows already read")
            page = [self._record(r) for r in rows if (r.get("id"), r.get(anchor) if anchor else None) not in boundary]
            if page:
                yield page
            # `has_more` is documented on every list; without it, a full page means "ask again".
            more = body["has_more"] if "has_more" in body else len(rows) >= limit
            if not rows or not more:
                return
            previous = set(ids)
            stamps = [parse_timestamp(r.get(anchor)) for r in rows] if keyset else []
            if keyset and not _ascending(stamps):
                # `_order_by` was not honoured: anchoring would skip rows. Fall back to plain
                # offsets if we never anchored; otherwise rows may already be lost: fail loudly.
                if anchor_at is not None:
                    raise ApiError("close", "GET", self.http.url(path), None,
                                   f"rows are not ordered by {anchor} although _order_by asked for it")
                keyset = False
            newest = stamps[-1] if keyset else None
            if newest is not None and (anchor_at is None or newest > anchor_at):
                params[f"{anchor}__gte"] = rows[-1][anchor]  # the server's own rendering of the value
                anchor_at, skip = newest, 0
                boundary = {(r.get("id"), r.get(anchor)) for r, s in zip(rows, stamps) if s == newest}
            else:  # a run of equal anchor values (or no anchor): page on with `_skip`
                if keyset:
                    boundary |= {(r.get("id"), r.get(anchor)) for r in rows}
                skip += len(rows)

    def _search_walk(self, object_type: str, fields: list[str], since: datetime | None) -> Iterator[Page]:
        """Sort ascending on date_updated and re-query from the last value seen per page; follow
        the opaque cursor only across a run of equal timestamps. This keeps every cursor young
        (they expire after 30 s) and far below the 10 000-object cursor cap."""
        lower = since
        boundary: set[tuple[str, Any]] = set()  # (id, date_updated) already yielded at `lower`
        while True:
            query: list[dict[str, Any]] = [{"type": "object_type", "object_type": object_type}]
            if lower is not None:
                query.append({"type": "field_condition",
                              "field": {"type": "regular_field", "object_type": object_type, "field_name": "date_updated"},
                              "condition": {"type": "moment_range", "on_or_after": {"type": "fixed_utc", "value": _fixed_utc(lower)}}})
            body: dict[str, Any] = {
                "query": {"type": "and", "queries": query},
                "sort": [{"direction": "asc", "field": {"type": "regular_field", "object_type": object_type,
                                                        "field_name": "date_updated"}}],
                "_fields": {object_type: fields},
                "_limit": self.search_page_size,
            }
            requery_from: datetime | None = None
            walked: set[Any] = set()  # ids this query's cursor walk returned (at most 10 000)
            while True:
                result = self.http.request("POST", "data/search/", json=body).json()
                hits = result.get("data") or []
                # `__object_type` on every hit is inferred: a hit of another type is not ours.
                rows = [r for r in hits if r.get("__object_type", object_type) == object_type]
                ids = {r.get("id") for r in hits}
                if "cursor" in body and hits and ids <= walked:
                    # A cursor that does not advance (ignored or repeated) would loop forever.
                    raise ApiError("close", "POST", self.http.url("data/search/"), None,
                                   "search cursor made no progress: the page repeats hits already read")
                walked |= ids
                fresh = [r for r in rows if (r.get("id"), r.get("date_updated")) not in boundary]
                if fresh:
                    yield [self._record(r) for r in fresh]
                # The last page has `cursor: null` (or none at all); an empty page ends the walk
                # too, even if a cursor came with it: following it could only repeat empty pages.
                cursor = result.get("cursor")
                if not hits or not cursor:
                    return
                stamps = [parse_timestamp(r.get("date_updated")) for r in rows]
                newest = max((s for s in stamps if s), default=None)
                # Re-anchor only on a page that really is ascending: if `sort` were ignored,
                # re-querying from the page's newest stamp would skip older unseen hits.
                if newest is not None and (lower is None or newest > lower) and _ascending(stamps):
                    boundary = {(r.get("id"), r.get("date_updated")) for r, s in zip(rows, stamps) if s == newest}
                    requery_from = newest
                    break
                boundary |= {(r.get("id"), r.get("date_updated")) for r in rows}
                body = {**body, "cursor": cursor}  # a run of equal timestamps: follow the cursor
            lower = requery_from

    @staticmethod
    def _record(row: dict[str, Any]) -> Record:
        # Search hits carry `__object_type` (and may carry other `__` metadata): not record data.
        row = {k: v for k, v in row.items() if not k.startswith("__")}
        # `_fields: custom` returns flat `custom.cf_…` keys; a deprecated nested `custom` dict
        # "may come along" (keyed by id or by field name). Keep values keyed by id as flat keys
        # (flat ones win), drop the dict: names change on rename, and the payload would churn.
        nested = row.get("custom")
        if isinstance(nested, dict):
            del row["custom"]
            for key, value in nested.items():
                if str(key).startswith(("cf_", "lcf_")) and value is not None:
                    row.setdefault(f"custom.{key}", value)
        return record_from(row, "close", "date_updated", "date_created")
