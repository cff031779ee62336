"""Raw CRM entity assets (`crm/<entity>`): one per canonical entity whatever the tenant's CRM;
each lands its connector's pages in `raw.<entity>` through the sync engine."""


import dagster as dg
import sqlalchemy as sa

from cz_pipeline.core.http import AllowanceExhausted
from cz_pipeline.sources import ApiError, AuthError, BuildContext, build_crm_connector
from cz_pipeline.ingest.engine import sync_entity
from cz_pipeline.ingest.preflight import check_configured_fields
from cz_pipeline import notify
from cz_pipeline.config.tenants import ConfigError, MissingSecretError, TenantConfig
from ..resources import TenantsResource, WarehouseResource, markdown_table, sync_mode

CRM_ENTITIES = {
    "leads": "Accounts as the CRM holds them (Close leads, Zoho/Salesforce accounts), every field in `payload`.",
    "contacts": "CRM contacts, every field in `payload`.",
    "deals": "Deals (Close opportunities, Zoho deals, Salesforce opportunities).",
    "tasks": "CRM tasks, open and completed.",
    "users": "CRM users (all of them, so references never break).",
}


def raw_preview(engine: sa.Engine, entity: str, tenant_id: str) -> str:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            f"SELECT source_id, source_updated_at, deleted_at FROM raw.{entity} WHERE tenant_id = :t "
            "ORDER BY source_updated_at DESC NULLS LAST LIMIT 5"), {"t": tenant_id}).mappings().all()
    return markdown_table([dict(r) for r in rows])


def connector_or_fail(tenant_id: str, build, cfg):
    """Build a tenant's connector; an unset secret or unsupported system fails without retries."""
    try:
        return build(cfg)
    except (ConfigError, MissingSecretError) as exc:
        raise dg.Failure(f"tenant {tenant_id!r}: {exc}", allow_retries=False) from None


def run_sync(context: dg.AssetExecutionContext, warehouse: WarehouseResource, entity: str, connector,
             tenant: TenantConfig, *, source_system: str, fingerprint: str, overlap_seconds: int,
             settle_lag_seconds: int, preflight=None) -> dg.MaterializeResult:
    """Run the engine for one entity and turn its result into asset metadata. Credential and
    configuration problems fail without Dagster retries: retrying cannot fix them. Refused
    credentials and failure streaks are announced to the tenant's admins (`notify`), once."""
    engine = warehouse.engine()
    tenant_id = context.partition_key
    try:
        result = sync_entity(
            engine, tenant_id=tenant_id, source_system=source_system, entity=entity, connector=connector,
            requested_mode=sync_mode(context), fingerprint=fingerprint, overlap_seconds=overlap_seconds,
            settle_lag_seconds=settle_lag_seconds, dagster_run_id=context.run_id, preflight=preflight)
    except Exception as exc:
        message = str(exc) if isinstance(exc, (ConfigError, ApiError)) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, AuthError):
            _announce(context, notify.credentials_refused, engine, tenant_id, tenant.notify, source_system, message)
        _announce(context, notify.sync_failed, engine, tenant_id, tenant.notify, message)
        failure = _final_failure(tenant_id, exc)
        if failure is None:
            raise
        raise failure from None
    _announce(context, notify.sync_succeeded, engine, tenant_id, tenant.notify, source_system, context.run_id)
    context.log.info(f"{tenant_id} {entity}: {result.mode} ({result.reason}); read {result.records_read}, "
                     f"inserted {result.inserted}, updated {result.updated}, tombstoned {result.tombstoned}, quarantined {result.quarantined}, "
                     f"{result.api_calls} API calls")
    metadata = {k: v for k, v in result.as_metadata().items() if v is not None and k != "tenant_id"}
    if hasattr(connector, "api_usage"):  # e.g. Salesforce: the org's daily allowance as last reported
        metadata.update({k: v for k, v in connector.api_usage().items() if v is not None})
    metadata["preview"] = dg.MetadataValue.md(raw_preview(engine, entity, tenant_id))
    return dg.MaterializeResult(metadata=metadata)


def _final_failure(tenant_id: str, exc: Exception) -> dg.Failure | None:
    """The failure to report without Dagster retries when retrying cannot help; None: retry."""
    if isinstance(exc, ConfigError):  # its message already names the tenant and the key
        return dg.Failure(str(exc), allow_retries=False)
    # The HTTP core already retried what was transient; refused credentials, a used-up allowance
    # and other 4xx answers will not change on retry.
    if isinstance(exc, (AuthError, AllowanceExhausted)) or (
            isinstance(exc, ApiError) and exc.status is not None and 400 <= exc.status < 500 and exc.status != 429):
        return dg.Failure(f"tenant {tenant_id!r}: {exc}", allow_retries=False)
    return None


def _announce(context: dg.AssetExecutionContext, hook, *args) -> None:
    """Notifications never change the outcome of the sync that triggered them."""
    try:
        hook(*args)
    except Exception as exc:  # noqa: BLE001 - a broken mail path must not fail or mask a sync
        context.log.warning(f"notification not recorded: {type(exc).__name__}: {exc}")


def _crm_asset(entity: str, description: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=["crm", entity], group_name="crm", partitions_def=partitions_def,
        pool="crm_api", kinds={"postgres"}, description=description,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    )
    def _asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
               tenants: TenantsResource) -> dg.MaterializeResult:
        tenant = tenants.get(context.partition_key)
        build = BuildContext(tenant.tenant_id, warehouse.engine())
        connector = connector_or_fail(tenant.tenant_id, lambda cfg: build_crm_connector(cfg, context=build), tenant.crm)
        return run_sync(context, warehouse, entity, connector, tenant, source_system=tenant.crm.system,
                        fingerprint=tenant.crm.fields_fingerprint(entity),
                        overlap_seconds=tenant.crm.overlap_seconds,
                        settle_lag_seconds=tenant.crm.settle_lag_seconds,
                        preflight=lambda: check_configured_fields(tenant, entity, connector))

    return _asset


def build_crm_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [_crm_asset(entity, description, partitions_def) for entity, description in CRM_ENTITIES.items()]
