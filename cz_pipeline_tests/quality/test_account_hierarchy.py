"""Parent/child hierarchies (seed: Close builds it from a lead field holding the parent's
AccountExternalID; Zoho has native parent accounts): roots, depths and paths, and broken links —
a cycle, a dangling parent, a self-reference — that become roots of their own and are quarantined
with a reason, through the real sync jobs over real HTTP."""

from __future__ import annotations

from typing import Any

from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline_tests.conftest import CF, SyncRunner, rows
from cz_pipeline_tests.quality.conftest import (check_evaluations, materialized, new_account, set_lead,
                                                zoho_crm_config)

TOLERANT = {"parent_references_resolve": 1.0, "no_hierarchy_cycles": 1.0}  # publish, quarantine the links
STRICT = {"parent_references_resolve": 0.0, "no_hierarchy_cycles": 0.0}  # any broken link blocks


def hierarchy(engine, tenant_id: str) -> dict[str, tuple[Any, ...]]:
    return {r["account_external_id"]: (r["parent_account_external_id"], r["root_account_external_id"], r["depth"],
                                       r["path"])
            for r in rows(engine, "SELECT * FROM cs.account_hierarchy WHERE tenant_id = :t", t=tenant_id)}


def quarantined(engine, tenant_id: str) -> dict[str, str]:
    return {r["source_id"]: r["reason"] for r in rows(
        engine, "SELECT source_id, reason FROM sync.quarantine WHERE tenant_id = :t AND entity = 'account_hierarchy'",
        t=tenant_id)}


