"""In-memory fake of the Zoho CRM API v8 and the Zoho Accounts OAuth token endpoint.

One loopback server answers both hosts: `POST /oauth/v2/token` (accounts server) and
`/crm/v8/...` (the API). Wire formats follow the official v8 OpenAPI examples: `{"data","info"}` envelopes, `{"code","details","message","status"}` errors,
204/304 with empty bodies, datetimes rendered with the org's offset at seconds precision (stored
in UTC), dates `YYYY-MM-DD`, numeric-string ids, lookups `{"name","id"}`.

Control operations (`mutate`) and ground truth (`dump`) are documented on those methods.

Modules: `common` (constants, field metadata, errors), `data` (dataset), `records` (rendering,
writes), `query` (Get Records listing), `app` (routes, control).
"""

from .app import ZohoSandbox
from .common import MODULES

__all__ = ["MODULES", "ZohoSandbox"]
