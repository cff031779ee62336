"""Close fake: activities (calls, emails, SMS, meetings, notes, completed tasks, lead and
opportunity status changes) at `/activity/` and the typed `/activity/<type>/` lists, and the
organisation's memberships.

Generated activities come from their own seeded generator, so the rest of the dataset does not
depend on how many there are; they cover every lead (also leads no sync filter selects) and
include history years older than the leads themselves, as imports into Close leave. Lists are
served newest first from a date-sorted index (rebuilt after a write), so deep pages and
`date_created` windows stay cheap with a million activities.
"""

from __future__ import annotations

import bisect
import random
from datetime import datetime, timedelta
from typing import Any

from ..server import Request
from .common import (_B62, _END, _OPS, _START, ORG_ID, STATUS_IDS, UTC, _as_param, _b62, _body, _Invalid, _param_dt,
                     ts)

# path under /activity/ -> `_type`; event log object types per `_type`
ACTIVITY_PATHS = {"call": "Call", "email": "Email", "sms": "SMS", "meeting": "Meeting", "note": "Note",
                  "task_completed": "TaskCompleted", "status_change/lead": "LeadStatusChange",
                  "status_change/opportunity": "OpportunityStatusChange"}
EVENT_OBJECT_TYPES = {"Call": "activity.call", "Email": "activity.email", "SMS": "activity.sms",
                      "Meeting": "activity.meeting", "Note": "activity.note", "TaskCompleted": "activity.task_completed",
                      "LeadStatusChange": "status_change.lead", "OpportunityStatusChange": "status_change.opportunity"}
CREATABLE = {"call": "Call", "email": "Email", "sms": "SMS", "meeting": "Meeting", "note": "Note"}
EMAIL_STATUSES_OUT = ["sent"] * 14 + ["draft", "draft", "scheduled", "outbox", "bounced", "error"]
MEMBERSHIP_ROLES = ("admin", "superuser", "user", "restricteduser")
_WEIGHTS = [("Call", 30), ("Email", 35), ("SMS", 8), ("Meeting", 7), ("Note", 10), ("LeadStatusChange", 5),
            ("OpportunityStatusChange", 5)]
_HISTORY = (datetime(2019, 1, 1, tzinfo=UTC), datetime(2023, 12, 31, tzinfo=UTC))  # imported before the integration
_FILTERS = ("lead_id", "user_id", "contact_id", "_type")
_RANGES = ("date_created", "date_updated", "activity_at")


