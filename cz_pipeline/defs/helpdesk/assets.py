"""Helpdesk assets (`helpdesk/tickets`, `cs/tickets`). Built in the Teamwork Desk issue."""

import dagster as dg


def build_helpdesk_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return []
