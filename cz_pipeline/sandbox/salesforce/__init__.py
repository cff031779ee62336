"""Salesforce REST API fake: the org's data (`generate`), its object model (`schema`, `org`), the
SOQL subset it compiles (`soql`) and the HTTP routes plus control operations (`app`)."""

from .app import SalesforceSandbox
from .schema import API_VERSION, make_id

__all__ = ["API_VERSION", "SalesforceSandbox", "make_id"]
