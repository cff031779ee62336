"""`python -m cz_pipeline.demo`: the headless first step of `make demo`.

Runs `full_sync` for every tenant of the tenants file (`CZ_TENANTS_FILE`, default the demo's)
against the Dagster instance (`DAGSTER_HOME`, so the runs show in the UI afterwards), prints the
rows each tenant now has in the customer-success model, and exits non-zero when a sync failed.
The sandbox servers are started just before by `make demo`; this waits until they accept
connections. Then `dg dev` starts the UI and the daemon; with `CZ_DEMO=1` (demo/env.sh) the
routine-sync sensor and the full-sync schedule are on, so syncs keep happening unattended.
"""

from __future__ import annotations

import socket
import sys
import time
from urllib.parse import urlsplit

import sqlalchemy as sa

CS_TABLES = ("accounts", "contacts", "deals", "tasks", "activities", "users", "tickets")
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # failures: summarised below


def wait_for_servers(urls: set[str], timeout: float = 60.0) -> None:
    """Block until every host:port in `urls` accepts a TCP connection (the sandboxes start in
    the background of `make demo`)."""
    pending = {(u.hostname, u.port or (443 if u.scheme == "https" else 80))
               for u in map(urlsplit, urls) if u.hostname}
    deadline = time.monotonic() + timeout
    while pending:
        for address in sorted(pending):
            try:
                socket.create_connection(address, timeout=1).close()
                pending.discard(address)
            except OSError:
                pass
        if pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: servers not reachable after {timeout:.0f}s: "
                                 f"{', '.join(f'{h}:{p}' for h, p in sorted(pending))} "
                                 "(is `python -m cz_pipeline.sandbox --demo` running?)")
            time.sleep(0.2)


def tenant_urls(tenant) -> set[str]:
    urls = {tenant.crm.base_url or ""}
    urls |= {v for k, v in tenant.crm.credentials.items() if isinstance(v, str)}  # e.g. Zoho accounts_url
    if tenant.helpdesk:
        urls.add(tenant.helpdesk.base_url)
    return {u for u in urls if u}


def table_counts(engine: sa.Engine, tenants: list[str]) -> list[dict]:
    counts = ", ".join(f"(SELECT count(*) FROM cs.{t} WHERE tenant_id = :t) AS {t}" for t in CS_TABLES)
    quarantined = "(SELECT count(*) FROM sync.quarantine WHERE tenant_id = :t) AS quarantined"
    with engine.connect() as conn:
        return [{"tenant": t, **conn.execute(sa.text(f"SELECT {counts}, {quarantined}"), {"t": t}).mappings().one()}
                for t in tenants]


def format_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = lambda r: "  ".join(str(r[c]).rjust(widths[c]) if c != "tenant" else str(r[c]).ljust(widths[c])
                               for c in cols)
    return "\n".join([line({c: c for c in cols}), "  ".join("-" * widths[c] for c in cols), *map(line, rows)])


def main() -> int:
    import dagster as dg

    from .definitions import defs
    from .defs.resources import TENANT_TAG
    from .settings import tenants_file
    from cz_pipeline.config.tenants import load_tenants
    from .warehouse.embedded import get_engine

    tenants = load_tenants(tenants_file())
    wait_for_servers(set().union(*(tenant_urls(t) for t in tenants.values())))
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("full_sync")
    failed = []
    for tenant_id in sorted(tenants):
        started = time.monotonic()
        print(f"demo: full_sync for {tenant_id} ...", flush=True)
        result = job.execute_in_process(partition_key=tenant_id, instance=instance, raise_on_error=False,
                                        tags={TENANT_TAG: tenant_id, "cz/trigger": "demo"},
                                        run_config=QUIET)  # the full event log is in the UI
        took = time.monotonic() - started
        if result.success:
            print(f"demo: full_sync for {tenant_id} succeeded in {took:.1f}s (run {result.run_id})", flush=True)
        else:
            failed.append(tenant_id)
            steps = [e.step_key for e in result.all_events if e.is_step_failure]
            print(f"demo: full_sync for {tenant_id} FAILED in {took:.1f}s (run {result.run_id}); failed steps: "
                  f"{', '.join(steps) or '-'}", file=sys.stderr, flush=True)
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data.error:
                    print(f"  {event.step_key}: {event.step_failure_data.error.message.strip()[:500]}",
                          file=sys.stderr)

    engine = get_engine()  # CZ_WAREHOUSE_URL, else the embedded server (as the runs used)
    print("\nRows per tenant in the customer-success model (cs.*) and quarantined records:")
    print(format_table(table_counts(engine, sorted(tenants))))
    if failed:
        print(f"\ndemo: full sync failed for {', '.join(failed)}: see the runs in the UI or the errors above",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
