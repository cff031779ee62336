"""Tenant configuration: one YAML file, path from `CZ_TENANTS_FILE`.

Everything is validated at load time and every error names the tenant and the key. Secrets are
only ever referenced as `{env: NAME}` and resolved when a connector needs them; their values are
never part of a repr, a message or a log line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cz_pipeline.sources.registry import SOURCES, systems

# `\Z`, not `$`: `$` also matches before a trailing newline, which would let "acme\n" through.
TENANT_ID_RE = re.compile(r"^[a-z0-9_]{1,40}\Z")
# A source field: `status_label`, `custom.cf_xxx`, `Parent_Account.id`, `Start_Date__c`.
FIELD_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z0-9_$]+)*\Z")
CONFIG_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
EMAIL_RE = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+\Z")
FILTER_OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "not_exists")
AGGREGATES = ("max", "min", "sum", "count")
DEFINITION_SOURCES = ("deals",)
# Per-system facts come from the source registry: which systems exist, their credentials, defaults.
CRM_SYSTEMS = systems("crm")
HELPDESK_SYSTEMS = systems("helpdesk")
DEFAULT_FULL_SYNC_CRON = {name: SOURCES[name].default_full_sync_cron for name in CRM_SYSTEMS}


class ConfigError(ValueError):
    """A tenant configuration problem; the message names the tenant and the key."""


class MissingSecretError(RuntimeError):
    pass


@dataclass(frozen=True)
class Secret:
    """A reference to an environment variable holding a secret. Its value is read on demand and
    never rendered: repr/str show only the variable's name."""

    env: str

    def get(self) -> str:
        value = os.environ.get(self.env)
        if not value:
            raise MissingSecretError(f"environment variable {self.env} (a secret) is not set")
        return value

    def __repr__(self) -> str:
        return f"Secret(env={self.env!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class FilterCondition:
    field: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Definition:
    """A field computed over related objects: `aggregate(field)` over the account's `from`
    records that meet every `where` condition (`value: today` means the current date)."""

    source: str  # "deals"
    aggregate: str
    field: str
    where: tuple[FilterCondition, ...] = ()


@dataclass(frozen=True)
class FieldSpec:
    name: str
    source: str | None = None
    definition: Definition | None = None
    editable: bool = False


@dataclass(frozen=True)
class CrmConfig:
    system: str
    base_url: str | None
    credentials: dict[str, Any]  # name -> Secret, or a literal endpoint URL
    account_external_id: str
    contact_external_id: str = "email"
    parent_external_id: str | None = None
    sync_filter: tuple[FilterCondition, ...] = ()
    users_filter_field: str | None = None
    users_access_field: str | None = None
    account_fields: tuple[FieldSpec, ...] = ()
    contact_fields: tuple[FieldSpec, ...] = ()
    deal_fields: dict[str, str] = field(default_factory=dict)
    push: dict[str, dict[str, str]] = field(default_factory=dict)
    tasks_bidirectional: bool = True
    routine_sync_minutes: int = 15
    full_sync_cron: str = "0 2 * * 6,0"
    timezone: str = "UTC"
    overlap_seconds: int = 300
    settle_lag_seconds: int = 60

    def fields_fingerprint(self, entity: str) -> str:
        """Fingerprint of the field configuration that shapes one entity's sync; when it changes
        the next routine sync re-pulls that whole entity (new fields are populated on every record)."""
        shape: dict[str, Any] = {
            "leads": {"aid": self.account_external_id, "parent": self.parent_external_id,
                      "fields": [(f.name, f.source) for f in self.account_fields if f.source],
                      "push": self.push.get("account", {})},
            "contacts": {"cid": self.contact_external_id,
                         "fields": [(f.name, f.source) for f in self.contact_fields if f.source],
                         "push": self.push.get("contact", {})},
            "deals": {"fields": sorted(self.deal_fields.items())},
            "users": {"filter": self.users_filter_field, "access": self.users_access_field},
        }.get(entity, {})
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class HelpdeskConfig:
    system: str
    base_url: str
    credentials: dict[str, Any]
    overlap_seconds: int = 300
    settle_lag_seconds: int = 60


@dataclass(frozen=True)
class QualityConfig:
    """Per-check thresholds: the share of offending records (0..1) tolerated before a blocking
    check fails; `default` applies to every record-level check not named. The defaults per check
    live with the checks (`cz_pipeline.quality.checks.threshold_for`)."""

    thresholds: dict[str, float] = field(default_factory=dict)

    def threshold(self, check: str) -> float:
        return self.thresholds.get(check, self.thresholds.get("default", 0.0))


