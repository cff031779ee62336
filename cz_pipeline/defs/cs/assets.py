"""The customer-success model (`cs/<table>`), derived in SQL from `raw` per tenant."""


import dagster as dg
import sqlalchemy as sa

from ...sync.derive import publish
from ..resources import TenantsResource, WarehouseResource, markdown_table, sync_mode

PREVIEW_COLUMNS = {
    "accounts": "account_external_id, name, parent_account_external_id, next_renewal_date",
    "contacts": "contact_external_id, account_external_id, first_name, last_name",
    "deals": "crm_id, account_external_id, status_type, amount, currency",
    "tasks": "crm_id, account_external_id, subject, due_date",
    "activities": "crm_id, account_external_id, subject, completed_at",
    "users": "crm_id, email, is_active, can_log_in",
}


def publish_table(context: dg.AssetExecutionContext, warehouse: WarehouseResource, tenants: TenantsResource,
                  table: str) -> dg.MaterializeResult:
    tenant = tenants.get(context.partition_key)
    engine = warehouse.engine()
    with engine.begin() as conn:
        result = publish(conn, tenant, table, sync_mode(context))
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {PREVIEW_COLUMNS[table]} FROM cs.{table} WHERE tenant_id = :t "
                                    "ORDER BY 1 LIMIT 5"), {"t": tenant.tenant_id}).mappings().all()
    context.log.info(f"{tenant.tenant_id} cs.{table}: {result.as_metadata()}")
    return dg.MaterializeResult(metadata={**result.as_metadata(), "preview": dg.MetadataValue.md(
        markdown_table([dict(r) for r in rows]))})


def _cs_asset(table: str, deps: list[list[str]], description: str,
              partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(key=["cs", table], group_name="cs", partitions_def=partitions_def,
              deps=[dg.AssetKey(d) for d in deps], kinds={"postgres"}, description=description)
    def _asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
               tenants: TenantsResource) -> dg.MaterializeResult:
        return publish_table(context, warehouse, tenants, table)

    return _asset


def build_cs_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [
        _cs_asset("accounts", [["crm", "leads"], ["crm", "deals"]],
                  "Accounts: leads meeting the tenant's sync filter, keyed by AccountExternalID. Leads without "
                  "one, or sharing one, are quarantined (`sync.quarantine`). Definition fields (e.g. next "
                  "renewal date) are aggregated over the account's deals.", partitions_def),
        _cs_asset("contacts", [["cs", "accounts"], ["crm", "contacts"]],
                  "All contacts of synced accounts, keyed by ContactExternalID (email by default).", partitions_def),
        _cs_asset("deals", [["cs", "accounts"], ["crm", "deals"]],
                  "Deals of synced accounts, amounts in major units.", partitions_def),
        _cs_asset("tasks", [["cs", "accounts"], ["cs", "contacts"], ["crm", "tasks"]],
                  "Open CRM tasks of synced accounts.", partitions_def),
        _cs_asset("activities", [["cs", "accounts"], ["cs", "contacts"], ["crm", "tasks"]],
                  "Completed CRM tasks of synced accounts.", partitions_def),
        _cs_asset("users", [["crm", "users"]], "All CRM users (read-only), with who may log in.", partitions_def),

    ]
