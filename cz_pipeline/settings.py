"""Process-wide settings read from the environment, with the project's defaults."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_TENANTS_FILE = PROJECT_ROOT / "demo" / "tenants.yaml"


def tenants_file() -> Path:
    """`CZ_TENANTS_FILE`, else the demo's tenants file (so definitions always load)."""
    return Path(os.environ.get("CZ_TENANTS_FILE") or DEMO_TENANTS_FILE)
