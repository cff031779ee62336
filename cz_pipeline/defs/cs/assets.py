"""The customer-success model (`cs/<table>`), derived in SQL from `raw` per tenant.

Every `cs` asset is gated by the blocking data-quality checks on the raw assets upstream of it
(`defs/quality/checks.py`): within a run Dagster skips it when one fails; across runs (e.g.
materialising `cs/accounts` alone from the UI) `quality.gate()` refuses to publish while the latest
evaluation of such a check failed, so analysts keep the last good rows either way. Each table then
publishes in one transaction that commits only if the invariants of the published set hold
(`quality/invariants.py`).
"""


from collections.abc import Iterator

import dagster as dg
import sqlalchemy as sa

from cz_pipeline.quality import checks as quality
from cz_pipeline.quality import invariants
from cz_pipeline.model.derive import publish
from cz_pipeline.model.hierarchy import publish_hierarchy
from cz_pipeline.config.tenants import TenantConfig
from ..quality.checks import check_evaluation
from ..resources import TenantsResource, WarehouseResource, markdown_table, sync_mode

PREVIEW_COLUMNS = {
    "accounts": "account_external_id, name, parent_account_external_id, next_renewal_date",
    "account_hierarchy": "account_external_id, parent_account_external_id, root_account_external_id, depth, path",
    "contacts": "contact_external_id, account_external_id, first_name, last_name",
    "deals": "crm_id, account_external_id, status_type, amount, currency",
    "tasks": "crm_id, account_external_id, subject, due_date",
    "activities": "crm_id, account_external_id, subject, completed_at",
    "users": "crm_id, email, is_active, can_log_in",
}
# Direct upstream of each cs table: ["crm", entity] or ["cs", table].
DEPS = {
    "accounts": [["crm", "leads"], ["crm", "deals"]],
    "account_hierarchy": [["cs", "accounts"]],
    "contacts": [["cs", "accounts"], ["crm", "contacts"]],
    "deals": [["cs", "accounts"], ["crm", "deals"]],
    "tasks": [["cs", "accounts"], ["cs", "contacts"], ["crm", "tasks"]],
    "activities": [["cs", "accounts"], ["cs", "contacts"], ["crm", "tasks"]],
    "users": [["crm", "users"]],
}


def upstream_entities(table: str) -> set[str]:
    """The raw entities a cs table is (transitively) derived from: their checks gate it."""
    out: set[str] = set()
    for prefix, name in DEPS[table]:
        out |= {name} if prefix == "crm" else upstream_entities(name)
    return out


def gate_checks(context: dg.AssetExecutionContext, engine: sa.Engine, tenant: TenantConfig,
                table: str) -> tuple[list[dg.AssetCheckEvaluation], dg.Failure | None]:
    """Evaluate the gate of `cs.<table>`: the evaluations of its upstream checks made now (for
    the caller to yield on their checks) and the refusal to raise while a blocking check upstream
    failed (within and across runs). A table derived from the leads also brings the checks of the
    other raw entities this run synced up to date, logged as events (so each landed entity shows
    its checks even when a failing check keeps their own cs tables from running)."""
    upstream = upstream_entities(table)
    refresh = (quality.synced_in_run(engine, tenant.tenant_id, context.run.run_id) - upstream
               if "leads" in upstream else set())
    gating: list[dg.AssetCheckEvaluation] = []

    def report(outcomes: list[quality.CheckOutcome]) -> None:
        for outcome in outcomes:
            log = (context.log.info if outcome.passed
                   else context.log.error if outcome.blocking else context.log.warning)
            log(f"{tenant.tenant_id} {outcome.asset_key}:{outcome.name}: {outcome.message}")
            evaluation = check_evaluation(outcome, context.partition_key)
            if outcome.entity in upstream:
                gating.append(evaluation)
            else:  # logged, not yielded: a failing check that does not gate this table must not fail it
                context.log_event(evaluation)

    failed = quality.gate(engine, tenant, upstream, dagster_run_id=context.run.run_id, refresh=refresh, report=report)
    if not failed:
        return gating, None
    lines = [f"- {o.asset_key}:{o.name}: {o.message}"
             + (f" (evaluated {o.evaluated_at:%Y-%m-%d %H:%M:%S %Z} in run {o.dagster_run_id or 'n/a'})"
                if o.evaluated_at else "") for o in failed]
    names = ", ".join(f"{o.asset_key}:{o.name}" for o in failed)
    return gating, dg.Failure(
        description=(f"tenant {tenant.tenant_id!r}: cs/{table} refused to publish: the latest evaluation of "
                     f"blocking check{'s' if len(failed) > 1 else ''} {names} failed. Analysts keep the last good "
                     f"cs.{table} rows. Fix the source records (the offending ids are in the check's metadata and "
                     f"in sync.check_results.sample) or the tenant's quality thresholds, then re-run "
                     f"routine_sync/full_sync (or materialise the crm assets with their checks).\n"
                     + "\n".join(lines)),
        metadata={"tenant": tenant.tenant_id, "failed_checks": [f"{o.asset_key}:{o.name}" for o in failed]},
        allow_retries=False)


