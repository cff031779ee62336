"""The sync engine: one entity of one tenant, from a connector's page stream into `raw.<entity>`.

Per call, in ONE database transaction:
  pages -> COPY into a temp staging table -> one guarded merge into raw (`IS DISTINCT FROM`)
  -> (full mode) tombstone what was not seen -> vendor-reported deletions -> cursor + run ledger.
A crash anywhere rolls everything back, so a rerun lands exactly what an uninterrupted run would.

Modes:
- routine: records changed since `cursor - overlap`; nothing is removed (only a full sync
  removes), except deletions the vendor reports explicitly (Zoho `/deleted`).
- full: every record; afterwards records not seen are tombstoned (`deleted_at`), never deleted.
- repull: every record, no removals. Chosen for a routine run when the entity has no cursor yet or
  its field configuration changed since the last sync (new fields are populated by the next
  routine sync, which re-pulls that object).
The cursor never advances past `start - settle_lag`, so late commits are read again next time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from cz_pipeline.core.http import Page, Record
from cz_pipeline.core.sql import WORK_MEM
from cz_pipeline.sources.spec import Connector
from ..warehouse.migrations import RAW_ENTITIES


log = logging.getLogger(__name__)
ANALYZE_AFTER_ROWS = 10_000  # below this, default statistics plan well enough


@dataclass
class EntitySyncResult:
    tenant_id: str
    entity: str
    mode: str
    reason: str
    records_read: int = 0
    inserted: int = 0
    updated: int = 0
    tombstoned: int = 0
    quarantined: int = 0  # records set aside at ingest (sync.quarantine, reason malformed_record)
    api_calls: int = 0
    api_credits: int | None = None  # vendors that bill credits (Zoho)
    window_start: datetime | None = None
    high_water: datetime | None = None

    def as_metadata(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("window_start", "high_water"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


MALFORMED = "malformed_record"  # quarantine reason of records set aside at ingest


def _find(value: Any, bad: Callable[[str], bool], path: str = "") -> str | None:
    """Path of the first key or string value for which `bad` holds (only walked for a record
    already known to be bad, to name the field)."""
    if isinstance(value, str):
        return path or "(value)" if bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and bad(key):
                return here
            found = _find(item, bad, here)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _find(item, bad, f"{path}[{i}]")
            if found:
                return found
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def serialise_record(rec: Record) -> tuple[str | None, str | None]:
    """(payload JSON for COPY, None) for a record Postgres accepts, else (None, problem) naming
    the field and the problem, never the value (it may be personal data)."""
    if rec.problem:
        return None, rec.problem
    if "\x00" in rec.source_id or _has_surrogate(rec.source_id):
        return None, "id: contains a NUL character or a lone surrogate"
    try:
        text = json.dumps(rec.payload, separators=(",", ":"), ensure_ascii=False, default=str)
    except RecursionError:
        return None, "payload: nested too deeply to store (more than about 1,000 levels)"
    except (TypeError, ValueError) as exc:
        return None, f"payload: not serialisable as JSON ({type(exc).__name__})"
    if "\\u0000" in text:  # JSON escapes NUL; Postgres text and jsonb reject it
        field = _find(rec.payload, lambda v: "\x00" in v)
        if field:
            return None, f"{field}: contains a NUL character (\\u0000)"
    if _has_surrogate(text):
        return None, f"{_find(rec.payload, _has_surrogate) or 'payload'}: contains a lone UTF-16 surrogate"
    return text, None


def _copy_page(cur: Any, page: Page, rejected: list[tuple[str, str]]) -> int:
    """COPY the page's good records into the stage; append (source id, problem) of the others."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    landed = 0
    for rec in page:
        text, problem = serialise_record(rec)
        if problem:
            rejected.append((_quarantine_id(rec), problem))
            continue
        writer.writerow([rec.source_id, rec.updated_at.isoformat() if rec.updated_at else "", text])
        landed += 1
    if landed:
        buf.seek(0)
        cur.copy_expert("COPY pg_temp.stage (source_id, source_updated_at, payload) FROM STDIN WITH (FORMAT csv)", buf)
    return landed


def _quarantine_id(rec: Record) -> str:
    # A record without a usable id is still kept apart from the others (and recognised on the
    # next sync) by a digest of its payload.
    if rec.source_id and "\x00" not in rec.source_id and not _has_surrogate(rec.source_id):
        return rec.source_id
    digest = hashlib.sha256(repr(sorted(map(str, rec.payload))).encode("utf-8", "replace")).hexdigest()[:16]
    return f"(no usable id) {digest}"


