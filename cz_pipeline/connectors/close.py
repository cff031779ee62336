"""Close CRM API v1 adapter (contracts section 1).

Entities: leads and contacts through the Advanced Filtering API (`POST /data/search/`) for both
full and incremental reads, so both modes land payloads of the same shape and neither hits the
`_skip` cap; opportunities (deals), tasks, task-completed activities and users through the list
endpoints with `_skip`/`_limit`, re-anchoring on the sort field when the skip cap answers 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from .http import ApiError, AuthStrategy, HttpClient, Page, Record, RetryPolicy, parse_timestamp

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


def _fixed_utc(moment: datetime) -> str:
    # The search API wants `…THH:MM:SS.mmmZ`; µs `+00:00` values have been rejected. Flooring to
    # the millisecond only widens the window (rows are deduplicated by id).
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class CloseConnector:
    system = "close"
    entities = ("leads", "contacts", "deals", "tasks", "activities", "users")
    search_page_size = SEARCH_PAGE

    def __init__(self, base_url: str, api_key: str, policy: RetryPolicy | None = None):
        self.http = HttpClient("close", base_url, _BasicApiKey(api_key), policy)

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
                params["date_updated__gte"] = since.isoformat()
            return self._offset_walk("opportunity/", params, 250, anchor="date_updated")
        if entity == "tasks":
            # /task/ can only order by date or date_created; filter on date_updated.
            params = {"_order_by": "date_created"}
            if since:
                params["date_updated__gte"] = since.isoformat()
            return self._offset_walk("task/", params, 1000, anchor="date_created")
        if entity == "activities":
            params = {}
            if since:  # a completion creates the activity; date_created is its time
                params["date_created__gte"] = since.isoformat()
            return self._offset_walk("activity/task_completed/", params, 100)
        if entity == "users":
            return self._offset_walk("user/", {}, 1000)
        raise ValueError(f"close: unknown entity {entity!r}")

    def deletions(self, entity: str, since: datetime | None) -> Iterator[list[tuple[str, datetime | None]]]:
        """Close deletions are applied by the full-sync diff only (seed: only a full sync removes)."""
        return iter(())

    # ---- paging ----------------------------------------------------------------------------
    def _offset_walk(self, path: str, params: dict[str, Any], limit: int, anchor: str | None = None) -> Iterator[Page]:
        params = dict(params)
        skip = 0
        last_anchor: str | None = None
        boundary: set[str] = set()  # ids already yielded at the re-anchor timestamp
        while True:
            try:
                body = self.http.get_json(path, params={**params, "_skip": skip, "_limit": limit})
            except ApiError as exc:
                text = str(exc).lower()
                # Past the per-resource skip cap: restart the walk at the last seen sort value.
                # (Close's wording has changed over time: "maximum skip", or "less than or equal to".)
                skip_cap = "skip" in text or ("less than or equal to" in text and "limit" not in text)
                if exc.status == 400 and anchor and last_anchor and skip_cap and skip > 0:
                    params[f"{anchor}__gte"] = last_anchor
                    skip = 0
                    continue
                # Per-resource `_limit` maxima are unpublished: halve the page and ask again.
                if exc.status == 400 and "limit" in text and not skip_cap and limit > 25:
                    limit //= 2
                    continue
                raise
            rows = body.get("data") or []
            page = [self._record(r) for r in rows if r.get("id") not in boundary]
            if anchor and rows:
                newest = rows[-1].get(anchor)
                if newest != last_anchor:
                    boundary = set()
                last_anchor = newest
                boundary |= {r["id"] for r in rows if r.get(anchor) == newest}
            if page:
                yield page
            if not body.get("has_more") or not rows:
                return
            skip += len(rows)

    def _search_walk(self, object_type: str, fields: list[str], since: datetime | None) -> Iterator[Page]:
        """Sort ascending on date_updated and re-query from the last value seen per page; follow
        the opaque cursor only across a run of equal timestamps. This keeps every cursor young
        (they expire after 30 s) and far below the 10 000-object cursor cap."""
        lower = since
        boundary: set[str] = set()
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
            while True:
                result = self.http.request("POST", "data/search/", json=body).json()
                rows = result.get("data") or []
                fresh = [r for r in rows if r.get("id") not in boundary]
                if fresh:
                    yield [self._record(r) for r in fresh]
                cursor = result.get("cursor")
                if not rows or not cursor:
                    return
                stamps = [parse_timestamp(r.get("date_updated")) for r in rows]
                newest = max((s for s in stamps if s), default=None)
                if newest is not None and (lower is None or newest > lower):
                    boundary = {r["id"] for r, s in zip(rows, stamps) if s == newest}
                    requery_from = newest
                    break
                boundary |= {r["id"] for r in rows}
                body = {**body, "cursor": cursor}  # a run of equal timestamps: follow the cursor
            lower = requery_from

    @staticmethod
    def _record(row: dict[str, Any]) -> Record:
        row = {k: v for k, v in row.items() if k != "__object_type"}
        return Record(str(row["id"]), parse_timestamp(row.get("date_updated") or row.get("date_created")), row)

