"""Zoho CRM fake: record rendering (org-offset datetimes, lookups) and the validated writes
shared by the API and the control endpoint.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any

from .common import Field, MANDATORY, MODULES, NAME_FIELD, ORG_ID_BASE, STAGES, _FieldError


class ZohoRecords:
    """Rendering and writes."""

    # ---- helpers -------------------------------------------------------------------------
    def _stamp(self) -> datetime:
        return self.now().replace(microsecond=0)  # Zoho keeps seconds: writes in one second tie

    def _new_id(self) -> str:
        self._seq += 1
        return str(ORG_ID_BASE + self._seq * 1000 + 1)

    def _next_account_number(self) -> str:
        self._account_number += 1
        return f"Z-{self._account_number:05d}"

    def fmt(self, dt: datetime) -> str:
        return dt.astimezone(self.tz).isoformat(timespec="seconds")

    def _parse_dt(self, value: str) -> datetime:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=self.tz)).astimezone(timezone.utc)

    def _user_ref(self, uid: str) -> dict[str, Any]:
        return {"name": self.users[uid]["full_name"], "id": uid}

    def _name(self, module: str, rec: dict[str, Any]) -> Any:
        return rec.get(NAME_FIELD[module])

    def _target(self, module: str, rec: dict[str, Any], api: str) -> str | None:
        if api == "What_Id":
            return rec.get("$se_module") or "Accounts"
        f = self.field_map[module].get(api)
        return f.target if f else None

    def _out(self, module: str, rec: dict[str, Any], api: str) -> Any:
        """One value as the API renders it; lookup names are resolved at read time."""
        v = rec.get(api)
        if isinstance(v, datetime):
            return self.fmt(v)
        if isinstance(v, dict) and "id" in v:
            target = self._target(module, rec, api)
            if target == "users" and v["id"] in self.users:
                u = self.users[v["id"]]
                return {"name": u["full_name"], "id": u["id"], "email": u["email"]}
            if target in self.records and v["id"] in self.records[target]:
                return {"name": self._name(target, self.records[target][v["id"]]), "id": v["id"]}
            return dict(v)  # dangling reference: keep the last known name
        return list(v) if isinstance(v, list) else v

    def render(self, module: str, rec: dict[str, Any], fields: list[str] | None = None) -> dict[str, Any]:
        keys = [k for k in rec if k != "id"] if fields is None else [k for k in fields if k in rec and k != "id"]
        return {"id": rec["id"], **{k: self._out(module, rec, k) for k in keys}}

    def _render_user(self, u: dict[str, Any]) -> dict[str, Any]:
        out = {k: self.fmt(v) if isinstance(v, datetime) else v for k, v in u.items()}
        out["created_by"] = self._user_ref(u["created_by"]) if u["created_by"] in self.users else None
        out["Modified_By"] = self._user_ref(u["Modified_By"]) if u["Modified_By"] in self.users else None
        return out

    def _render_deleted(self, entry: dict[str, Any]) -> dict[str, Any]:
        by = {k: self._user_ref(entry[k]) if entry[k] in self.users else None for k in ("deleted_by", "created_by")}
        return {"id": entry["id"], "display_name": entry["display_name"], "type": entry["type"],
                "deleted_time": self.fmt(entry["deleted_time"]), **by}

    # ---- writes (API and control share validation) ---------------------------------------
    def _coerce(self, module: str, f: Field, value: Any, *, strict: bool, se_module: str | None) -> Any:
        if value is None:
            return None
        t = f.dtype
        if t in ("lookup", "ownerlookup"):
            lid = str(value.get("id") if isinstance(value, dict) else value)
            if not lid.isdigit():
                raise _FieldError(f.api)
            target = se_module or "Accounts" if f.api == "What_Id" else f.target
            pool = self.users if target == "users" else self.records.get(target or "", {})
            if strict and lid not in pool:  # control writes may leave dangling links (broken-link tests)
                raise _FieldError(f.api)
            return {"name": value.get("name") if isinstance(value, dict) else None, "id": lid}
        if t == "datetime":
            try:
                return self._parse_dt(str(value)).replace(microsecond=0)
            except ValueError:
                raise _FieldError(f.api) from None
        if t == "date":
            try:
                date.fromisoformat(value)
                ok = len(value) == 10
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise _FieldError(f.api)
            return value
        if t == "boolean":
            ok = isinstance(value, bool)
        elif t == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif t in ("double", "currency"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str) and (t != "email" or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value) is not None)
        if not ok:
            raise _FieldError(f.api)
        return value

    def _write(self, module: str, rec: dict[str, Any], data: dict[str, Any], *, api: bool, bump: bool = True) -> None:
        """Validate every key first (nothing is applied on error), then apply. API writes silently
        drop read-only fields as Zoho does; control writes may set anything, even Modified_Time."""
        fmap = self.field_map[module]
        se_module = data.get("$se_module", rec.get("$se_module"))
        if se_module is not None and se_module not in MODULES:
            raise _FieldError("$se_module")
        staged: dict[str, Any] = {}
        for key, value in data.items():
            if key == "id" or (key.startswith("$") and api and key != "$se_module"):
                continue
            if key.startswith("$"):
                staged[key] = value
                continue
            f = fmap.get(key)
            if f is None:
                raise _FieldError(key, "the field api name given seems to be invalid")
            if f.read_only and api:
                continue
            staged[key] = self._coerce(module, f, value, strict=api, se_module=se_module)
        rec.update(staged)
        if module == "Contacts":
            rec["Full_Name"] = " ".join(p for p in (rec.get("First_Name"), rec.get("Last_Name")) if p) or None
        if module == "Deals":
            if "Stage" in staged and "Probability" not in staged and rec["Stage"] in STAGES:
                rec["Probability"] = STAGES[rec["Stage"]]
            amount, prob = rec.get("Amount"), rec.get("Probability")
            rec["Expected_Revenue"] = round(amount * prob / 100, 2) if amount is not None and prob is not None else None
        if bump and "Modified_Time" not in staged:
            rec["Modified_Time"] = self._stamp()
            rec["Modified_By"] = self._user_ref(self.current_user)
        if module == "Tasks" and "Closed_Time" not in staged:
            completed = rec.get("Status") == "Completed"
            if completed and rec.get("Closed_Time") is None:
                rec["Closed_Time"] = rec["Modified_Time"]
            elif not completed:
                rec["Closed_Time"] = None

    def _create(self, module: str, data: dict[str, Any], *, api: bool) -> dict[str, Any]:
        rec = self._new_record(module, self._stamp(), self.current_user)
        self._write(module, rec, data, api=api, bump=False)
        if api:
            missing = [k for k in MANDATORY[module] if rec.get(k) in (None, "")]
            if missing:
                raise _FieldError(missing[0], "required field not found")
        if "Modified_Time" not in data:  # a control create may backdate Created_Time only
            rec["Modified_Time"] = max(rec["Modified_Time"], rec["Created_Time"])
        self.records[module][rec["id"]] = rec
        return rec

    def _delete(self, module: str, rid: str, *, permanent: bool) -> dict[str, Any]:
        rec = self.records[module].pop(rid)  # KeyError for unknown ids
        entry = {"id": rid, "display_name": None if permanent else self._name(module, rec),
                 "type": "permanent" if permanent else "recycle", "deleted_time": self._stamp(),
                 "deleted_by": None if permanent else self.current_user,
                 "created_by": None if permanent else rec["Created_By"]["id"]}
        self.deleted[module].append(entry)
        return self._render_deleted(entry)