def _quarantine(cur: Any, tenant_id: str, entity: str, rejected: list[tuple[str, str]]) -> None:
    """Record this run's set-aside records; records of this entity that landed now leave."""
    if rejected:
        cur.execute("""
            INSERT INTO sync.quarantine AS q (tenant_id, entity, source_id, reason, detail)
            SELECT %s, %s, d.source_id, %s, jsonb_build_object('problem', d.problem)
              FROM unnest(%s::text[], %s::text[]) AS d(source_id, problem)
            ON CONFLICT (tenant_id, entity, source_id, reason)
            DO UPDATE SET last_seen_at = now(), detail = EXCLUDED.detail""",
                    (tenant_id, entity, MALFORMED, [r[0] for r in rejected], [r[1] for r in rejected]))
    cur.execute("""
        DELETE FROM sync.quarantine q USING pg_temp.stage s
         WHERE q.tenant_id = %s AND q.entity = %s AND q.reason = %s AND q.source_id = s.source_id""",
                (tenant_id, entity, MALFORMED))


def choose_mode(requested: str, cursor: dict[str, Any] | None, fingerprint: str) -> tuple[str, str]:
    if requested == "full":
        return "full", "full sync requested"
    if cursor is None or cursor.get("high_water") is None and cursor.get("last_sync_at") is None:
        return "repull", "first sync of this entity: reading everything"
    if cursor.get("fields_fingerprint") not in (None, fingerprint):
        return "repull", "field configuration changed: re-pulling the whole object"
    return "routine", "records changed since the cursor"


def sync_entity(engine: sa.Engine, *, tenant_id: str, source_system: str, entity: str, connector: Connector,
                requested_mode: str = "routine", fingerprint: str = "", overlap_seconds: int = 300,
                settle_lag_seconds: int = 60, dagster_run_id: str | None = None,
                preflight: Callable[[], None] | None = None) -> EntitySyncResult:
    """`preflight` runs before reading when the whole object is read (full/repull): the place to
    check that configured fields exist at the source. Routine reads skip it: a configuration
    change forces a repull, and the next full sync catches fields deleted at the source."""
    if entity not in RAW_ENTITIES:
        raise ValueError(f"unknown entity {entity!r}")
    started = datetime.now(timezone.utc)
    upper = started - timedelta(seconds=settle_lag_seconds)
    calls_before = connector.http.calls
    credits_before = getattr(connector.http, "credits", None)  # vendors that bill credits (Zoho)
    raw_conn = engine.raw_connection()
    try:
        cur = raw_conn.cursor()
        # One writer per tenant+entity: a second sync waits instead of interleaving.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{tenant_id}/{entity}",))
        cur.execute("SELECT high_water, fields_fingerprint, last_sync_at FROM sync.cursors "
                    "WHERE tenant_id = %s AND entity = %s", (tenant_id, entity))
        row = cur.fetchone()
        cursor = dict(zip(("high_water", "fields_fingerprint", "last_sync_at"), row)) if row else None
        mode, reason = choose_mode(requested_mode, cursor, fingerprint)
        since = None
        if mode == "routine" and cursor and cursor["high_water"] is not None:
            since = cursor["high_water"] - timedelta(seconds=overlap_seconds)
        result = EntitySyncResult(tenant_id, entity, mode, reason, window_start=since)
        if preflight is not None and mode != "routine":
            preflight()

        cur.execute("CREATE TEMP TABLE stage (seq bigserial, source_id text NOT NULL, "
                    "source_updated_at timestamptz, payload jsonb NOT NULL) ON COMMIT DROP")
        rejected: list[tuple[str, str]] = []
        progress = _Progress(tenant_id, entity, connector, calls_before)
        for page in connector.stream(entity, since):
            if page:
                _copy_page(cur, page, rejected)
                result.records_read += len(page)
            progress.page(result.records_read)
        # One bad record never stops the tenant: it is set aside with a reason, the rest lands.
        _quarantine(cur, tenant_id, entity, rejected)
        result.quarantined = len(rejected)
        # Temp tables are never auto-analyzed: without statistics the merge and the full-sync
        # anti-join below get nested loops over a large stage.
        cur.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        if result.records_read >= ANALYZE_AFTER_ROWS:
            cur.execute("ANALYZE pg_temp.stage")

        # The newest copy of each id wins (pages overlap at window boundaries).
        cur.execute(f"""
            WITH src AS (
                SELECT DISTINCT ON (source_id) source_id, source_updated_at, payload
                FROM pg_temp.stage ORDER BY source_id, source_updated_at DESC NULLS LAST, seq DESC),
            merged AS (
                INSERT INTO raw.{entity} AS t (tenant_id, source_system, source_id, payload, source_updated_at)
                SELECT %(t)s, %(s)s, source_id, payload, source_updated_at FROM src
                ON CONFLICT (tenant_id, source_id) DO UPDATE
                   SET payload = EXCLUDED.payload, source_updated_at = EXCLUDED.source_updated_at,
                       last_synced_at = now(), deleted_at = NULL
                 WHERE t.payload IS DISTINCT FROM EXCLUDED.payload
                    OR t.source_updated_at IS DISTINCT FROM EXCLUDED.source_updated_at
                    OR t.deleted_at IS NOT NULL
                RETURNING (xmax = 0) AS inserted)
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged""",
                    {"t": tenant_id, "s": source_system})
        result.inserted, result.updated = cur.fetchone()

        if mode == "full":
            cur.execute(f"""
                UPDATE raw.{entity} t SET deleted_at = now()
                 WHERE t.tenant_id = %s AND t.deleted_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM pg_temp.stage s WHERE s.source_id = t.source_id)""", (tenant_id,))
            result.tombstoned += cur.rowcount
        elif cursor and cursor["high_water"] is not None:
            # Routine and repull alike: deletions the vendor reported since the previous cursor
            # (a repull reads everything but must not forget deletions made before it).
            deleted_since = cursor["high_water"] - timedelta(seconds=overlap_seconds)
            for batch in connector.deletions(entity, deleted_since):
                if not batch:
                    continue
                cur.execute(f"""
                    UPDATE raw.{entity} t SET deleted_at = COALESCE(d.deleted_at, now())
                      FROM unnest(%s::text[], %s::timestamptz[]) AS d(source_id, deleted_at)
                     WHERE t.tenant_id = %s AND t.source_id = d.source_id AND t.deleted_at IS NULL""",
                            ([s for s, _ in batch], [d for _, d in batch], tenant_id))
                result.tombstoned += cur.rowcount

        cur.execute("SELECT max(source_updated_at) FROM pg_temp.stage")
        newest = cur.fetchone()[0]
        candidates = [t for t in (cursor and cursor["high_water"], newest) if t is not None]
        high_water = min(max(candidates), upper) if candidates else None
        result.high_water = high_water
        _count_calls(result, connector, calls_before, credits_before)
        cur.execute("""
            INSERT INTO sync.cursors AS c (tenant_id, entity, high_water, fields_fingerprint, last_mode,
                                           last_sync_at, last_full_sync_at)
            VALUES (%(t)s, %(e)s, %(hw)s, %(fp)s, %(m)s, %(now)s, CASE WHEN %(m)s = 'full' THEN %(now)s END)
            ON CONFLICT (tenant_id, entity) DO UPDATE
               SET high_water = EXCLUDED.high_water, fields_fingerprint = EXCLUDED.fields_fingerprint,
                   last_mode = EXCLUDED.last_mode, last_sync_at = EXCLUDED.last_sync_at,
                   last_full_sync_at = COALESCE(EXCLUDED.last_full_sync_at, c.last_full_sync_at)""",
                    {"t": tenant_id, "e": entity, "hw": high_water, "fp": fingerprint, "m": mode, "now": started})
        _ledger(cur, result, "success", started, dagster_run_id)
        raw_conn.commit()
        if result.inserted >= ANALYZE_AFTER_ROWS:
            # A new large tenant in a warehouse that holds others: autovacuum analyzes later, and
            # the derivations of this very run would plan on stale statistics. After the commit,
            # so concurrent syncs of other tenants never wait on its lock.
            try:
                cur.execute(f"ANALYZE raw.{entity}")
                raw_conn.commit()
            except Exception:  # statistics are an optimisation: the landed data is committed
                raw_conn.rollback()
        return result
    except BaseException as exc:
        raw_conn.rollback()
        try:
            cur = raw_conn.cursor()
            failed = EntitySyncResult(tenant_id, entity, requested_mode, "failed")
            _count_calls(failed, connector, calls_before, credits_before)
            _ledger(cur, failed, "failed", started, dagster_run_id, error=_redacted(connector, str(exc))[:2000])
            raw_conn.commit()
        except Exception:
            raw_conn.rollback()
        raise
    finally:
        raw_conn.close()


