"""End to end for a Zoho CRM tenant: the Zoho fake over real HTTP -> connector -> engine ->
Postgres -> cs model, through the real `full_sync` / `routine_sync` jobs."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

from cz_pipeline.sandbox.zoho_crm import MODULES, ZohoSandbox
from cz_pipeline.config.tenants import DEFAULT_FULL_SYNC_CRON, load_tenants
from cz_pipeline_tests.conftest import SyncRunner, close_crm_config, failure_messages, rows, scalar
from cz_pipeline_tests.zoho.conftest import SYNC_FILTER, ZOHO_SECRETS, zoho_crm_config

CS_TABLES = ("accounts", "contacts", "deals", "tasks", "activities", "users")
RAW = {"leads": "Accounts", "contacts": "Contacts", "deals": "Deals", "tasks": "Tasks"}


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(timezone.utc)


def by(rows_: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows_}


def cs(engine, table: str, tenant: str) -> list[dict]:
    return rows(engine, f"SELECT * FROM cs.{table} WHERE tenant_id = :t", t=tenant)


def synced_ids(app: ZohoSandbox, filtered: bool = False) -> set[str]:
    """Ids of the accounts a tenant syncs (all of them, or those passing SYNC_FILTER)."""
    return {a["id"] for a in app.dump("Accounts") if a["Sync_to_ChurnZero"] or not filtered}


def run_ledger(engine, tenant: str, run_id: str) -> dict[str, dict]:
    return by(rows(engine, "SELECT * FROM sync.runs WHERE tenant_id = :t AND dagster_run_id = :r",
                   t=tenant, r=run_id), "entity")




def test_full_sync_of_a_zoho_tenant_fills_every_cs_table(make_zoho, write_tenants, warehouse_url, engine, tenant_id):
    # the full 400-account org: 2,095 contacts, so the Contacts walk needs page_token past 2,000
    app, server, control = make_zoho(n_accounts=400)
    path = write_tenants({tenant_id: {
        "crm": zoho_crm_config(server.url, sync_filter=SYNC_FILTER,
                               users={"filter_field": "Sync_to_ChurnZero", "access_field": "CZ_Access"}),
        # a few synced accounts have a parent the filter leaves out (a dangling parent for the
        # hierarchy); tolerate them so the run completes
        "quality": {"thresholds": {"parent_references_resolve": 0.1}}}})
    result = SyncRunner(path, warehouse_url).run("full_sync", tenant_id)

    # raw: every record of every module, payloads with every field (> 50: batched, merged by id)
    for entity, module in RAW.items():
        truth = app.dump(module)
        landed = by(rows(engine, f"SELECT source_id, payload, source_updated_at FROM raw.{entity} "
                                 "WHERE tenant_id = :t AND deleted_at IS NULL", t=tenant_id), "source_id")
        assert set(landed) == {r["id"] for r in truth}, entity
        sample = truth[len(truth) // 2]
        fields = [f.api for f in app.fields[module]]
        assert len(fields) > 50 and {k: landed[sample["id"]]["payload"][k] for k in fields} == {k: sample[k] for k in fields}
    contacts_truth = app.dump("Contacts")
    assert len(contacts_truth) == 2095
    users_truth = app.dump("users")
    assert scalar(engine, "SELECT count(*) FROM raw.users WHERE tenant_id = :t", t=tenant_id) == len(users_truth)

    # cs.accounts: the accounts meeting the filter, keyed by Account_Number, native parents
    synced = synced_ids(app, filtered=True)
    accounts_truth = {a["id"]: a for a in app.dump("Accounts")}
    number = {i: a["Account_Number"] for i, a in accounts_truth.items()}
    accounts = by(cs(engine, "accounts", tenant_id), "account_external_id")
    assert set(accounts) == {number[i] for i in synced} and 300 < len(accounts) < 400
    # the 3-level tree Z-00001 <- Z-00002 <- Z-00003: the parent's Account_Number, not its Zoho id
    assert accounts["Z-00001"]["parent_account_external_id"] is None
    assert accounts["Z-00002"]["parent_account_external_id"] == "Z-00001"
    assert accounts["Z-00003"]["parent_account_external_id"] == "Z-00002"
    for ext, row in accounts.items():
        src = accounts_truth[row["crm_id"]]
        parent = (src["Parent_Account"] or {}).get("id")
        assert row["parent_account_external_id"] == (number[parent] if parent else None), ext
    scored = next(accounts_truth[i] for i in sorted(synced, key=int) if accounts_truth[i]["ChurnScore"] is not None)
    row = accounts[scored["Account_Number"]]
    assert (row["name"], row["owner_crm_user_id"], row["source_system"]) == (
        scored["Account_Name"], scored["Owner"]["id"], "zoho_crm")
    assert row["custom_fields"] == {"industry": scored["Industry"], "churn_score": scored["ChurnScore"]}
    # a timestamp that arrived as +05:30 is stored in UTC (raw and cs)
    assert scored["Modified_Time"].endswith("+05:30")
    assert row["source_updated_at"] == utc(scored["Modified_Time"])
    assert scalar(engine, "SELECT to_char(source_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
                          "FROM raw.leads WHERE tenant_id = :t AND source_id = :s", t=tenant_id, s=scored["id"]) \
        == utc(scored["Modified_Time"]).strftime("%Y-%m-%dT%H:%M:%S")
    # next renewal date: the latest end of a deal running today
    today = datetime.now(timezone.utc).date()
    deals_truth = app.dump("Deals")
    for ext in ("Z-00001", "Z-00002", "Z-00003"):
        acct_id = next(i for i, n in number.items() if n == ext)
        running = [date.fromisoformat(d["End_Date"]) for d in deals_truth if d["Account_Name"]["id"] == acct_id
                   and date.fromisoformat(d["Start_Date"]) <= today <= date.fromisoformat(d["End_Date"])]
        assert accounts[ext]["next_renewal_date"] == (max(running) if running else None), ext

    # cs.contacts: every contact of a synced account, keyed by lower-cased email, incl. past record 2,000
    contacts = by(cs(engine, "contacts", tenant_id), "crm_id")
    expected = [c for c in contacts_truth if c["Account_Name"]["id"] in synced]
    assert set(contacts) == {c["id"] for c in expected}
    beyond = [c for c in sorted(contacts_truth, key=lambda c: int(c["id"]))[2000:] if c["Account_Name"]["id"] in synced]
    assert beyond, "the org must hold synced contacts past the 2,000th record"
    late = contacts[beyond[-1]["id"]]
    assert late["contact_external_id"] == beyond[-1]["Email"].lower()
    assert (late["first_name"], late["last_name"], late["title"]) == (beyond[-1]["First_Name"], beyond[-1]["Last_Name"], beyond[-1]["Title"])
    assert late["account_external_id"] == number[beyond[-1]["Account_Name"]["id"]]
    rated = next(c for c in expected if c["NPS_Rating"] is not None)
    assert contacts[rated["id"]]["custom_fields"] == {"nps_rating": rated["NPS_Rating"]}

    # cs.deals: deals of synced accounts, Zoho's native dates, stage -> status type
    deals = by(cs(engine, "deals", tenant_id), "crm_id")
    synced_deals = [d for d in deals_truth if d["Account_Name"]["id"] in synced]
    assert set(deals) == {d["id"] for d in synced_deals}
    won = next(d for d in synced_deals if d["Stage"] == "Closed Won")
    row = deals[won["id"]]
    assert (row["name"], row["status_label"], row["status_type"], row["currency"]) == (won["Deal_Name"], "Closed Won", "won", "USD")
    assert row["amount"] == Decimal(str(won["Amount"]))
    assert (row["start_date"], row["end_date"], row["close_date"]) == tuple(
        date.fromisoformat(won[k]) for k in ("Start_Date", "End_Date", "Closing_Date"))
    assert row["account_external_id"] == number[won["Account_Name"]["id"]]
    assert {deals[d["id"]]["status_type"] for d in synced_deals if d["Stage"] not in ("Closed Won", "Closed Lost")} == {"active"}

    # tasks: open ones in cs.tasks, completed ones in cs.activities (completed_at from Closed_Time)
    tasks_truth = [t for t in app.dump("Tasks") if t["What_Id"]["id"] in synced]
    open_tasks, done = by(cs(engine, "tasks", tenant_id), "crm_id"), by(cs(engine, "activities", tenant_id), "crm_id")
    assert set(open_tasks) == {t["id"] for t in tasks_truth if t["Status"] != "Completed"}
    assert set(done) == {t["id"] for t in tasks_truth if t["Status"] == "Completed"}
    finished = next(t for t in tasks_truth if t["Status"] == "Completed" and t["Who_Id"])
    assert finished["Closed_Time"].endswith("+05:30")
    assert done[finished["id"]]["completed_at"] == utc(finished["Closed_Time"])
    assert done[finished["id"]]["contact_external_id"] == contacts[finished["Who_Id"]["id"]]["contact_external_id"]
    todo = next(t for t in tasks_truth if t["Status"] != "Completed")
    assert open_tasks[todo["id"]]["due_date"] == date.fromisoformat(todo["Due_Date"])
    assert open_tasks[todo["id"]]["assigned_crm_user_id"] == todo["Owner"]["id"]
    assert open_tasks[todo["id"]]["subject"] == todo["Subject"]

    # cs.users: the users flagged for ChurnZero; inactive reps stay (references never break)
    users = by(cs(engine, "users", tenant_id), "crm_id")
    assert set(users) == {u["id"] for u in users_truth if u["Sync_to_ChurnZero"] == "YES"}
    for u in users_truth:
        if u["id"] in users:
            assert users[u["id"]]["email"] == u["email"]
            assert users[u["id"]]["is_active"] == (u["status"] == "active")
            assert users[u["id"]]["can_log_in"] == (u["CZ_Access"] == "YES")
    assert any(not r["is_active"] for r in users.values())

    # the run ledger records the credits each entity used; together they are the org's bill
    ledger = run_ledger(engine, tenant_id, result.run_id)
    assert set(ledger) == {"leads", "contacts", "deals", "tasks", "users"}
    assert all(r["status"] == "success" and r["mode"] == "full" for r in ledger.values())
    stats = control.stats()
    assert sum(r["api_credits"] for r in ledger.values()) == stats["credits"]
    assert ledger["contacts"]["records_read"] == 2095 and ledger["contacts"]["api_credits"] >= 11
    assert stats["POST /oauth/v2/token"] == 1  # one access token serves the whole run


def test_routine_sync_304_then_updates_creations_and_deletions(zoho, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = zoho
    # no overlap window: an unchanged module then answers 304 (with the default 5-minute overlap
    # the newest records are read again, by design)
    path = write_tenants({tenant_id: {"crm": zoho_crm_config(server.url, overlap_seconds=0, settle_lag_seconds=0)}})
    runner = SyncRunner(path, warehouse_url)
    runner.run("full_sync", tenant_id)
    before = {t: cs(engine, t, tenant_id) for t in CS_TABLES}
    raw_before = rows(engine, "SELECT source_id, last_synced_at FROM raw.contacts WHERE tenant_id = :t", t=tenant_id)

    # nothing changed: one probe per module, one 304 from each /deleted, no metadata, no batches.
    # If-Modified-Since is the cursor's own second (safe on a strict server too), so this
    # inclusive fake answers the probe and /users with the records sitting on that second, which
    # the previous run landed: the probe counts them as unchanged, /users lands them as a no-op
    control.reset_stats()
    quiet = runner.run("routine_sync", tenant_id)
    stats = control.stats()
    for module in MODULES:
        assert stats[f"GET /crm/v8/{module}"] == 1, module
        assert stats[f"GET /crm/v8/{module}/deleted"] == 1, module
    assert stats["GET /crm/v8/users"] == 1
    assert stats["credits"] == 2 * len(MODULES) + 1 and stats["status 304"] >= len(MODULES)
    assert "GET /crm/v8/settings/fields" not in stats and "POST /oauth/v2/token" not in stats
    ledger = run_ledger(engine, tenant_id, quiet.run_id)
    assert all(r["mode"] == "routine" and r["inserted"] == r["updated"] == r["tombstoned"] == 0
               for r in ledger.values())
    assert all(r["records_read"] == 0 for entity, r in ledger.items() if entity != "users")
    assert sum(r["api_credits"] for r in ledger.values()) == stats["credits"]
    assert {t: cs(engine, t, tenant_id) for t in CS_TABLES} == before
    assert rows(engine, "SELECT source_id, last_synced_at FROM raw.contacts WHERE tenant_id = :t", t=tenant_id) == raw_before

    # updates and creations land at the next routine sync
    synced = sorted(synced_ids(app), key=int)
    account = app.dump("Accounts")
    renamed = next(a for a in account if a["id"] == synced[3])
    control.mutate("update", "Accounts", id=renamed["id"], data={"Account_Name": "Renamed Holdings GmbH"})
    fresh = control.mutate("create", "Accounts", data={"Account_Name": "Fresh Start Ltd", "Sync_to_ChurnZero": True})
    new_contact = control.mutate("create", "Contacts", data={
        "First_Name": "Nia", "Last_Name": "Okoro", "Email": "Nia.Okoro@freshstart.example",
        "Account_Name": {"id": fresh["id"]}})
    deal = next(d for d in app.dump("Deals") if d["Account_Name"]["id"] in synced)
    control.mutate("update", "Deals", id=deal["id"], data={"Amount": 4242.5})
    control.reset_stats()
    runner.run("routine_sync", tenant_id)
    accounts = by(cs(engine, "accounts", tenant_id), "crm_id")
    assert accounts[renamed["id"]]["name"] == "Renamed Holdings GmbH"
    assert accounts[fresh["id"]]["account_external_id"] == fresh["Account_Number"]
    contacts = by(cs(engine, "contacts", tenant_id), "crm_id")
    assert contacts[new_contact["id"]]["contact_external_id"] == "nia.okoro@freshstart.example"
    assert contacts[new_contact["id"]]["account_external_id"] == fresh["Account_Number"]
    assert by(cs(engine, "deals", tenant_id), "crm_id")[deal["id"]]["amount"] == Decimal("4242.5")
    assert len(accounts) == len(before["accounts"]) + 1
    assert control.stats()["GET /crm/v8/settings/fields"] == 3  # only the modules that changed

    # a record deleted in Zoho leaves cs at the routine sync; raw keeps the tombstone and its time
    gone_contact = next(c for c in app.dump("Contacts") if c["Account_Name"]["id"] in synced and c["id"] != new_contact["id"])
    parents = {(a["Parent_Account"] or {}).get("id") for a in app.dump("Accounts")}
    gone_account = next(a for a in app.dump("Accounts") if a["id"] in synced[5:] and a["id"] not in parents)
    control.mutate("delete", "Contacts", id=gone_contact["id"])  # to the recycle bin
    control.mutate("delete", "Accounts", id=gone_account["id"], permanent=True)
    deleted = {e["id"]: e for m in ("Contacts", "Accounts") for e in control.state(f"deleted:{m}")}
    assert deleted[gone_contact["id"]]["deleted_time"].endswith("+05:30")
    runner.run("routine_sync", tenant_id)
    assert gone_contact["id"] not in by(cs(engine, "contacts", tenant_id), "crm_id")
    assert gone_account["id"] not in by(cs(engine, "accounts", tenant_id), "crm_id")
    for entity, rec in (("contacts", gone_contact), ("leads", gone_account)):
        raw = rows(engine, f"SELECT deleted_at, payload FROM raw.{entity} WHERE tenant_id = :t AND source_id = :s",
                   t=tenant_id, s=rec["id"])
        assert len(raw) == 1 and raw[0]["deleted_at"] == utc(deleted[rec["id"]]["deleted_time"]), entity
        assert raw[0]["payload"]["id"] == rec["id"]  # the last payload stays with the tombstone
    assert scalar(engine, "SELECT sum(tombstoned) FROM sync.runs WHERE tenant_id = :t AND entity IN ('contacts', 'leads') "
                          "AND mode = 'routine'", t=tenant_id) == 2


class TokenExpiresMidWalk(ZohoSandbox):
    """The org's access tokens expire between two pages of the Contacts walk (as an hour-old
    token does in a long sync)."""

    expire_on_request = 2

    def route(self, req):
        if req.path.rstrip("/") == "/crm/v8/Contacts":
            self.contacts_requests = getattr(self, "contacts_requests", 0) + 1
            if self.contacts_requests == self.expire_on_request:
                self.access_tokens.clear()
        return super().route(req)


def test_expired_access_token_mid_sync_is_refreshed_and_the_sync_completes(make_zoho, write_tenants, warehouse_url,
                                                                             engine, tenant_id):
    app, server, control = make_zoho(cls=TokenExpiresMidWalk)
    path = write_tenants({tenant_id: {"crm": zoho_crm_config(server.url)}})
    result = SyncRunner(path, warehouse_url).run("full_sync", tenant_id)
    assert result.success
    stats = control.stats()
    assert stats["status 401"] == 1 and stats["POST /oauth/v2/token"] == 2  # one refusal, one refresh
    assert {r["source_id"] for r in rows(engine, "SELECT source_id FROM raw.contacts WHERE tenant_id = :t",
                                         t=tenant_id)} == {c["id"] for c in app.dump("Contacts")}
    assert scalar(engine, "SELECT count(*) FROM cs.contacts WHERE tenant_id = :t", t=tenant_id) == len(
        [c for c in app.dump("Contacts") if c["Account_Name"]["id"] in synced_ids(app)])


def test_revoked_refresh_token_fails_the_run_with_a_clear_message_and_no_secret(zoho, write_tenants, warehouse_url,
                                                                               engine, tenant_id):
    app, server, control = zoho
    path = write_tenants({tenant_id: {"crm": zoho_crm_config(server.url)}})
    runner = SyncRunner(path, warehouse_url)
    runner.run("full_sync", tenant_id)
    issued = list(app.access_tokens)
    control.mutate("revoke_refresh_token", "oauth")  # the customer removed the connection in Zoho
    control.mutate("expire_access_tokens", "oauth")
    control.reset_stats()

    result = runner.run("routine_sync", tenant_id, raise_on_error=False)
    assert not result.success
    messages = failure_messages(result)
    assert any("refused the refresh token" in m and "invalid_code" in m and "re-authorize" in m
               and tenant_id in m for m in messages), messages
    errors = [r["error"] for r in rows(engine, "SELECT error FROM sync.runs WHERE tenant_id = :t AND status = 'failed'",
                                       t=tenant_id)]
    assert errors and all("refused the refresh token" in e for e in errors)
    secrets = [*ZOHO_SECRETS.values(), *issued]
    for text in messages + errors:
        assert not any(s in text for s in secrets), text
    # never a retry loop: one token request per entity asset, no Dagster retries, no API reads
    stats = control.stats()
    assert stats["POST /oauth/v2/token"] == 5 and stats.get("credits", 0) == 0
    # cs keeps what the last good sync published
    assert scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t", t=tenant_id) == len(synced_ids(app))


def test_close_and_zoho_tenants_side_by_side_never_see_each_others_rows(zoho, close_server, close_app, write_tenants,
                                                                        warehouse_url, engine, tenant_id):
    app, server, control = zoho
    close_t, zoho_t = f"{tenant_id}_close", f"{tenant_id}_zoho"
    path = write_tenants({close_t: {"crm": close_crm_config(close_server.url)},
                          zoho_t: {"crm": zoho_crm_config(server.url)}})
    runner = SyncRunner(path, warehouse_url)
    runner.run("full_sync", zoho_t)
    runner.run("full_sync", close_t)

    zoho_ids = {r["id"] for m in ("Accounts", "Contacts", "Deals", "Tasks") for r in app.dump(m)} | {u["id"] for u in app.dump("users")}
    close_ids = {r["id"] for o in ("lead", "contact", "opportunity", "task", "user") for r in close_app.dump(o)}
    for table in ("leads", "contacts", "deals", "tasks", "users"):
        by_tenant = {t: {r["source_id"] for r in rows(engine, f"SELECT source_id, source_system FROM raw.{table} "
                                                          "WHERE tenant_id = :t", t=t)} for t in (close_t, zoho_t)}
        assert by_tenant[zoho_t] and by_tenant[zoho_t] <= zoho_ids and not by_tenant[zoho_t] & close_ids, table
        assert by_tenant[close_t] and by_tenant[close_t] <= close_ids and not by_tenant[close_t] & zoho_ids, table
        systems = {r["tenant_id"]: r["s"] for r in rows(
            engine, f"SELECT tenant_id, array_agg(DISTINCT source_system) s FROM raw.{table} "
                    "WHERE tenant_id IN (:a, :b) GROUP BY tenant_id", a=close_t, b=zoho_t)}
        assert systems == {close_t: ["close"], zoho_t: ["zoho_crm"]}, table
    zoho_accounts = {r["account_external_id"] for r in cs(engine, "accounts", zoho_t)}
    close_accounts = {r["account_external_id"] for r in cs(engine, "accounts", close_t)}
    assert zoho_accounts and close_accounts and not zoho_accounts & close_accounts
    assert all(a.startswith("Z-") for a in zoho_accounts)
    assert {r["source_system"] for r in cs(engine, "accounts", zoho_t)} == {"zoho_crm"}
    for table in CS_TABLES:
        crm_ids = {t: {r["crm_id"] for r in cs(engine, table, t)} for t in (close_t, zoho_t)}
        assert not crm_ids[close_t] & zoho_ids and not crm_ids[zoho_t] & close_ids, table

    # a routine sync of one tenant leaves the other untouched
    snapshot = {t: cs(engine, t, close_t) for t in CS_TABLES}
    control.mutate("update", "Accounts", id=sorted(synced_ids(app), key=int)[0], data={"Account_Name": "Only Zoho Changed"})
    runner.run("routine_sync", zoho_t)
    assert {t: cs(engine, t, close_t) for t in CS_TABLES} == snapshot
    assert "Only Zoho Changed" in {r["name"] for r in cs(engine, "accounts", zoho_t)}


def test_zoho_full_sync_defaults_to_nightly(write_tenants):
    path = write_tenants({"nightly": {"crm": zoho_crm_config("http://127.0.0.1:9")},
                          "weekly": {"crm": zoho_crm_config("http://127.0.0.1:9", full_sync_cron="0 3 * * 0")}})
    tenants = load_tenants(path)
    assert tenants["nightly"].crm.full_sync_cron == DEFAULT_FULL_SYNC_CRON["zoho_crm"] == "0 2 * * *"
    assert tenants["weekly"].crm.full_sync_cron == "0 3 * * 0"


def test_tasks_related_to_a_deal_or_only_to_a_contact_land_on_that_records_account(
        zoho, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = zoho
    deal = app.dump("Deals")[0]
    contact = next(c for c in app.dump("Contacts") if c.get("Account_Name"))
    on_deal = control.mutate("create", "Tasks", data={
        "Subject": "Send the renewal quote", "Status": "Not Started", "$se_module": "Deals",
        "What_Id": {"id": deal["id"], "name": deal["Deal_Name"]}})
    on_contact = control.mutate("create", "Tasks", data={
        "Subject": "Call back", "Status": "Completed",
        "Who_Id": {"id": contact["id"], "name": contact["Last_Name"]}})
    path = write_tenants({tenant_id: {"crm": zoho_crm_config(server.url)}})
    SyncRunner(path, warehouse_url).run("full_sync", tenant_id)

    numbers = {a["id"]: a["Account_Number"] for a in app.dump("Accounts")}
    task = rows(engine, "SELECT account_external_id FROM cs.tasks WHERE tenant_id = :t AND crm_id = :i",
                t=tenant_id, i=on_deal["id"])
    assert task == [{"account_external_id": numbers[deal["Account_Name"]["id"]]}]
    activity = rows(engine, "SELECT account_external_id, contact_external_id FROM cs.activities "
                            "WHERE tenant_id = :t AND crm_id = :i", t=tenant_id, i=on_contact["id"])
    assert activity == [{"account_external_id": numbers[contact["Account_Name"]["id"]],
                         "contact_external_id": contact["Email"].lower()}]
