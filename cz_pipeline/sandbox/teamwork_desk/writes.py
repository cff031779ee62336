"""Teamwork Desk fake: ticket and customer writes (API PATCH and control mutations).
"""

from __future__ import annotations

from typing import Any

from .common import API_USER, CUSTOMER_EDITABLE, LOOKUPS, TICKET_REFS, fmt_ts, ref


class TeamworkWrites:
    """Writes."""

    # ---- writes (API PATCH and control mutations) -----------------------------------------
    def _lookup_ref(self, kind: str, value: Any) -> dict[str, Any] | None:
        if value is None and kind == "users":
            return None  # unassign the agent
        key = value.get("id") if isinstance(value, dict) else value
        for obj in LOOKUPS[kind]:  # by id, or by name/code ("priority": "high" works on the real API)
            if obj["id"] == key or (isinstance(key, str) and key.strip().lower() in
                                    (str(obj["id"]), obj.get("code"), obj["name"].lower())):
                return ref(obj["id"], kind)
        raise ValueError(f"unknown {kind} {value!r}")

    def _apply_ticket(self, ticket: dict[str, Any], data: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in TICKET_REFS:
                changes[key] = self._lookup_ref(TICKET_REFS[key], value)
            elif key == "tags":
                changes[key] = [self._lookup_ref("tags", v) for v in value or []]
            elif key in ("subject", "previewText") and isinstance(value, str):
                changes[key] = value
            elif key == "customer":
                cid = value.get("id") if isinstance(value, dict) else value
                if cid not in self.customers:
                    raise ValueError(f"unknown customer {value!r}")
                changes.update(customer=ref(cid, "customers"), contact=self._main_contact_ref(cid))
            else:
                raise ValueError(f"ticket field {key!r} cannot be set")
        ticket.update(changes, updatedAt=fmt_ts(self.now()), updatedBy=ref(API_USER, "users"))

    def _customer_for(self, email: str) -> int:
        """Reuse a live customer whose address matches ignoring case/whitespace, else create one."""
        wanted = email.strip().lower()
        for cid, customer in self.customers.items():
            if customer["state"] != "deleted" and self.effective_email(cid).strip().lower() == wanted:
                return cid
        return self._create_customer({"email": email})["id"]

    def _create_customer(self, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data.get("email"), str) or not data["email"].strip():
            raise ValueError("customer needs an email")
        stamp = fmt_ts(self.now())
        customer = self._insert_customer(data["email"], bool(data.get("email_in_contact_only")), False, stamp, stamp,
                                         first=data.get("firstName", ""), last=data.get("lastName", ""))
        customer["createdBy"] = customer["updatedBy"] = ref(API_USER, "users")
        return customer

    def _update_customer(self, customer: dict[str, Any], data: dict[str, Any]) -> None:
        stamp = fmt_ts(self.now())
        for key, value in data.items():
            if key == "email":
                main = self._main_contact_ref(customer["id"])
                if main is None:  # no contact yet: give the customer one
                    kid = max(self.contacts, default=991000) + 1
                    self.contacts[kid] = {"id": kid, "value": value, "isMain": True, "createdAt": stamp,
                                          "updatedAt": stamp, "state": "active"}
                    customer["contacts"].append(ref(kid, "contacts"))
                else:
                    self.contacts[main["id"]].update(value=value, updatedAt=stamp)
                if customer["email"]:  # customers keeping the address only in a contact stay that way
                    customer["email"] = value
            elif key in CUSTOMER_EDITABLE:
                customer[key] = value
            else:
                raise ValueError(f"customer field {key!r} cannot be set")
        customer.update(updatedAt=stamp, updatedBy=ref(API_USER, "users"))

    def _create_ticket(self, data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        email = data.pop("customer_email", None)
        if not isinstance(email, str) or not email.strip():
            raise ValueError("ticket needs a customer_email")
        cid, stamp = self._customer_for(email), fmt_ts(self.now())
        tid = max(self.tickets, default=14427600) + 1
        inbox = self._lookup_ref("inboxes", data.pop("inbox", 9760))
        subject = data.pop("subject", "New ticket")
        ticket = {
            "id": tid, "subject": subject, "previewText": data.pop("previewText", subject), "messageCount": 1,
            "originalRecipient": next(i["email"] for i in LOOKUPS["inboxes"] if i["id"] == inbox["id"]),
            "customer": ref(cid, "customers"), "contact": self._main_contact_ref(cid), "agent": None,
            "inbox": inbox, "status": ref(1, "ticketstatuses"), "priority": ref(2, "ticketpriorities"),
            "source": ref(1, "ticketsources"), "type": ref(143616, "tickettypes"), "tags": [], "isRead": False,
            "createdAt": stamp, "updatedAt": stamp, "createdBy": ref(API_USER, "users"),
            "updatedBy": ref(API_USER, "users"), "state": "active", "deletedAt": None,
        }
        self._apply_ticket(ticket, data)  # validates the remaining fields before the ticket exists
        ticket["updatedAt"] = stamp
        self.tickets[tid] = ticket
        return ticket