def _redacted(connector: Connector, text: str) -> str:
    redact = getattr(getattr(connector, "http", None), "redact", None)
    return redact(text) if redact else text


PROGRESS_EVERY_SECONDS = 10.0


class _Progress:
    """A line at least every PROGRESS_EVERY_SECONDS while a stream runs, so a long or
    rate-limited sync never looks hung: records so far, their rate, API calls."""

    def __init__(self, tenant_id: str, entity: str, connector: Connector, calls_before: int):
        self.tenant_id, self.entity, self.connector, self.calls_before = tenant_id, entity, connector, calls_before
        self.started = self.last = time.monotonic()

    def page(self, records: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_SECONDS:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        log.info("%s %s: %d records so far (%.0f/s), %d API calls, %.0fs", self.tenant_id, self.entity, records,
                 records / elapsed, self.connector.http.calls - self.calls_before, elapsed)


def _count_calls(result: EntitySyncResult, connector: Connector, calls_before: int, credits_before: int | None) -> None:
    result.api_calls = connector.http.calls - calls_before
    if credits_before is not None:
        result.api_credits = connector.http.credits - credits_before


def _ledger(cur: Any, r: EntitySyncResult, status: str, started: datetime, dagster_run_id: str | None,
            error: str | None = None) -> None:
    cur.execute("""
        INSERT INTO sync.runs (tenant_id, entity, mode, reason, dagster_run_id, status, started_at,
                               window_start, high_water, records_read, inserted, updated, tombstoned,
                               quarantined, api_calls, api_credits, error)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (r.tenant_id, r.entity, r.mode, r.reason, dagster_run_id, status, started, r.window_start,
                 r.high_water, r.records_read, r.inserted, r.updated, r.tombstoned, r.quarantined,
                 r.api_calls, r.api_credits, error))
