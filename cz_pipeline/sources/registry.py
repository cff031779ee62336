"""The registry of source systems: every vendor package contributes one `SourceSpec`, and
configuration validation, connector building and the canonical mapping read it. Adding a
system is its package plus one line in `SOURCES`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cz_pipeline.core.http import ApiError, AuthError, Record, RetryPolicy
from cz_pipeline.sources.close.spec import SPEC as CLOSE
from cz_pipeline.sources.salesforce.spec import SPEC as SALESFORCE
from cz_pipeline.sources.spec import BuildContext, Connector, CrmConnector, SourceSpec
from cz_pipeline.sources.teamwork_desk.spec import SPEC as TEAMWORK_DESK
from cz_pipeline.sources.zoho_crm.spec import SPEC as ZOHO_CRM

if TYPE_CHECKING:
    from cz_pipeline.config.tenants import CrmConfig, HelpdeskConfig

SOURCES: dict[str, SourceSpec] = {spec.system: spec for spec in (CLOSE, ZOHO_CRM, SALESFORCE, TEAMWORK_DESK)}


def source(system: str) -> SourceSpec:
    try:
        return SOURCES[system]
    except KeyError:
        raise NotImplementedError(f"no source {system!r}") from None


def systems(kind: str) -> tuple[str, ...]:
    return tuple(name for name, spec in SOURCES.items() if spec.kind == kind)


def build_crm_connector(cfg: "CrmConfig", policy: RetryPolicy | None = None,
                        context: BuildContext | None = None) -> CrmConnector:
    return source(cfg.system).build(cfg, policy, context)  # type: ignore[return-value]


def build_helpdesk_connector(cfg: "HelpdeskConfig", policy: RetryPolicy | None = None,
                             context: BuildContext | None = None) -> Connector:
    return source(cfg.system).build(cfg, policy, context)


__all__ = ["SOURCES", "ApiError", "AuthError", "BuildContext", "Connector", "CrmConnector", "Record", "RetryPolicy", "SourceSpec",
           "build_crm_connector", "build_helpdesk_connector", "source", "systems"]
