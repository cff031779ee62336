"""Vendor API adapters on a shared HTTP core. Plain Python + requests, no Dagster imports.

Every adapter exposes the same small surface the sync engine relies on:
- `system`, `entities`: its name and the canonical entities it can read;
- `stream(entity, since) -> Iterator[list[Record]]`: pages of records changed at/after `since`
  (everything when None), never the whole dataset in memory;
- `deletions(entity, since) -> Iterator[list[(source_id, deleted_at)]]`: deletions the vendor
  reports (empty where deletions are left to the full-sync diff);
- `custom_fields(entity)`: custom field definitions (for validating configured fields);
- `http`: the `HttpClient`, whose `calls` feed the run ledger.
"""

from __future__ import annotations

from typing import Any

from cz_pipeline.config.tenants import CrmConfig, HelpdeskConfig
from cz_pipeline.core.http import ApiError, AuthError, Record, RetryPolicy


def build_crm_connector(cfg: CrmConfig, policy: RetryPolicy | None = None) -> Any:
    if cfg.system == "close":
        from cz_pipeline.sources.close.connector import CloseConnector

        return CloseConnector(cfg.base_url or "", cfg.credentials["api_key"].get(), policy)
    if cfg.system == "zoho_crm":
        from cz_pipeline.sources.zoho_crm.connector import ZohoCrmConnector

        return ZohoCrmConnector.from_config(cfg, policy)
    raise NotImplementedError(f"no connector for CRM {cfg.system!r} yet")


def build_helpdesk_connector(cfg: HelpdeskConfig, policy: RetryPolicy | None = None) -> Any:
    if cfg.system == "teamwork_desk":
        from cz_pipeline.sources.teamwork_desk.connector import TeamworkDeskConnector

        return TeamworkDeskConnector(cfg.base_url, cfg.credentials["api_key"].get(), policy)
    raise NotImplementedError(f"no connector for helpdesk {cfg.system!r}")


__all__ = ["ApiError", "AuthError", "Record", "RetryPolicy", "build_crm_connector", "build_helpdesk_connector"]
