"""One bad record never stops a tenant: records Postgres cannot store (NUL characters, lone
surrogates, no id, absurd nesting, out-of-range timestamps) are set aside at ingest one by one,
with a reason naming the field; the rest of the page lands and the cursor advances."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cz_pipeline.core.http import HttpClient, record_from
from cz_pipeline.ingest.engine import sync_entity
from cz_pipeline_tests.conftest import CF, rows, scalar

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _stamp(minutes_ago: int) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat()


def _deep(levels: int) -> object:
    value: object = "bottom"
    for _ in range(levels):
        value = [value]
    return value


class _RowsConnector:
    """A vendor answering fixed rows, for the engine alone (pages as a connector yields them)."""

    system = "close"
    entities = ("leads",)

    def __init__(self, pages: list[list[dict]]):
        self.pages = pages
        self.http = HttpClient("close", "http://127.0.0.1:9")

    def stream(self, entity, since):
        for page in self.pages:
            yield [record_from(row, "close", "date_updated") for row in page]

    def deletions(self, entity, since):
        return iter(())


def test_malformed_records_are_set_aside_one_by_one_and_the_rest_lands(engine, tenant_id):
    good = [{"id": f"lead_ok{i}", "name": f"Good {i}", "date_updated": _stamp(30 - i)} for i in range(3)]
    bad = [
        {"id": "lead_nul", "name": "Bad", "custom": {"note": "a\u0000b"}, "date_updated": _stamp(20)},
        {"id": "lead_surrogate", "name": "x\ud800y", "date_updated": _stamp(20)},
        {"name": "no id at all", "date_updated": _stamp(20)},
        {"id": None, "name": "null id", "date_updated": _stamp(20)},
        {"id": "lead_deep", "nested": _deep(1200), "date_updated": _stamp(20)},
        {"id": "lead_ts", "name": "Far past", "date_updated": "0001-01-01T00:00:00+05:00"},
    ]
    connector = _RowsConnector([[good[0], *bad[:3]], [good[1], *bad[3:], good[2]]])

    result = sync_entity(engine, tenant_id=tenant_id, source_system="close", entity="leads",
                         connector=connector, requested_mode="full")

    assert result.quarantined == 6 and result.inserted == 3
    landed = {r["source_id"] for r in rows(engine, "SELECT source_id FROM raw.leads WHERE tenant_id = :t", t=tenant_id)}
    assert landed == {"lead_ok0", "lead_ok1", "lead_ok2"}
    problems = {r["source_id"]: r["detail"]["problem"] for r in rows(
        engine, "SELECT source_id, detail FROM sync.quarantine WHERE tenant_id = :t AND entity = 'leads' "
                "AND reason = 'malformed_record'", t=tenant_id)}
    assert problems["lead_nul"] == "custom.note: contains a NUL character (\\u0000)"
    assert problems["lead_surrogate"] == "name: contains a lone UTF-16 surrogate"
    assert problems["lead_deep"].startswith("payload: nested too deeply")
    assert problems["lead_ts"] == "date_updated: not a timestamp that can be normalised to UTC"
    no_id = sorted(p for s, p in problems.items() if s.startswith("(no usable id)"))
    assert no_id == ["id: missing or null", "id: missing or null"]  # two records, two rows
    # The reason names the field and the problem, never the value (it may be personal data).
    assert not any("Bad" in p or "null id" in p for p in problems.values())
    # The cursor advanced past the good records, and the ledger counts the set-aside ones.
    assert scalar(engine, "SELECT high_water FROM sync.cursors WHERE tenant_id = :t AND entity = 'leads'",
                  t=tenant_id) is not None
    assert scalar(engine, "SELECT quarantined FROM sync.runs WHERE tenant_id = :t AND status = 'success'",
                  t=tenant_id) == 6


def test_a_record_fixed_at_the_source_leaves_the_ingest_quarantine(engine, tenant_id):
    broken = {"id": "lead_1", "name": "a\u0000b", "date_updated": _stamp(10)}
    sync_entity(engine, tenant_id=tenant_id, source_system="close", entity="leads",
                connector=_RowsConnector([[broken]]), requested_mode="full")
    assert scalar(engine, "SELECT count(*) FROM sync.quarantine WHERE tenant_id = :t", t=tenant_id) == 1

    fixed = {**broken, "name": "ab", "date_updated": _stamp(5)}
    result = sync_entity(engine, tenant_id=tenant_id, source_system="close", entity="leads",
                         connector=_RowsConnector([[fixed]]), requested_mode="full")
    assert result.quarantined == 0 and result.inserted == 1
    assert scalar(engine, "SELECT count(*) FROM sync.quarantine WHERE tenant_id = :t", t=tenant_id) == 0


def test_a_lead_with_a_nul_character_does_not_stop_the_tenant_end_to_end(close_tenant, tenant_id, engine,
                                                                          close_app, close_control):
    leads = [lead for lead in close_app.dump("lead") if lead["status_label"] in ("Customer", "Trial")
             and not lead.get(CF["parent_account_id"])]
    parents = {lead.get(CF["parent_account_id"]) for lead in close_app.dump("lead")}
    victim = next(lead for lead in leads if lead[CF["account_id"]] not in parents)
    close_control.mutate("update", "lead", id=victim["id"], data={"name": "Evil\u0000Corp"})
    task = close_app.dump("task")[0]
    close_app.db["task"][task["id"]]["is_complete"] = "maybe"  # the fake validates its own API; a vendor may not

    result = close_tenant.run("full_sync", tenant_id)
    assert result.success
    assert scalar(engine, "SELECT reason FROM sync.quarantine WHERE tenant_id = :t AND source_id = :s",
                  t=tenant_id, s=victim["id"]) == "malformed_record"
    accounts = scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)
    assert accounts == len([lead for lead in close_app.dump("lead")
                            if lead["status_label"] in ("Customer", "Trial")]) - 1
    # A value that does not cast to its column (is_complete: "maybe") is read as open, not an error.
    assert scalar(engine, "SELECT count(*) FROM cs.tasks WHERE tenant_id = :t AND crm_id = :c",
                  t=tenant_id, c=task["id"]) == (1 if task.get("lead_id") else 0)

    # Fixed at the source: the next routine sync lands it and it leaves the quarantine.
    close_control.mutate("update", "lead", id=victim["id"], data={"name": "Evil Corp"})
    assert close_tenant.run("routine_sync", tenant_id).success
    assert scalar(engine, "SELECT count(*) FROM sync.quarantine WHERE tenant_id = :t AND source_id = :s",
                  t=tenant_id, s=victim["id"]) == 0
    assert scalar(engine, "SELECT name FROM cs.accounts WHERE tenant_id = :t AND crm_id = :s",
                  t=tenant_id, s=victim["id"]) == "Evil Corp"
