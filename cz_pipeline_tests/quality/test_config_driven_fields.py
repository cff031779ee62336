"""Config-driven account fields (design section 3): the seed's definition example against the Close
sandbox over real HTTP, and the rule that a definition field can never be editable."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from cz_pipeline.config.tenants import ConfigError, parse_tenants
from cz_pipeline_tests.conftest import CF, close_crm_config, rows
from cz_pipeline_tests.quality.conftest import new_account, new_deal


def test_next_renewal_date_is_the_furthest_end_of_deals_started_by_today_and_ending_today_or_later(
        quality_tenant, tenant_id, engine, close_control):
    today = datetime.now(timezone.utc).date()  # the tenant's time zone is UTC

    def day(offset: int) -> str:
        return (today + timedelta(days=offset)).isoformat()

    none = new_account(close_control, "Q-NRD-NONE")
    new_deal(close_control, none["id"], start=day(1), end=day(365))  # starts tomorrow
    new_deal(close_control, none["id"], start=day(-400), end=day(-1))  # ended yesterday
    new_deal(close_control, none["id"])  # no dates at all
    one = new_account(close_control, "Q-NRD-ONE")
    new_deal(close_control, one["id"], start=day(-30), end=day(0))  # ends today: qualifies
    new_deal(close_control, one["id"], start=day(1), end=day(700))  # starts tomorrow: later end, but not yet running
    several = new_account(close_control, "Q-NRD-SEVERAL")
    new_deal(close_control, several["id"], start=day(-300), end=day(0))
    new_deal(close_control, several["id"], start=day(0), end=day(30))  # starts today: qualifies
    new_deal(close_control, several["id"], start=day(-10), end=day(400))  # the furthest qualifying end
    new_deal(close_control, several["id"], start=day(1), end=day(900))
    no_deals = new_account(close_control, "Q-NRD-NODEALS")

    quality_tenant().run("full_sync", tenant_id)

    got = {r["account_external_id"]: r["next_renewal_date"] for r in rows(
        engine, "SELECT account_external_id, next_renewal_date FROM cs.accounts WHERE tenant_id = :t "
                "AND account_external_id LIKE 'Q-NRD-%'", t=tenant_id)}
    assert got == {"Q-NRD-NONE": None, "Q-NRD-ONE": today, "Q-NRD-SEVERAL": today + timedelta(days=400),
                   "Q-NRD-NODEALS": None}
    assert no_deals["id"] and isinstance(got["Q-NRD-ONE"], date)


def test_next_renewal_date_follows_the_deals_on_the_next_routine_sync(quality_tenant, tenant_id, engine, close_control):
    today = datetime.now(timezone.utc).date()
    lead = new_account(close_control, "Q-NRD-MOVING")
    deal = new_deal(close_control, lead["id"], start=(today - timedelta(days=5)).isoformat(),
                    end=(today + timedelta(days=10)).isoformat())
    runner = quality_tenant()
    runner.run("full_sync", tenant_id)
    close_control.mutate("update", "opportunity", id=deal["id"],
                         data={CF["end_date"]: (today + timedelta(days=90)).isoformat()})
    runner.run("routine_sync", tenant_id)
    assert rows(engine, "SELECT next_renewal_date FROM cs.accounts WHERE tenant_id = :t AND account_external_id = "
                        "'Q-NRD-MOVING'", t=tenant_id) == [{"next_renewal_date": today + timedelta(days=90)}]


def test_a_definition_field_can_never_be_editable():
    cfg = close_crm_config("http://127.0.0.1:1")
    cfg["account_fields"]["next_renewal_date"]["editable"] = True
    with pytest.raises(ConfigError) as err:
        parse_tenants({"tenants": {"acme": {"crm": cfg}}})
    message = str(err.value)
    assert "'acme'" in message and "next_renewal_date.editable" in message and "never be editable" in message


def test_a_definition_is_one_aggregate_over_the_deals_not_a_subquery_per_account(engine):
    # A correlated subquery per account rescans every deal of the tenant for each account
    # (quadratic); the plan of the account candidates must hold no SubPlan, only a grouped
    # aggregate joined back to the accounts.
    import sqlalchemy as sa

    from cz_pipeline.model.derive import _Params, accounts_candidates

    cfg = close_crm_config("http://127.0.0.1:1")
    cfg["account_fields"]["deals_won"] = {"definition": {"from": "deals", "aggregate": "count", "field": "amount",
                                                         "where": [{"field": "status_type", "op": "eq", "value": "won"}]}}
    tenant = parse_tenants({"tenants": {"acme": {"crm": cfg}}})["acme"]
    params = _Params(t="acme", system="close")
    sql = accounts_candidates(tenant, params)
    with engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute(sa.text(f"EXPLAIN {sql}"), params.values))
    assert "SubPlan" not in plan, plan
    assert plan.count("HashAggregate") + plan.count("GroupAggregate") >= 2, plan  # one per definition
