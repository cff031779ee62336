"""In-memory fake of the Zoho CRM API v8 and the Zoho Accounts OAuth token endpoint.

One loopback server answers both hosts: `POST /oauth/v2/token` (accounts server) and
`/crm/v8/...` (the API). Wire formats follow docs/crm-api-contracts.md section 2 and the official
v8 OpenAPI examples: `{"data","info"}` envelopes, `{"code","details","message","status"}` errors,
204/304 with empty bodies, datetimes rendered with the org's offset at seconds precision (stored
in UTC), dates `YYYY-MM-DD`, numeric-string ids, lookups `{"name","id"}`.

Control operations (`mutate`) and ground truth (`dump`) are documented on those methods.
"""

from __future__ import annotations

import random
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from cz_pipeline.sandbox.server import Request, Response, SandboxApp, empty_response, json_response

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


class ZohoSandbox(SandboxApp):
    name = "zoho_crm"

    def __init__(self, *, client_id: str = "zoho_client", client_secret: str = "zoho_secret",
                 refresh_token: str = "zoho_refresh", seed: int = 0, n_accounts: int = 400,
                 contacts_per_account: tuple[int, int] = (3, 8), tz_offset: str = "+05:30",
                 token_ttl_seconds: int = 3600, max_discrete_records: int = 2000,
                 max_page_token_records: int = 100_000, if_modified_since_inclusive: bool = True):
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_tokens = {refresh_token}
        self.token_ttl_seconds = token_ttl_seconds
        self.max_discrete_records = max_discrete_records
        self.max_page_token_records = max_page_token_records
        self.if_modified_since_inclusive = if_modified_since_inclusive
        m = re.fullmatch(r"([+-])(\d\d):(\d\d)", tz_offset)
        if not m:
            raise ValueError(f"tz_offset must look like +05:30, got {tz_offset!r}")
        sign = -1 if m[1] == "-" else 1
        self.tz_offset = tz_offset
        self.tz = timezone(sign * timedelta(hours=int(m[2]), minutes=int(m[3])))
        self.fields = {mod: _module_fields(mod) for mod in MODULES}
        self.field_map = {mod: {f.api: f for f in fs} for mod, fs in self.fields.items()}
        self.records: dict[str, dict[str, dict[str, Any]]] = {mod: {} for mod in MODULES}
        self.deleted: dict[str, list[dict[str, Any]]] = {mod: [] for mod in MODULES}
        self.users: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, tuple[float, str]] = {}  # token -> (expires at, user id)
        self.page_tokens: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._account_number = 0
        self._local = threading.local()  # lets rate_limited_response know which host was hit
        self.started_at = self._stamp()
        self._generate(random.Random(seed), n_accounts, contacts_per_account)

    # ---- helpers -------------------------------------------------------------------------
    def _stamp(self) -> datetime:
        return self.now().replace(microsecond=0)  # Zoho keeps seconds: writes in one second tie

    def _new_id(self) -> str:
        self._seq += 1
        return str(ORG_ID_BASE + self._seq * 1000 + 1)

    def _next_account_number(self) -> str:
        self._account_number += 1
        return f"Z-{self._account_number:05d}"

    def fmt(self, dt: datetime) -> str:
        return dt.astimezone(self.tz).isoformat(timespec="seconds")

    def _parse_dt(self, value: str) -> datetime:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=self.tz)).astimezone(timezone.utc)

    def _user_ref(self, uid: str) -> dict[str, Any]:
        return {"name": self.users[uid]["full_name"], "id": uid}

    def _name(self, module: str, rec: dict[str, Any]) -> Any:
        return rec.get(NAME_FIELD[module])

    def _target(self, module: str, rec: dict[str, Any], api: str) -> str | None:
        if api == "What_Id":
            return rec.get("$se_module") or "Accounts"
        f = self.field_map[module].get(api)
        return f.target if f else None

    def _out(self, module: str, rec: dict[str, Any], api: str) -> Any:
        """One value as the API renders it; lookup names are resolved at read time."""
        v = rec.get(api)
        if isinstance(v, datetime):
            return self.fmt(v)
        if isinstance(v, dict) and "id" in v:
            target = self._target(module, rec, api)
            if target == "users" and v["id"] in self.users:
                u = self.users[v["id"]]
                return {"name": u["full_name"], "id": u["id"], "email": u["email"]}
            if target in self.records and v["id"] in self.records[target]:
                return {"name": self._name(target, self.records[target][v["id"]]), "id": v["id"]}
            return dict(v)  # dangling reference: keep the last known name
        return list(v) if isinstance(v, list) else v

    def render(self, module: str, rec: dict[str, Any], fields: list[str] | None = None) -> dict[str, Any]:
        keys = [k for k in rec if k != "id"] if fields is None else [k for k in fields if k in rec and k != "id"]
        return {"id": rec["id"], **{k: self._out(module, rec, k) for k in keys}}

    def _render_user(self, u: dict[str, Any]) -> dict[str, Any]:
        out = {k: self.fmt(v) if isinstance(v, datetime) else v for k, v in u.items()}
        out["created_by"] = self._user_ref(u["created_by"]) if u["created_by"] in self.users else None
        out["Modified_By"] = self._user_ref(u["Modified_By"]) if u["Modified_By"] in self.users else None
        return out

    def _render_deleted(self, entry: dict[str, Any]) -> dict[str, Any]:
        by = {k: self._user_ref(entry[k]) if entry[k] in self.users else None for k in ("deleted_by", "created_by")}
        return {"id": entry["id"], "display_name": entry["display_name"], "type": entry["type"],
                "deleted_time": self.fmt(entry["deleted_time"]), **by}

    # ---- dataset -------------------------------------------------------------------------
    def _new_record(self, module: str, created: datetime, by: str) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": self._new_id(), **{f.api: None for f in self.fields[module]}}
        ref = self._user_ref(by)
        rec.update(Owner=dict(ref), Created_By=dict(ref), Modified_By=dict(ref), Created_Time=created,
                   Modified_Time=created, **{"$state": "save", "$approval_state": "approved", "$editable": True})
        if module == "Accounts":
            rec["Account_Number"] = self._next_account_number()
        if module == "Deals":
            rec["$currency_symbol"] = "$"
        if module == "Tasks":
            rec["$se_module"] = "Accounts"
        return rec

    def _generate(self, rng: random.Random, n_accounts: int, contacts_range: tuple[int, int]) -> None:
        """Deterministic structure from `rng`; times are offsets before the sandbox started, so
        every generated stamp is strictly older than any later write. Bulk imports/updates tie."""
        anchor = self.started_at - timedelta(seconds=1)
        today = anchor.astimezone(self.tz).date()
        imports = [anchor - timedelta(days=d) for d in (540, 300, 120)]
        bulk_updates = [anchor - timedelta(days=d, hours=3) for d in (20, 7, 1)]

        def stamps() -> tuple[datetime, datetime]:
            created = rng.choice(imports) if rng.random() < 0.3 else anchor - timedelta(seconds=rng.randint(3600, 700 * 86400))
            r = rng.random()
            modified = created if r < 0.2 else max(created, rng.choice(bulk_updates)) if r < 0.35 \
                else created + (anchor - created) * rng.random()
            return created, modified.replace(microsecond=0)

        def day(offset: int) -> str:
            return (today + timedelta(days=offset)).isoformat()

        names = rng.sample([(f, l) for f in FIRST for l in LAST], rng.randint(5, 8))
        uids = []
        for i, (first, last) in enumerate(names):
            uid = self._new_id()
            uids.append(uid)
            created = anchor - timedelta(days=900 - i * 30)
            self.users[uid] = {
                "id": uid, "first_name": first, "last_name": last, "full_name": f"{first} {last}",
                "email": f"{first}.{last}@example.com".lower(),
                "status": "inactive" if i == len(names) - 1 else "active",  # a former rep still owning records
                "role": {"name": ["CEO", "Manager"][i] if i < 2 else "Sales Representative", "id": str(ORG_ID_BASE + 861 + min(i, 2))},
                "profile": {"name": "Administrator" if i == 0 else "Standard", "id": str(ORG_ID_BASE + 497 + (i > 0))},
                "confirm": True, "zuid": str(60_000_000 + i), "alias": None, "phone": None,
                "time_zone": "Asia/Kolkata" if self.tz_offset == "+05:30" else f"GMT{self.tz_offset}",
                "locale": "en_US", "created_time": created,
                "Modified_Time": max(created, rng.choice(bulk_updates)),
                "created_by": uids[0], "Modified_By": uids[0],
                "Sync_to_ChurnZero": "NO" if i % 3 == 2 else "YES", "CZ_Access": "YES" if i < 3 else "NO",
            }
        self.current_user = uids[0]  # the user the OAuth grant belongs to (admin)

        def new(module: str, values: dict[str, Any]) -> dict[str, Any]:
            created, modified = stamps()
            owner = rng.choice(uids)
            rec = self._new_record(module, created, owner)
            rec.update(values, Modified_Time=modified, Modified_By=self._user_ref(rng.choice(uids)))
            if rec.get("Status") == "Completed":
                rec["Closed_Time"] = modified  # closing a task is its last modification
            for k in range(1, 4):
                if rng.random() < 0.7:
                    rec[f"Custom_Field_{k}"] = f"{module[0]}{k}-{rng.randint(1, 999)}"
            rec[self.fields[module][-1].api] = f"last-{rec['id'][-6:]}"  # a value beyond the 50th field
            self.records[module][rec["id"]] = rec
            return rec

        emails: set[str] = set()
        accounts: list[dict[str, Any]] = []
        for i in range(n_accounts):
            # accounts 0 <- 1 <- 2 form a 3-level tree; parents always come earlier, so no cycles
            parent = accounts[i - 1] if i in (1, 2) else rng.choice(accounts) if i >= 3 and rng.random() < 0.15 else None
            name = f"{rng.choice(WORDS)} {rng.choice(WORDS2)} {rng.choice(SUFFIXES)}"
            domain = re.sub(r"[^a-z]", "", name.lower()[: name.rfind(" ")]) + ".com"
            acct = new("Accounts", {
                "Account_Name": name, "Parent_Account": {"name": parent["Account_Name"], "id": parent["id"]} if parent else None,
                "Account_Type": rng.choices(ACCOUNT_TYPES, [50, 25, 10, 5, 4, 3, 3])[0],
                "Industry": rng.choice(INDUSTRIES), "Website": f"www.{domain}",
                "Phone": f"+1 555 {rng.randint(1000000, 9999999)}", "Employees": rng.randint(5, 20000),
                "Annual_Revenue": rng.randint(1, 500) * 100000, "Ownership": rng.choice(["Public", "Private"]),
                "Billing_City": rng.choice(["Exton", "Berlin", "Chennai", "Austin", "Lyon"]),
                "Billing_Country": rng.choice(["USA", "Germany", "India", "France"]),
                "ChurnScore": round(rng.uniform(0, 100), 1) if rng.random() < 0.5 else None,
                "Customer_Since": day(-rng.randint(30, 2000)), "Sync_to_ChurnZero": rng.random() < 0.8})
            accounts.append(acct)
            acct_ref = {"name": name, "id": acct["id"]}
            contacts = []
            for _ in range(rng.randint(*contacts_range)):
                first, last = rng.choice(FIRST), rng.choice(LAST)
                email, n = f"{first}.{last}@{domain}".lower(), 1
                while email in emails:
                    n += 1
                    email = f"{first}.{last}{n}@{domain}".lower()
                emails.add(email)
                contacts.append(new("Contacts", {
                    "First_Name": first, "Last_Name": last, "Full_Name": f"{first} {last}", "Email": email,
                    "Title": rng.choice(TITLES), "Phone": f"+1 555 {rng.randint(1000000, 9999999)}",
                    "Account_Name": dict(acct_ref), "Lead_Source": rng.choice(LEAD_SOURCES),
                    "Email_Opt_Out": rng.random() < 0.1,
                    "NPS_Rating": rng.randint(0, 10) if rng.random() < 0.3 else None}))
            for _ in range(rng.randint(0, 3)):
                start = rng.randint(-700, 200)
                closing = start - rng.randint(0, 30)
                stage = rng.choice(list(STAGES)[:5]) if closing > 0 else rng.choices(["Closed Won", "Closed Lost"], [7, 3])[0]
                amount = round(rng.uniform(1000, 250000), 2)
                contact = rng.choice(contacts) if contacts and rng.random() < 0.7 else None
                new("Deals", {
                    "Deal_Name": f"{name} - {rng.choice(['Annual License', 'Renewal', 'Expansion', 'Services'])}",
                    "Amount": amount, "Currency": "USD", "Exchange_Rate": 1, "Stage": stage,
                    "Probability": STAGES[stage], "Expected_Revenue": round(amount * STAGES[stage] / 100, 2),
                    "Closing_Date": day(closing), "Start_Date": day(start),
                    "End_Date": day(start + rng.choice([180, 365, 730])),
                    "Type": rng.choice(["New Business", "Existing Business"]), "Pipeline": "Standard (Standard)",
                    "Account_Name": dict(acct_ref),
                    "Contact_Name": {"name": contact["Full_Name"], "id": contact["id"]} if contact else None})
            for _ in range(rng.randint(0, 3)):
                status = rng.choices(TASK_STATUSES, [30, 25, 45])[0]
                contact = rng.choice(contacts) if contacts and rng.random() < 0.6 else None
                new("Tasks", {
                    "Subject": rng.choice(TASK_SUBJECTS), "Due_Date": day(rng.randint(-120, 60)), "Status": status,
                    "Priority": rng.choice(["High", "Normal", "Low"]),
                    "What_Id": dict(acct_ref), "$se_module": "Accounts",
                    "Who_Id": {"name": contact["Full_Name"], "id": contact["id"]} if contact else None,
                    "Send_Notification_Email": False})

    # ---- writes (API and control share validation) ---------------------------------------
    def _coerce(self, module: str, f: Field, value: Any, *, strict: bool, se_module: str | None) -> Any:
        if value is None:
            return None
        t = f.dtype
        if t in ("lookup", "ownerlookup"):
            lid = str(value.get("id") if isinstance(value, dict) else value)
            if not lid.isdigit():
                raise _FieldError(f.api)
            target = se_module or "Accounts" if f.api == "What_Id" else f.target
            pool = self.users if target == "users" else self.records.get(target or "", {})
            if strict and lid not in pool:  # control writes may leave dangling links (broken-link tests)
                raise _FieldError(f.api)
            return {"name": value.get("name") if isinstance(value, dict) else None, "id": lid}
        if t == "datetime":
            try:
                return self._parse_dt(str(value)).replace(microsecond=0)
            except ValueError:
                raise _FieldError(f.api) from None
        if t == "date":
            try:
                date.fromisoformat(value)
                ok = len(value) == 10
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise _FieldError(f.api)
            return value
        if t == "boolean":
            ok = isinstance(value, bool)
        elif t == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif t in ("double", "currency"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str) and (t != "email" or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value) is not None)
        if not ok:
            raise _FieldError(f.api)
        return value

    def _write(self, module: str, rec: dict[str, Any], data: dict[str, Any], *, api: bool, bump: bool = True) -> None:
        """Validate every key first (nothing is applied on error), then apply. API writes silently
        drop read-only fields as Zoho does; control writes may set anything, even Modified_Time."""
        fmap = self.field_map[module]
        se_module = data.get("$se_module", rec.get("$se_module"))
        if se_module is not None and se_module not in MODULES:
            raise _FieldError("$se_module")
        staged: dict[str, Any] = {}
        for key, value in data.items():
            if key == "id" or (key.startswith("$") and api and key != "$se_module"):
                continue
            if key.startswith("$"):
                staged[key] = value
                continue
            f = fmap.get(key)
            if f is None:
                raise _FieldError(key, "the field api name given seems to be invalid")
            if f.read_only and api:
                continue
            staged[key] = self._coerce(module, f, value, strict=api, se_module=se_module)
        rec.update(staged)
        if module == "Contacts":
            rec["Full_Name"] = " ".join(p for p in (rec.get("First_Name"), rec.get("Last_Name")) if p) or None
        if module == "Deals":
            if "Stage" in staged and "Probability" not in staged and rec["Stage"] in STAGES:
                rec["Probability"] = STAGES[rec["Stage"]]
            amount, prob = rec.get("Amount"), rec.get("Probability")
            rec["Expected_Revenue"] = round(amount * prob / 100, 2) if amount is not None and prob is not None else None
        if bump and "Modified_Time" not in staged:
            rec["Modified_Time"] = self._stamp()
            rec["Modified_By"] = self._user_ref(self.current_user)
        if module == "Tasks" and "Closed_Time" not in staged:
            completed = rec.get("Status") == "Completed"
            if completed and rec.get("Closed_Time") is None:
                rec["Closed_Time"] = rec["Modified_Time"]
            elif not completed:
                rec["Closed_Time"] = None

    def _create(self, module: str, data: dict[str, Any], *, api: bool) -> dict[str, Any]:
        rec = self._new_record(module, self._stamp(), self.current_user)
        self._write(module, rec, data, api=api, bump=False)
        if api:
            missing = [k for k in MANDATORY[module] if rec.get(k) in (None, "")]
            if missing:
                raise _FieldError(missing[0], "required field not found")
        if "Modified_Time" not in data:  # a control create may backdate Created_Time only
            rec["Modified_Time"] = max(rec["Modified_Time"], rec["Created_Time"])
        self.records[module][rec["id"]] = rec
        return rec

    def _delete(self, module: str, rid: str, *, permanent: bool) -> dict[str, Any]:
        rec = self.records[module].pop(rid)  # KeyError for unknown ids
        entry = {"id": rid, "display_name": None if permanent else self._name(module, rec),
                 "type": "permanent" if permanent else "recycle", "deleted_time": self._stamp(),
                 "deleted_by": None if permanent else self.current_user,
                 "created_by": None if permanent else rec["Created_By"]["id"]}
        self.deleted[module].append(entry)
        return self._render_deleted(entry)

    # ---- control -------------------------------------------------------------------------
    def mutate(self, body: dict[str, Any]) -> Any:
        """Control operations. `object` is a module (Accounts, Contacts, Deals, Tasks), "users" or
        "oauth". Modules/users: create {data}, update {id, data}, touch {id}, delete {id,
        permanent?}; values use API shapes (lookups {"id": ...}, ISO datetimes). oauth:
        revoke_refresh_token {refresh_token?}, issue_refresh_token, expire_access_tokens."""
        op, obj = body.get("op"), body.get("object")
        if obj == "oauth":
            if op == "revoke_refresh_token":
                token = body.get("refresh_token")
                self.refresh_tokens = set() if token is None else self.refresh_tokens - {token}
                return {"refresh_tokens": len(self.refresh_tokens)}
            if op == "issue_refresh_token":
                token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
                self.refresh_tokens.add(token)
                return {"refresh_token": token}
            if op == "expire_access_tokens":
                n = len(self.access_tokens)
                self.access_tokens.clear()
                return {"expired": n}
            raise ValueError(f"unknown oauth op {op!r}")
        if obj == "users":
            return self._mutate_user(op, body)
        if obj not in MODULES:
            raise KeyError(f"unknown object {obj!r}")
        data = body.get("data") or {}
        try:
            if op == "create":
                return self.render(obj, self._create(obj, data, api=False))
            rid = str(body.get("id"))
            if rid not in self.records[obj]:
                raise KeyError(f"{obj} {rid} not found")
            rec = self.records[obj][rid]
            if op == "update":
                self._write(obj, rec, data, api=False)
            elif op == "touch":
                self._write(obj, rec, {}, api=False)
            elif op == "delete":
                return self._delete(obj, rid, permanent=bool(body.get("permanent")))
            else:
                raise ValueError(f"unknown op {op!r}")
            return self.render(obj, rec)
        except _FieldError as exc:
            raise ValueError(f"{exc.api}: {exc}") from None

    def _mutate_user(self, op: str | None, body: dict[str, Any]) -> dict[str, Any]:
        data = dict(body.get("data") or {})
        now = self._stamp()
        if op == "create":
            uid = self._new_id()
            first, last = data.get("first_name"), data.get("last_name", "User")
            user = {**self.users[self.current_user], "id": uid, "first_name": first, "last_name": last,
                    "full_name": " ".join(p for p in (first, last) if p), "email": f"user{uid[-6:]}@example.com",
                    "status": "active", "role": {"name": "Sales Representative", "id": str(ORG_ID_BASE + 863)},
                    "profile": {"name": "Standard", "id": str(ORG_ID_BASE + 498)}, "zuid": str(60_000_000 + self._seq),
                    "created_time": now, "Modified_Time": now, "created_by": self.current_user,
                    "Modified_By": self.current_user}
            self.users[uid] = user
        else:
            user = self.users[str(body.get("id"))]  # KeyError for unknown ids
            if op == "delete":
                data = {"status": "deleted"}  # Zoho keeps deleted users (type=DeletedUsers)
            elif op not in ("update", "touch"):
                raise ValueError(f"unknown op {op!r}")
            user.update(Modified_Time=now, Modified_By=self.current_user)
        for key, value in data.items():
            if key in ("id", "full_name"):
                continue
            user[key] = self._parse_dt(value) if key in ("created_time", "Modified_Time") else value
        user["full_name"] = " ".join(p for p in (user["first_name"], user["last_name"]) if p)
        return self._render_user(user)

    def dump(self, object_name: str) -> list[dict[str, Any]]:
        """Every live record of a module (all fields, API rendering), "users", or "deleted:<Module>"."""
        if object_name == "users":
            return [self._render_user(u) for u in self.users.values()]
        if object_name.startswith("deleted:"):
            return [self._render_deleted(e) for e in self.deleted[object_name[len("deleted:"):]]]
        if object_name not in MODULES:
            raise KeyError(f"unknown object {object_name!r}")
        return [self.render(object_name, r) for r in self.records[object_name].values()]

    # ---- rate limiting -------------------------------------------------------------------
    def rate_limit_key(self, req: Request) -> str:
        # credits and concurrency are per org, so one bucket for the API; the accounts server
        # throttles separately and answers differently (see rate_limited_response)
        self._local.token_call = req.path.rstrip("/") == TOKEN_PATH
        return "accounts" if self._local.token_call else "crm"

    def rate_limited_response(self, limit: int, reset_seconds: float) -> Response:
        if getattr(self._local, "token_call", False):
            return json_response(400, {"error": "Access Denied", "error_description":
                                       "You have made too many requests continuously. Please try again after some time."})
        return json_response(429, {"code": "TOO_MANY_REQUESTS", "details": {},
                                   "message": "Too many requests: API credits or concurrency limit exceeded",
                                   "status": "error"}, {"Retry-After": str(max(1, round(reset_seconds)))})

    # ---- HTTP ----------------------------------------------------------------------------
    def route(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path == TOKEN_PATH and req.method == "POST":
            return self._token(req)
        if not path.startswith(API_PREFIX):
            return _error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")
        auth = req.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme not in ("Zoho-oauthtoken", "Bearer") or not token:
            return _error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        expires, _uid = self.access_tokens.get(token.strip(), (0.0, ""))
        if expires <= time.time():
            return _error(401, "INVALID_TOKEN", "invalid oauth token")
        self.stats["credits"] += 1  # most Zoho calls cost one credit
        parts = path[len(API_PREFIX):].split("/")
        if parts == ["users"] and req.method == "GET":
            return self._users(req)
        if parts == ["settings", "fields"] and req.method == "GET":
            return self._fields(req)
        if parts == ["settings", "modules"] and req.method == "GET":
            return json_response(200, {"modules": [
                {"api_name": m, "module_name": m, "plural_label": m, "singular_label": SINGULAR[m],
                 "id": str(ORG_ID_BASE + 100 + i), "api_supported": True} for i, m in enumerate(MODULES)]})
        module = parts[0]
        if module not in MODULES:
            return _error(400, "INVALID_MODULE", "the module name given seems to be invalid", resource_path_index=0)
        rest, method = parts[1:], req.method
        if not rest and method == "GET":
            return self._list(req, module)
        if not rest and method in ("PUT", "POST"):
            return self._save(req, module, None)
        if rest == ["deleted"] and method == "GET":
            return self._deleted(req, module)
        if rest == ["actions", "count"] and method == "GET":
            return json_response(200, {"count": len(self.records[module])})
        if len(rest) == 1 and rest[0].isdigit() and method == "GET":
            rec = self.records[module].get(rest[0])
            fields = [f for f in (req.arg("fields") or "").split(",") if f] or None
            return json_response(200, {"data": [self.render(module, rec, fields)]}) if rec else empty_response(204)
        if len(rest) == 1 and method == "PUT":
            return self._save(req, module, rest[0])
        return _error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")

    def _token(self, req: Request) -> Response:
        # Zoho Accounts reports most failures as HTTP 200 with an "error" key (contract 2.1)
        p = req.form()
        if p.get("grant_type") != "refresh_token":
            return json_response(200, {"error": "unsupported_grant_type"})
        if p.get("client_id") != self.client_id or p.get("client_secret") != self.client_secret:
            return json_response(200, {"error": "invalid_client"})
        if p.get("refresh_token") not in self.refresh_tokens:
            return json_response(200, {"error": "invalid_code"})
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self.access_tokens[token] = (time.time() + self.token_ttl_seconds, self.current_user)
        host = req.headers.get("host", "127.0.0.1")
        return json_response(200, {"access_token": token, "scope": SCOPE, "api_domain": f"http://{host}",
                                   "token_type": "Bearer", "expires_in": self.token_ttl_seconds})

    def _int_arg(self, req: Request, name: str, default: int) -> int:
        raw = req.arg(name)
        if raw in (None, ""):
            return default
        if not raw.isdigit() or int(raw) < 1:
            raise _FieldError(name)
        return int(raw)

    def _ims(self, req: Request) -> datetime | None:
        raw = req.headers.get("if-modified-since")
        return self._parse_dt(raw.strip()) if raw else None

    def _after(self, stamp: datetime, ims: datetime) -> bool:
        return stamp >= ims if self.if_modified_since_inclusive else stamp > ims

    def _list(self, req: Request, module: str) -> Response:
        """GET /{Module}: one handler for every module (contract 2.2/2.3)."""
        if not req.arg("fields"):
            return _error(400, "REQUIRED_PARAM_MISSING", "required param is missing", param_name="fields")
        fields = [f.strip() for f in req.arg("fields", "").split(",") if f.strip()]
        if len(fields) > MAX_FIELDS:
            return _error(400, "LIMIT_EXCEEDED", "limit exceeded", limit=MAX_FIELDS, param_name="fields")
        sort_by, sort_order = req.arg("sort_by") or "id", req.arg("sort_order") or "desc"
        if sort_by not in SORT_FIELDS:
            return _error(400, "INVALID_DATA", "invalid data", param_name="sort_by", supported_values=SORT_FIELDS)
        if sort_order not in ("asc", "desc"):
            return _error(400, "INVALID_DATA", "invalid data", param_name="sort_order", supported_values=["asc", "desc"])
        try:
            per_page = min(self._int_arg(req, "per_page", MAX_PER_PAGE), MAX_PER_PAGE)
            page = self._int_arg(req, "page", 1)
            ims = self._ims(req)
        except _FieldError as exc:
            return _error(400, "INVALID_DATA", "invalid data", param_name=exc.api)
        except ValueError:
            return _error(400, "INVALID_DATA", "invalid data", param_name="If-Modified-Since")
        ids = [i for i in (req.arg("ids") or "").split(",") if i]
        token_arg = req.arg("page_token")
        if token_arg and req.arg("page"):
            return _error(400, "AMBIGUITY_DURING_PROCESSING", "ambiguity while processing the request",
                          ambiguity_due_to=[{"param_name": "page_token"}, {"param_name": "page"}])
        # a page token is bound to every other parameter of the query that issued it
        bound = (module, tuple(fields), sort_by, sort_order, per_page, ims, tuple(ids))
        now = self.now()
        after, served, prev = None, (page - 1) * per_page, None
        if token_arg:
            state = self.page_tokens.get(token_arg)
            if state is None or state["bound"] != bound:
                return _error(400, "TOKEN_BOUND_DATA_MISMATCH", "The page_token given seems to be invalid or "
                              "input param is added or altered or deleted", param_name="page_token")
            if state["expires"] <= now:
                return _error(400, "EXPIRED_VALUE", "Page token expired", api_name="page_token",
                              json_path="$.query.page_token")
            if state["served"] >= self.max_page_token_records:
                return _error(400, "PAGINATION_LIMIT_EXCEEDED", f"You can only get upto "
                              f"{self.max_page_token_records} records using page_token param", param_name="page_token")
            after, served, page, prev = state["after"], state["served"], state["page"], state["prev"]
        elif page * per_page > self.max_discrete_records:
            return _error(400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED", f"You can only get the first "
                          f"{self.max_discrete_records} records without using page_token param",
                          limit=self.max_discrete_records)

        rows = list(self.records[module].values())
        if ids:
            rows = [r for r in rows if r["id"] in ids]
        if ims is not None:
            rows = [r for r in rows if self._after(r["Modified_Time"], ims)]
            if not rows:
                return empty_response(304)

        def key(r: dict[str, Any]) -> tuple:
            return (int(r["id"]),) if sort_by == "id" else (r[sort_by], int(r["id"]))

        desc = sort_order == "desc"
        rows.sort(key=key, reverse=desc)
        if after is not None:  # keyset continuation: stable under inserts/deletes between pages
            rows = [r for r in rows if (key(r) < after if desc else key(r) > after)]
            start = 0
        else:
            start = served
        limit = per_page if token_arg is None else min(per_page, self.max_page_token_records - served)
        chunk = rows[start:start + limit]
        if not chunk:
            return empty_response(204)
        more = len(rows) > start + len(chunk)
        next_token = expiry = None
        if more:
            next_token, expiry = secrets.token_hex(24), now + PAGE_TOKEN_TTL
            self.page_tokens = {t: s for t, s in self.page_tokens.items() if s["expires"] > now}
            self.page_tokens[next_token] = {"bound": bound, "after": key(chunk[-1]), "served": served + len(chunk),
                                            "page": page + 1, "prev": token_arg, "expires": expiry}
        info = {"call": False, "per_page": per_page, "count": len(chunk), "page": page, "sort_by": sort_by,
                "sort_order": sort_order, "more_records": more, "next_page_token": next_token,
                "previous_page_token": prev, "page_token_expiry": self.fmt(expiry) if expiry else None,
                "email": False}
        return json_response(200, {"data": [self.render(module, r, fields) for r in chunk], "info": info})

    def _paged(self, req: Request, rows: list[Any], key: str, render) -> Response:
        """Plain page/per_page listing used by /deleted and /users."""
        try:
            per_page = min(self._int_arg(req, "per_page", MAX_PER_PAGE), MAX_PER_PAGE)
            page = self._int_arg(req, "page", 1)
        except _FieldError as exc:
            return _error(400, "INVALID_DATA", "invalid data", param_name=exc.api)
        chunk = rows[(page - 1) * per_page: page * per_page]
        if not chunk:
            return empty_response(204)
        info = {"per_page": per_page, "count": len(chunk), "page": page, "more_records": len(rows) > page * per_page}
        return json_response(200, {key: [render(r) for r in chunk], "info": info})

    def _deleted(self, req: Request, module: str) -> Response:
        kind = req.arg("type") or "all"
        if kind not in ("all", "recycle", "permanent"):
            return json_response(400, {"data": [_record_error(  # this error really is wrapped in data[]
                "PATTERN_NOT_MATCHED", "Please check whether the input values are correct", param_name="type")]})
        try:
            ims = self._ims(req)
        except ValueError:
            return _error(400, "INVALID_DATA", "invalid data", param_name="If-Modified-Since")
        rows = [e for e in self.deleted[module] if kind == "all" or e["type"] == kind]
        if ims is not None:
            rows = [e for e in rows if self._after(e["deleted_time"], ims)]
            if not rows:
                return empty_response(304)
        rows.sort(key=lambda e: (e["deleted_time"], int(e["id"])), reverse=True)
        return self._paged(req, rows, "data", self._render_deleted)

    def _users(self, req: Request) -> Response:
        active = lambda u: u["status"] == "active"  # noqa: E731
        admin = lambda u: u["profile"]["name"] == "Administrator"  # noqa: E731
        kinds = {"AllUsers": lambda u: u["status"] != "deleted", "ActiveUsers": active,
                 "DeactiveUsers": lambda u: u["status"] in ("inactive", "disabled"),
                 "DeletedUsers": lambda u: u["status"] == "deleted", "ConfirmedUsers": lambda u: u["confirm"],
                 "NotConfirmedUsers": lambda u: not u["confirm"], "AdminUsers": admin,
                 "ActiveConfirmedUsers": lambda u: active(u) and u["confirm"],
                 "ActiveConfirmedAdmins": lambda u: active(u) and u["confirm"] and admin(u),
                 "CurrentUser": lambda u: u["id"] == self.current_user}
        kind = req.arg("type") or "AllUsers"
        if kind not in kinds:
            return _error(400, "INVALID_DATA", "invalid data", param_name="type", supported_values=list(kinds))
        try:
            ims = self._ims(req)
        except ValueError:
            return _error(400, "INVALID_DATA", "invalid data", param_name="If-Modified-Since")
        rows = [u for u in self.users.values() if kinds[kind](u)]
        if ims is not None:
            rows = [u for u in rows if self._after(u["Modified_Time"], ims)]
            if not rows:
                return empty_response(304)
        return self._paged(req, sorted(rows, key=lambda u: int(u["id"])), "users", self._render_user)

    def _fields(self, req: Request) -> Response:
        module = req.arg("module")
        if not module:
            return _error(400, "REQUIRED_PARAM_MISSING", "required param is missing", param_name="module")
        if module not in MODULES:
            return _error(400, "INVALID_MODULE", "the module name given seems to be invalid", param_name="module")
        out = []
        for i, f in enumerate(self.fields[module]):
            fid = str(ORG_ID_BASE + (MODULES.index(module) + 1) * 10_000 + i)
            label = f"{SINGULAR[module]} Owner" if f.api == "Owner" else f.api.replace("_", " ")
            lookup = {} if f.dtype != "lookup" else {
                "display_label": label, "api_name": f.api, "id": fid,
                "module": {"api_name": f.target, "id": str(ORG_ID_BASE + 100 + MODULES.index(f.target))}}
            out.append({
                "api_name": f.api, "field_label": label, "display_label": label, "data_type": f.dtype,
                "json_type": JSON_TYPE.get(f.dtype, "string"), "custom_field": f.custom, "lookup": lookup,
                "pick_list_values": [{"display_value": v, "actual_value": v, "id": f"{fid}{j}"} for j, v in enumerate(f.picks)],
                "length": 255, "read_only": f.read_only, "visible": True, "type": "used", "id": fid,
                "column_name": f"CUSTOMFIELD{i}" if f.custom else f.api.upper()})
        return json_response(200, {"fields": out})

    def _save(self, req: Request, module: str, rid: str | None) -> Response:
        """PUT /{Module}/{id}, PUT /{Module} (bulk update) and POST /{Module} (insert)."""
        creating = req.method == "POST"
        try:
            body = req.json()
        except ValueError:
            body = None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            return _error(400, "MANDATORY_NOT_FOUND", "required field not found", api_name="data", json_path="$.data")
        if len(data) > MAX_WRITE:
            return json_response(400, {"data": [_record_error(
                "LIMIT_EXCEEDED", "count of records in your request exceeds the limit",
                maximum_length=MAX_WRITE, api_name="data")]})
        results = []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                results.append(_record_error("INVALID_DATA", "invalid data", json_path=f"$.data[{i}]"))
                continue
            target = rid or (None if creating else item.get("id"))
            if not creating and not target:
                results.append(_record_error("MANDATORY_NOT_FOUND", "required field not found",
                                             api_name="id", json_path=f"$.data[{i}].id"))
                continue
            rec = None if creating else self.records[module].get(str(target))
            if not creating and rec is None:
                results.append(_record_error("INVALID_DATA", "the id given seems to be invalid",
                                             api_name="id", json_path=f"$.data[{i}].id"))
                continue
            try:
                if creating:
                    rec = self._create(module, item, api=True)
                else:
                    self._write(module, rec, item, api=True)  # validates everything before applying
            except _FieldError as exc:
                code = "MANDATORY_NOT_FOUND" if str(exc) == "required field not found" else "INVALID_DATA"
                results.append(_record_error(code, str(exc), api_name=exc.api, json_path=f"$.data[{i}].{exc.api}"))
                continue
            results.append({"code": "SUCCESS", "details": {
                "Modified_Time": self.fmt(rec["Modified_Time"]), "Modified_By": self._user_ref(self.current_user),
                "Created_Time": self.fmt(rec["Created_Time"]), "id": rec["id"],
                "Created_By": {k: rec["Created_By"][k] for k in ("name", "id")}, "$approval_state": "approved"},
                "message": "record added" if creating else "record updated", "status": "success"})
        ok = sum(r["status"] == "success" for r in results)
        status = (201 if creating else 200) if ok == len(results) else 400 if ok == 0 else 207
        return json_response(status, {"data": results})
