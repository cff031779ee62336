"""End to end against the Close sandbox, through the real jobs on a persistent Dagster instance:

- seed "When new fields are added to your sync, these fields will be populated by the next routine
  sync ... a full sync of just the Leads object": a config change re-pulls only that object;
- issue item 4: each tenant's last routine and full sync are in `sync.tenant_status` and on the
  `sync_health` check; repeated failures turn that check into a warning for the tenant.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.event_api import PartitionKeyFilter

from cz_pipeline.definitions import build_defs
from cz_pipeline.defs.automation.health import CHECK_NAME, LEADS
from cz_pipeline_tests.conftest import CF, CLOSE_KEY, CLOSE_KEY_ENV, close_crm_config, rows, scalar

CHECK_KEY = dg.AssetCheckKey(LEADS, CHECK_NAME)
WRONG_KEY = "api_wrong_key_for_the_test_42"


class Runner:
    """The real sync jobs for one tenants file, recorded in a persistent test instance."""

    def __init__(self, path: Path, warehouse_url: str, instance: dg.DagsterInstance):
        self.defs = build_defs(str(path), warehouse_url)
        self.instance = instance

    def run(self, job: str, tenant: str) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=tenant, instance=self.instance, raise_on_error=False, tags={"cz/tenant": tenant})


def ledger(engine, tenant: str, run_id: str) -> dict[str, dict]:
    return {r["entity"]: r for r in rows(engine, "SELECT * FROM sync.runs WHERE tenant_id = :t AND dagster_run_id = :r",
                                         t=tenant, r=run_id)}


def health_evaluations(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    return [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK_NAME]


def latest_health(instance: dg.DagsterInstance, tenant: str) -> dg.AssetCheckEvaluation:
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [CHECK_KEY], partition_filter=PartitionKeyFilter(key=tenant))[CHECK_KEY]
    return record.evaluation


def test_adding_an_account_field_repulls_only_leads_and_fills_it_on_every_account(
        tenant_id, close_server, close_app, write_tenants, warehouse_url, engine, instance):
    config_a = close_crm_config(close_server.url)
    Runner(write_tenants({tenant_id: {"crm": config_a}}, "a.yaml"), warehouse_url, instance).run("full_sync", tenant_id)
    assert scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t AND custom_fields ? 'renewal_owner'",
                  t=tenant_id) == 0

    config_b = close_crm_config(close_server.url, account_fields={
        **config_a["account_fields"], "renewal_owner": {"source": CF["renewal_owner"]}})
    result = Runner(write_tenants({tenant_id: {"crm": config_b}}, "b.yaml"), warehouse_url, instance).run(
        "routine_sync", tenant_id)
    assert result.success

    runs = ledger(engine, tenant_id, result.run_id)
    assert runs["leads"]["mode"] == "repull"
    assert "field configuration changed" in runs["leads"]["reason"]
    assert {e: r["mode"] for e, r in runs.items() if e != "leads"} == {
        "contacts": "routine", "deals": "routine", "tasks": "routine", "users": "routine"}
    assert runs["leads"]["records_read"] == len(close_app.dump("lead"))  # the whole object, not a window
    leads_event = result.asset_materializations_for_node("crm__leads")[0]
    assert leads_event.metadata["mode"].value == "repull"

    # Every account whose lead has a renewal owner now carries it; the others have no value.
    accounts = rows(engine, """
        SELECT a.custom_fields->>'renewal_owner' AS got, l.payload->>:src AS want
          FROM cs.accounts a JOIN raw.leads l ON l.tenant_id = a.tenant_id AND l.source_id = a.crm_id
         WHERE a.tenant_id = :t""", t=tenant_id, src=CF["renewal_owner"])
    assert accounts and sum(1 for a in accounts if a["want"]) >= 5
    assert all(a["got"] == a["want"] for a in accounts)

    status = rows(engine, "SELECT * FROM sync.tenant_status WHERE tenant_id = :t", t=tenant_id)[0]
    assert status["last_routine_repulled"] == "leads"
    assert status["last_routine_run_id"] == result.run_id and status["last_full_status"] == "success"
    # A second routine sync is incremental again for leads.
    again = Runner(write_tenants({tenant_id: {"crm": config_b}}, "b.yaml"), warehouse_url, instance).run(
        "routine_sync", tenant_id)
    assert ledger(engine, tenant_id, again.run_id)["leads"]["mode"] == "routine"


def test_a_tenant_whose_syncs_fail_repeatedly_is_flagged_on_sync_health(
        tenant_id, close_server, write_tenants, warehouse_url, engine, instance, monkeypatch):
    runner = Runner(write_tenants({tenant_id: {"crm": close_crm_config(close_server.url)}}), warehouse_url, instance)
    sensor = runner.defs.get_sensor_def("sync_health_on_failure")

    full = runner.run("full_sync", tenant_id)
    assert full.success
    (evaluation,) = health_evaluations(full)
    assert evaluation.passed and evaluation.partition == tenant_id
    assert "full" in evaluation.metadata["last_full_sync"].value
    assert evaluation.metadata["consecutive_failed_syncs"].value == 0

    monkeypatch.setenv(CLOSE_KEY_ENV, WRONG_KEY)  # the vendor now answers 401
    for attempt in (1, 2):
        failed = runner.run("routine_sync", tenant_id)
        assert not failed.success
        assert health_evaluations(failed) == []  # the in-run check is skipped when raw assets fail...
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_event=failed.get_run_failure_event(), dagster_instance=instance,
            dagster_run=failed.dagster_run).for_run_failure()
        sensor(context)  # ...so the failure sensor records it
        latest = latest_health(instance, tenant_id)
        assert latest.partition == tenant_id
        assert latest.metadata["consecutive_failed_syncs"].value == attempt
        assert latest.passed is (attempt < 2)
    assert latest.severity == dg.AssetCheckSeverity.WARN
    assert tenant_id in latest.description

    status = rows(engine, "SELECT * FROM sync.tenant_status WHERE tenant_id = :t", t=tenant_id)[0]
    assert status["consecutive_failures"] == 2 and status["last_routine_status"] == "failed"
    assert status["last_full_status"] == "success"
    assert status["last_error"] and WRONG_KEY not in status["last_error"]

    monkeypatch.setenv(CLOSE_KEY_ENV, CLOSE_KEY)
    healed = runner.run("routine_sync", tenant_id)
    assert healed.success
    (evaluation,) = health_evaluations(healed)
    assert evaluation.passed and evaluation.metadata["consecutive_failed_syncs"].value == 0
    assert latest_health(instance, tenant_id).passed
    assert scalar(engine, "SELECT consecutive_failures FROM sync.tenant_status WHERE tenant_id = :t", t=tenant_id) == 0


@pytest.fixture
def demo_like(write_tenants, warehouse_url):
    return build_defs(str(write_tenants({"demo_a": {"crm": close_crm_config("http://127.0.0.1:9")}})), warehouse_url)


def test_the_definitions_load_with_the_sensors_schedule_and_health_check(demo_like):
    dg.Definitions.validate_loadable(demo_like)
    repo = demo_like.get_repository_def()
    assert {s.name for s in repo.sensor_defs} == {"routine_sync_sensor", "sync_health_on_failure"}
    assert {s.name for s in repo.schedule_defs} == {"full_sync_schedule"}
    assert repo.get_sensor_def("routine_sync_sensor").job_name == "routine_sync"
    assert repo.get_schedule_def("full_sync_schedule").job_name == "full_sync"
    graph = demo_like.resolve_asset_graph()
    assert CHECK_KEY in graph.asset_check_keys
    job = demo_like.resolve_job_def("routine_sync")
    assert CHECK_KEY in job.asset_layer.asset_graph.asset_check_keys
