"""In-memory fake of the Close CRM API v1, served under `/api/v1` by the shared sandbox server.

Records are stored flat, as the API renders them minus derived keys (status labels, names,
embedded children), so a `PUT` is a dict update and rendering adds the derived keys. Everything
runs under the app lock, so no further locking is needed here. Modules: `common` (constants,
helpers), `data` (dataset), `render`, `writes` (+ event log), `search` (Advanced Filtering
compiler), `activities` (activity endpoints, memberships), `app` (routes, control).
"""

from .app import CloseSandbox
from .common import (CUSTOM_FIELD_IDS, LEAD_STATUSES, OPP_STATUSES, ORG_ID, PIPELINE_ID, PREFIX, STATUS_IDS,
                     parse_dt, ts)

__all__ = ["CUSTOM_FIELD_IDS", "LEAD_STATUSES", "OPP_STATUSES", "ORG_ID", "PIPELINE_ID", "PREFIX", "STATUS_IDS",
           "CloseSandbox", "parse_dt", "ts"]
