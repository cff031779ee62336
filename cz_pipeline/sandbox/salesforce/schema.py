"""The Salesforce fake's object model: 18-character ids, the fields of each object as describe
reports them (name, type, reference target, relationship name, custom flag) and the wire
rendering of datetimes (`2024-01-15T10:30:00.000+0000`) and dates (`2024-01-15`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

API_VERSION = "60.0"
KEY_PREFIX = {"Account": "001", "Contact": "003", "Opportunity": "006", "OpportunityContactRole": "00K",
              "OpportunityLineItem": "00k", "Product2": "01t", "Task": "00T", "User": "005"}
OBJECTS = tuple(KEY_PREFIX)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def make_id(obj: str, seq: int) -> str:
    """`001` + pod/instance chars + base-62 sequence (15 chars), then Salesforce's 3-char
    case-safe checksum (one char per 5-char block, a bit per upper-case letter)."""
    digits = ""
    n = seq
    for _ in range(7):
        digits = _B62[n % 62] + digits
        n //= 62
    short = KEY_PREFIX[obj] + "Hs000" + digits
    suffix = ""
    for block in range(3):
        bits = sum(1 << i for i, ch in enumerate(short[block * 5:block * 5 + 5]) if "A" <= ch <= "Z")
        suffix += _SUFFIX[bits]
    return short + suffix


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # id, string, picklist, reference, currency, double, percent, date, datetime, boolean, email, ...
    reference_to: str | None = None
    relationship: str | None = None
    custom: bool = False
    nillable: bool = True
    updateable: bool = True
    external_id: bool = False  # an upsert key (`externalId`, unique in the org)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.name.replace("__c", "").replace("_", " "), "type": self.type,
                "nillable": self.nillable, "createable": self.updateable, "updateable": self.updateable,
                "custom": self.custom, "externalId": self.external_id, "unique": self.external_id,
                "calculated": False,
                "length": 255 if self.type in ("string", "picklist", "email", "url") else 0,
                "referenceTo": [self.reference_to] if self.reference_to else [],
                "relationshipName": self.relationship, "picklistValues": []}


def _ref(name: str, target: str, relationship: str | None = None) -> Field:
    return Field(name, "reference", target, relationship or name[:-2])


_SYSTEM = [Field("Id", "id", nillable=False, updateable=False), Field("IsDeleted", "boolean", updateable=False),
           Field("CreatedDate", "datetime", updateable=False), Field("LastModifiedDate", "datetime", updateable=False),
           Field("SystemModstamp", "datetime", updateable=False)]

_FIELDS: dict[str, list[Field]] = {
    "Account": [Field("Name", "string", nillable=False), _ref("ParentId", "Account"),
                Field("AccountNumber", "string"), Field("Industry", "picklist"), Field("Type", "picklist"),
                Field("Website", "url"), _ref("OwnerId", "User"), Field("AnnualRevenue", "currency"),
                Field("CZ_Account_ID__c", "string", custom=True, external_id=True),
                Field("Sync_to_ChurnZero__c", "boolean", custom=True), Field("ChurnScore__c", "double", custom=True),
                Field("Customer_Since__c", "date", custom=True), Field("Health_Notes__c", "textarea", custom=True)],
    "Contact": [_ref("AccountId", "Account"), Field("FirstName", "string"), Field("LastName", "string", nillable=False),
                Field("Email", "email"), Field("Title", "string"), Field("Phone", "phone"), _ref("OwnerId", "User"),
                Field("NPS_Rating__c", "double", custom=True)],
    "Opportunity": [_ref("AccountId", "Account"), Field("Name", "string", nillable=False),
                    Field("StageName", "picklist", nillable=False), Field("IsClosed", "boolean", updateable=False),
                    Field("IsWon", "boolean", updateable=False), Field("Amount", "currency"),
                    Field("CloseDate", "date", nillable=False), Field("Type", "picklist"),
                    Field("Probability", "percent"), Field("LeadSource", "picklist"),
                    Field("CurrencyIsoCode", "picklist"), _ref("OwnerId", "User"),
                    Field("Start_Date__c", "date", custom=True), Field("End_Date__c", "date", custom=True),
                    Field("Clozd_Interview__c", "url", custom=True)],
    "OpportunityContactRole": [_ref("OpportunityId", "Opportunity"), _ref("ContactId", "Contact"),
                               Field("Role", "picklist"), Field("IsPrimary", "boolean")],
    "OpportunityLineItem": [_ref("OpportunityId", "Opportunity"), _ref("Product2Id", "Product2"),
                            Field("Name", "string", updateable=False), Field("Quantity", "double"),
                            Field("UnitPrice", "currency"), Field("TotalPrice", "currency")],
    "Product2": [Field("Name", "string", nillable=False), Field("ProductCode", "string"),
                 Field("Family", "picklist"), Field("IsActive", "boolean")],
    "Task": [_ref("WhatId", "Account", "What"), _ref("WhoId", "Contact", "Who"), _ref("OwnerId", "User"),
             Field("Subject", "string"), Field("ActivityDate", "date"), Field("Status", "picklist"),
             Field("Priority", "picklist"), Field("IsClosed", "boolean", updateable=False)],
    "User": [Field("Username", "string"), Field("Email", "email"), Field("FirstName", "string"),
             Field("LastName", "string"), Field("Name", "string", updateable=False), Field("IsActive", "boolean"),
             Field("Sync_to_ChurnZero__c", "boolean", custom=True),
             Field("ChurnZero_Access__c", "picklist", custom=True)],
}
# Relationships whose `…Id` may point at several objects: the target is told by the id's prefix.
POLYMORPHIC = {("Task", "WhatId"), ("Task", "WhoId"), ("Task", "OwnerId")}


def object_fields(obj: str, extra_custom: int = 0) -> list[Field]:
    """Describe order: Id first, then the object's fields, then system stamps. `extra_custom`
    adds `Custom_Field_NN__c` text fields (long SELECT lists for the URL-length limit)."""
    fields = [_SYSTEM[0], *_FIELDS[obj], *_SYSTEM[1:]]
    if obj == "Account":
        fields += [Field(f"Custom_Field_{i:02d}__c", "string", custom=True) for i in range(1, extra_custom + 1)]
    return fields


def object_of(record_id: str) -> str | None:
    for obj, prefix in KEY_PREFIX.items():
        if record_id.startswith(prefix):
            return obj
    return None


def fmt_datetime(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def render_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return fmt_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
