"""Benchmark: full + routine sync of one Close tenant from the sandbox into Postgres.

    .venv/bin/python benchmarks/close_sync.py --leads 5000

Prints per entity: records read, seconds, records/s, API calls; and the process's peak Python
allocation during the sync (tracemalloc) to show memory stays flat as the tenant grows (pages
and COPY, never the whole dataset). Uses the embedded Postgres (or CZ_WAREHOUSE_URL).
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
import uuid

from cz_pipeline.sources.close.connector import CloseConnector
from cz_pipeline.sandbox.close import CloseSandbox
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.ingest.engine import sync_entity
from cz_pipeline.warehouse.embedded import get_engine
from cz_pipeline.warehouse.migrations import migrate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=2000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    app = CloseSandbox(api_key="api_bench", n_leads=args.leads)
    print(f"sandbox with {args.leads} leads generated in {time.perf_counter() - t0:.1f}s")
    engine = get_engine(os.environ.get("CZ_WAREHOUSE_URL"))
    migrate(engine)
    tenant = f"bench_{uuid.uuid4().hex[:8]}"
    with RunningSandbox(app) as server:
        connector = CloseConnector(f"{server.url}/api/v1", "api_bench")
        for mode in ("full", "routine"):
            print(f"\n{mode} sync")
            print(f"{'entity':<10} {'records':>8} {'seconds':>8} {'rec/s':>8} {'calls':>6} {'peak MiB':>9}")
            for entity in ("leads", "contacts", "deals", "tasks", "users"):
                tracemalloc.start()
                start = time.perf_counter()
                r = sync_entity(engine, tenant_id=tenant, source_system="close", entity=entity, connector=connector,
                                requested_mode=mode, settle_lag_seconds=0)
                secs = time.perf_counter() - start
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
                print(f"{entity:<10} {r.records_read:>8} {secs:>8.2f} {r.records_read / secs:>8.0f} "
                      f"{r.api_calls:>6} {peak:>9.1f}")
    with engine.begin() as conn:
        for table in ("leads", "contacts", "deals", "tasks", "users"):
            conn.exec_driver_sql(f"DELETE FROM raw.{table} WHERE tenant_id = %s", (tenant,))
        conn.exec_driver_sql("DELETE FROM sync.cursors WHERE tenant_id = %s", (tenant,))
        conn.exec_driver_sql("DELETE FROM sync.runs WHERE tenant_id = %s", (tenant,))


if __name__ == "__main__":
    main()
