"""Data-quality asset checks (Great Expectations). Built in the data-quality issue."""

import dagster as dg


def build_quality_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    return []
