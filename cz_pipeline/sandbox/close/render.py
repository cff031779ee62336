"""Close fake: rendering stored records the way the API returns them (derived labels, names,
embedded children, `_fields` selection).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .common import PIPELINE_ID, UTC, _EMBEDDED, _money, _select


class CloseRender:
    """Stored record -> API shape."""

    # ---- rendering -----------------------------------------------------------------------
    def _value(self, kind: str, obj: dict[str, Any], name: str) -> Any:
        """A stored or derived field, cheap enough for filtering and sorting every record."""
        if name in obj:
            return obj[name]
        if name == "display_name":
            return obj.get("name")
        if name == "status_label":
            return self._status(kind, obj)["label"]
        if name == "status_type":
            return self._status(kind, obj).get("type")
        if name == "view" and kind == "task":
            if obj["is_complete"]:
                return "archive"
            return "inbox" if obj["date"][:10] <= datetime.now(UTC).date().isoformat() else "future"
        if name == "html_url" and kind == "lead":
            return f"https://app.close.com/lead/{obj['id']}/"
        return None

    def _status(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.db[f"status_{kind}"][obj["status_id"]]

    def _user_name(self, uid: str | None) -> str | None:
        u = self.db["user"].get(uid or "")
        return f"{u['first_name']} {u['last_name']}" if u else None

    def _contact_name(self, cid: str | None) -> str | None:
        return (self.db["contact"].get(cid or "") or {}).get("name")

    def _children(self, lead_ids: set[str]) -> dict[str, dict[str, list]]:
        """Embedded children of some leads, in one pass per child store."""
        out: dict[str, dict[str, list]] = {lid: {"contacts": [], "opportunities": [], "tasks": []} for lid in lead_ids}
        for kind, key in (("contact", "contacts"), ("opportunity", "opportunities"), ("task", "tasks")):
            for obj in self.db[kind].values():
                if obj["lead_id"] in out and not (kind == "task" and obj["is_complete"]):  # lead embeds open tasks only
                    out[obj["lead_id"]][key].append(self._render(kind, obj))
        return out

    def _render(self, kind: str, obj: dict[str, Any], fields: list[str] | None = None,
                children: dict[str, list] | None = None) -> dict[str, Any]:
        out = dict(obj)
        if kind == "lead":
            out.update(display_name=obj["name"], status_label=self._value(kind, obj, "status_label"),
                       html_url=self._value(kind, obj, "html_url"), integration_links=[], source=None)
            if children is not None:
                out.update(children, contact_ids=[c["id"] for c in children["contacts"]])
                first = children["contacts"][0] if children["contacts"] else {}
                out["primary_email"] = (first.get("emails") or [None])[0]
                out["primary_phone"] = (first.get("phones") or [None])[0]
        elif kind == "contact":
            out["display_name"] = obj["name"]
        elif kind == "opportunity":
            status, value, conf = self._status(kind, obj), obj["value"] or 0, obj["confidence"] or 0
            annual = value * 12 if obj["value_period"] == "monthly" else value
            out.update(lead_name=self.db["lead"][obj["lead_id"]]["name"], status_label=status["label"],
                       status_type=status["type"], status_display_name=status["label"], pipeline_id=PIPELINE_ID,
                       pipeline_name="Sales", value_formatted=_money(value), expected_value=value * conf // 100,
                       annualized_value=annual, annualized_expected_value=annual * conf // 100,
                       contact_name=self._contact_name(obj["contact_id"]), user_name=self._user_name(obj["user_id"]),
                       is_stalled=False, integration_links=[], attachments=[])
        elif kind == "task":
            out.update(lead_name=self.db["lead"][obj["lead_id"]]["name"],
                       contact_name=self._contact_name(obj["contact_id"]), view=self._value(kind, obj, "view"),
                       assigned_to_name=self._user_name(obj["assigned_to"]),
                       created_by_name=self._user_name(obj["created_by"]), updated_by_name=self._user_name(obj["updated_by"]))
        elif kind in ("task_completed", "activity"):
            out["user_name"] = self._user_name(obj["user_id"])
        out.update([(k, out.pop(k)) for k in [k for k in out if k.startswith("custom.")]])  # custom keys last
        return out if fields is None else _select(out, fields)

    def _render_many(self, kind: str, objs: list[dict[str, Any]], fields: list[str] | None = None) -> list[dict[str, Any]]:
        """Render a page; leads get their children only when `_fields` asks for them."""
        if kind != "lead" or (fields is not None and not _EMBEDDED & set(fields)):
            return [self._render(kind, o, fields) for o in objs]
        kids = self._children({o["id"] for o in objs})
        return [self._render(kind, o, fields, kids[o["id"]]) for o in objs]

    def _render_one(self, kind: str, obj: dict[str, Any], fields: list[str] | None = None) -> dict[str, Any]:
        return self._render_many(kind, [obj], fields)[0]
