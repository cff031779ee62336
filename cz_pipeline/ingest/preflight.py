"""Checks that the fields a tenant configures exist at the source, before anything is read."""

from __future__ import annotations

from cz_pipeline.config.tenants import ConfigError, TenantConfig
from cz_pipeline.sources.spec import CrmConnector


def configured_fields(tenant: TenantConfig, entity: str) -> dict[str, str]:
    """Source fields the configuration reads from one entity, keyed by where they are configured."""
    crm = tenant.crm
    out: dict[str, str] = {}
    if entity == "leads":
        out["crm.account_external_id"] = crm.account_external_id
        if crm.parent_external_id:
            out["crm.parent_external_id"] = crm.parent_external_id
        out.update({f"crm.sync_filter[{i}].field": c.field for i, c in enumerate(crm.sync_filter)})
        out.update({f"crm.account_fields.{f.name}.source": f.source for f in crm.account_fields if f.source})
        out.update({f"crm.push.account.{k}": v for k, v in crm.push.get("account", {}).items()})
    elif entity == "contacts":
        if crm.contact_external_id != "email":
            out["crm.contact_external_id"] = crm.contact_external_id
        out.update({f"crm.contact_fields.{f.name}.source": f.source for f in crm.contact_fields if f.source})
        out.update({f"crm.push.contact.{k}": v for k, v in crm.push.get("contact", {}).items()})
    elif entity == "deals":
        out.update({f"crm.deal_fields.{k}": v for k, v in crm.deal_fields.items()})
    return out


def check_configured_fields(tenant: TenantConfig, entity: str, connector: CrmConnector) -> None:
    """Every configured field the CRM can vouch for must exist at the source (its metadata, or
    Close's custom field definitions); an unknown one is a configuration error naming the tenant,
    the key, the object and the field — before anything is read."""
    wanted = configured_fields(tenant, entity)
    if not wanted:
        return
    unknown = set(connector.unknown_fields(entity, sorted(set(wanted.values()))))
    for key, field in wanted.items():
        if field in unknown:
            raise ConfigError(f"tenant {tenant.tenant_id!r}: key {key!r}: field {field!r} does not exist on the "
                              f"{tenant.crm.system} {entity} object")
