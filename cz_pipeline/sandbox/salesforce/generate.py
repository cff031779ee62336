"""Deterministic data of the Salesforce fake: users (one inactive), products, accounts in
3-level `ParentId` hierarchies, contacts (also on child accounts), opportunities (won, lost and
open; some of type Partner), their contact roles (one primary each) and line items, and tasks on
accounts and opportunities (open and closed). Plain dicts of Python values, fast enough for tens
of thousands of opportunities."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)
INDUSTRIES = ["Technology", "Manufacturing", "Healthcare", "Finance", "Retail", "Education", "Media", "Energy"]
ACCOUNT_TYPES = ["Customer - Direct", "Customer - Channel", "Prospect", "Partner"]
OPEN_STAGES = ["Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review"]
OPP_TYPES = ["New Business", "Existing Business", "New Business", "Existing Business", "Partner"]
ROLES = ["Decision Maker", "Economic Buyer", "Technical Buyer", "Influencer", "Evaluator", "Business User"]
FIRST = ["Anna", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jon", "Kavya", "Liam"]
LAST = ["Kingsley", "Boyle", "Ortega", "Sharma", "Novak", "Okafor", "Larsen", "Tanaka", "Moreau", "Silva"]
WORDS = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Tyrell", "Wonka"]
WORDS2 = ["Systems", "Holdings", "Labs", "Foods", "Logistics", "Energy", "Media", "Health", "Capital"]
TITLES = ["CEO", "CTO", "VP Sales", "Head of Customer Success", "Account Manager", "Engineer", "CFO"]
SUBJECTS = ["Follow up on renewal", "Quarterly business review", "Send onboarding pack", "Prepare proposal"]
PRODUCTS = [("Platform Licence", "PL-100", "Software"), ("Premium Support", "PS-200", "Services"),
            ("Onboarding Package", "OB-300", "Services"), ("Analytics Add-on", "AA-400", "Software")]
USERS = [("Alice", "Admin", True, True, "Admin"), ("Bob", "Seller", True, True, "Standard"),
         ("Chloe", "Closer", True, True, "Standard"), ("Dan", "Dealer", True, False, "Standard"),
         ("Eve", "Enterprise", True, True, "Admin"), ("Frank", "Former", False, False, None)]


def generate(add: Callable[[str, dict[str, Any], datetime], dict[str, Any]], rng: random.Random, *,
             n_accounts: int, contacts_per_account: int, opportunities_per_account: int,
             closed_share: float, extra_custom: int) -> None:
    """Fill the org through `add(object, values, created_at)`, which assigns the id and stamps.
    The hierarchy repeats every 10 accounts: #0 is a root, #1 its child, #2 its grandchild, #3 a
    second child of #0; the others stand alone."""
    clock = [BASE_TIME]

    def at() -> datetime:
        clock[0] += timedelta(seconds=rng.randint(30, 600))
        return clock[0]

    users = []
    for first, last, active, synced, access in USERS:
        users.append(add("User", {"FirstName": first, "LastName": last, "Name": f"{first} {last}",
                                  "Email": f"{first.lower()}@acme-sf.example", "Username": f"{first.lower()}@acme-sf.example",
                                  "IsActive": active, "Sync_to_ChurnZero__c": synced,
                                  "ChurnZero_Access__c": access}, at()))
    owners = [u["Id"] for u in users if u["IsActive"]]
    products = [add("Product2", {"Name": n, "ProductCode": c, "Family": f, "IsActive": True}, at())
                for n, c, f in PRODUCTS]
    prices = {p["Id"]: 1000.0 * (i + 1) for i, p in enumerate(products)}
    accounts: list[dict[str, Any]] = []
    for i in range(n_accounts):
        parent = {1: i - 1, 2: i - 1, 3: i - 3}.get(i % 10)
        values = {"Name": f"{rng.choice(WORDS)} {rng.choice(WORDS2)} {i:04d}", "AccountNumber": f"SF-{i:05d}",
                  "CZ_Account_ID__c": f"CZ-{i:05d}",
                  "ParentId": accounts[parent]["Id"] if parent is not None and parent < len(accounts) else None,
                  "Industry": INDUSTRIES[i % len(INDUSTRIES)], "Type": ACCOUNT_TYPES[i % len(ACCOUNT_TYPES)],
                  "Website": f"https://account{i}.example.com", "OwnerId": owners[i % len(owners)],
                  "AnnualRevenue": float(rng.randrange(1, 500) * 10_000), "Sync_to_ChurnZero__c": i % 5 != 4,
                  "ChurnScore__c": round(rng.random() * 100, 1),
                  "Customer_Since__c": date(2019, 1, 1) + timedelta(days=rng.randrange(1800)),
                  "Health_Notes__c": None}
        values.update({f"Custom_Field_{k:02d}__c": f"value {k} of account {i}" for k in range(1, extra_custom + 1)})
        account = add("Account", values, at())
        accounts.append(account)
        contacts = []
        for c in range(contacts_per_account):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            contacts.append(add("Contact", {
                "AccountId": account["Id"], "FirstName": first, "LastName": last,
                "Email": f"{first.lower()}.{last.lower()}.{i}.{c}@customer{i}.example",
                "Title": TITLES[(i + c) % len(TITLES)], "Phone": f"+1 555 {i:04d}{c}", "OwnerId": account["OwnerId"],
                "NPS_Rating__c": float(rng.randrange(0, 11))}, at()))
        opportunities = []
        for o in range(opportunities_per_account):
            closed = rng.random() < closed_share
            won = closed and rng.random() < 0.45
            stage = ("Closed Won" if won else "Closed Lost") if closed else OPEN_STAGES[(i + o) % len(OPEN_STAGES)]
            close_date = date(2021, 1, 1) + timedelta(days=rng.randrange(1800)) if closed \
                else date(2026, 1, 1) + timedelta(days=rng.randrange(365))
            start = close_date + timedelta(days=1) if won else None
            opportunity = add("Opportunity", {
                "AccountId": account["Id"], "Name": f"{account['Name']} - {'Renewal' if o else 'New'} {o}",
                "StageName": stage, "IsClosed": closed, "IsWon": won,
                "Amount": float(rng.randrange(5, 500) * 1000), "CloseDate": close_date,
                "Type": OPP_TYPES[(i + o) % len(OPP_TYPES)], "Probability": 100.0 if won else (0.0 if closed else 50.0),
                "LeadSource": "Web", "CurrencyIsoCode": "USD", "OwnerId": owners[(i + o) % len(owners)],
                "Start_Date__c": start, "End_Date__c": start + timedelta(days=364) if start else None,
                "Clozd_Interview__c": None}, at())
            opportunities.append(opportunity)
            for r, contact in enumerate(contacts[:2]):
                add("OpportunityContactRole", {"OpportunityId": opportunity["Id"], "ContactId": contact["Id"],
                                               "Role": ROLES[(i + o + r) % len(ROLES)], "IsPrimary": r == 0},
                    opportunity["CreatedDate"])
            product = products[(i + o) % len(products)]
            quantity = float(1 + (i + o) % 3)
            add("OpportunityLineItem", {"OpportunityId": opportunity["Id"], "Product2Id": product["Id"],
                                        "Name": f"{opportunity['Name']} {product['Name']}", "Quantity": quantity,
                                        "UnitPrice": prices[product["Id"]],
                                        "TotalPrice": quantity * prices[product["Id"]]}, opportunity["CreatedDate"])
        whats = [account["Id"]] + [o["Id"] for o in opportunities[:1]]
        for t, what in enumerate(whats):
            done = (i + t) % 2 == 0
            add("Task", {"WhatId": what, "WhoId": contacts[0]["Id"] if contacts else None,
                         "OwnerId": account["OwnerId"], "Subject": SUBJECTS[(i + t) % len(SUBJECTS)],
                         "ActivityDate": date(2024, 6, 1) + timedelta(days=(i * 3 + t) % 400),
                         "Status": "Completed" if done else "Not Started", "Priority": "Normal",
                         "IsClosed": done}, at())