def enforce_gate(context: dg.AssetExecutionContext, engine: sa.Engine, tenant: TenantConfig, table: str) -> None:
    """`gate_checks` for an asset that does not yield: evaluations are logged, a refusal raised."""
    evaluations, refusal = gate_checks(context, engine, tenant, table)
    for evaluation in evaluations:
        context.log_event(evaluation)
    if refusal is not None:
        raise refusal


def _preview(engine: sa.Engine, table: str, tenant_id: str) -> dg.MetadataValue:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {PREVIEW_COLUMNS[table]} FROM cs.{table} WHERE tenant_id = :t "
                                    "ORDER BY 1 LIMIT 5"), {"t": tenant_id}).mappings().all()
    return dg.MetadataValue.md(markdown_table([dict(r) for r in rows]))


def publish_table(context: dg.AssetExecutionContext, warehouse: WarehouseResource, tenants: TenantsResource,
                  table: str) -> Iterator[dg.AssetCheckEvaluation | dg.MaterializeResult]:
    """Gate, then publish in one transaction that commits only if the published set's invariants
    hold. Yields the gate's check evaluations first, so they are recorded even when it refuses."""
    tenant = tenants.get(context.partition_key)
    engine = warehouse.engine()
    evaluations, refusal = gate_checks(context, engine, tenant, table)
    yield from evaluations
    if refusal is not None:
        raise refusal
    mode = sync_mode(context)

    def write(conn: sa.Connection):
        return publish_hierarchy(conn, tenant) if table == "account_hierarchy" else publish(conn, tenant, table, mode)

    try:
        result, held = invariants.publish_checked(engine, tenant, table, write, mode=mode,
                                                  dagster_run_id=context.run.run_id)
    except invariants.InvariantViolation as exc:
        raise dg.Failure(
            description=str(exc) + "\n" + "\n".join(f"- {o.name}: sample {o.sample}" for o in exc.failed),
            metadata={"tenant": tenant.tenant_id, "violated_invariants": [o.name for o in exc.failed],
                      "sample_offending_rows": dg.MetadataValue.md(
                          markdown_table([{"invariant": o.name, "id": row.get("id"),
                                          "detail": {k: v for k, v in row.items() if k != "id"}}
                                         for o in exc.failed for row in o.sample],
                                         limit=quality.SAMPLE_SIZE))},
            allow_retries=False) from None
    context.log.info(f"{tenant.tenant_id} cs.{table}: {result.as_metadata()}")
    yield dg.MaterializeResult(metadata={
        **result.as_metadata(), "invariants_held": dg.MetadataValue.text(", ".join(o.name for o in held) or "none"),
        "preview": _preview(engine, table, tenant.tenant_id)})


def _cs_asset(table: str, description: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(key=["cs", table], group_name="cs", partitions_def=partitions_def,
              deps=[dg.AssetKey(d) for d in DEPS[table]], kinds={"postgres"}, description=description)
    def _asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource, tenants: TenantsResource):
        yield from publish_table(context, warehouse, tenants, table)

    return _asset


def build_cs_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [
        _cs_asset("accounts",
                  "Accounts: leads meeting the tenant's sync filter, keyed by AccountExternalID. Leads without "
                  "one, or sharing one, are quarantined (`sync.quarantine`). Definition fields (e.g. next "
                  "renewal date) are aggregated over the account's deals.", partitions_def),
        _cs_asset("account_hierarchy",
                  "Parent/child hierarchy of the synced accounts: parent, root, depth (root = 0) and path (root "
                  "first). Self-references, parents that are not synced accounts and cycles are quarantined "
                  "(`sync.quarantine`, entity `account_hierarchy`: self_parent / dangling_parent / "
                  "hierarchy_cycle) and those accounts become roots of their own.", partitions_def),
        _cs_asset("contacts", "All contacts of synced accounts, keyed by ContactExternalID (email by default).",
                  partitions_def),
        _cs_asset("deals", "Deals of synced accounts, amounts in major units.", partitions_def),
        _cs_asset("tasks", "Open CRM tasks of synced accounts.", partitions_def),
        _cs_asset("activities", "Completed CRM tasks of synced accounts.", partitions_def),
        _cs_asset("users", "All CRM users (read-only), with who may log in.", partitions_def),
    ]
