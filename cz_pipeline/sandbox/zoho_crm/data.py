"""Zoho CRM fake: the deterministic dataset (users, accounts with contacts, deals, tasks).
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from typing import Any

from .common import (
    ACCOUNT_TYPES, FIRST, INDUSTRIES, LAST, LEAD_SOURCES, ORG_ID_BASE, STAGES, SUFFIXES, TASK_STATUSES,
    TASK_SUBJECTS, TITLES, WORDS, WORDS2,
)


class ZohoData:
    """Dataset generation from one seeded `random.Random`."""

    # ---- dataset -------------------------------------------------------------------------
    def _new_record(self, module: str, created: datetime, by: str) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": self._new_id(), **{f.api: None for f in self.fields[module]}}
        ref = self._user_ref(by)
        rec.update(Owner=dict(ref), Created_By=dict(ref), Modified_By=dict(ref), Created_Time=created,
                   Modified_Time=created, **{"$state": "save", "$approval_state": "approved", "$editable": True})
        if module == "Accounts":
            rec["Account_Number"] = self._next_account_number()
        if module == "Deals":
            rec["$currency_symbol"] = "$"
        if module == "Tasks":
            rec["$se_module"] = "Accounts"
        return rec

    def _generate(self, rng: random.Random, n_accounts: int, contacts_range: tuple[int, int]) -> None:
        """Deterministic structure from `rng`; times are offsets before the sandbox started, so
        every generated stamp is strictly older than any later write. Bulk imports/updates tie."""
        anchor = self.started_at - timedelta(seconds=1)
        today = anchor.astimezone(self.tz).date()
        imports = [anchor - timedelta(days=d) for d in (540, 300, 120)]
        bulk_updates = [anchor - timedelta(days=d, hours=3) for d in (20, 7, 1)]

        def stamps() -> tuple[datetime, datetime]:
            created = rng.choice(imports) if rng.random() < 0.3 else anchor - timedelta(seconds=rng.randint(3600, 700 * 86400))
            r = rng.random()
            modified = created if r < 0.2 else max(created, rng.choice(bulk_updates)) if r < 0.35 \
                else created + (anchor - created) * rng.random()
            return created, modified.replace(microsecond=0)

        def day(offset: int) -> str:
            return (today + timedelta(days=offset)).isoformat()

        names = rng.sample([(f, l) for f in FIRST for l in LAST], rng.randint(5, 8))
        uids = []
        for i, (first, last) in enumerate(names):
            uid = self._new_id()
            uids.append(uid)
            created = anchor - timedelta(days=900 - i * 30)
            self.users[uid] = {
                "id": uid, "first_name": first, "last_name": last, "full_name": f"{first} {last}",
                "email": f"{first}.{last}@example.com".lower(),
                "status": "inactive" if i == len(names) - 1 else "active",  # a former rep still owning records
                "role": {"name": ["CEO", "Manager"][i] if i < 2 else "Sales Representative", "id": str(ORG_ID_BASE + 861 + min(i, 2))},
                "profile": {"name": "Administrator" if i == 0 else "Standard", "id": str(ORG_ID_BASE + 497 + (i > 0))},
                "confirm": True, "zuid": str(60_000_000 + i), "alias": None, "phone": None,
                "time_zone": "Asia/Kolkata" if self.tz_offset == "+05:30" else f"GMT{self.tz_offset}",
                "locale": "en_US", "created_time": created,
                "Modified_Time": max(created, rng.choice(bulk_updates)),
                "created_by": uids[0], "Modified_By": uids[0],
                "Sync_to_ChurnZero": "NO" if i % 3 == 2 else "YES", "CZ_Access": "YES" if i < 3 else "NO",
            }
        self.current_user = uids[0]  # the user the OAuth grant belongs to (admin)

        def new(module: str, values: dict[str, Any]) -> dict[str, Any]:
            created, modified = stamps()
            owner = rng.choice(uids)
            rec = self._new_record(module, created, owner)
            rec.update(values, Modified_Time=modified, Modified_By=self._user_ref(rng.choice(uids)))
            if rec.get("Status") == "Completed":
                rec["Closed_Time"] = modified  # closing a task is its last modification
            for k in range(1, 4):
                if rng.random() < 0.7:
                    rec[f"Custom_Field_{k}"] = f"{module[0]}{k}-{rng.randint(1, 999)}"
            rec[self.fields[module][-1].api] = f"last-{rec['id'][-6:]}"  # a value beyond the 50th field
            self.records[module][rec["id"]] = rec
            return rec

        emails: set[str] = set()
        accounts: list[dict[str, Any]] = []
        for i in range(n_accounts):
            # accounts 0 <- 1 <- 2 form a 3-level tree; parents always come earlier, so no cycles
            parent = accounts[i - 1] if i in (1, 2) else rng.choice(accounts) if i >= 3 and rng.random() < 0.15 else None
            name = f"{rng.choice(WORDS)} {rng.choice(WORDS2)} {rng.choice(SUFFIXES)}"
            domain = re.sub(r"[^a-z]", "", name.lower()[: name.rfind(" ")]) + ".com"
            acct = new("Accounts", {
                "Account_Name": name, "Parent_Account": {"name": parent["Account_Name"], "id": parent["id"]} if parent else None,
                "Account_Type": rng.choices(ACCOUNT_TYPES, [50, 25, 10, 5, 4, 3, 3])[0],
                "Industry": rng.choice(INDUSTRIES), "Website": f"www.{domain}",
                "Phone": f"+1 555 {rng.randint(1000000, 9999999)}", "Employees": rng.randint(5, 20000),
                "Annual_Revenue": rng.randint(1, 500) * 100000, "Ownership": rng.choice(["Public", "Private"]),
                "Billing_City": rng.choice(["Exton", "Berlin", "Chennai", "Austin", "Lyon"]),
                "Billing_Country": rng.choice(["USA", "Germany", "India", "France"]),
                "ChurnScore": round(rng.uniform(0, 100), 1) if rng.random() < 0.5 else None,
                "Customer_Since": day(-rng.randint(30, 2000)), "Sync_to_ChurnZero": rng.random() < 0.8})
            accounts.append(acct)
            acct_ref = {"name": name, "id": acct["id"]}
            contacts = []
            for _ in range(rng.randint(*contacts_range)):
                first, last = rng.choice(FIRST), rng.choice(LAST)
                email, n = f"{first}.{last}@{domain}".lower(), 1
                while email in emails:
                    n += 1
                    email = f"{first}.{last}{n}@{domain}".lower()
                emails.add(email)
                contacts.append(new("Contacts", {
                    "First_Name": first, "Last_Name": last, "Full_Name": f"{first} {last}", "Email": email,
                    "Title": rng.choice(TITLES), "Phone": f"+1 555 {rng.randint(1000000, 9999999)}",
                    "Account_Name": dict(acct_ref), "Lead_Source": rng.choice(LEAD_SOURCES),
                    "Email_Opt_Out": rng.random() < 0.1,
                    "NPS_Rating": rng.randint(0, 10) if rng.random() < 0.3 else None}))
            for _ in range(rng.randint(0, 3)):
                start = rng.randint(-700, 200)
                closing = start - rng.randint(0, 30)
                stage = rng.choice(list(STAGES)[:5]) if closing > 0 else rng.choices(["Closed Won", "Closed Lost"], [7, 3])[0]
                amount = round(rng.uniform(1000, 250000), 2)
                contact = rng.choice(contacts) if contacts and rng.random() < 0.7 else None
                new("Deals", {
                    "Deal_Name": f"{name} - {rng.choice(['Annual License', 'Renewal', 'Expansion', 'Services'])}",
                    "Amount": amount, "Currency": "USD", "Exchange_Rate": 1, "Stage": stage,
                    "Probability": STAGES[stage], "Expected_Revenue": round(amount * STAGES[stage] / 100, 2),
                    "Closing_Date": day(closing), "Start_Date": day(start),
                    "End_Date": day(start + rng.choice([180, 365, 730])),
                    "Type": rng.choice(["New Business", "Existing Business"]), "Pipeline": "Standard (Standard)",
                    "Account_Name": dict(acct_ref),
                    "Contact_Name": {"name": contact["Full_Name"], "id": contact["id"]} if contact else None})
            for _ in range(rng.randint(0, 3)):
                status = rng.choices(TASK_STATUSES, [30, 25, 45])[0]
                contact = rng.choice(contacts) if contacts and rng.random() < 0.6 else None
                new("Tasks", {
                    "Subject": rng.choice(TASK_SUBJECTS), "Due_Date": day(rng.randint(-120, 60)), "Status": status,
                    "Priority": rng.choice(["High", "Normal", "Low"]),
                    "What_Id": dict(acct_ref), "$se_module": "Accounts",
                    "Who_Id": {"name": contact["Full_Name"], "id": contact["id"]} if contact else None,
                    "Send_Notification_Email": False})