@dataclass(frozen=True)
class TenantConfig:
    tenant_id: str
    crm: CrmConfig
    helpdesk: HelpdeskConfig | None = None
    quality: QualityConfig = field(default_factory=QualityConfig)
    win_loss: dict[str, Any] | None = None
    incentives: dict[str, Any] | None = None
    notify: tuple[str, ...] = ()       # the tenant's admins: who hears of refused credentials, failing syncs


# ---- parsing ---------------------------------------------------------------------------------


class _Ctx:
    """Where we are in the file, for messages like `tenant 'acme': crm.sync_filter[0].op: ...`."""

    def __init__(self, tenant: str, path: str = ""):
        self.tenant, self.path = tenant, path

    def at(self, key: str | int) -> "_Ctx":
        if isinstance(key, int):
            return _Ctx(self.tenant, f"{self.path}[{key}]")
        return _Ctx(self.tenant, f"{self.path}.{key}" if self.path else key)

    def error(self, message: str) -> ConfigError:
        where = f"tenant {self.tenant!r}" + (f": key {self.path!r}" if self.path else "")
        return ConfigError(f"{where}: {message}")


def _mapping(ctx: _Ctx, raw: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ctx.error(f"expected a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in required | optional:
            raise ctx.at(str(key)).error(f"unknown key (allowed: {', '.join(sorted(required | optional))})")
    for key in sorted(required):
        if key not in raw:
            raise ctx.at(key).error("missing required key")
    return raw


def _str(ctx: _Ctx, raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise ctx.error(f"expected a non-empty string, got {raw!r}" if not isinstance(raw, (dict, list)) else "expected a string")
    return raw


def _field_name(ctx: _Ctx, raw: Any) -> str:
    value = _str(ctx, raw)
    if not FIELD_RE.match(value):
        raise ctx.error(f"bad field name {value!r} (letters, digits, _ and $, dotted paths)")
    return value


def _int(ctx: _Ctx, raw: Any, minimum: int, maximum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not minimum <= raw <= maximum:
        raise ctx.error(f"expected an integer in [{minimum}, {maximum}], got {raw!r}")
    return raw


def _bool(ctx: _Ctx, raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ctx.error(f"expected true or false, got {raw!r}")
    return raw


def _cron(ctx: _Ctx, raw: Any) -> str:
    from cz_pipeline.dagster_private import is_valid_cron  # imports Dagster: only when a cron is given

    value = _str(ctx, raw)
    if not is_valid_cron(value):
        raise ctx.error(f"bad cron string {value!r}")
    return value


def _timezone(ctx: _Ctx, raw: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = _str(ctx, raw)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ctx.error(f"unknown time zone {value!r}") from None
    return value


def _credentials(ctx: _Ctx, raw: Any, system: str) -> dict[str, Any]:
    spec = SOURCES[system]
    raw = _mapping(ctx, raw, set(spec.secret_credentials), set(spec.endpoint_credentials))
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kctx = ctx.at(key)
        if isinstance(value, dict):
            env = _mapping(kctx, value, {"env"}, set())["env"]
            if not isinstance(env, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env):
                raise kctx.at("env").error("expected an environment variable name")
            out[key] = Secret(env)
        elif key in spec.endpoint_credentials:
            out[key] = _str(kctx, value)
        else:
            # Never echo the value: it may be a pasted secret.
            raise kctx.error("secrets must be given as {env: VARIABLE_NAME}, not written in the file")
    return out


def _condition(ctx: _Ctx, raw: Any) -> FilterCondition:
    raw = _mapping(ctx, raw, {"field", "op"}, {"value"})
    op = raw["op"]
    if op not in FILTER_OPS:
        raise ctx.at("op").error(f"unknown operator {op!r} (allowed: {', '.join(FILTER_OPS)})")
    value = raw.get("value")
    if op in ("in", "not_in") and not isinstance(value, list):
        raise ctx.at("value").error(f"operator {op!r} needs a list")
    if op not in ("exists", "not_exists") and "value" not in raw:
        raise ctx.at("value").error("missing required key")
    return FilterCondition(_field_name(ctx.at("field"), raw["field"]), op, value)


def _field_specs(ctx: _Ctx, raw: Any, allow_definitions: bool) -> tuple[FieldSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ctx.error("expected a mapping of field name to spec")
    specs = []
    for name, spec in raw.items():
        fctx = ctx.at(str(name))
        if not isinstance(name, str) or not CONFIG_NAME_RE.match(name):
            raise fctx.error("field names are lower_snake_case")
        if isinstance(spec, str):
            spec = {"source": spec}
        spec = _mapping(fctx, spec, set(), {"source", "definition", "editable"})
        editable = _bool(fctx.at("editable"), spec.get("editable", False))
        if ("source" in spec) == ("definition" in spec):
            raise fctx.error("give exactly one of 'source' or 'definition'")
        if "definition" in spec:
            if not allow_definitions:
                raise fctx.at("definition").error("definitions are only supported for account fields")
            if editable:
                raise fctx.at("editable").error(
                    "a field computed from a definition can never be editable: only 1:1 source fields sync both ways")
            specs.append(FieldSpec(name, definition=_definition(fctx.at("definition"), spec["definition"])))
        else:
            specs.append(FieldSpec(name, source=_field_name(fctx.at("source"), spec["source"]), editable=editable))
    return tuple(specs)


def _definition(ctx: _Ctx, raw: Any) -> Definition:
    raw = _mapping(ctx, raw, {"from", "aggregate", "field"}, {"where"})
    if raw["from"] not in DEFINITION_SOURCES:
        raise ctx.at("from").error(f"unsupported source {raw['from']!r} (allowed: {', '.join(DEFINITION_SOURCES)})")
    if raw["aggregate"] not in AGGREGATES:
        raise ctx.at("aggregate").error(f"unknown aggregate {raw['aggregate']!r} (allowed: {', '.join(AGGREGATES)})")
    where = raw.get("where") or []
    if not isinstance(where, list):
        raise ctx.at("where").error("expected a list of conditions")
    return Definition(raw["from"], raw["aggregate"], _field_name(ctx.at("field"), raw["field"]),
                      tuple(_condition(ctx.at("where").at(i), c) for i, c in enumerate(where)))


def _crm(ctx: _Ctx, raw: Any) -> CrmConfig:
    raw = _mapping(ctx, raw, {"system", "credentials", "account_external_id"}, {
        "base_url", "contact_external_id", "parent_external_id", "sync_filter", "users", "account_fields",
        "contact_fields", "deal_fields", "push", "tasks", "routine_sync_minutes", "full_sync_cron",
        "timezone", "overlap_seconds", "settle_lag_seconds"})
    system = raw["system"]
    if system not in CRM_SYSTEMS:
        raise ctx.at("system").error(f"unknown CRM {system!r} (allowed: {', '.join(CRM_SYSTEMS)})")
    if raw.get("parent_external_id") and SOURCES[system].native_parents:
        raise ctx.at("parent_external_id").error(
            f"{system} has native parent accounts; this key is for CRMs without them "
            f"({', '.join(n for n in CRM_SYSTEMS if not SOURCES[n].native_parents)})")
    users = _mapping(ctx.at("users"), raw.get("users") or {}, set(), {"filter_field", "access_field"})
    tasks = _mapping(ctx.at("tasks"), raw.get("tasks") or {}, set(), {"bidirectional"})
    deal_fields_raw = raw.get("deal_fields") or {}
    if not isinstance(deal_fields_raw, dict):
        raise ctx.at("deal_fields").error("expected a mapping of canonical deal field to source field")
    deal_fields = {}
    for name, source in deal_fields_raw.items():
        if not isinstance(name, str) or not CONFIG_NAME_RE.match(name):
            raise ctx.at("deal_fields").at(str(name)).error("deal field names are lower_snake_case")
        deal_fields[name] = _field_name(ctx.at("deal_fields").at(name), source)
    push_raw = _mapping(ctx.at("push"), raw.get("push") or {}, set(), {"account", "contact"})
    push = {}
    for kind, mapping in push_raw.items():
        if not isinstance(mapping, dict):
            raise ctx.at("push").at(kind).error("expected a mapping of attribute to CRM field")
        push[kind] = {str(k): _field_name(ctx.at("push").at(kind).at(str(k)), v) for k, v in mapping.items()}
    sync_filter = raw.get("sync_filter") or []
    if not isinstance(sync_filter, list):
        raise ctx.at("sync_filter").error("expected a list of conditions")
    base_url = raw.get("base_url") or SOURCES[system].default_base_url
    return CrmConfig(
        system=system,
        base_url=_str(ctx.at("base_url"), base_url) if base_url else None,
        credentials=_credentials(ctx.at("credentials"), raw["credentials"], system),
        account_external_id=_field_name(ctx.at("account_external_id"), raw["account_external_id"]),
        contact_external_id=_field_name(ctx.at("contact_external_id"), raw.get("contact_external_id", "email")),
        parent_external_id=(_field_name(ctx.at("parent_external_id"), raw["parent_external_id"])
                            if raw.get("parent_external_id") else None),
        sync_filter=tuple(_condition(ctx.at("sync_filter").at(i), c) for i, c in enumerate(sync_filter)),
        users_filter_field=(_field_name(ctx.at("users.filter_field"), users["filter_field"])
                            if users.get("filter_field") else None),
        users_access_field=(_field_name(ctx.at("users.access_field"), users["access_field"])
                            if users.get("access_field") else None),
        account_fields=_field_specs(ctx.at("account_fields"), raw.get("account_fields"), allow_definitions=True),
        contact_fields=_field_specs(ctx.at("contact_fields"), raw.get("contact_fields"), allow_definitions=False),
        deal_fields=deal_fields,
        push=push,
        tasks_bidirectional=_bool(ctx.at("tasks.bidirectional"), tasks.get("bidirectional", True)),
        routine_sync_minutes=_int(ctx.at("routine_sync_minutes"), raw.get("routine_sync_minutes", 15), 1, 1440),
        full_sync_cron=_cron(ctx.at("full_sync_cron"), raw.get("full_sync_cron", DEFAULT_FULL_SYNC_CRON[system])),
        timezone=_timezone(ctx.at("timezone"), raw.get("timezone", "UTC")),
        overlap_seconds=_int(ctx.at("overlap_seconds"), raw.get("overlap_seconds", 300), 0, 86400),
        settle_lag_seconds=_int(ctx.at("settle_lag_seconds"), raw.get("settle_lag_seconds", 60), 0, 86400),
    )


def _helpdesk(ctx: _Ctx, raw: Any) -> HelpdeskConfig:
    raw = _mapping(ctx, raw, {"system", "base_url", "credentials"}, {"overlap_seconds", "settle_lag_seconds"})
    if raw["system"] not in HELPDESK_SYSTEMS:
        raise ctx.at("system").error(f"unknown helpdesk {raw['system']!r} (allowed: {', '.join(HELPDESK_SYSTEMS)})")
    return HelpdeskConfig(
        system=raw["system"],
        base_url=_str(ctx.at("base_url"), raw["base_url"]),
        credentials=_credentials(ctx.at("credentials"), raw["credentials"], raw["system"]),
        overlap_seconds=_int(ctx.at("overlap_seconds"), raw.get("overlap_seconds", 300), 0, 86400),
        settle_lag_seconds=_int(ctx.at("settle_lag_seconds"), raw.get("settle_lag_seconds", 60), 0, 86400),
    )


def _quality(ctx: _Ctx, raw: Any) -> QualityConfig:
    raw = _mapping(ctx, raw or {}, set(), {"thresholds"})
    thresholds = raw.get("thresholds") or {}
    if not isinstance(thresholds, dict):
        raise ctx.at("thresholds").error("expected a mapping of check name to a share between 0 and 1")
    out = {}
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ctx.at("thresholds").at(str(name)).error(f"expected a share between 0 and 1, got {value!r}")
        out[str(name)] = float(value)
    return QualityConfig(out)


def _emails(ctx: _Ctx, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ctx.error("expected a list of email addresses")
    out = []
    for i, value in enumerate(raw):
        if not isinstance(value, str) or not EMAIL_RE.match(value):
            raise ctx.at(i).error(f"not an email address: {value!r}")
        out.append(value)
    return tuple(out)


def parse_tenants(raw: Any) -> dict[str, TenantConfig]:
    if not isinstance(raw, dict) or set(raw) != {"tenants"} or not isinstance(raw["tenants"], dict):
        raise ConfigError("tenants file: expected a single top-level key 'tenants' holding a mapping of tenant id to config")
    tenants = {}
    for tenant_id, body in raw["tenants"].items():
        ctx = _Ctx(str(tenant_id))
        if not isinstance(tenant_id, str) or not TENANT_ID_RE.match(tenant_id):
            raise ctx.error("bad tenant id: use 1-40 characters of a-z, 0-9 and _")
        body = _mapping(ctx, body, {"crm"}, {"helpdesk", "quality", "win_loss", "incentives", "notify"})
        tenants[tenant_id] = TenantConfig(
            tenant_id=tenant_id,
            crm=_crm(ctx.at("crm"), body["crm"]),
            helpdesk=_helpdesk(ctx.at("helpdesk"), body["helpdesk"]) if body.get("helpdesk") else None,
            quality=_quality(ctx.at("quality"), body.get("quality")),
            win_loss=body.get("win_loss"),
            incentives=body.get("incentives"),
            notify=_emails(ctx.at("notify"), body.get("notify")),
        )
    return tenants


def load_tenants(path: str | Path | None = None) -> dict[str, TenantConfig]:
    """Load and validate the tenants file (default: `CZ_TENANTS_FILE`)."""
    path = Path(path or os.environ.get("CZ_TENANTS_FILE") or "")
    if not str(path) or not path.is_file():
        raise ConfigError(f"tenants file not found: {str(path) or '(CZ_TENANTS_FILE is not set)'}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"tenants file {path}: not valid YAML: {exc}") from None
    return parse_tenants(raw)
