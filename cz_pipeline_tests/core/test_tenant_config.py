"""Tenant configuration: validated at load time, errors name the tenant and the key, secrets
are referenced from the environment and never rendered."""

from __future__ import annotations

import copy

import pytest
import yaml

from cz_pipeline.config.tenants import DEFAULT_FULL_SYNC_CRON, ConfigError, Secret, load_tenants, parse_tenants

GOOD = {"tenants": {"acme": {"crm": {
    "system": "close",
    "credentials": {"api_key": {"env": "ACME_CLOSE_API_KEY"}},
    "account_external_id": "custom.cf_account_id",
    "sync_filter": [{"field": "status_label", "op": "in", "value": ["Customer"]}],
    "account_fields": {"renewal_owner": {"source": "custom.cf_owner", "editable": True}},
}}}}


def with_change(path: list, value, delete: bool = False) -> dict:
    cfg = copy.deepcopy(GOOD)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg


def test_a_valid_file_loads_typed_with_defaults(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    tenant = load_tenants(path)["acme"]
    assert tenant.crm.contact_external_id == "email"
    assert tenant.crm.routine_sync_minutes == 15
    assert tenant.crm.full_sync_cron == DEFAULT_FULL_SYNC_CRON["close"] == "0 2 * * 6,0"
    assert tenant.crm.base_url == "https://api.close.com/api/v1"
    assert tenant.crm.account_fields[0].editable is True


@pytest.mark.parametrize("cfg, key, words", [
    (with_change(["tenants", "acme", "crm", "colour"], "blue"), "crm.colour", "unknown key"),
    (with_change(["tenants", "acme", "crm", "account_external_id"], None, delete=True), "crm.account_external_id",
     "missing required key"),
    (with_change(["tenants", "acme", "crm", "full_sync_cron"], "every sunday"), "crm.full_sync_cron", "bad cron"),
    (with_change(["tenants", "acme", "crm", "account_external_id"], "custom.cf x;drop"), "crm.account_external_id",
     "bad field name"),
    (with_change(["tenants", "acme", "crm", "sync_filter", 0, "op"], "like"), "crm.sync_filter[0].op", "unknown operator"),
    (with_change(["tenants", "acme", "crm", "system"], "hubspot"), "crm.system", "unknown CRM"),
    (with_change(["tenants", "acme", "crm", "account_fields", "next_renewal_date"],
                 {"definition": {"from": "deals", "aggregate": "max", "field": "end_date"}, "editable": True}),
     "crm.account_fields.next_renewal_date.editable", "can never be editable"),
])
def test_bad_config_is_rejected_naming_tenant_and_key(cfg, key, words):
    with pytest.raises(ConfigError) as err:
        parse_tenants(cfg)
    message = str(err.value)
    assert "tenant 'acme'" in message and f"key '{key}'" in message and words in message


def test_a_bad_tenant_id_is_rejected():
    cfg = {"tenants": {"Acme Corp": GOOD["tenants"]["acme"]}}
    with pytest.raises(ConfigError, match=r"tenant 'Acme Corp': bad tenant id"):
        parse_tenants(cfg)


def test_a_secret_written_in_the_file_is_rejected_without_echoing_it():
    cfg = with_change(["tenants", "acme", "crm", "credentials", "api_key"], "api_live_SuperSecret123")
    with pytest.raises(ConfigError) as err:
        parse_tenants(cfg)
    assert "crm.credentials.api_key" in str(err.value)
    assert "SuperSecret123" not in str(err.value)


def test_secrets_resolve_from_the_environment_and_never_render(monkeypatch):
    tenant = parse_tenants(GOOD)["acme"]
    secret = tenant.crm.credentials["api_key"]
    monkeypatch.setenv("ACME_CLOSE_API_KEY", "api_live_value_42")
    assert secret.get() == "api_live_value_42"
    for rendering in (repr(secret), str(secret), repr(tenant), str(tenant.crm)):
        assert "api_live_value_42" not in rendering
    assert Secret("UNSET_VAR_FOR_TEST").__repr__() == "Secret(env='UNSET_VAR_FOR_TEST')"


def test_fields_fingerprint_changes_only_for_the_object_whose_fields_change():
    before = parse_tenants(GOOD)["acme"].crm
    after = parse_tenants(with_change(["tenants", "acme", "crm", "account_fields", "tier"],
                                      {"source": "custom.cf_tier"}))["acme"].crm
    assert before.fields_fingerprint("leads") != after.fields_fingerprint("leads")
    assert before.fields_fingerprint("contacts") == after.fields_fingerprint("contacts")
