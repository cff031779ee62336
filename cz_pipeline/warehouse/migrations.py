"""Versioned warehouse DDL. `migrate()` applies the versions a database has
not seen yet, in order, each in its own transaction, under an advisory lock so concurrent
processes (webserver, daemon, run workers, tests) cannot race. Re-running is a no-op; an older
database is upgraded in place by the later versions. Never edit a released version: add one."""

from __future__ import annotations

import sqlalchemy as sa

RAW_ENTITIES = ("leads", "contacts", "deals", "tasks", "users", "activities", "tickets")
_LOCK_KEY = 0x637A5F6D69677261  # "cz_migra"


def _raw_table(name: str) -> str:
    return f"""
    CREATE TABLE raw.{name} (
        tenant_id          text        NOT NULL,
        source_system      text        NOT NULL,
        source_id          text        NOT NULL,
        payload            jsonb       NOT NULL,
        source_updated_at  timestamptz,
        first_synced_at    timestamptz NOT NULL DEFAULT now(),
        last_synced_at     timestamptz NOT NULL DEFAULT now(),
        deleted_at         timestamptz,
        PRIMARY KEY (tenant_id, source_id)
    );
    CREATE INDEX ON raw.{name} (tenant_id, source_updated_at);
    """


MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "schemas, raw landing tables, sync state", """
    CREATE SCHEMA IF NOT EXISTS raw;
    CREATE SCHEMA IF NOT EXISTS cs;
    CREATE SCHEMA IF NOT EXISTS sync;
    """ + "".join(_raw_table(t) for t in RAW_ENTITIES) + """
    CREATE TABLE sync.cursors (
        tenant_id          text NOT NULL,
        entity             text NOT NULL,
        high_water         timestamptz,
        fields_fingerprint text,
        last_mode          text,
        last_sync_at       timestamptz,
        last_full_sync_at  timestamptz,
        PRIMARY KEY (tenant_id, entity)
    );
    CREATE TABLE sync.runs (
        id              bigserial PRIMARY KEY,
        tenant_id       text NOT NULL,
        entity          text NOT NULL,
        mode            text NOT NULL,            -- routine | full | repull
        reason          text,
        dagster_run_id  text,
        status          text NOT NULL,            -- success | failed
        started_at      timestamptz NOT NULL,
        finished_at     timestamptz NOT NULL DEFAULT now(),
        window_start    timestamptz,
        high_water      timestamptz,
        records_read    bigint NOT NULL DEFAULT 0,
        inserted        bigint NOT NULL DEFAULT 0,
        updated         bigint NOT NULL DEFAULT 0,
        tombstoned      bigint NOT NULL DEFAULT 0,
        quarantined     bigint NOT NULL DEFAULT 0,
        api_calls       bigint NOT NULL DEFAULT 0,
        api_credits     bigint,
        error           text
    );
    CREATE INDEX ON sync.runs (tenant_id, entity, finished_at DESC);
    CREATE TABLE sync.quarantine (
        tenant_id      text NOT NULL,
        entity         text NOT NULL,
        source_id      text NOT NULL,
        reason         text NOT NULL,
        detail         jsonb,
        first_seen_at  timestamptz NOT NULL DEFAULT now(),
        last_seen_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, entity, source_id, reason)
    );
    """),
    (2, "customer-success model", """
    CREATE TABLE cs.accounts (
        tenant_id                  text NOT NULL,
        account_external_id        text NOT NULL,
        source_system              text NOT NULL,
        crm_id                     text NOT NULL,
        name                       text,
        parent_account_external_id text,
        owner_crm_user_id          text,
        next_renewal_date          date,
        crm_url                    text,
        custom_fields              jsonb NOT NULL DEFAULT '{}',
        source_updated_at          timestamptz,
        synced_at                  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, account_external_id)
    );
    CREATE UNIQUE INDEX ON cs.accounts (tenant_id, crm_id);
    CREATE TABLE cs.account_hierarchy (
        tenant_id                  text NOT NULL,
        account_external_id        text NOT NULL,
        parent_account_external_id text,
        root_account_external_id   text NOT NULL,
        depth                      int  NOT NULL,
        path                       text[] NOT NULL,
        PRIMARY KEY (tenant_id, account_external_id)
    );
    CREATE TABLE cs.contacts (
        tenant_id            text NOT NULL,
        contact_external_id  text NOT NULL,
        crm_id               text NOT NULL,
        account_external_id  text,
        email                text,
        first_name           text,
        last_name            text,
        title                text,
        custom_fields        jsonb NOT NULL DEFAULT '{}',
        source_updated_at    timestamptz,
        synced_at            timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, contact_external_id)
    );
    CREATE UNIQUE INDEX ON cs.contacts (tenant_id, crm_id);
    CREATE INDEX contacts_email_idx ON cs.contacts (tenant_id, lower(btrim(email)));
    CREATE TABLE cs.deals (
        tenant_id            text NOT NULL,
        crm_id               text NOT NULL,
        account_external_id  text NOT NULL,
        name                 text,
        status_label         text,
        status_type          text CHECK (status_type IN ('active', 'won', 'lost')),
        amount               numeric,
        currency             text,
        start_date           date,
        end_date             date,
        close_date           date,
        custom_fields        jsonb NOT NULL DEFAULT '{}',
        source_updated_at    timestamptz,
        synced_at            timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, crm_id)
    );
    CREATE TABLE cs.tasks (
        tenant_id             text NOT NULL,
        crm_id                text NOT NULL,
        account_external_id   text NOT NULL,
        contact_external_id   text,
        assigned_crm_user_id  text,
        subject               text,
        due_date              date,
        completed_at          timestamptz,
        source_updated_at     timestamptz,
        synced_at             timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, crm_id)
    );
    CREATE TABLE cs.activities (LIKE cs.tasks INCLUDING ALL);
    CREATE TABLE cs.users (
        tenant_id    text NOT NULL,
        crm_id       text NOT NULL,
        email        text,
        first_name   text,
        last_name    text,
        is_active    boolean,
        can_log_in   boolean,
        source_updated_at timestamptz,
        synced_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, crm_id)
    );
    CREATE TABLE cs.tickets (
        tenant_id            text NOT NULL,
        ticket_id            text NOT NULL,
        subject              text,
        status               text,
        customer_email       text,
        created_at           timestamptz,
        updated_at           timestamptz,
        ticket_url           text,
        contact_external_id  text,
        account_external_id  text,
        match_status         text NOT NULL CHECK (match_status IN ('matched', 'no_contact', 'ambiguous')),
        synced_at            timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, ticket_id)
    );
    CREATE INDEX tickets_email_idx ON cs.tickets (tenant_id, lower(btrim(customer_email)));
    """),
    (3, "helpdesk ticket matching audit", """
    CREATE TABLE sync.ticket_match_log (
        id                            bigserial PRIMARY KEY,
        tenant_id                     text NOT NULL,
        ticket_id                     text NOT NULL,
        match_status                  text NOT NULL,  -- matched | no_contact | ambiguous | removed
        customer_email                text,
        contact_external_id           text,
        account_external_id           text,
        previous_status               text,           -- NULL: first time the ticket was published
        previous_contact_external_id  text,
        previous_account_external_id  text,
        reason                        text NOT NULL,  -- human-readable: why (un)matched
        dagster_run_id                text,
        changed_at                    timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ticket_match_log_ticket_idx ON sync.ticket_match_log (tenant_id, ticket_id, id DESC);
    """),
    (5, "automation: sync status per tenant", """
    -- One row per sync: a Dagster run (all entities it synced) or a lone engine call. An entity
    -- retried within a run counts with its last attempt.
    CREATE VIEW sync.tenant_syncs AS
    WITH attempt AS (
        SELECT DISTINCT ON (r.tenant_id, COALESCE(r.dagster_run_id, 'ledger:' || r.id), r.entity)
               r.*, COALESCE(r.dagster_run_id, 'ledger:' || r.id) AS sync_id
          FROM sync.runs r
         ORDER BY r.tenant_id, COALESCE(r.dagster_run_id, 'ledger:' || r.id), r.entity, r.finished_at DESC, r.id DESC)
    SELECT tenant_id, sync_id,
           max(dagster_run_id) AS dagster_run_id,
           CASE WHEN bool_or(mode = 'full') THEN 'full' ELSE 'routine' END AS kind,   -- routine includes re-pulls
           CASE WHEN bool_or(status = 'failed') THEN 'failed' ELSE 'success' END AS status,
           string_agg(entity || ':' || mode, ', ' ORDER BY entity) AS modes,
           string_agg(entity, ', ' ORDER BY entity) FILTER (WHERE mode = 'repull') AS repulled,
           string_agg(entity || ': ' || left(error, 300), E'\n' ORDER BY entity) FILTER (WHERE status = 'failed') AS errors,
           min(started_at) AS started_at, max(finished_at) AS finished_at,
           count(*) AS entities,
           sum(records_read) AS records_read, sum(inserted + updated) AS records_written,
           sum(tombstoned) AS records_removed, sum(api_calls) AS api_calls, sum(api_credits) AS api_credits
      FROM attempt
     GROUP BY tenant_id, sync_id;

    -- One row per tenant: its last routine and full sync and its current failure streak.
    CREATE VIEW sync.tenant_status AS
    WITH s AS (
        SELECT s.*,
               row_number() OVER (PARTITION BY tenant_id, kind ORDER BY finished_at DESC, sync_id) AS nth_of_kind,
               count(*) FILTER (WHERE status = 'success')
                   OVER (PARTITION BY tenant_id ORDER BY finished_at DESC, sync_id
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS successes_since,
               row_number() OVER (PARTITION BY tenant_id, status ORDER BY finished_at DESC, sync_id) AS nth_of_status
          FROM sync.tenant_syncs s)
    SELECT tenant_id,
           max(finished_at) AS last_sync_at,
           max(finished_at) FILTER (WHERE status = 'success') AS last_success_at,
           count(*) FILTER (WHERE successes_since = 0) AS consecutive_failures,
           max(errors) FILTER (WHERE status = 'failed' AND nth_of_status = 1) AS last_error,
           max(finished_at)     FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_at,
           max(status)          FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_status,
           max(modes)           FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_modes,
           max(repulled)        FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_repulled,
           max(records_read)    FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_read,
           max(records_written) FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_written,
           max(records_removed) FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_removed,
           max(api_calls)       FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_api_calls,
           max(dagster_run_id)  FILTER (WHERE kind = 'routine' AND nth_of_kind = 1) AS last_routine_run_id,
           max(finished_at)     FILTER (WHERE kind = 'full' AND nth_of_kind = 1) AS last_full_at,
           max(status)          FILTER (WHERE kind = 'full' AND nth_of_kind = 1) AS last_full_status,
           max(modes)           FILTER (WHERE kind = 'full' AND nth_of_kind = 1) AS last_full_modes,
           max(records_read)    FILTER (WHERE kind = 'full' AND nth_of_kind = 1) AS last_full_read,
           max(records_written) FILTER (WHERE kind = 'full' AND nth_of_kind = 1) AS last_full_written,
           max(records_removed) FILTER (WHERE kind = 'full' AND nth_of_kind = 1) AS last_full_removed,
           max(api_calls)       FILTER (WHERE kind = 'full' AND nth_of_kind = 1) AS last_full_api_calls,
           max(dagster_run_id)  FILTER (WHERE kind = 'full' AND nth_of_kind = 1) AS last_full_run_id
      FROM s
     GROUP BY tenant_id;
    """),
    # Next versions, one per concern (append in order; never edit a released one):
    (4, "data quality: check results (cross-run gate)", """
    -- One row per evaluation of a data-quality check (quality/checks.py). The latest row per tenant
    -- and blocking check gates the cs tables across runs: a cs asset refuses to publish while
    -- the latest evaluation of a blocking check on its upstream failed.
    CREATE TABLE sync.check_results (
        id                   bigserial PRIMARY KEY,
        tenant_id            text NOT NULL,
        asset_key            text NOT NULL,               -- the checked asset, e.g. crm/leads
        check_name           text NOT NULL,
        blocking             boolean NOT NULL,
        severity             text NOT NULL CHECK (severity IN ('ERROR', 'WARN')),
        passed               boolean NOT NULL,
        offending            bigint,
        total                bigint,
        share                double precision,
        threshold            double precision,
        expectation          text,                        -- the Great Expectations expectation type
        failing_expectation  text,
        sample               jsonb NOT NULL DEFAULT '[]',
        message              text,
        data_marker          bigint,                      -- newest sync.runs id of the entities read
        dagster_run_id       text,
        evaluated_at         timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX check_results_latest_idx ON sync.check_results (tenant_id, check_name, id DESC);
    CREATE VIEW sync.check_status AS
    SELECT DISTINCT ON (tenant_id, check_name) *
      FROM sync.check_results ORDER BY tenant_id, check_name, id DESC;
    """),
    (7, "Salesforce: rotated OAuth refresh tokens (Fernet ciphertext only)", """
    CREATE TABLE sync.oauth_tokens (
        tenant_id   text        NOT NULL,
        system      text        NOT NULL,
        grant_key   text        NOT NULL,   -- sha256 of login host, client id, configured token
        ciphertext  bytea       NOT NULL,   -- the refresh token, encrypted by the application
        updated_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, system, grant_key)
    );
    """),
    (6, "notifications: every message sent to a tenant's admins, and the open incidents", """
    CREATE TABLE sync.notifications (
        id          bigserial   PRIMARY KEY,
        tenant_id   text        NOT NULL,
        kind        text        NOT NULL,   -- credentials_refused, sync_failing, ..._resolved, product kinds
        recipients  text[]      NOT NULL,
        subject     text        NOT NULL,
        body        text        NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        sent_at     timestamptz,            -- NULL: not delivered (see error)
        error       text
    );
    CREATE INDEX ON sync.notifications (tenant_id, created_at);
    -- An incident is announced once when it opens and once when it ends.
    CREATE TABLE sync.incidents (
        tenant_id  text        NOT NULL,
        kind       text        NOT NULL,
        opened_at  timestamptz NOT NULL DEFAULT now(),
        detail     text,
        PRIMARY KEY (tenant_id, kind)
    );
    """),
    (8, "robustness: safe casts for every supported PostgreSQL version", r"""
    -- Casts from payload text to typed columns that yield NULL instead of an error, on
    -- PostgreSQL 14-18 alike (pg_input_is_valid exists only from 16). Plain SQL functions,
    -- IMMUTABLE and single-expression, so the planner inlines them; CASE keeps the guarded cast
    -- from being evaluated before its guard.
    CREATE OR REPLACE FUNCTION sync.try_date(v text) RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT CASE WHEN v ~ '^([1-9][0-9]{3}|0[0-9]{2}[1-9]|0[0-9][1-9]0|[0-9][1-9]00)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$'
        THEN CASE WHEN substr(v, 9, 2)::int <= extract(day FROM make_date(substr(v, 1, 4)::int, substr(v, 6, 2)::int, 1)
                                                       + interval '1 month - 1 day')
                  THEN v::date END END
    $$;
    CREATE OR REPLACE FUNCTION sync.try_timestamptz(v text) RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
      SELECT CASE WHEN v ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?)?(Z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?$'
        -- years 2-9998 only: a value at the edge of year 1 or 9999 leaves the range clients can
        -- represent once normalised to UTC
        THEN CASE WHEN left(v, 4) BETWEEN '0002' AND '9998' AND sync.try_date(left(v, 10)) IS NOT NULL
                  THEN v::timestamptz END END
    $$;
    CREATE OR REPLACE FUNCTION sync.try_numeric(v text) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT CASE WHEN v ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})?\s*$' THEN v::numeric END
    $$;
    CREATE OR REPLACE FUNCTION sync.try_boolean(v text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT CASE WHEN lower(btrim(v)) IN ('true', 't', 'yes', 'y', 'on', '1') THEN true
                  WHEN lower(btrim(v)) IN ('false', 'f', 'no', 'n', 'off', '0') THEN false END
    $$;
    """),
    (9, "quality gate: publications (the baseline of the dataset-level checks)", """
    -- One row per successful publication of a cs table for a tenant: how many rows analysts got
    -- and how many candidates were published. The account-count check compares the next
    -- candidates with the latest publication of cs.accounts.
    CREATE TABLE sync.publications (
        id              bigserial PRIMARY KEY,
        tenant_id       text NOT NULL,
        table_name      text NOT NULL,
        rows            bigint NOT NULL,
        candidates      bigint NOT NULL,
        quarantined     bigint NOT NULL DEFAULT 0,
        mode            text,
        dagster_run_id  text,
        published_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX publications_latest_idx ON sync.publications (tenant_id, table_name, id DESC);
    """),
]


