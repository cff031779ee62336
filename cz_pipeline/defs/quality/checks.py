"""Data-quality asset checks (Great Expectations, run in Postgres by `cz_pipeline.quality`).

Where the checks attach, where they run, and why the gate holds:
- The blocking checks validate the *staged candidates* — what `cs` would become — so they attach
  to the raw assets whose landing produces them: `crm/leads` (AccountExternalID present/unique,
  parent references resolve, no hierarchy cycles, account count), `crm/contacts` (ContactExternalID
  valid and unique), `crm/deals` and `crm/tasks` (they reference a synced account). Record-level
  checks pass while the offenders (quarantined at publication) stay under the tenant's threshold
  (default a quarter) and report their counts and samples; past it, or when the account count
  drops by more than half, the ERROR check fails its check step; Dagster then skips everything downstream of the checked raw asset in that
  run: `cs/accounts`, `cs/account_hierarchy`, `cs/contacts`, ... keep their last good rows while
  the raw data has already landed (the raw asset materialised before its check ran).
- The sync jobs do not plan these checks as steps of their own: Dagster resolves every check
  planned in a failed run but not evaluated as "execution failed", so a sync that broke (a bad API
  key) would look like bad data. Instead, in a sync run the `cs` assets evaluate them through
  `quality.gate()` before publishing and log each evaluation on its check (`check_evaluation`):
  a failed sync skips the `cs` assets, and its checks stay not evaluated in that run.
- The gate refuses (a `dg.Failure` naming the check and tenant) while the latest evaluation of a
  blocking check upstream failed, within a run and across runs (e.g. `cs/accounts` materialised
  alone), and evaluates checks itself when their latest results are older than the raw data;
  every outcome is recorded in `sync.check_results`. The multi-asset checks below run the same
  evaluation when the checks are launched on their own (from the UI or an ad-hoc selection).
- WARN checks (contacts without an account) never block.

One multi-asset check per raw asset: one GX validation computes all of its checks. Great
Expectations is imported only when a check runs, never when the definitions load.
"""

import warnings

import dagster as dg

from cz_pipeline.quality import checks as quality
from ..resources import TenantsResource, WarehouseResource, markdown_table


QUALITY_CHECK_KEYS = [dg.AssetCheckKey(dg.AssetKey(["crm", spec.entity]), spec.name) for spec in quality.CHECKS]


def _metadata(outcome: quality.CheckOutcome) -> dict[str, dg.MetadataValue]:
    return {
        "offending": dg.MetadataValue.int(outcome.offending),
        "total": dg.MetadataValue.int(outcome.total),
        "share": dg.MetadataValue.float(float(outcome.share)),
        "threshold": dg.MetadataValue.float(float(outcome.threshold)),
        "expectation": dg.MetadataValue.text(outcome.expectation),
        "failing_expectation": dg.MetadataValue.text(outcome.failing_expectation or "none"),
        "sample_offending_ids": dg.MetadataValue.md(markdown_table(outcome.sample, limit=quality.SAMPLE_SIZE)),
    }


def _severity(outcome: quality.CheckOutcome) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN


def _result(outcome: quality.CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey(["crm", outcome.entity]), check_name=outcome.name, passed=outcome.passed,
        severity=_severity(outcome), metadata=_metadata(outcome), description=outcome.message)


def check_evaluation(outcome: quality.CheckOutcome, partition: str | None) -> dg.AssetCheckEvaluation:
    """The evaluation of a quality check made by the gate of a `cs` asset (inside a sync run), as
    the UI shows it on the check."""
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(["crm", outcome.entity]), check_name=outcome.name, passed=outcome.passed,
        metadata=_metadata(outcome), severity=_severity(outcome), description=outcome.message,
        blocking=outcome.blocking, partition=partition)


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
