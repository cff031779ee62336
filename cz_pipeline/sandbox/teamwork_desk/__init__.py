"""In-memory fake of the Teamwork Desk API v2, served on loopback.

Base URL `http://127.0.0.1:PORT/desk/api/v2`, auth `Authorization: Bearer <api_key>`. Implemented:
`GET /tickets.json`, `GET|PATCH /tickets/{id}.json`, `GET /customers.json`, `GET /customers/{id}.json`
and the lookups `GET /{ticketstatuses,ticketpriorities,tickettypes,ticketsources,inboxes,users,tags}.json`.

Behaviour a connector must cope with, reproduced on purpose:
* timestamps are whole seconds (`2015-11-18T18:56:08Z`), so writes within one second tie;
* `pageSize` above 100 is clamped silently; both `meta.page` and `pagination` blocks are sent;
* the customer email is not on the ticket: it sits in `included.customers[].email` (sometimes `""`)
  or in the customer's main contact (`included.contacts[].value`, `isMain`), with a non-main contact
  listed first for some customers;
* soft-deleted tickets (`state: "deleted"`, `deletedAt`) are hidden unless the filter names `state`;
* one system ticket has `createdAt: 0001-01-01T00:00:00Z`;
* changing a customer's email does NOT bump the `updatedAt` of that customer's tickets.

Unverified contract points chosen here: error bodies are `{"message", "errors": [{"detail"}]}`;
`meta.page.pageOffset` is the record offset; default order is `id asc`, default `pageSize` 50;
ties in `orderBy` are broken by `id` in the same direction (the real API may be unstable there);
`X-Rate-Limit-Reset` is the UTC epoch second at which the current window resets.

Modules: `common` (constants, errors), `filters` (filter compiler), `data` (dataset), `writes`,
`app` (routes, control).
"""

from .app import TeamworkDeskSandbox
from .common import DEFAULT_EMAILS, UNKNOWN_EMAILS

__all__ = ["DEFAULT_EMAILS", "UNKNOWN_EMAILS", "TeamworkDeskSandbox"]