class CloseActivities:
    """Activity storage (`db["activity"]`, completed tasks stay in `db["task_completed"]`), lists,
    writes and memberships."""

    # ---- generation ------------------------------------------------------------------------
    def _generate_activities(self, seed: int, n: int) -> None:
        rng = random.Random(f"close:activities:{seed}")
        users, leads = list(self.db["user"]), list(self.db["lead"].values())
        if not leads or n <= 0:
            return
        contacts: dict[str, list[str]] = {}
        for c in self.db["contact"].values():
            contacts.setdefault(c["lead_id"], []).append(c["id"])
        opps: dict[str, list[dict[str, Any]]] = {}
        for o in self.db["opportunity"].values():
            opps.setdefault(o["lead_id"], []).append(o)
        types = [t for t, _ in _WEIGHTS]
        weights = [w for _, w in _WEIGHTS]
        span, hist = (_END - _START).total_seconds(), (_HISTORY[1] - _HISTORY[0]).total_seconds()
        id_head = _b62(f"close:activity:{seed}", 35)
        store = self.db["activity"]
        for i, typ in enumerate(rng.choices(types, weights, k=n)):
            lead = leads[i] if i < len(leads) else rng.choice(leads)  # every lead has at least one
            if rng.random() < 0.1:
                made = _HISTORY[0] + timedelta(seconds=rng.random() * hist)
            else:
                made = _START + timedelta(seconds=rng.random() * span)
            user = rng.choice(users)
            cids = contacts.get(lead["id"])
            if typ == "OpportunityStatusChange" and not opps.get(lead["id"]):
                typ = "Note"
            stamp = ts(made)
            act = {"id": "acti_" + id_head + _seq62(i, 8), "_type": typ, "lead_id": lead["id"],
                   "contact_id": rng.choice(cids) if cids and typ not in ("Note",) else None,
                   "user_id": user, "organization_id": ORG_ID, "created_by": user, "updated_by": user,
                   "date_created": stamp, "date_updated": stamp, "activity_at": stamp}
            act.update(self._activity_details(rng, typ, made, opps.get(lead["id"])))
            store[act["id"]] = act

    def _activity_details(self, rng: random.Random, typ: str, at: datetime, opps: list | None) -> dict[str, Any]:
        if typ == "Call":
            answered = rng.random() < 0.7
            return {"direction": "outbound" if rng.random() < 0.75 else "inbound", "status": "completed",
                    "disposition": "answered" if answered else rng.choice(["no-answer", "vm-left", "busy"]),
                    "duration": rng.randrange(20, 1800) if answered else 0, "phone": "+16505550100",
                    "local_phone": "+14155550123", "note": "", "source": "Close.io", "recording_url": None}
        if typ in ("Email", "SMS"):
            outgoing = rng.random() < 0.65
            status = rng.choice(EMAIL_STATUSES_OUT) if outgoing else "inbox"
            if typ == "SMS":
                status = {"bounced": "error", "outbox": "sent"}.get(status, status)
                return {"direction": "outbound" if outgoing else "inbound", "status": status,
                        "text": "Quick check-in about your account", "local_phone": "+14155550123",
                        "remote_phone": "+16505550100", "date_sent": ts(at) if status in ("sent", "inbox") else None}
            return {"direction": "outgoing" if outgoing else "incoming", "status": status,
                    "subject": rng.choice(["Renewal", "Quick question", "Follow-up", "Proposal", "Re: onboarding"]),
                    "sender": "rep@czsandbox.example", "to": ["customer@example.com"], "cc": [], "bcc": [],
                    "body_text": "Hello,\n\nJust following up.\n", "body_preview": "Hello, Just following up.",
                    "date_sent": ts(at) if status in ("sent", "inbox", "bounced") else None,
                    "date_scheduled": ts(at + timedelta(days=1)) if status == "scheduled" else None,
                    "thread_id": None, "template_id": None, "opens": [], "attachments": []}
        if typ == "Meeting":
            minutes = rng.choice([15, 30, 45, 60])
            return {"title": rng.choice(["QBR", "Demo", "Kickoff", "Check-in"]), "status": "completed",
                    "starts_at": ts(at), "ends_at": ts(at + timedelta(minutes=minutes)), "duration": minutes * 60,
                    "location": None, "attendees": [], "source": "calendar"}
        if typ == "Note":
            return {"note": "Spoke with the champion; renewal looks likely.",
                    "note_html": "<p>Spoke with the champion; renewal looks likely.</p>"}
        if typ == "LeadStatusChange":
            old, new = rng.sample(["Potential", "Trial", "Customer", "Bad Fit"], 2)
            return {"old_status_id": STATUS_IDS[old], "old_status_label": old,
                    "new_status_id": STATUS_IDS[new], "new_status_label": new}
        opp = rng.choice(opps or [{}])
        old, new = rng.sample([("Active", "active"), ("Verbal", "active"), ("Won", "won"), ("Lost", "lost")], 2)
        return {"opportunity_id": opp.get("id"), "old_status_id": STATUS_IDS[old[0]], "old_status_label": old[0],
                "old_status_type": old[1], "new_status_id": STATUS_IDS[new[0]], "new_status_label": new[0],
                "new_status_type": new[1], "opportunity_value": opp.get("value"),
                "opportunity_value_period": opp.get("value_period"), "opportunity_value_currency": "USD"}

    # ---- index -------------------------------------------------------------------------------
    def _activity_index(self) -> tuple[list[str], list[tuple[str, str, str]]]:
        """(date_created per entry, entries (date_created, id, store)), oldest first."""
        if self._activity_sorted is None:
            entries = [(a["date_created"], a["id"], store) for store in ("activity", "task_completed")
                       for a in self.db[store].values()]
            entries.sort()
            self._activity_sorted = ([e[0] for e in entries], entries)
        return self._activity_sorted

    def _activity_changed(self) -> None:
        self._activity_sorted = None

    # ---- HTTP --------------------------------------------------------------------------------
    def _activity_route(self, req: Request, parts: list[str], fields: list[str] | None) -> Any:
        """`parts` after `activity`: [] (all types), a typed path, or a typed path + id."""
        path = "/".join(parts)
        if path == "" or path in ACTIVITY_PATHS:
            if req.method == "GET":
                return 200, self._list_activities(req, {ACTIVITY_PATHS[path]} if path else None, fields)
            if req.method == "POST" and path in CREATABLE:
                return 200, self._render_one("activity", self._create_activity(CREATABLE[path], _body(req)), fields)
            return 405, {"error": f"Method {req.method} not allowed."}
        typed, oid = "/".join(parts[:-1]), parts[-1]
        if typed not in ACTIVITY_PATHS:
            return 404, {"error": "Not found."}
        store, act = self._find_activity(oid)
        if act["_type"] != ACTIVITY_PATHS[typed]:
            self._missing()
        if req.method == "GET":
            return 200, self._render_one(store, act, fields)
        if req.method == "DELETE":
            self._delete(store, act)
            return 200, {}
        return 405, {"error": f"Method {req.method} not allowed."}

    def _find_activity(self, oid: Any) -> tuple[str, dict[str, Any]]:
        for store in ("activity", "task_completed"):
            if (act := self.db[store].get(str(oid))) is not None:
                return store, act
        return self._missing()

    def _list_activities(self, req: Request, types: set[str] | None, fields: list[str] | None) -> dict[str, Any]:
        skip, limit = self._page_args(req, 100, max_skip=self.activity_max_skip)
        wanted: dict[str, set[str]] = {}
        if types is not None:
            wanted["_type"] = types
        bounds: list[tuple[str, str, str]] = []  # (field, op, ts)
        for name, values in req.query.items():
            field, _, op = name.partition("__")
            if field in _FILTERS and op in ("", "in") and not (field == "_type" and types is not None):
                got = set(values[-1].split(",")) if op or field == "_type" else {values[-1]}
                wanted[field] = wanted[field] & got if field in wanted else got
            elif field in _RANGES and op in _OPS:
                bounds.append((field, op, ts(_param_dt(name, values[-1]))))
        order = req.arg("_order_by") or "-date_created"
        if order.lstrip("-") != "date_created":
            raise _Invalid(field_errors={"_order_by": f"Cannot order by {order.lstrip('-')}."})
        dates, entries = self._activity_index()
        lo, hi = 0, len(entries)
        for field, op, bound in bounds:  # date_created windows narrow the index; the rest filter rows
            if field == "date_created":
                if op in ("gt", "gte"):
                    lo = max(lo, (bisect.bisect_right if op == "gt" else bisect.bisect_left)(dates, bound))
                else:
                    hi = min(hi, (bisect.bisect_left if op == "lt" else bisect.bisect_right)(dates, bound))
        others = [(f, op, b) for f, op, b in bounds if f != "date_created"]
        positions = range(hi - 1, lo - 1, -1) if order.startswith("-") else range(lo, hi)
        page: list[tuple[str, dict[str, Any]]] = []
        matched = 0
        for pos in positions:
            _, oid, store = entries[pos]
            act = self.db[store][oid]
            if any(_as_param(act.get(f)) not in w for f, w in wanted.items()):
                continue
            if any(act.get(f) is None or not _OPS[op](act[f], b) for f, op, b in others):
                continue
            matched += 1
            if matched > skip + limit:
                break
            if matched > skip:
                page.append((store, act))
        return {"has_more": matched > skip + limit,
                "data": [self._render_one(store, act, fields) for store, act in page]}

    # ---- writes (control and API) ---------------------------------------------------------------
    def _create_activity(self, typ: str, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _Invalid(["Expected a JSON object."])
        lead_id = data.get("lead_id")
        if lead_id not in self.db["lead"]:
            raise _Invalid([], {"lead_id": "This field is required." if lead_id is None else "Invalid lead_id."})
        user = data.get("user_id") or self._api_user()
        if user not in self.db["user"]:
            raise _Invalid([], {"user_id": "Invalid user_id."})
        stamp = ts(self.now())
        made = ts(_param_dt("date_created", data["date_created"])) if data.get("date_created") else stamp
        act = {"id": "acti_" + "".join(self.rng.choice(_B62) for _ in range(43)), "_type": typ, "lead_id": lead_id,
               "contact_id": data.get("contact_id"), "user_id": user, "organization_id": ORG_ID,
               "created_by": user, "updated_by": user, "date_created": made, "date_updated": stamp,
               "activity_at": made}
        defaults = self._activity_details(random.Random(0), typ, datetime.now(UTC), None)
        act.update(defaults)
        act.update({k: v for k, v in data.items() if k not in ("id", "_type", "organization_id")})
        act["date_created"], act["date_updated"] = made, stamp
        act["activity_at"] = ts(_param_dt("activity_at", data["activity_at"])) if data.get("activity_at") else made
        self.db["activity"][act["id"]] = act
        self.db["lead"][lead_id]["date_updated"] = stamp
        self._event("activity", act, "created")
        return act

    def _mutate_activity(self, op: Any, kind: str, body: dict[str, Any]) -> Any:
        if op == "create" and kind in CREATABLE:
            return self._render_one("activity", self._create_activity(CREATABLE[kind], body.get("data") or {}))
        if op == "delete":
            store, act = self._find_activity(body.get("id"))
            self._delete(store, act)
            return {}
        raise ValueError(f"unknown op {op!r} for {kind}")

    # ---- organisation ------------------------------------------------------------------------------
    def _membership(self, uid: str, role: str) -> dict[str, Any]:
        user = self.db["user"][uid]
        return {"id": "memb_" + _b62(f"close:membership:{uid}"), "user_id": uid, "role_id": role,
                "organization_id": ORG_ID, "user_full_name": f"{user['first_name']} {user['last_name']}",
                "user_email": user["email"], "date_created": user["date_created"], "date_updated": user["date_updated"]}

    def _organization(self) -> dict[str, Any]:
        return {"id": ORG_ID, "name": "CZ Sandbox Org", "currency": "USD",
                "lead_statuses": list(self.db["status_lead"].values()),
                "opportunity_statuses": list(self.db["status_opportunity"].values()),
                "memberships": [self._membership(u, r) for u, r in self.roles.items() if u not in self.inactive_users],
                "inactive_memberships": [self._membership(u, r) for u, r in self.roles.items()
                                         if u in self.inactive_users]}

    def _mutate_membership(self, body: dict[str, Any]) -> Any:
        uid = body.get("user_id") or body.get("id")
        if uid not in self.roles:
            raise KeyError(f"no membership for user {uid!r}")
        if "role_id" in body:
            if body["role_id"] not in MEMBERSHIP_ROLES:
                raise ValueError(f"role_id must be one of {', '.join(MEMBERSHIP_ROLES)}")
            self.roles[uid] = body["role_id"]
        if "active" in body:
            (self.inactive_users.discard if body["active"] else self.inactive_users.add)(uid)
        return self._membership(uid, self.roles[uid])


def _seq62(i: int, width: int) -> str:
    out = []
    for _ in range(width):
        i, r = divmod(i, 62)
        out.append(_B62[r])
    return "".join(reversed(out))
