"""Helpers shared by the helpdesk tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from cz_pipeline.sandbox.close import CloseSandbox
from cz_pipeline_tests.conftest import CF

DESK_KEY = "tw_sandbox_key"


def synced_contacts(close_app: CloseSandbox) -> list[dict[str, Any]]:
    """Close contacts whose lead becomes a ChurnZero account (sync filter + AccountExternalID)."""
    leads = {lead["id"]: lead for lead in close_app.dump("lead")}
    return [c for c in close_app.dump("contact")
            if leads[c["lead_id"]]["status_label"] in ("Customer", "Trial") and leads[c["lead_id"]].get(CF["account_id"])]


def unsynced_contacts(close_app: CloseSandbox) -> list[dict[str, Any]]:
    synced = {c["id"] for c in synced_contacts(close_app)}
    return [c for c in close_app.dump("contact") if c["id"] not in synced]


def desk_config(url: str, **overrides: Any) -> dict[str, Any]:
    return {"system": "teamwork_desk", "base_url": f"{url}/desk/api/v2",
            "credentials": {"api_key": {"env": "TEST_DESK_API_KEY"}}, **overrides}
