"""Versioned warehouse DDL (design section 5). `migrate()` applies the versions a database has
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
    # Next versions, one per concern (append in order; never edit a released one):
    # 3: helpdesk ticket matching audit · 4: data quality / hierarchy · 5: automation / sync status
]


def migrate(engine: sa.Engine) -> list[int]:
    """Apply pending migrations; return the versions applied (empty when up to date)."""
    applied_now: list[int] = []
    with engine.connect() as conn:  # one session: the advisory lock belongs to it
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
            for version, description, ddl in MIGRATIONS:
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
