"""Sync jobs. Both run raw -> derived for one tenant partition in one process;
the mode travels as a run tag that the assets read."""

from __future__ import annotations

import dagster as dg

from .quality.checks import QUALITY_CHECK_KEYS
from .resources import SYNC_MODE_TAG

# The quality checks are evaluated by the cs assets' gate, not planned as steps: a check planned in
# a run whose sync failed would show "execution failed" (defs/quality/checks.py).
SYNC_SELECTION = dg.AssetSelection.groups("crm", "cs", "helpdesk") - dg.AssetSelection.checks(*QUALITY_CHECK_KEYS)
JOB_DESCRIPTIONS = {
    "routine_sync": "Incremental sync of one tenant: records changed since the cursor, plus records that newly "
                    "meet the sync filter. Removes nothing but deletions the vendor reports explicitly.",
    "full_sync": "Full sync of one tenant: every record of every object; records deleted at the source or no "
                 "longer meeting the sync filter are tombstoned in raw and removed from cs.",
}
# A run that outlives this is hung (a stalled connection, a crashed worker the launcher cannot
# see): run monitoring (dagster.yaml) fails it, which frees the tenant's one-run-at-a-time slot.
MAX_RUNTIME_SECONDS = {"routine_sync": 3600, "full_sync": 6 * 3600}


def build_jobs(partitions_def: dg.PartitionsDefinition) -> list:
    return [
        dg.define_asset_job(name, selection=SYNC_SELECTION, partitions_def=partitions_def,
                            executor_def=dg.in_process_executor, description=description,
                            tags={SYNC_MODE_TAG: name.removesuffix("_sync"),
                                  "dagster/max_runtime": str(MAX_RUNTIME_SECONDS[name])})
        for name, description in JOB_DESCRIPTIONS.items()
    ]
