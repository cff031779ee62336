"""The in-memory org of the Salesforce fake: records per object, describe metadata (fields can be
removed and restored), relationship resolution for SOQL paths, record rendering with
`attributes`, and writes that keep derived fields (IsClosed, IsWon, Name, TotalPrice) and stamps
(SystemModstamp, LastModifiedDate) right. Deletes set IsDeleted and feed `/deleted/`."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from .generate import generate
from .schema import API_VERSION, OBJECTS, POLYMORPHIC, Field, make_id, object_fields, object_of, render_value
from .soql import SoqlError, _parse_datetime


class Org:
    def __init__(self, *, seed: int, n_accounts: int, contacts_per_account: int, opportunities_per_account: int,
                 closed_share: float, extra_custom_fields: int, clock: Callable[[], datetime]):
        self.clock = clock
        self.fields: dict[str, dict[str, Field]] = {
            obj: {f.name: f for f in object_fields(obj, extra_custom_fields)} for obj in OBJECTS}
        self.removed: dict[str, set[str]] = {obj: set() for obj in OBJECTS}
        self.records: dict[str, dict[str, dict[str, Any]]] = {obj: {} for obj in OBJECTS}
        self.deleted_log: dict[str, list[tuple[str, datetime]]] = {obj: [] for obj in OBJECTS}
        self._seq = 0
        generate(self._add, random.Random(seed), n_accounts=n_accounts, contacts_per_account=contacts_per_account,
                 opportunities_per_account=opportunities_per_account, closed_share=closed_share,
                 extra_custom=extra_custom_fields)

    # ---- metadata --------------------------------------------------------------------------
    def visible_fields(self, obj: str) -> list[Field]:
        return [f for name, f in self.fields[obj].items() if name not in self.removed[obj]]

    def field(self, obj: str, name: str) -> Field:
        f = self.fields[obj].get(name)
        if f is None or name in self.removed[obj]:
            # Salesforce field names are case-insensitive
            match = next((f for f in self.visible_fields(obj) if f.name.lower() == name.lower()), None)
            if match is None:
                raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{obj}'. If you are attempting "
                                                 "to use a custom field, be sure to append the '__c' after the custom "
                                                 "field name.")
            return match
        return f

    def relationship(self, obj: str, name: str) -> Field:
        for f in self.visible_fields(obj):
            if f.relationship and f.relationship.lower() == name.lower():
                return f
        raise SoqlError("INVALID_FIELD", f"Didn't understand relationship '{name}' in field path. If you are "
                                         f"attempting to use a custom relationship, be sure to append the '__r'")

    def resolve(self, obj: str, path: str) -> str:
        """The describe type of `path` on `obj` (a field or `Rel.Field`, any depth)."""
        *rels, last = path.split(".")
        for rel in rels:
            ref = self.relationship(obj, rel)
            if (obj, ref.name) in POLYMORPHIC:
                if last not in ("Id", "Name") or len(rels) > 1:
                    raise SoqlError("INVALID_FIELD", f"No such column '{last}' on entity 'Name'")
                return "id" if last == "Id" else "string"
            obj = ref.reference_to or ""
        return self.field(obj, last).type

    def getter(self, obj: str, path: str) -> Callable[[dict[str, Any]], Any]:
        *rels, last = path.split(".")
        steps: list[str] = []
        for rel in rels:
            ref = self.relationship(obj, rel)
            steps.append(ref.name)
            obj = ref.reference_to or obj
        name = self.field(obj, last).name if not rels or (obj, steps[-1]) not in POLYMORPHIC else last

        def get(rec: dict[str, Any]) -> Any:
            for step in steps:
                target = rec.get(step)
                rec = self.lookup(target) if target else None
                if rec is None:
                    return None
            return rec.get(name)
        return get

    def lookup(self, record_id: str) -> dict[str, Any] | None:
        obj = object_of(record_id)
        return self.records[obj].get(record_id) if obj else None

    def describe(self, obj: str) -> dict[str, Any]:
        return {"name": obj, "label": obj, "custom": False, "queryable": True, "retrieveable": True,
                "updateable": True, "createable": True, "deletable": True, "keyPrefix": make_id(obj, 0)[:3],
                "fields": [f.describe() for f in self.visible_fields(obj)],
                "urls": {"describe": f"/services/data/v{API_VERSION}/sobjects/{obj}/describe"}}

    # ---- rendering -------------------------------------------------------------------------
    def attributes(self, obj: str, record_id: str | None) -> dict[str, str]:
        url = f"/services/data/v{API_VERSION}/sobjects/{obj}" + (f"/{record_id}" if record_id else "")
        return {"type": obj, "url": url}

    def render(self, obj: str, rec: dict[str, Any], paths: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": self.attributes(obj, rec["Id"])}
        for path in paths or [f.name for f in self.visible_fields(obj)]:
            *rels, last = path.split(".")
            if not rels:
                out[self.field(obj, last).name] = render_value(rec.get(self.field(obj, last).name))
                continue
            node, cur_obj, cur = out, obj, rec
            for rel in rels:
                ref = self.relationship(cur_obj, rel)
                target_id = cur.get(ref.name) if cur else None
                target = self.lookup(target_id) if target_id else None
                key = ref.relationship or rel
                if target is None:
                    node[key] = node.get(key) if isinstance(node.get(key), dict) else None
                    cur = None
                    break
                cur_obj = object_of(target_id) or ""
                sub = node.get(key)
                if not isinstance(sub, dict):
                    sub = node[key] = {"attributes": self.attributes(cur_obj, target_id)}
                node, cur = sub, target
            if cur is not None:
                node[last] = render_value(cur.get(last))
        return out

    # ---- writes ----------------------------------------------------------------------------
    def _add(self, obj: str, values: dict[str, Any], created: datetime) -> dict[str, Any]:
        self._seq += 1
        rec = {"Id": make_id(obj, self._seq), "IsDeleted": False, "CreatedDate": created,
               "LastModifiedDate": created, "SystemModstamp": created, **values}
        self.records[obj][rec["Id"]] = rec
        return rec

    def coerce(self, obj: str, name: str, value: Any) -> tuple[str, Any]:
        f = self.field(obj, name)
        if not f.updateable:
            raise SoqlError("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {f.name}. Please "
                                                               "check the security settings of this field")
        if value is None:
            return f.name, None
        if f.type == "date":
            return f.name, date.fromisoformat(str(value)[:10])
        if f.type == "datetime":
            return f.name, _parse_datetime(str(value))
        if f.type in ("double", "currency", "percent"):
            return f.name, float(value)
        if f.type == "boolean":
            return f.name, bool(value)
        return f.name, str(value)

    def _derive(self, obj: str, rec: dict[str, Any]) -> None:
        if obj == "Opportunity":
            rec["IsClosed"] = str(rec.get("StageName", "")).startswith("Closed")
            rec["IsWon"] = rec.get("StageName") == "Closed Won"
        elif obj == "Task":
            rec["IsClosed"] = rec.get("Status") == "Completed"
        elif obj == "User":
            rec["Name"] = " ".join(p for p in (rec.get("FirstName"), rec.get("LastName")) if p)
        elif obj == "OpportunityLineItem":
            rec["TotalPrice"] = (rec.get("Quantity") or 0.0) * (rec.get("UnitPrice") or 0.0)

    def update(self, obj: str, record_id: str, data: dict[str, Any]) -> dict[str, Any]:
        rec = self.records[obj].get(record_id)
        if rec is None or rec["IsDeleted"]:
            raise KeyError(f"{obj} {record_id} not found")
        changes = dict(self.coerce(obj, k, v) for k, v in data.items() if k not in ("attributes", "Id"))
        rec.update(changes)
        self._derive(obj, rec)
        rec["LastModifiedDate"] = rec["SystemModstamp"] = self.clock()
        return rec

    def create(self, obj: str, data: dict[str, Any]) -> dict[str, Any]:
        values = {f.name: None for f in self.visible_fields(obj) if f.name not in ("Id", "IsDeleted", "CreatedDate",
                                                                                  "LastModifiedDate", "SystemModstamp")}
        values.update(self.coerce(obj, k, v) for k, v in data.items() if k != "attributes")
        rec = self._add(obj, values, self.clock())
        self._derive(obj, rec)
        return rec

    def delete(self, obj: str, record_id: str) -> datetime:
        rec = self.records[obj].get(record_id)
        if rec is None or rec["IsDeleted"]:
            raise KeyError(f"{obj} {record_id} not found")
        when = self.clock()
        rec.update(IsDeleted=True, SystemModstamp=when, LastModifiedDate=when)
        self.deleted_log[obj].append((record_id, when))
        if obj == "Opportunity":  # children go to the recycle bin with their parent
            for child in ("OpportunityContactRole", "OpportunityLineItem"):
                for row in self.records[child].values():
                    if row.get("OpportunityId") == record_id and not row["IsDeleted"]:
                        row.update(IsDeleted=True, SystemModstamp=when, LastModifiedDate=when)
                        self.deleted_log[child].append((row["Id"], when))
        return when

    def deleted_between(self, obj: str, start: datetime, end: datetime) -> list[tuple[str, datetime]]:
        return [(rid, when) for rid, when in self.deleted_log[obj] if start <= when <= end]

    def earliest_deleted_available(self) -> datetime:
        return self.clock() - timedelta(days=15)

