"""Data-quality asset checks (Great Expectations, run in Postgres by `cz_pipeline.quality`).

Where the checks attach, and why the gate holds:
- The blocking checks validate the *staged candidates* — what `cs` would become — so they attach
  to the raw assets whose landing produces them: `crm/leads` (AccountExternalID present/unique,
  parent references resolve, no hierarchy cycles, account count), `crm/contacts` (ContactExternalID
  valid and unique), `crm/deals` and `crm/tasks` (they reference a synced account). Record-level
  checks pass while the offenders (quarantined at publication) stay under the tenant's threshold
  (default a quarter) and report their counts and samples; past it, or when the account count
  drops by more than half, the ERROR check fails its check step; Dagster then skips everything downstream of the checked raw asset in that
  run: `cs/accounts`, `cs/account_hierarchy`, `cs/contacts`, ... keep their last good rows while
  the raw data has already landed (the raw asset materialised before its check ran).
- Within a run that is Dagster's blocking; across runs it is not (dagster issue #25112), so every
  outcome is also recorded in `sync.check_results`, and each `cs` asset calls `quality.gate()`
  before publishing: it refuses (a `dg.Failure` naming the check and tenant) while the latest
  evaluation of a blocking check upstream failed, and evaluates checks itself when their latest
  results are older than the raw data.
- WARN checks (contacts without an account) never block.
- The checks are their own steps (one multi-asset check per raw asset), downstream of the sync
  step: a sync that fails never starts them, so a failed sync is never reported as a failed check.

One multi-asset check per raw asset: one GX validation computes all of its checks. Great
Expectations is imported only when a check runs, never when the definitions load.
"""

import warnings

import dagster as dg

from cz_pipeline.quality import checks as quality
from ..resources import TenantsResource, WarehouseResource, markdown_table


def _result(outcome: quality.CheckOutcome) -> dg.AssetCheckResult:
    metadata = {
        "offending": dg.MetadataValue.int(outcome.offending),
        "total": dg.MetadataValue.int(outcome.total),
        "share": dg.MetadataValue.float(float(outcome.share)),
        "threshold": dg.MetadataValue.float(float(outcome.threshold)),
        "expectation": dg.MetadataValue.text(outcome.expectation),
        "failing_expectation": dg.MetadataValue.text(outcome.failing_expectation or "none"),
        "sample_offending_ids": dg.MetadataValue.md(markdown_table(outcome.sample, limit=quality.SAMPLE_SIZE)),
    }
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey(["crm", outcome.entity]), check_name=outcome.name, passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata, description=outcome.message)


def _group_checks(entity: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    reads = [dg.AssetKey(["crm", e]) for e in quality.GROUP_ENTITIES[entity] if e != entity]
    specs = [dg.AssetCheckSpec(spec.name, asset=dg.AssetKey(["crm", entity]), blocking=spec.blocking,
                               description=spec.description + (" Blocking (ERROR)." if spec.blocking else " Warning."),
                               additional_deps=reads, partitions_def=partitions_def)
             for spec in quality.checks_for(entity)]

    @dg.multi_asset_check(specs=specs, name=f"{entity}_quality", compute_kind="great_expectations",
                          description=f"Great Expectations checks on the candidates derived from crm/{entity}.")
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, tenants: TenantsResource):
        tenant = tenants.get(context.partition_key)
        try:
            outcomes = quality.run_checks(warehouse.engine(), tenant, entity, dagster_run_id=context.run.run_id)
        except quality.QualityError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
        for outcome in outcomes:
            log = (context.log.info if outcome.passed
                   else context.log.error if outcome.blocking else context.log.warning)
            log(f"{tenant.tenant_id} {outcome.name}: {outcome.message}")
            yield _result(outcome)

    return _checks


def build_quality_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    with warnings.catch_warnings():  # partitioned checks are a Dagster "preview" feature; known and wanted
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [_group_checks(entity, partitions_def) for entity in quality.GROUP_ENTITIES]
