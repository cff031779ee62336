"""One package per vendor system (Close, Zoho CRM, Salesforce, Teamwork Desk) and the registry that builds a tenant's connectors."""

from .registry import (ApiError, AuthError, BuildContext, Record, RetryPolicy, build_crm_connector,
                       build_helpdesk_connector)

__all__ = ["ApiError", "AuthError", "BuildContext", "Record", "RetryPolicy", "build_crm_connector", "build_helpdesk_connector"]