def test_close_parent_field_builds_the_tree_and_quarantines_a_cycle_a_dangling_parent_and_a_self_reference(
        quality_tenant, tenant_id, engine, close_control):
    c = close_control
    new_account(c, "Q-ROOT")
    new_account(c, "Q-CHILD", parent="Q-ROOT")
    new_account(c, "Q-GRAND", parent="Q-CHILD")
    cyc_a = new_account(c, "Q-CYC-A", parent="Q-CYC-B")
    cyc_b = new_account(c, "Q-CYC-B", parent="Q-CYC-A")
    new_account(c, "Q-UNDER", parent="Q-CYC-A")  # below the cycle: hangs under the member it reaches
    dangling = new_account(c, "Q-DANG", parent="Q-NOWHERE")  # no such account anywhere
    new_account(c, "Q-DANG-KID", parent="Q-DANG")
    new_account(c, "Q-POTENTIAL", status="Potential")  # exists in the CRM, does not meet the sync filter
    orphan = new_account(c, "Q-ORPHAN", parent="Q-POTENTIAL")
    self_ref = new_account(c, "Q-SELF", parent="Q-SELF")

    # A tenant that tolerates no broken link: they block the derived tables and the run says why.
    blocked = quality_tenant(STRICT, name="strict.yaml").run("full_sync", tenant_id, raise_on_error=False)
    assert not blocked.success
    evaluations = check_evaluations(blocked)
    resolve, cycles = evaluations["parent_references_resolve"], evaluations["no_hierarchy_cycles"]
    assert not resolve.passed and not cycles.passed
    assert resolve.metadata["offending"].value == 2 and cycles.metadata["offending"].value == 3
    assert {dangling["id"], orphan["id"]} <= {s["source_id"] for s in _sample(resolve)}
    assert {cyc_a["id"], cyc_b["id"], self_ref["id"]} <= {s["source_id"] for s in _sample(cycles)}
    assert not {"cs/accounts", "cs/account_hierarchy"} & materialized(blocked)

    # Default thresholds (a few broken links are no systemic failure): the hierarchy publishes,
    # the links are quarantined, and the checks pass with their counts.
    runner = quality_tenant(name="default.yaml")
    published = runner.run("full_sync", tenant_id)
    evaluations = check_evaluations(published)
    assert evaluations["parent_references_resolve"].passed and evaluations["no_hierarchy_cycles"].passed
    assert evaluations["no_hierarchy_cycles"].metadata["offending"].value == 3
    h = hierarchy(engine, tenant_id)
    assert h["Q-ROOT"] == (None, "Q-ROOT", 0, ["Q-ROOT"])
    assert h["Q-CHILD"] == ("Q-ROOT", "Q-ROOT", 1, ["Q-ROOT", "Q-CHILD"])
    assert h["Q-GRAND"] == ("Q-CHILD", "Q-ROOT", 2, ["Q-ROOT", "Q-CHILD", "Q-GRAND"])
    assert h["Q-CYC-A"] == (None, "Q-CYC-A", 0, ["Q-CYC-A"])
    assert h["Q-CYC-B"] == (None, "Q-CYC-B", 0, ["Q-CYC-B"])
    assert h["Q-UNDER"] == ("Q-CYC-A", "Q-CYC-A", 1, ["Q-CYC-A", "Q-UNDER"])
    assert h["Q-DANG"] == (None, "Q-DANG", 0, ["Q-DANG"])
    assert h["Q-DANG-KID"] == ("Q-DANG", "Q-DANG", 1, ["Q-DANG", "Q-DANG-KID"])
    assert h["Q-ORPHAN"] == (None, "Q-ORPHAN", 0, ["Q-ORPHAN"])
    assert h["Q-SELF"] == (None, "Q-SELF", 0, ["Q-SELF"])
    assert "Q-POTENTIAL" not in h
    # Every synced account is in the hierarchy exactly once; the source parent stays on cs.accounts.
    accounts = rows(engine, "SELECT account_external_id, parent_account_external_id FROM cs.accounts "
                            "WHERE tenant_id = :t", t=tenant_id)
    assert set(h) == {a["account_external_id"] for a in accounts}
    assert {a["parent_account_external_id"] for a in accounts if a["account_external_id"] == "Q-DANG"} == {"Q-NOWHERE"}
    assert quarantined(engine, tenant_id) == {
        cyc_a["id"]: "hierarchy_cycle", cyc_b["id"]: "hierarchy_cycle", dangling["id"]: "dangling_parent",
        orphan["id"]: "dangling_parent", self_ref["id"]: "self_parent"}
    detail = rows(engine, "SELECT detail FROM sync.quarantine WHERE tenant_id = :t AND source_id = :s",
                  t=tenant_id, s=cyc_a["id"])[0]["detail"]
    assert detail["account_external_id"] == "Q-CYC-A" and sorted(detail["cycle"]) == ["Q-CYC-A", "Q-CYC-B"]

    # Fixed at the source: the links leave quarantine and the accounts join the tree.
    set_lead(c, cyc_b["id"], **{CF["parent_account_id"]: "Q-ROOT"})
    set_lead(c, dangling["id"], **{CF["parent_account_id"]: "Q-CHILD"})
    set_lead(c, orphan["id"], **{CF["parent_account_id"]: None})
    set_lead(c, self_ref["id"], **{CF["parent_account_id"]: "Q-GRAND"})
    runner.run("routine_sync", tenant_id)
    h = hierarchy(engine, tenant_id)
    assert h["Q-CYC-A"] == ("Q-CYC-B", "Q-ROOT", 2, ["Q-ROOT", "Q-CYC-B", "Q-CYC-A"])
    assert h["Q-UNDER"] == ("Q-CYC-A", "Q-ROOT", 3, ["Q-ROOT", "Q-CYC-B", "Q-CYC-A", "Q-UNDER"])
    assert h["Q-DANG-KID"] == ("Q-DANG", "Q-ROOT", 3, ["Q-ROOT", "Q-CHILD", "Q-DANG", "Q-DANG-KID"])
    assert h["Q-ORPHAN"] == (None, "Q-ORPHAN", 0, ["Q-ORPHAN"])
    assert h["Q-SELF"] == ("Q-GRAND", "Q-ROOT", 3, ["Q-ROOT", "Q-CHILD", "Q-GRAND", "Q-SELF"])
    assert quarantined(engine, tenant_id) == {}


