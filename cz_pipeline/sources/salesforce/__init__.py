"""Salesforce as a CRM source: OAuth refresh against the tenant's login host (`auth`), SOQL reads
with `nextRecordsUrl` paging, describe-driven field lists split and stitched by Id (`connector`,
`soql`, `pagination`), the daily API budget (`limits`), writes (`writes`), rotated refresh tokens
kept in the warehouse encrypted (`token_store`) and the canonical SQL mapping (`mapping`)."""

from .auth import DEFAULT_LOGIN_URL, SANDBOX_LOGIN_URL, MemoryTokenStore, ReauthorizationRequired, TokenStore
from .connector import OBJECTS, SalesforceConnector
from .limits import ApiBudgetExhausted, DailyApiLimitReached, parse_limit_info
from .mapping import SALESFORCE
from .pagination import NextUrlPaginator

__all__ = ["DEFAULT_LOGIN_URL", "OBJECTS", "SALESFORCE", "SANDBOX_LOGIN_URL", "ApiBudgetExhausted",
           "DailyApiLimitReached", "MemoryTokenStore", "NextUrlPaginator", "ReauthorizationRequired",
           "SalesforceConnector", "TokenStore", "parse_limit_info"]
