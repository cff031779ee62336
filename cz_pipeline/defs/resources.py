"""Resources shared by every asset: the warehouse and the tenant configuration."""

from __future__ import annotations

import os
from functools import cached_property

import dagster as dg
import sqlalchemy as sa

from ..settings import tenants_file
from cz_pipeline.config.tenants import TenantConfig, load_tenants
from ..warehouse.embedded import get_engine
from ..warehouse.migrations import migrate

_MIGRATED: set[str] = set()


class WarehouseResource(dg.ConfigurableResource):
    """The Postgres warehouse. `url` unset → the embedded server under the data folder."""

    url: str | None = None

    def engine(self) -> sa.Engine:
        engine = get_engine(self.url)
        key = str(engine.url)
        if key not in _MIGRATED:  # once per process: migrations are idempotent but not free
            migrate(engine)
            _MIGRATED.add(key)
        return engine


class TenantsResource(dg.ConfigurableResource):
    """The tenants file."""

    tenants_file: str

    @cached_property
    def _tenants(self) -> dict[str, TenantConfig]:
        return load_tenants(self.tenants_file)

    def get(self, tenant_id: str) -> TenantConfig:
        try:
            return self._tenants[tenant_id]
        except KeyError:
            raise dg.Failure(f"tenant {tenant_id!r} is not in {self.tenants_file}", allow_retries=False) from None


def _env_or(name: str, default: str | None):
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources(tenants_path: str | None = None, warehouse_url: str | None = None) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": WarehouseResource(url=warehouse_url or _env_or("CZ_WAREHOUSE_URL", None)),
        "tenants": TenantsResource(tenants_file=tenants_path or _env_or("CZ_TENANTS_FILE", str(tenants_file()))),
    }


def tenant_partitions(path: str | None = None) -> dg.StaticPartitionsDefinition:
    """One partition per tenant, on every tenant-scoped asset."""
    return dg.StaticPartitionsDefinition(sorted(load_tenants(path or tenants_file())))

SYNC_MODE_TAG = "cz/sync_mode"
TENANT_TAG = "cz/tenant"


def sync_mode(context: dg.AssetExecutionContext) -> str:
    """`full` inside a full_sync run, else `routine` (also for ad-hoc UI materializations)."""
    return "full" if context.run.tags.get(SYNC_MODE_TAG) == "full" else "routine"


def markdown_table(rows: list[dict], limit: int = 5) -> str:
    """A small markdown preview (no extra dependency)."""
    rows = rows[:limit]
    if not rows:
        return "_no rows_"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|")[:60] for c in cols) + " |")
    return "\n".join(lines)
