"""Zoho CRM fake: constants (modules, stages, limits), field metadata per module and the
error bodies (`{"code","details","message","status"}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..server import Response, json_response


API_PREFIX = "/crm/v8/"
TOKEN_PATH = "/oauth/v2/token"
MODULES = ("Accounts", "Contacts", "Deals", "Tasks")
SORT_FIELDS = ["id", "Created_Time", "Modified_Time"]
SCOPE = "ZohoCRM.modules.ALL ZohoCRM.settings.ALL ZohoCRM.users.ALL"
MAX_FIELDS, MAX_PER_PAGE, MAX_WRITE = 50, 200, 100
PAGE_TOKEN_TTL = timedelta(days=1)
ORG_ID_BASE = 5725767 * 10**12  # ids look like Zoho's 19-digit "5725767000000001001"

SINGULAR = {"Accounts": "Account", "Contacts": "Contact", "Deals": "Deal", "Tasks": "Task"}
NAME_FIELD = {"Accounts": "Account_Name", "Contacts": "Full_Name", "Deals": "Deal_Name", "Tasks": "Subject"}
MANDATORY = {"Accounts": ["Account_Name"], "Contacts": ["Last_Name"], "Deals": ["Deal_Name", "Stage"], "Tasks": ["Subject"]}
FIELD_COUNT = {"Accounts": 60, "Contacts": 58, "Deals": 56, "Tasks": 54}  # > 50: connectors must batch
JSON_TYPE = {"integer": "integer", "double": "double", "currency": "double", "boolean": "boolean",
             "lookup": "jsonobject", "ownerlookup": "jsonobject"}  # everything else: string

STAGES = {"Qualification": 10, "Needs Analysis": 20, "Value Proposition": 40, "Proposal/Price Quote": 75,
          "Negotiation/Review": 90, "Closed Won": 100, "Closed Lost": 0}
TASK_STATUSES = ["Not Started", "In Progress", "Completed"]
ACCOUNT_TYPES = ["Customer", "Prospect", "Partner", "Reseller", "Vendor", "Competitor", "Other"]
INDUSTRIES = ["Technology", "Manufacturing", "Healthcare", "Finance", "Retail", "Education",
              "Engineering", "Media", "Logistics", "Energy"]
LEAD_SOURCES = ["Advertisement", "Cold Call", "Partner", "Web Download", "Trade Show", "Seminar"]
FIRST = ["Anna", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jon", "Kavya", "Liam",
         "Maya", "Nils", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wes", "Yuki"]
LAST = ["Kingsley", "Boyle", "Ortega", "Sharma", "Novak", "Okafor", "Larsen", "Tanaka", "Moreau", "Silva",
        "Fischer", "Nair", "Walsh", "Kowalski", "Haddad", "Lindqvist", "Mensah", "Rossi", "Chen", "Duarte"]
WORDS = ["Zylker", "Bentley", "Northwind", "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli",
         "Vandelay", "Soylent", "Tyrell", "Cyberdyne", "Aperture", "Wonka", "Gringotts", "Oceanic"]
WORDS2 = ["Systems", "Holdings", "Labs", "Foods", "Logistics", "Energy", "Media", "Health", "Capital", "Works"]
SUFFIXES = ["Inc", "LLC", "Ltd", "GmbH", "Corp", "Group"]
TITLES = ["CEO", "CTO", "VP Sales", "Head of Customer Success", "Account Manager", "Engineer", "Buyer", "CFO"]
TASK_SUBJECTS = ["Follow up on renewal contract", "Quarterly business review", "Send onboarding pack",
                 "Call about support escalation", "Prepare proposal", "Check product usage"]


@dataclass(frozen=True)
class Field:
    api: str
    dtype: str  # Zoho data_type: text, textarea, email, phone, website, picklist, integer, double, ...
    target: str | None = None  # lookup module ("users" for ownerlookup)
    picks: tuple[str, ...] = ()
    custom: bool = False
    read_only: bool = False


def _F(api: str, dtype: str = "text", target: str | None = None, picks=(), custom=False, ro=False) -> Field:
    return Field(api, dtype, "users" if dtype == "ownerlookup" else target, tuple(picks), custom, ro)


def _address(prefix: str) -> list[Field]:
    return [_F(f"{prefix}_{part}") for part in ("Street", "City", "State", "Code", "Country")]


_SYSTEM = [_F("Created_By", "ownerlookup", ro=True), _F("Modified_By", "ownerlookup", ro=True),
           _F("Created_Time", "datetime", ro=True), _F("Modified_Time", "datetime", ro=True)]

_STANDARD: dict[str, list[Field]] = {
    "Accounts": [
        _F("Owner", "ownerlookup"), _F("Account_Name"), _F("Account_Number"),
        _F("Parent_Account", "lookup", "Accounts"), _F("Account_Type", "picklist", picks=ACCOUNT_TYPES),
        _F("Industry", "picklist", picks=INDUSTRIES), _F("Website", "website"), _F("Phone", "phone"),
        _F("Fax", "phone"), _F("Employees", "integer"), _F("Annual_Revenue", "currency"),
        _F("Ownership", "picklist", picks=["Public", "Private", "Subsidiary", "Other"]),
        _F("Rating", "picklist", picks=["Acquired", "Active", "Market Failed", "Project Cancelled", "Shut Down"]),
        _F("SIC_Code", "integer"), _F("Ticker_Symbol"), _F("Account_Site"),
        *_address("Billing"), *_address("Shipping"), _F("Description", "textarea"), *_SYSTEM,
        _F("Last_Activity_Time", "datetime", ro=True),
        _F("ChurnScore", "double", custom=True), _F("ChurnZero_URL", "website", custom=True),
        _F("Customer_Since", "date", custom=True), _F("Sync_to_ChurnZero", "boolean", custom=True)],
    "Contacts": [
        _F("Owner", "ownerlookup"), _F("Salutation", "picklist", picks=["Mr.", "Mrs.", "Ms.", "Dr.", "Prof."]),
        _F("First_Name"), _F("Last_Name"), _F("Full_Name", ro=True), _F("Email", "email"),
        _F("Secondary_Email", "email"), _F("Phone", "phone"), _F("Mobile", "phone"), _F("Home_Phone", "phone"),
        _F("Other_Phone", "phone"), _F("Fax", "phone"), _F("Title"), _F("Department"),
        _F("Account_Name", "lookup", "Accounts"), _F("Reporting_To", "lookup", "Contacts"),
        _F("Lead_Source", "picklist", picks=LEAD_SOURCES), _F("Date_of_Birth", "date"), _F("Assistant"),
        _F("Asst_Phone", "phone"), _F("Email_Opt_Out", "boolean"), _F("Skype_ID"), _F("Twitter"),
        *_address("Mailing"), *_address("Other"), _F("Description", "textarea"), *_SYSTEM,
        _F("Last_Activity_Time", "datetime", ro=True),
        _F("NPS_Rating", "integer", custom=True), _F("NPS_Date", "date", custom=True),
        _F("NPS_Comments", "textarea", custom=True)],
    "Deals": [
        _F("Owner", "ownerlookup"), _F("Deal_Name"), _F("Amount", "currency"),
        _F("Currency", "picklist", picks=["USD", "EUR", "GBP", "INR"]), _F("Exchange_Rate", "double"),
        _F("Stage", "picklist", picks=list(STAGES)), _F("Probability", "integer"),
        _F("Expected_Revenue", "currency", ro=True), _F("Closing_Date", "date"),
        _F("Type", "picklist", picks=["New Business", "Existing Business"]), _F("Next_Step"),
        _F("Lead_Source", "picklist", picks=LEAD_SOURCES),
        _F("Pipeline", "picklist", picks=["Standard (Standard)"]),
        _F("Account_Name", "lookup", "Accounts"), _F("Contact_Name", "lookup", "Contacts"),
        _F("Description", "textarea"), *_SYSTEM, _F("Last_Activity_Time", "datetime", ro=True),
        _F("Start_Date", "date", custom=True), _F("End_Date", "date", custom=True),
        _F("Proposal_URL", "website", custom=True)],
    "Tasks": [
        _F("Owner", "ownerlookup"), _F("Subject"), _F("Due_Date", "date"),
        _F("Status", "picklist", picks=TASK_STATUSES + ["Deferred", "Waiting for input"]),
        _F("Priority", "picklist", picks=["Highest", "High", "Normal", "Low", "Lowest"]),
        _F("What_Id", "lookup", "Accounts"), _F("Who_Id", "lookup", "Contacts"),
        _F("Closed_Time", "datetime", ro=True), _F("Remind_At", "datetime"),
        _F("Send_Notification_Email", "boolean"), _F("Description", "textarea"), *_SYSTEM,
        _F("CZ_Task_ID", custom=True)],
}


def _module_fields(module: str) -> list[Field]:
    """Standard fields padded with filler custom fields up to FIELD_COUNT."""
    std = _STANDARD[module]
    return std + [_F(f"Custom_Field_{k}", custom=True) for k in range(1, FIELD_COUNT[module] - len(std) + 1)]


def _error(status: int, code: str, message: str, **details: Any) -> Response:
    return json_response(status, {"code": code, "details": details, "message": message, "status": "error"})


def _record_error(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"code": code, "details": details, "message": message, "status": "error"}


class _FieldError(Exception):
    def __init__(self, api: str, message: str | None = None):
        super().__init__(message or f"The field value given for {api} is invalid")
        self.api = api
