"""Teamwork Desk fake: the deterministic dataset (tickets, customers, their contacts).
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from .common import AGENTS, LOOKUPS, SUBJECTS, SYSTEM_USER, UNKNOWN_EMAILS, ZERO_TIME, fmt_ts, ref


class TeamworkData:
    """Dataset generation from one seeded `random.Random`."""

    # ---- deterministic dataset -----------------------------------------------------------
    def _seed(self, rng: random.Random, n_tickets: int, emails: list[str]) -> None:
        # Offsets are seeded; absolute times hang off the start second so data looks recent,
        # and everything lies at least a minute before the sandbox started.
        anchor = self.now().replace(microsecond=0) - timedelta(seconds=60)
        addresses = []
        for i, given in enumerate(emails):  # case/whitespace variants of the given addresses
            addresses.append([given.strip().upper(), given, f"  {given.strip().lower()} "][i % 3])
        for k, address in enumerate(addresses + UNKNOWN_EMAILS):
            created = anchor - timedelta(days=400) + timedelta(seconds=rng.randint(0, 30 * 86400))
            stamp = created + timedelta(seconds=rng.randint(0, 300 * 86400))
            # k%4: 0,2 email on the customer and its contact; 1 only in the contact; 3 only in the
            # main contact, listed after a non-main former address
            self._insert_customer(address, k % 2 == 1, k % 4 == 3, fmt_ts(created), fmt_ts(stamp),
                                  first=address.strip().split("@")[0].split(".")[0].title())
        customer_ids = list(self.customers)
        owners = customer_ids[:n_tickets] + [rng.choice(customer_ids) for _ in range(n_tickets - len(customer_ids))]
        rng.shuffle(owners)
        rows = []
        for i, cid in enumerate(owners):
            updated = anchor - timedelta(seconds=rng.randint(0, 90 * 86400))
            if i % 7 == 6:
                updated = rows[-1][1]  # updatedAt ties across tickets
            created = updated - timedelta(seconds=rng.choice([0, rng.randint(60, 30 * 86400)]))
            rows.append((created, updated, cid))
        rows.sort(key=lambda r: r[0])  # ids grow with createdAt, like an auto-increment
        next_id = 14427600
        for created, updated, cid in rows:
            next_id += rng.randint(1, 5)
            inbox = rng.choice(LOOKUPS["inboxes"])
            subject = rng.choice(SUBJECTS)
            self.tickets[next_id] = {
                "id": next_id, "subject": subject, "previewText": f"Hi, {subject.lower()} - details inside.",
                "messageCount": rng.randint(1, 6), "originalRecipient": inbox["email"],
                "customer": ref(cid, "customers"), "contact": self._main_contact_ref(cid),
                "agent": ref(rng.choice(AGENTS), "users") if rng.random() < 0.85 else None,
                "inbox": ref(inbox["id"], "inboxes"),
                "status": ref(rng.choices([1, 3, 4, 5, 6, 7], [30, 15, 5, 25, 20, 5])[0], "ticketstatuses"),
                "priority": ref(rng.randint(1, 4), "ticketpriorities"), "source": ref(1, "ticketsources"),
                "type": ref(rng.choice(LOOKUPS["tickettypes"])["id"], "tickettypes"),
                "tags": [ref(t, "tags") for t in rng.sample([7, 8, 9], rng.randint(0, 2))],
                "isRead": rng.random() < 0.7,
                "createdAt": fmt_ts(created), "updatedAt": fmt_ts(updated),
                "createdBy": ref(SYSTEM_USER, "users"), "updatedBy": ref(rng.choice(AGENTS), "users"),
                "state": "active", "deletedAt": None,
            }
        ids = list(self.tickets)
        if ids:  # gotcha 4: a system-created ticket with the zero time
            system = self.tickets[ids[0]]
            system.update(createdAt=ZERO_TIME, subject="Welcome to Teamwork Desk", source=ref(3, "ticketsources"))
        for tid in rng.sample(ids[1:], 2) if len(ids) >= 10 else []:
            self.tickets[tid].update(state="deleted", deletedAt=self.tickets[tid]["updatedAt"])

    def _insert_customer(self, address: str, contact_only: bool, with_former: bool, created: str, updated: str,
                         first: str = "", last: str = "Customer") -> dict[str, Any]:
        cid = max(self.customers, default=550200) + 1
        values = [(f"former.{address.strip().lower()}", False)] if with_former else []
        contact_refs = []
        for value, is_main in values + [(address, True)]:
            kid = max(self.contacts, default=991000) + 1
            self.contacts[kid] = {"id": kid, "value": value, "isMain": is_main, "createdAt": created,
                                  "updatedAt": updated, "state": "active"}
            contact_refs.append(ref(kid, "contacts"))
        self.customers[cid] = {
            "id": cid, "firstName": first, "lastName": last, "email": "" if contact_only else address,
            "organization": "", "externalId": "", "phone": "", "jobTitle": "", "verifiedEmail": False,
            "trusted": False, "contacts": contact_refs, "createdAt": created, "updatedAt": updated,
            "createdBy": ref(SYSTEM_USER, "users"), "updatedBy": ref(SYSTEM_USER, "users"), "state": "active",
        }
        return self.customers[cid]

    def _main_contact_ref(self, cid: int) -> dict[str, Any] | None:
        main = [r for r in self.customers[cid]["contacts"] if self.contacts[r["id"]]["isMain"]]
        return main[0] if main else None

    def effective_email(self, cid: int) -> str:
        """The customer's address as stored: `email`, else the main contact's `value` (raw, unnormalised)."""
        customer = self.customers[cid]
        if customer["email"].strip():
            return customer["email"]
        main = self._main_contact_ref(cid)
        return self.contacts[main["id"]]["value"] if main else ""
