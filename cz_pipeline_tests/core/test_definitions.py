"""The Dagster definitions load, and the asset graph is pinned: a change to it is deliberate."""

from __future__ import annotations

import dagster as dg

from cz_pipeline.definitions import build_defs, defs
from cz_pipeline.settings import DEMO_TENANTS_FILE

PINNED_DEPS = {
    "crm/leads": set(), "crm/contacts": set(), "crm/deals": set(), "crm/tasks": set(), "crm/users": set(),
    "cs/accounts": {"crm/leads", "crm/deals"},
    "cs/contacts": {"cs/accounts", "crm/contacts"},
    "cs/deals": {"cs/accounts", "crm/deals"},
    "cs/tasks": {"cs/accounts", "cs/contacts", "crm/tasks"},
    "cs/activities": {"cs/accounts", "cs/contacts", "crm/tasks"},
    "cs/users": {"crm/users"},
    "cs/account_hierarchy": {"cs/accounts"},
    "helpdesk/tickets": set(),
    "cs/tickets": {"helpdesk/tickets", "cs/contacts"},
}
PINNED_CHECKS = {
    ("crm/leads", "account_external_id_present"), ("crm/leads", "account_external_id_unique"),
    ("crm/leads", "parent_references_resolve"), ("crm/leads", "no_hierarchy_cycles"),
    ("crm/leads", "account_count_drop"), ("crm/leads", "sync_health"),
    ("crm/contacts", "contact_external_id_valid"), ("crm/contacts", "contact_external_id_unique"),
    ("crm/contacts", "contacts_without_account"),
    ("crm/deals", "deals_reference_synced_account"), ("crm/tasks", "tasks_reference_synced_account"),
}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"routine_sync", "full_sync"}


def test_the_asset_graph_is_pinned():
    graph = build_defs(str(DEMO_TENANTS_FILE)).resolve_asset_graph()
    deps = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
            for key in graph.get_all_asset_keys()}
    assert deps == PINNED_DEPS
    assert {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys} == PINNED_CHECKS


def test_every_tenant_asset_is_partitioned_by_tenant_id():
    graph = build_defs(str(DEMO_TENANTS_FILE)).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        partitions = graph.get(key).partitions_def
        assert partitions is not None and "demo_close" in partitions.get_partition_keys(), key
