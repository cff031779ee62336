"""Helpdesk assets: `helpdesk/tickets` lands the tenant's helpdesk tickets in `raw.tickets`
(one-way, with every routine sync); `cs/tickets` matches them to contacts by Customer Email in
SQL. `cs/tickets` depends on `helpdesk/tickets` AND `cs/contacts`, so a sync that changes
contacts re-matches the tickets in the same run without reading them from the API again."""


import dagster as dg
import sqlalchemy as sa

from cz_pipeline.sources import build_helpdesk_connector
from cz_pipeline.model.tickets import publish_tickets
from ..crm.assets import connector_or_fail, run_sync
from ..cs.assets import enforce_gate
from ..resources import TenantsResource, WarehouseResource, markdown_table

# Bump when the connector's payload shape changes: the next routine sync re-pulls every ticket.
TICKETS_FINGERPRINT = "teamwork_desk/tickets/v1"
NO_HELPDESK = "this tenant has no helpdesk configured: nothing to sync"


def build_helpdesk_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=["helpdesk", "tickets"], group_name="helpdesk", partitions_def=partitions_def,
        pool="helpdesk_api", kinds={"postgres"},
        description="Helpdesk tickets (Teamwork Desk) as the API returns them, with the resolved customer "
                    "and `customer_email`; soft-deleted tickets keep `state`/`deletedAt`. One-way.",
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    )
    def helpdesk_tickets(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                         tenants: TenantsResource) -> dg.MaterializeResult:
        tenant = tenants.get(context.partition_key)
        cfg = tenant.helpdesk
        if cfg is None:
            context.log.info(f"{tenant.tenant_id}: {NO_HELPDESK}")
            return dg.MaterializeResult(metadata={"skipped": NO_HELPDESK})
        connector = connector_or_fail(tenant.tenant_id, build_helpdesk_connector, cfg)
        return run_sync(context, warehouse, "tickets", connector, tenant, source_system=cfg.system,
                        fingerprint=TICKETS_FINGERPRINT, overlap_seconds=cfg.overlap_seconds,
                        settle_lag_seconds=cfg.settle_lag_seconds)

    @dg.asset(
        key=["cs", "tickets"], group_name="cs", partitions_def=partitions_def,
        deps=[dg.AssetKey(["helpdesk", "tickets"]), dg.AssetKey(["cs", "contacts"])], kinds={"postgres"},
        description="Tickets matched by Customer Email (case-insensitive, trimmed) to a unique contact, and "
                    "through it to the account. No contact → `no_contact`, several → `ambiguous`; both stay "
                    "unassociated. Re-matched whenever contacts change; every match change is logged with "
                    "its reason in `sync.ticket_match_log`.",
    )
    def cs_tickets(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                   tenants: TenantsResource) -> dg.MaterializeResult:
        tenant = tenants.get(context.partition_key)
        if tenant.helpdesk is None:
            return dg.MaterializeResult(metadata={"skipped": NO_HELPDESK})
        engine = warehouse.engine()
        enforce_gate(context, engine, tenant, "contacts")  # tickets hang off the gated contacts
        with engine.begin() as conn:
            result = publish_tickets(conn, tenant.tenant_id, tenant.helpdesk.base_url, context.run_id)
        with engine.connect() as conn:
            preview = conn.execute(sa.text(
                "SELECT ticket_id, match_status, customer_email, contact_external_id, account_external_id "
                "FROM cs.tickets WHERE tenant_id = :t ORDER BY updated_at DESC NULLS LAST, ticket_id LIMIT 5"),
                {"t": tenant.tenant_id}).mappings().all()
        context.log.info(f"{tenant.tenant_id} cs.tickets: {result.as_metadata()}")
        return dg.MaterializeResult(metadata={**result.as_metadata(),
                                              "preview": dg.MetadataValue.md(markdown_table([dict(r) for r in preview]))})

    return [helpdesk_tickets, cs_tickets]