MIN_SERVER_VERSION = 140000  # the oldest PostgreSQL still maintained upstream


class UnsupportedServerError(RuntimeError):
    """The warehouse server is older than the oldest supported PostgreSQL."""


def check_server_version(conn: sa.Connection) -> int:
    version = int(conn.execute(sa.text("SHOW server_version_num")).scalar())
    if version < MIN_SERVER_VERSION:
        raise UnsupportedServerError(
            f"the warehouse runs PostgreSQL {version // 10000}.{version % 10000}; cz_pipeline needs "
            f"PostgreSQL {MIN_SERVER_VERSION // 10000} or newer")
    return version


def migrate(engine: sa.Engine) -> list[int]:
    """Apply pending migrations; return the versions applied (empty when up to date). Refuses a
    server older than the oldest supported PostgreSQL with a clear error."""
    applied_now: list[int] = []
    with engine.connect() as conn:  # one session: the advisory lock belongs to it
        check_server_version(conn)
        conn.commit()
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        conn.commit()
        try:
            with conn.begin():
                conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS sync")
                conn.exec_driver_sql(
                    "CREATE TABLE IF NOT EXISTS sync.schema_migrations ("
                    " version int PRIMARY KEY, description text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())")
            done = {v for (v,) in conn.execute(sa.text("SELECT version FROM sync.schema_migrations"))}
            conn.commit()
            for version, description, ddl in sorted(MIGRATIONS, key=lambda m: m[0]):
                if version in done:
                    continue
                with conn.begin():
                    conn.exec_driver_sql(ddl)
                    conn.execute(sa.text("INSERT INTO sync.schema_migrations (version, description) VALUES (:v, :d)"),
                                 {"v": version, "d": description})
                applied_now.append(version)
        finally:
            conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            conn.commit()
    return applied_now
