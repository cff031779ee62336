"""Close fake: validated creates, partial updates and deletes, and the event log entries every
write appends (shared by the API and the control endpoint).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .activities import EVENT_OBJECT_TYPES
from .common import (
    ORG_ID, STATUS_IDS, UTC, _B62, _Invalid, _READ_ONLY, _WRITABLE, _date_or_dt, _fail, _is_date, _number,
    parse_dt, ts,
)


class CloseWrites:
    """Writes and their events."""

    # ---- writes ----------------------------------------------------------------------------
    def _clean(self, kind: str, obj: dict[str, Any], data: dict[str, Any], creating: bool = False) -> dict[str, Any]:
        """Validate a (partial) write; return the normalised key -> value changes."""
        if not isinstance(data, dict):
            raise _Invalid(["Expected a JSON object."])
        writable = _WRITABLE[kind] | ({"lead_id", "contact_id"} if creating and kind == "task" else set())
        errors: dict[str, str] = {}
        out: dict[str, Any] = {}
        for key, value in data.items():
            try:
                if key.startswith("custom."):
                    base, _, op = key.partition(".")[2].partition(".")
                    field = f"custom.{base}"
                    out[field] = self._custom(kind, field, value, op, out.get(field, obj.get(field)))
                elif key == "status" and kind in ("lead", "opportunity"):  # a label; status_id is preferred
                    ids = [s["id"] for s in self.db[f"status_{kind}"].values() if s["label"] == value]
                    out["status_id"] = ids[0] if ids else _fail("Invalid status.")
                elif key in writable:
                    out[key] = self._field(kind, key, value)
                elif key not in _READ_ONLY or kind == "task":
                    errors[key] = "This field cannot be updated." if kind == "task" else "Unknown field."
            except ValueError as exc:
                errors[key] = str(exc)
        if errors:
            raise _Invalid([], errors)
        return out

    def _field(self, kind: str, key: str, value: Any) -> Any:
        refs = {"status_id": f"status_{kind}", "user_id": "user", "assigned_to": "user", "contact_id": "contact", "lead_id": "lead"}
        if key in refs:
            if value is None and key == "contact_id":
                return None
            return value if isinstance(value, str) and value in self.db[refs[key]] else _fail(f"Invalid {key}.")
        if key in ("value", "confidence"):
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            return value if ok else _fail("Must be an integer.")
        if key == "is_complete":
            return value if isinstance(value, bool) else _fail("Must be a boolean.")
        if key == "value_period":
            return value if value in ("one_time", "monthly", "annual") else _fail("Invalid value period.")
        if key in ("date", "date_won", "date_lost"):
            if value is None and key != "date":
                return None
            return _date_or_dt(value)
        if key in ("emails", "phones", "urls", "addresses"):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                _fail("Must be a list of objects.")
            if key == "emails":  # addresses are not validated, as a fake for bad-data tests needs them
                return [{"type": v.get("type", "office"), "email": v.get("email"),
                         "email_lower": str(v.get("email") or "").lower()} for v in value]
            if key == "phones":
                return [{"type": v.get("type", "office"), "phone": v.get("phone"), "phone_formatted": v.get("phone")}
                        for v in value]
            return value
        return value if value is None or isinstance(value, str) else _fail("Must be a string.")

    def _custom(self, kind: str, key: str, value: Any, op: str, current: Any) -> Any:
        defn = self.db[f"cf_{kind}"].get(key[len("custom."):])
        if defn is None:
            _fail("Unknown custom field.")
        multi = defn["accepts_multiple_values"]
        if op:
            if op not in ("add", "remove") or not multi:
                _fail("Only multi-value fields accept .add and .remove.")
            item = self._custom(kind, key, [value], "", None)[0]  # validated like a plain write
            cur = list(current or [])
            return (cur + [item] if op == "add" else [v for v in cur if v != item]) or None
        if value is None:
            return None
        values = value if multi and isinstance(value, list) else [value]
        typ, out = defn["type"], []
        for v in values:
            if typ == "number":
                v = v if isinstance(v, (int, float)) and not isinstance(v, bool) else _number(v)
            elif typ == "date":
                v = parse_dt(v).date().isoformat() if _is_date(v) else _fail("Invalid date.")
            elif typ == "datetime":
                v = ts(parse_dt(v)) if _is_date(v) else _fail("Invalid datetime.")
            elif typ == "choices" and v not in defn["choices"]:
                _fail(f"{v!r} is not a valid choice.")
            elif typ == "user" and v not in self.db["user"]:
                _fail("Invalid user.")
            elif typ == "text":
                v = str(v)
            out.append(v)
        return out if multi else out[0]

    def _write(self, kind: str, obj: dict[str, Any], changes: dict[str, Any], stamp: str) -> None:
        for k, v in changes.items():
            if v is None and k.startswith("custom."):
                obj.pop(k, None)  # custom keys are absent when unset
            else:
                obj[k] = v
        obj["date_updated"] = stamp
        if kind == "user":
            return
        obj["updated_by"] = self._api_user()
        if kind != "lead":  # a child's change bumps its lead (no lead event, as in Close)
            self.db["lead"][obj["lead_id"]]["date_updated"] = stamp

    def _api_user(self) -> str:
        return next(iter(self.db["user"]))

    def _create(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _Invalid(["Expected a JSON object."])
        data = dict(data)
        stamp, user = ts(self.now()), self._api_user()
        base = {"id": self._id(kind), "date_created": stamp, "date_updated": stamp}
        if kind != "user":
            base.update(organization_id=ORG_ID, created_by=user, updated_by=user)
        nested = data.pop("contacts", None) if kind == "lead" else None
        task_type = data.pop("_type", "lead") if kind == "task" else None
        if task_type not in (None, "lead", "outgoing_call"):
            raise _Invalid([], {"_type": "Only lead and outgoing_call tasks can be created."})
        if kind in ("contact", "opportunity", "task") and "lead_id" not in data:
            if kind != "contact":
                raise _Invalid([], {"lead_id": "This field is required."})
            # Close makes a new lead for a contact created without one
            data["lead_id"] = self._create("lead", {"name": data.get("name") or ""})["id"]
        defaults: dict[str, dict[str, Any]] = {
            "lead": {"name": "", "description": "", "url": None, "status_id": STATUS_IDS["Potential"], "addresses": []},
            "contact": {"lead_id": None, "name": "", "title": "", "emails": [], "phones": [], "urls": []},
            "opportunity": {"lead_id": None, "status_id": STATUS_IDS["Active"], "value": None, "value_period": "one_time",
                            "value_currency": "USD", "confidence": 0, "date_won": None, "date_lost": None, "note": "",
                            "contact_id": None, "user_id": user},
            "task": {"_type": task_type, "lead_id": None, "contact_id": None, "object_id": None,
                     "object_type": None, "text": "", "assigned_to": user, "date": self._local_today(),
                     "due_date": None, "is_dateless": "date" not in data, "is_complete": False},
            "user": {"first_name": "", "last_name": "", "email": "", "image": None, "organizations": [ORG_ID]},
        }
        role = data.pop("role_id", "user") if kind == "user" else None
        obj = {**base, **defaults[kind]}
        clean = self._clean(kind, obj, {k: v for k, v in data.items() if k != "id"}, creating=True)
        obj.update({k: v for k, v in clean.items() if v is not None or not k.startswith("custom.")})
        if kind == "task":
            obj["due_date"] = None if obj["is_dateless"] else obj["date"][:10]
        self.db[kind][obj["id"]] = obj
        if kind == "user":
            self.roles[obj["id"]] = role
            return obj
        if kind != "lead":
            self.db["lead"][obj["lead_id"]]["date_updated"] = stamp
        self._event(kind, obj, "created")
        for contact in nested or []:
            self._create("contact", {**contact, "lead_id": obj["id"]})
        if kind == "task" and obj["is_complete"]:
            self._complete(obj, stamp, emit=True)
        return obj

    def _update(self, kind: str, obj: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        changes = self._clean(kind, obj, data)
        before = self._render(kind, obj)
        if kind == "opportunity" and "status_id" in changes:  # won/lost stamps the day, reverting keeps it
            typ = self.db["status_opportunity"][changes["status_id"]]["type"]
            field = {"won": "date_won", "lost": "date_lost"}.get(typ)
            if field and not changes.get(field, obj[field]):
                changes[field] = self._local_today()
        if kind == "task" and "date" in changes:
            changes.update(due_date=changes["date"][:10], is_dateless=False)
        if all(obj.get(k) == v for k, v in changes.items()):
            return obj  # nothing changes: no bump, no event
        was_complete = obj.get("is_complete")
        stamp = ts(self.now())
        self._write(kind, obj, changes, stamp)
        if kind == "user":
            return obj
        if kind == "task" and obj["is_complete"] != was_complete:
            if obj["is_complete"]:
                self._complete(obj, stamp, emit=True)
            else:  # reopening drops the completion activity
                for act in [a for a in self.db["task_completed"].values() if a["task_id"] == obj["id"]]:
                    self._delete("task_completed", act)
        self._event(kind, obj, "updated", before)
        return obj

    def _touch(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        before = self._render(kind, obj)
        self._write(kind, obj, {}, ts(self.now()))
        if kind != "user":
            self._event(kind, obj, "updated", before)
        return obj

    def _delete(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "lead":  # cascade, with a deleted event per child
            for child in ("task_completed", "activity", "task", "opportunity", "contact"):
                for o in [o for o in self.db[child].values() if o["lead_id"] == obj["id"]]:
                    self._delete(child, o)
        elif kind == "user":
            self.roles.pop(obj["id"], None)
        elif obj["lead_id"] in self.db["lead"]:
            self.db["lead"][obj["lead_id"]]["date_updated"] = ts(self.now())
        del self.db[kind][obj["id"]]
        if kind != "user":
            self._event(kind, obj, "deleted")

    def _complete(self, task: dict[str, Any], stamp: str, emit: bool = False) -> None:
        act = {"id": self._id("task_completed"), "_type": "TaskCompleted", "task_id": task["id"], "task_text": task["text"],
               "task_assigned_to": task["assigned_to"], "lead_id": task["lead_id"], "contact_id": task["contact_id"],
               "user_id": task["assigned_to"], "organization_id": ORG_ID, "created_by": task["assigned_to"],
               "updated_by": task["assigned_to"], "date_created": stamp, "date_updated": stamp}
        self.db["task_completed"][act["id"]] = act
        if emit:
            self._event("task_completed", act, "created")

    def _local_today(self) -> str:
        return (datetime.now(UTC) + timedelta(hours=self._meta.get("tz_offset", 0.0))).date().isoformat()

    def _event(self, kind: str, obj: dict[str, Any], action: str, before: dict[str, Any] | None = None) -> None:
        if kind in ("activity", "task_completed"):  # every activity write is logged: the list index is stale
            self._activity_changed()
        now = self.now().astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")  # no offset, as in Close
        after = self._render(kind, obj) if action != "deleted" else {}
        previous = before if before is not None else self._render(kind, obj) if action == "deleted" else {}
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)) if before is not None else []
        self.events.append({
            "id": "ev_" + "".join(self.rng.choice(_B62) for _ in range(22)), "date_created": now, "date_updated": now,
            "action": action, "object_type": f"task.{obj['_type']}" if kind == "task" else
            EVENT_OBJECT_TYPES[obj["_type"]] if kind in ("activity", "task_completed") else kind,
            "object_id": obj["id"], "lead_id": obj["id"] if kind == "lead" else obj.get("lead_id"),
            "organization_id": ORG_ID, "user_id": self._api_user(),
            "request_id": "req_" + "".join(self.rng.choice(_B62) for _ in range(22)),
            "api_key_id": None, "oauth_client_id": None, "oauth_scope": None,
            "meta": {k: v for k, v in self._meta.items() if k.startswith("request_")},
            "changed_fields": changed, "data": after,
            "previous_data": {k: previous.get(k) for k in changed} if action == "updated" else previous})
