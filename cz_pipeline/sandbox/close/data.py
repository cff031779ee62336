"""Close fake: the deterministic dataset (users, leads with contacts, opportunities and tasks) and
the static configuration (custom fields, statuses, pipeline).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from .common import (
    CUSTOM_FIELD_IDS, LEAD_STATUSES, OPP_STATUSES, ORG_ID, PIPELINE_ID, STATUS_IDS, UNUSED_OPP_STATUSES, UTC, _B62,
    _COMPANIES,
    _CUSTOM_FIELDS, _END, _FIRST, _LAST, _PREFIXES, _SECTORS, _START, _SUFFIXES, _TASKS, _TITLES, _b62, ts,
)


class CloseData:
    """Dataset generation; every id and value comes from `self.rng`, so a seed fixes the data."""

    # ---- ids and static configuration --------------------------------------------------
    def _id(self, kind: str) -> str:
        return _PREFIXES[kind] + "".join(self.rng.choice(_B62) for _ in range(43))

    def _static(self) -> None:
        made = ts(datetime(2024, 11, 4, 9, 30, tzinfo=UTC))
        for obj_type, name, label, typ, choices, multi in _CUSTOM_FIELDS:
            cid = CUSTOM_FIELD_IDS[name]
            self.db[f"cf_{obj_type}"][cid] = {
                "id": cid, "name": label, "description": None, "type": typ, "choices": choices,
                "accepts_multiple_values": multi, "editable_with_roles": [], "is_shared": False,
                "created_by": None, "updated_by": None, "date_created": made, "date_updated": made,
                "organization_id": ORG_ID}
        for label in LEAD_STATUSES:
            self.db["status_lead"][STATUS_IDS[label]] = {"id": STATUS_IDS[label], "label": label, "organization_id": ORG_ID}
        for label, typ in OPP_STATUSES + UNUSED_OPP_STATUSES:
            self.db["status_opportunity"][STATUS_IDS[label]] = {
                "id": STATUS_IDS[label], "label": label, "type": typ, "pipeline_id": PIPELINE_ID,
                "pipeline_name": "Sales", "organization_id": ORG_ID}
        self.db["pipeline"][PIPELINE_ID] = {"id": PIPELINE_ID, "name": "Sales", "organization_id": ORG_ID,
                                            "statuses": list(self.db["status_opportunity"].values())}

    # ---- deterministic dataset -----------------------------------------------------------
    def _between(self, a: datetime, b: datetime) -> datetime:
        return a + timedelta(microseconds=self.rng.randrange(max(1, (b - a) // timedelta(microseconds=1))))

    def _generate(self, n: int) -> None:
        rng, cf = self.rng, CUSTOM_FIELD_IDS
        people = rng.sample([(f, l) for f in _FIRST for l in _LAST], 5)
        for i, (first, last) in enumerate(people):
            uid, made = self._id("user"), ts(self._between(datetime(2024, 1, 1, tzinfo=UTC), _START))
            self.db["user"][uid] = {
                "id": uid, "first_name": first, "last_name": last,
                "email": f"{first.lower()}.{last.lower()}@czsandbox.example",
                "image": f"https://secure.gravatar.com/avatar/{_b62(uid, 32).lower()}",
                "date_created": made, "date_updated": made, "organizations": [ORG_ID]}
            self.roles[uid] = "admin" if i < 2 else "user"
        users = list(self.db["user"])
        # Exact status mix: 35% Customer, 15% Trial, 10% Bad Fit, rest Potential.
        statuses = ["Customer"] * (n * 7 // 20) + ["Trial"] * (n * 3 // 20) + ["Bad Fit"] * (n // 10)
        statuses += ["Potential"] * (n - len(statuses))
        rng.shuffle(statuses)
        names: set[str] = set()
        leads, children = [], []
        for status in statuses:
            name = f"{rng.choice(_COMPANIES)} {rng.choice(_SECTORS)} {rng.choice(_SUFFIXES)}"
            while name in names:
                name = f"{name} {len(names)}"
            names.add(name)
            slug = re.sub(r"[^a-z0-9]+", "", name.lower())
            made = self._between(_START, datetime(2026, 3, 31, tzinfo=UTC))
            lead = {"id": self._id("lead"), "name": name, "description": f"{status} account", "url": f"https://{slug}.example",
                    "status_id": STATUS_IDS[status], "addresses": [], "organization_id": ORG_ID,
                    "created_by": users[0], "updated_by": users[0], "date_created": made, "date_updated": made}
            if rng.random() < 0.5:
                lead["addresses"] = [{"label": "business", "address_1": f"{rng.randrange(1, 999)} Main St",
                                      "city": "Springfield", "state": "IL", "zipcode": "62701", "country": "US"}]
            leads.append(lead)
            children.append(self._gen_children(lead, status, slug, users))
        # Opportunity ties: a few share their exact date_updated (tie handling in incremental reads).
        opps = sorted((o for _, os, _ in children for o in os), key=lambda o: o["date_updated"])
        for i in range(0, len(opps) - 1, 7):
            opps[i]["date_updated"] = opps[i + 1]["date_updated"]
        for lead, (contacts, opps_, tasks) in zip(leads, children):
            kids = [c["date_updated"] for c in contacts + opps_ + tasks]
            lead["date_updated"] = max([self._between(lead["date_created"], _END), *kids])
        by_updated = sorted(leads, key=lambda l: l["date_updated"])
        for i in range(0, len(by_updated) - 1, 9):
            by_updated[i]["date_updated"] = by_updated[i + 1]["date_updated"]
        # Insert in creation order (the default list order); then the account-level custom fields.
        order = sorted(range(n), key=lambda i: leads[i]["date_created"])
        synced: list[dict[str, Any]] = []
        customers: list[dict[str, Any]] = []
        next_account = iter(range(1, n + 1))
        for i in order:
            lead, status = leads[i], statuses[i]
            if status in ("Customer", "Trial") or rng.random() < 0.5:
                lead[f"custom.{cf['account_id']}"] = f"A-{next(next_account):04d}"
            if status in ("Customer", "Trial"):
                if status == "Customer" and 1 <= len(customers) <= 2:  # first three Customers: root -> child -> grandchild
                    lead[f"custom.{cf['parent_account_id']}"] = customers[-1][f"custom.{cf['account_id']}"]
                elif status == "Customer" and customers and rng.random() < 0.2:
                    lead[f"custom.{cf['parent_account_id']}"] = rng.choice(synced)[f"custom.{cf['account_id']}"]
                if rng.random() < 0.5:
                    lead[f"custom.{cf['renewal_owner']}"] = rng.choice(users)
                if rng.random() < 0.7:
                    lead[f"custom.{cf['tier']}"] = rng.choice(["Enterprise", "Mid-Market", "SMB"])
                if rng.random() < 0.4:
                    products = rng.sample(["Analytics", "Automation", "Journeys"], rng.randint(1, 2))
                    lead[f"custom.{cf['products']}"] = sorted(products)
                synced.append(lead)
                customers += [lead] if status == "Customer" else []
            for obj in [lead] + [o for group in children[i] for o in group]:
                obj["date_created"], obj["date_updated"] = ts(obj["date_created"]), ts(obj["date_updated"])
            self.db["lead"][lead["id"]] = lead
            for kind, group in zip(("contact", "opportunity", "task"), children[i]):
                for obj in group:
                    self.db[kind][obj["id"]] = obj
                    if kind == "task" and obj["is_complete"]:
                        self._complete(obj, obj["date_updated"])

    def _gen_children(self, lead: dict[str, Any], status: str, slug: str, users: list[str]) -> tuple[list, list, list]:
        rng, cf, made = self.rng, CUSTOM_FIELD_IDS, lead["date_created"]
        base = {"lead_id": lead["id"], "organization_id": ORG_ID, "created_by": users[0], "updated_by": users[0]}
        contacts, opps, tasks = [], [], []
        for first, last in rng.sample([(f, l) for f in _FIRST for l in _LAST], rng.randint(1, 3)):
            email = f"{first}.{last}@{slug}.example"
            email = email if rng.random() < 0.2 else email.lower()  # some mixed case, as people type them
            phone = f"+1650555{rng.randrange(10000):04d}"
            created = made + timedelta(milliseconds=len(contacts) + 1)
            c = {"id": self._id("contact"), **base, "name": f"{first} {last}", "title": rng.choice(_TITLES),
                 "emails": [{"type": "office", "email": email, "email_lower": email.lower()}],
                 "phones": [{"type": "office", "phone": phone, "phone_formatted": f"+1 {phone[2:5]}-{phone[5:8]}-{phone[8:]}"}],
                 "urls": [], "date_created": created,
                 "date_updated": self._between(created, _END) if rng.random() < 0.5 else created}
            if rng.random() < 0.4:
                c[f"custom.{cf['nps']}"] = rng.choice(["Yes", "No"])
            contacts.append(c)
        weights = {"Customer": (20, 10, 50, 20), "Trial": (50, 30, 10, 10),  # Active, Verbal, Won, Lost
                   "Potential": (60, 10, 0, 30), "Bad Fit": (20, 0, 0, 80)}[status]
        for _ in range(rng.randint(0, 3)):
            label, typ = rng.choices(OPP_STATUSES, weights)[0]
            value = rng.randrange(50_000, 25_000_000)
            value -= value % 100 if rng.random() < 0.6 else 0
            created = self._between(made, _END)
            closed = self._between(created, _END).date().isoformat()
            o = {"id": self._id("opportunity"), **base, "status_id": STATUS_IDS[label], "value": value,
                 "value_period": rng.choice(["one_time", "annual", "monthly"]), "value_currency": "USD",
                 "confidence": {"active": rng.randrange(20, 90, 10), "won": 100, "lost": 0}[typ],
                 "date_won": closed if typ == "won" else None, "date_lost": closed if typ == "lost" else None,
                 "note": f"{label} deal", "contact_id": rng.choice(contacts)["id"] if rng.random() < 0.5 else None,
                 "user_id": rng.choice(users), "date_created": created,
                 "date_updated": self._between(created, _END) if rng.random() < 0.6 else created}
            if rng.random() < 0.8:
                start = date(2025, 1, 1) + timedelta(days=rng.randrange(730))
                o[f"custom.{cf['start_date']}"] = start.isoformat()
                o[f"custom.{cf['end_date']}"] = (start + timedelta(days=rng.choice([365, 730]))).isoformat()
            opps.append(o)
        for _ in range(rng.randint(0, 3)):
            created = self._between(made, _END)
            day = (date(2025, 1, 1) + timedelta(days=rng.randrange(910))).isoformat()
            done = rng.random() < 0.4
            t = {"id": self._id("task"), "_type": "lead", **base, "contact_id": None, "object_id": None, "object_type": None,
                 "text": rng.choice(_TASKS).format(c=contacts[0]["name"]), "assigned_to": rng.choice(users),
                 "date": day, "due_date": day, "is_dateless": False, "is_complete": done,
                 "date_created": created, "date_updated": self._between(created, _END) if done or rng.random() < 0.3 else created}
            tasks.append(t)
        return contacts, opps, tasks