def _sample(evaluation) -> list[dict[str, Any]]:
    """The offending ids a check evaluation shows (its markdown sample table, parsed back)."""
    table = evaluation.metadata["sample_offending_ids"].value.splitlines()
    header = [h.strip() for h in table[0].strip("|").split("|")]
    return [dict(zip(header, (v.strip() for v in line.strip("|").split("|")))) for line in table[2:]]


def _zoho_account(control: SandboxControl, name: str, parent: dict[str, Any] | None = None,
                  synced: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {"Account_Name": name, "Sync_to_ChurnZero": synced}
    if parent is not None:
        data["Parent_Account"] = {"name": parent["Account_Name"], "id": parent["id"]}
    return control.mutate("create", "Accounts", data=data)


def test_zoho_native_parents_build_the_tree_and_quarantine_a_cycle_a_dangling_parent_and_a_self_reference(
        tenant_id, zoho_server: RunningSandbox, write_tenants, warehouse_url, engine):
    c = SandboxControl(zoho_server.url)
    root = _zoho_account(c, "Q Root")
    child = _zoho_account(c, "Q Child", root)
    grand = _zoho_account(c, "Q Grand", child)
    cyc_a = _zoho_account(c, "Q Cycle A")
    cyc_b = _zoho_account(c, "Q Cycle B", cyc_a)
    c.mutate("update", "Accounts", id=cyc_a["id"], data={"Parent_Account": {"name": "Q Cycle B", "id": cyc_b["id"]}})
    self_ref = _zoho_account(c, "Q Self")
    c.mutate("update", "Accounts", id=self_ref["id"], data={"Parent_Account": {"name": "Q Self", "id": self_ref["id"]}})
    hidden = _zoho_account(c, "Q Not Synced", synced=False)
    dangling = _zoho_account(c, "Q Dangling", hidden)  # the parent exists but is not a synced account
    ghost = _zoho_account(c, "Q Ghost Parent")  # a link to a record that no longer exists at all
    c.mutate("update", "Accounts", id=ghost["id"],
             data={"Parent_Account": {"name": "Gone", "id": "5725767999999999999"}})

    path = write_tenants({tenant_id: {"crm": zoho_crm_config(zoho_server.url), "quality": {"thresholds": TOLERANT}}})
    SyncRunner(path, warehouse_url).run("full_sync", tenant_id)

    aid = {rec["Account_Name"]: rec["Account_Number"] for rec in (root, child, grand, cyc_a, cyc_b, self_ref, dangling,
                                                                    ghost, hidden)}
    h = hierarchy(engine, tenant_id)
    r, ch, g = aid["Q Root"], aid["Q Child"], aid["Q Grand"]
    assert h[r] == (None, r, 0, [r])
    assert h[ch] == (r, r, 1, [r, ch])
    assert h[g] == (ch, r, 2, [r, ch, g])
    for name in ("Q Cycle A", "Q Cycle B", "Q Self", "Q Dangling", "Q Ghost Parent"):
        assert h[aid[name]] == (None, aid[name], 0, [aid[name]]), name
    assert aid["Q Not Synced"] not in h
    # The native parent id is resolved to the parent's AccountExternalID on cs.accounts.
    parents = {a["account_external_id"]: a["parent_account_external_id"] for a in rows(
        engine, "SELECT * FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)}
    assert parents[g] == ch and parents[aid["Q Dangling"]] == aid["Q Not Synced"]
    mine = {rec["id"] for rec in (root, child, grand, cyc_a, cyc_b, self_ref, dangling, ghost)}
    assert {k: v for k, v in quarantined(engine, tenant_id).items() if k in mine} == {
        cyc_a["id"]: "hierarchy_cycle", cyc_b["id"]: "hierarchy_cycle", self_ref["id"]: "self_parent",
        dangling["id"]: "dangling_parent", ghost["id"]: "dangling_parent"}
