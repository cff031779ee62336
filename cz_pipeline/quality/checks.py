"""Data-quality checks with Great Expectations 1.x, run inside Postgres. No Dagster imports.

What is validated are the *staged candidates*: the rows `derive.publish` would write next, computed
by derive's own candidate SQL over `raw` (and the hierarchy computed from those candidates). So
checks can run right after the raw data lands and BEFORE anything in `cs` changes; a blocking
failure keeps the last good `cs` rows in place (the Dagster layer wires that, see
`defs/quality/checks.py`).

How GX runs: one ephemeral GX context per process (created on first use; importing GX alone takes
seconds, so it is imported lazily, never at definitions load), one SQL datasource per warehouse
URL, and per check group one table asset over the staged candidates. One validation (a small
suite) per group.

Check groups, by the raw asset they are attached to:
- leads: AccountExternalID present / unique among leads meeting the sync filter; parent references
  resolve; no hierarchy cycles (self-references count as cycles); the number of accounts that
  would publish did not drop by more than half since the last publication of `cs.accounts`.
- contacts: ContactExternalID valid (an email address when it is the email) and unique among the
  contacts of synced accounts. WARN: share of contacts without an account in the CRM.
- deals / tasks: every deal/task whose account is a lead meeting the sync filter references a
  *synced* account — i.e. that lead is not quarantined (missing or duplicate AccountExternalID);
  otherwise the record drops out of `cs`. Records of leads outside the filter are legitimately not
  synced and not counted; references to leads not (yet) landed are left to the next sync.

Two kinds of blocking rule:
- Record-level rules (every check above but the account count): the offending records or links are
  quarantined by the publication (`sync.quarantine`, with a reason) and the rest publishes. The
  check reports counts and a sample, and fails only past a share that signals a systemic failure
  (default RECORD_LEVEL_THRESHOLD: more than a quarter of the records).
- Dataset-level rules block by default: the account count (default: a drop of more than half),
  and the invariants of the published set (`quality/invariants.py`), checked as each `cs` table
  publishes. They catch bugs and broken filters, never dirty records.

Thresholds: `thresholds.<check>` in the tenant's quality block is the tolerated share (of
offending records; for the account count, of the drop); `thresholds.default` sets it for every
record-level check the tenant does not name. GX gets it as `mostly = 1 - threshold`.

The candidate sets are staged once per validation into an unlogged table with bound parameters;
GX validates that table (every metric computed in Postgres) and drops nothing into pandas.

Every evaluation is recorded in `sync.check_results`; `gate()` reads the latest ones so a `cs`
table refuses to publish across runs while a blocking check on its upstream failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from cz_pipeline.config.tenants import TenantConfig
from cz_pipeline.model.derive import EMAIL_RE, _Params, accounts_candidates, contacts_candidates
from cz_pipeline.model.hierarchy import hierarchy_sql, nodes_sql
from cz_pipeline.model.mapping import canonical

ERROR, WARN = "ERROR", "WARN"
SAMPLE_SIZE = 10
RETENTION_DAYS = 90


class QualityError(RuntimeError):
    """A check could not be evaluated (not: a check failed)."""


RECORD_LEVEL_THRESHOLD = 0.25  # more than a quarter of the records offending: a systemic failure
ACCOUNT_DROP_THRESHOLD = 0.5  # more than half of the accounts gone since the last publication


@dataclass(frozen=True)
class CheckSpec:
    name: str
    entity: str  # the raw entity (Dagster asset crm/<entity>) the check is attached to
    blocking: bool
    description: str
    default_threshold: float = RECORD_LEVEL_THRESHOLD  # unless the tenant configures one
    record_level: bool = True  # offenders are quarantined; `thresholds.default` applies


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("account_external_id_present", "leads", True,
              "Every lead meeting the sync filter has an AccountExternalID (leads without one are quarantined)."),
    CheckSpec("account_external_id_unique", "leads", True,
              "AccountExternalIDs are unique among the leads meeting the sync filter (leads sharing one are "
              "quarantined)."),
    CheckSpec("parent_references_resolve", "leads", True,
              "Every parent reference names a synced account (dangling parents are quarantined; the account "
              "becomes a root)."),
    CheckSpec("no_hierarchy_cycles", "leads", True,
              "The parent/child hierarchy has no cycles and no account is its own parent (such links are "
              "quarantined; the accounts become roots)."),
    CheckSpec("account_count_drop", "leads", True,
              "Dataset-level: the number of accounts that would publish did not drop by more than half (default) "
              "since the last publication of cs.accounts (a broken filter or a partial API answer).",
              default_threshold=ACCOUNT_DROP_THRESHOLD, record_level=False),
    CheckSpec("contact_external_id_valid", "contacts", True,
              "Contacts of synced accounts have a valid ContactExternalID (an email address when it is the email); "
              "invalid ones are quarantined."),
    CheckSpec("contact_external_id_unique", "contacts", True,
              "ContactExternalIDs are unique among the contacts of synced accounts (contacts sharing one are "
              "quarantined)."),
    CheckSpec("contacts_without_account", "contacts", False,
              "Share of contacts with no account in the CRM (default warning above 5%).",
              default_threshold=0.05, record_level=False),
    CheckSpec("deals_reference_synced_account", "deals", True,
              "Every deal of a lead meeting the sync filter references a synced account (the lead is not "
              "quarantined)."),
    CheckSpec("tasks_reference_synced_account", "tasks", True,
              "Every task of a lead meeting the sync filter references a synced account (the lead is not "
              "quarantined)."),
)
CHECKS_BY_NAME = {c.name: c for c in CHECKS}
# The raw entities each group's candidates read: a newer successful sync of any of them makes a
# recorded result stale.
GROUP_ENTITIES = {"leads": ("leads",), "contacts": ("contacts", "leads"), "deals": ("deals", "leads"),
                  "tasks": ("tasks", "leads")}


def checks_for(entity: str) -> list[CheckSpec]:
    return [c for c in CHECKS if c.entity == entity]


def threshold_for(tenant: TenantConfig, spec: CheckSpec) -> float:
    """The tenant's threshold for the check by name; else, for a record-level check, the tenant's
    `default`; else the check's own default."""
    configured = tenant.quality.thresholds
    if spec.name in configured:
        return configured[spec.name]
    if spec.record_level and "default" in configured:
        return configured["default"]
    return spec.default_threshold


@dataclass
class CheckOutcome:
    name: str
    entity: str
    blocking: bool
    passed: bool
    offending: int
    total: int
    share: float
    threshold: float
    expectation: str
    failing_expectation: str | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    data_marker: int = 0
    evaluated_at: datetime | None = None
    dagster_run_id: str | None = None
    asset: str = ""  # the checked asset when it is not crm/<entity> (the cs tables' invariants)

    @property
    def severity(self) -> str:
        return ERROR if self.blocking else WARN

    @property
    def asset_key(self) -> str:
        return self.asset or f"crm/{self.entity}"

    def as_metadata(self) -> dict[str, Any]:
        return {"passed": self.passed, "offending": self.offending, "total": self.total,
                "share": round(self.share, 6), "threshold": self.threshold, "expectation": self.expectation,
                "failing_expectation": self.failing_expectation or "", "sample": self.sample,
                "message": self.message}


# ---- SQL of the candidate sets ----------------------------------------------------------------

def _good_accounts(alias: str = "ac") -> str:
    return (f"(SELECT CAST(:t AS text) AS tenant_id, _source_id AS crm_id, account_external_id "
            f"FROM {alias} WHERE _reason IS NULL)")


def group_sql(tenant: TenantConfig, entity: str) -> tuple[str, dict[str, Any]]:
    """The query a group's expectations run over and its bind parameters. Column `source_id`
    identifies the record in samples."""
    cfg = tenant.crm
    params = _Params(t=tenant.tenant_id, system=cfg.system, entity="accounts")
    ac = accounts_candidates(tenant, params)
    if entity == "leads":
        nodes = nodes_sql(tenant, "(SELECT account_external_id, _source_id AS crm_id, parent_account_external_id "
                                  "FROM ac WHERE _reason IS NULL)")
        body = f"""
        WITH ac AS MATERIALIZED ({ac}), h AS MATERIALIZED ({hierarchy_sql(nodes)})
        SELECT ac._source_id AS source_id, ac.account_external_id, ac.parent_account_external_id,
               CASE WHEN ac._reason IS NULL THEN COALESCE(h.reason, 'ok') END AS hierarchy_status
          FROM ac LEFT JOIN h ON h.crm_id = ac._source_id"""
    elif entity == "contacts":
        cc = contacts_candidates(tenant, params, accounts=_good_accounts())
        ref = canonical(cfg, "contacts")["account_crm_id"]
        body = f"""
        WITH ac AS MATERIALIZED ({ac}), cc AS MATERIALIZED ({cc})
        SELECT r.source_id, cc.contact_external_id,
               CASE WHEN cc._source_id IS NOT NULL THEN COALESCE(cc.contact_external_id, '') END
                    AS contact_external_id_checked,
               CASE WHEN EXISTS (SELECT 1 FROM raw.leads l WHERE l.tenant_id = r.tenant_id AND l.source_id = {ref}
                                    AND l.deleted_at IS NULL) THEN {ref} END AS account_crm_id
          FROM raw.contacts r CROSS JOIN LATERAL (SELECT r.payload p) _
          LEFT JOIN cc ON cc._source_id = r.source_id
         WHERE r.tenant_id = :t AND r.deleted_at IS NULL"""
    elif entity in ("deals", "tasks"):
        ref = canonical(cfg, entity)["account_crm_id"]
        body = f"""
        WITH ac AS MATERIALIZED ({ac})
        SELECT r.source_id, ac._source_id AS account_crm_id, ac._reason AS account_problem,
               CASE WHEN ac._reason IS NULL THEN ac.account_external_id END AS synced_account_external_id
          FROM raw.{entity} r CROSS JOIN LATERAL (SELECT r.payload p) _
          JOIN ac ON ac._source_id = {ref}
         WHERE r.tenant_id = :t AND r.deleted_at IS NULL"""
    else:
        raise ValueError(f"no quality checks for entity {entity!r}")
    return f"SELECT * FROM ({body}\n) q", params.values


def _mostly(threshold: float) -> float:
    return 1.0 if threshold <= 0 else max(0.0, 1.0 - threshold - 1e-12)


def _expectations(gx: Any, tenant: TenantConfig, entity: str) -> list[tuple[CheckSpec, Any]]:
    """The GX expectation of every check of the group but the account count (computed in SQL
    against the last publication, see `_account_count`)."""
    E = gx.expectations
    out = []
    for spec in checks_for(entity):
        if spec.name == "account_count_drop":
            continue
        mostly = _mostly(threshold_for(tenant, spec))
        meta = {"check": spec.name}
        if spec.name == "account_external_id_present":
            exp = E.ExpectColumnValuesToNotBeNull(column="account_external_id", mostly=mostly, meta=meta)
        elif spec.name == "account_external_id_unique":
            exp = E.ExpectColumnValuesToBeUnique(column="account_external_id", mostly=mostly, meta=meta)
        elif spec.name == "parent_references_resolve":
            exp = E.ExpectColumnValuesToNotBeInSet(column="hierarchy_status", value_set=["dangling_parent"],
                                                   mostly=mostly, meta=meta)
        elif spec.name == "no_hierarchy_cycles":
            exp = E.ExpectColumnValuesToNotBeInSet(column="hierarchy_status",
                                                   value_set=["hierarchy_cycle", "self_parent"],
                                                   mostly=mostly, meta=meta)
        elif spec.name == "contact_external_id_valid":
            regex = EMAIL_RE if tenant.crm.contact_external_id == "email" else r"\S"
            exp = E.ExpectColumnValuesToMatchRegex(column="contact_external_id_checked", regex=regex,
                                                   mostly=mostly, meta=meta)
        elif spec.name == "contact_external_id_unique":
            exp = E.ExpectColumnValuesToBeUnique(column="contact_external_id", mostly=mostly, meta=meta)
        elif spec.name == "contacts_without_account":
            exp = E.ExpectColumnValuesToNotBeNull(column="account_crm_id", mostly=mostly, meta=meta)
        elif spec.name in ("deals_reference_synced_account", "tasks_reference_synced_account"):
            exp = E.ExpectColumnValuesToNotBeNull(column="synced_account_external_id", mostly=mostly, meta=meta)
        else:  # pragma: no cover - CHECKS and this mapping are kept in step
            raise QualityError(f"no expectation for check {spec.name}")
        out.append((spec, exp))
    return out


# ---- Great Expectations runtime -----------------------------------------------------------------

_GX_LOCK = threading.Lock()
_GX: dict[str, Any] = {}


def _gx_datasource(url: str) -> tuple[Any, Any]:
    """The process-wide ephemeral GX context and the SQL datasource for `url` (created once)."""
    import great_expectations as gx  # lazy: seconds to import

    context = _GX.get("context")
    if context is None:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _GX["context"] = context
    name = "warehouse_" + hashlib.sha256(url.encode()).hexdigest()[:12]
    datasource = _GX.get(name)
    if datasource is None:
        try:
            datasource = context.data_sources.add_postgres(name, connection_string=url, create_temp_table=True)
        except ValueError:
            # pydantic's PostgresDsn rejects Unix-socket URLs (`postgresql+psycopg2://u@/db?host=/dir`),
            # which the embedded server uses; the generic SQL datasource takes any SQLAlchemy URL.
            datasource = context.data_sources.add_sql(name, connection_string=url, create_temp_table=True)
        _GX[name] = datasource
    return gx, datasource


def _drop_gx_temp_tables(datasource: Any) -> None:
    """GX materialises each query asset into a temp table in one of its pooled connections and
    leaves it there; closing its pooled connections once a validation is done drops them, so a
    long-lived process does not collect them (a reconnect per validation is cheap)."""
    try:
        datasource.get_execution_engine().engine.dispose()
    except Exception:  # housekeeping only: never fail a check because of it
        pass


def _redact(text: str, url: sa.URL) -> str:
    for secret in {url.password, url.render_as_string(hide_password=False)} - {None, ""}:
        text = text.replace(str(secret), "***")
    return text


STAGING_SCHEMA = "sync"
STAGING_PREFIX = "check_candidates_"


@contextmanager
def _staged(engine: sa.Engine, sql: str, params: dict[str, Any]) -> Iterator[str]:
    """Materialise a group's candidates once (bound parameters, one statement) into an unlogged
    table that GX and the account count read; dropped afterwards. Yields the table name."""
    table = STAGING_PREFIX + uuid.uuid4().hex[:16]
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE UNLOGGED TABLE {STAGING_SCHEMA}.{table} AS {sql}"), params)
    except sa.exc.SQLAlchemyError as exc:
        raise QualityError(f"staging the check candidates failed: {type(exc).__name__}: "
                           f"{_redact(str(exc.orig if hasattr(exc, 'orig') else exc), engine.url)[:500]}") from None
    try:
        yield table
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {STAGING_SCHEMA}.{table}")


def _validate(engine: sa.Engine, table: str, build: Any) -> list[tuple[CheckSpec, Any]]:
    """Run one GX suite (built by `build(gx)`) over the staged `table`; returns (spec, result) pairs."""
    url = engine.url.render_as_string(hide_password=False)
    with _GX_LOCK:
        try:
            gx, datasource = _gx_datasource(url)
            pairs = build(gx)
            if not pairs:
                return []
            name = f"q_{uuid.uuid4().hex[:12]}"
            asset = datasource.add_table_asset(name, table_name=table, schema_name=STAGING_SCHEMA)
            try:
                batch = asset.add_batch_definition_whole_table("all").get_batch()
                suite = gx.ExpectationSuite(name=name, expectations=[exp for _, exp in pairs])
                result = batch.validate(suite, result_format={
                    "result_format": "SUMMARY", "unexpected_index_column_names": ["source_id"],
                    "partial_unexpected_count": SAMPLE_SIZE, "return_unexpected_index_query": False})
            finally:
                datasource.delete_asset(name)
                _drop_gx_temp_tables(datasource)
        except QualityError:
            raise
        except Exception as exc:  # GX/SQL errors: report without the connection string
            raise QualityError(f"Great Expectations validation failed: {type(exc).__name__}: "
                               f"{_redact(str(exc), engine.url)[:500]}") from None
    by_check = {}
    for res in result.results:
        info = res.exception_info or {}
        if info.get("raised_exception"):
            raise QualityError(f"expectation {res.expectation_config.type} raised: "
                               f"{_redact(str(info.get('exception_message')), engine.url)[:500]}")
        by_check[res.expectation_config.meta["check"]] = res
    return [(spec, by_check[spec.name]) for spec, _ in pairs]


# ---- evaluation ---------------------------------------------------------------------------------


def data_marker(conn: sa.Connection, tenant_id: str, entities: Iterable[str]) -> int:
    return conn.execute(sa.text(
        "SELECT COALESCE(max(id), 0) FROM sync.runs WHERE tenant_id = :t AND entity = ANY(:e) AND status = 'success'"),
        {"t": tenant_id, "e": list(entities)}).scalar_one()


def last_published_accounts(conn: sa.Connection, tenant_id: str) -> int | None:
    """The number of accounts the latest publication of cs.accounts published (None: never)."""
    return conn.execute(sa.text(
        "SELECT candidates FROM sync.publications WHERE tenant_id = :t AND table_name = 'accounts' "
        "ORDER BY id DESC LIMIT 1"), {"t": tenant_id}).scalar()


def _account_count(engine: sa.Engine, tenant: TenantConfig, table: str, previous: int | None) -> CheckOutcome:
    """Dataset-level: the accounts that would publish now (not quarantined) against the last
    publication. Blocks when the drop exceeds the threshold (default: more than half)."""
    spec = CHECKS_BY_NAME["account_count_drop"]
    threshold = threshold_for(tenant, spec)
    with engine.connect() as conn:
        # hierarchy_status is NULL exactly for the quarantined candidates
        observed = conn.execute(sa.text(f"SELECT count(hierarchy_status) FROM {STAGING_SCHEMA}.{table}")).scalar_one()
    drop = max((previous or 0) - observed, 0)
    share = drop / previous if previous else 0.0
    passed = share <= threshold + 1e-12
    if previous is None:
        message = f"{observed} accounts would publish (first publication)"
    else:
        message = (f"{'passed' if passed else 'FAILED'}: {observed} accounts would publish; {previous} at the last "
                   f"publication of cs.accounts ({-share:+.1%}; blocks a drop above {threshold:.0%})")
    expectation = "account_count_vs_last_publication"
    return CheckOutcome(spec.name, spec.entity, spec.blocking, passed, drop, observed, share, threshold, expectation,
                        None if passed else expectation, [], message)


def _outcome(tenant: TenantConfig, spec: CheckSpec, res: Any) -> CheckOutcome:
    r = res.result or {}
    threshold = threshold_for(tenant, spec)
    expectation = res.expectation_config.type
    element_count = int(r.get("element_count") or 0)
    total = element_count - int(r.get("missing_count") or 0)
    offending = int(r.get("unexpected_count") or 0)
    share = offending / total if total else 0.0
    sample = []
    for row in (r.get("partial_unexpected_index_list") or [])[:SAMPLE_SIZE]:
        row = dict(row)
        source_id = row.pop("source_id", None)
        sample.append({"source_id": source_id, "value": next(iter(row.values()), None)})
    verdict = "passed" if res.success else "FAILED"
    kept = (" — quarantined, the rest publishes" if spec.record_level and offending and res.success else "")
    message = (f"{verdict}: {offending} of {total} offending ({share:.1%}; threshold {threshold:.1%}){kept} — "
               f"{spec.description}")
    return CheckOutcome(spec.name, spec.entity, spec.blocking, bool(res.success), offending, total, share, threshold,
                        expectation, None if res.success else expectation, sample, message)


def run_checks(engine: sa.Engine, tenant: TenantConfig, entity: str, dagster_run_id: str | None = None,
               record_results: bool = True) -> list[CheckOutcome]:
    """Evaluate every check of one group (the raw entity it is attached to) for one tenant, record
    the outcomes in `sync.check_results` and return them. Raises QualityError when the checks
    cannot be evaluated (after recording the blocking ones as failed, so the gate holds)."""
    specs = checks_for(entity)
    with engine.connect() as conn:
        marker = data_marker(conn, tenant.tenant_id, GROUP_ENTITIES[entity])
        previous = last_published_accounts(conn, tenant.tenant_id) if entity == "leads" else None
    try:
        sql, params = group_sql(tenant, entity)
        with _staged(engine, sql, params) as table:
            pairs = _validate(engine, table, lambda gx: _expectations(gx, tenant, entity))
            by_name = {spec.name: _outcome(tenant, spec, res) for spec, res in pairs}
            if entity == "leads":
                by_name["account_count_drop"] = _account_count(engine, tenant, table, previous)
        outcomes = [by_name[s.name] for s in specs]
    except (QualityError, NotImplementedError) as exc:
        failed = [CheckOutcome(s.name, s.entity, s.blocking, False, 0, 0, 0.0, threshold_for(tenant, s), "",
                               "evaluation_error", [], f"could not be evaluated: {exc}") for s in specs]
        for o in failed:
            o.data_marker, o.dagster_run_id = marker, dagster_run_id
        if record_results:
            with engine.begin() as conn:
                record(conn, tenant.tenant_id, [o for o in failed if o.blocking])
        raise QualityError(f"tenant {tenant.tenant_id!r}: {entity} checks could not be evaluated: {exc}") from None
    for o in outcomes:
        o.data_marker, o.dagster_run_id = marker, dagster_run_id
    if record_results:
        with engine.begin() as conn:
            record(conn, tenant.tenant_id, outcomes)
    return outcomes


def record(conn: sa.Connection, tenant_id: str, outcomes: list[CheckOutcome]) -> None:
    """Append outcomes to `sync.check_results` (one statement) and prune old history."""
    if not outcomes:
        return
    rows = [{"asset_key": o.asset_key, "check_name": o.name, "blocking": o.blocking, "severity": o.severity,
             "passed": o.passed, "offending": o.offending, "total": o.total, "share": o.share,
             "threshold": o.threshold, "expectation": o.expectation, "failing_expectation": o.failing_expectation,
             "sample": o.sample, "message": o.message, "data_marker": o.data_marker,
             "dagster_run_id": o.dagster_run_id} for o in outcomes]
    conn.execute(sa.text("""
        INSERT INTO sync.check_results (tenant_id, asset_key, check_name, blocking, severity, passed, offending,
                                        total, share, threshold, expectation, failing_expectation, sample,
                                        message, data_marker, dagster_run_id)
        SELECT :t, asset_key, check_name, blocking, severity, passed, offending, total, share, threshold,
               expectation, failing_expectation, COALESCE(sample, '[]'), message, data_marker, dagster_run_id
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
               asset_key text, check_name text, blocking boolean, severity text, passed boolean, offending bigint,
               total bigint, share double precision, threshold double precision, expectation text,
               failing_expectation text, sample jsonb, message text, data_marker bigint, dagster_run_id text)"""),
        {"t": tenant_id, "rows": json.dumps(rows, default=str)})
    conn.execute(sa.text(f"DELETE FROM sync.check_results WHERE tenant_id = :t "
                         f"AND evaluated_at < now() - interval '{RETENTION_DAYS} days'"), {"t": tenant_id})


def latest_results(conn: sa.Connection, tenant_id: str, names: Iterable[str]) -> dict[str, CheckOutcome]:
    rows = conn.execute(sa.text("""
        SELECT DISTINCT ON (check_name) * FROM sync.check_results
         WHERE tenant_id = :t AND check_name = ANY(:n) ORDER BY check_name, id DESC"""),
        {"t": tenant_id, "n": list(names)}).mappings().all()
    out = {}
    for r in rows:
        spec = CHECKS_BY_NAME.get(r["check_name"])
        out[r["check_name"]] = CheckOutcome(
            r["check_name"], spec.entity if spec else r["asset_key"].split("/")[-1], r["blocking"], r["passed"],
            r["offending"] or 0, r["total"] or 0, r["share"] or 0.0, r["threshold"] or 0.0, r["expectation"] or "",
            r["failing_expectation"], r["sample"] or [], r["message"] or "", r["data_marker"] or 0,
            r["evaluated_at"], r["dagster_run_id"])
    return out


def synced_in_run(engine: sa.Engine, tenant_id: str, dagster_run_id: str) -> set[str]:
    """The raw entities a Dagster run synced successfully for the tenant."""
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT DISTINCT entity FROM sync.runs WHERE tenant_id = :t AND dagster_run_id = :r AND status = 'success'"),
            {"t": tenant_id, "r": dagster_run_id}).scalars())


def gate(engine: sa.Engine, tenant: TenantConfig, entities: Iterable[str], dagster_run_id: str | None = None,
         refresh: Iterable[str] = (),
         report: Callable[[list[CheckOutcome]], None] | None = None) -> list[CheckOutcome]:
    """The failing blocking checks among those attached to `entities` (raw entities upstream of a
    `cs` table), by their latest evaluation. A group whose latest results are missing, older than
    the raw data they read (a newer successful sync of one of its entities) or made under another
    threshold is evaluated now, so unchecked data never passes the gate. The groups of `refresh`
    are brought up to date the same way without gating. `report` receives every group's outcomes
    evaluated here."""
    wanted = set(entities)
    groups = sorted((wanted | set(refresh)) & set(GROUP_ENTITIES))
    specs = [s for s in CHECKS if s.blocking and s.entity in groups]
    if not specs:
        return []
    with engine.connect() as conn:
        latest = latest_results(conn, tenant.tenant_id, [s.name for s in specs])
        markers = {e: data_marker(conn, tenant.tenant_id, GROUP_ENTITIES[e]) for e in groups}
    stale = sorted({s.entity for s in specs
                    if (r := latest.get(s.name)) is None or r.data_marker < markers[s.entity]
                    or not math.isclose(r.threshold, threshold_for(tenant, s), abs_tol=1e-12)})
    for entity in stale:
        try:
            outcomes = run_checks(engine, tenant, entity, dagster_run_id)
        except QualityError:
            with engine.connect() as conn:
                latest.update(latest_results(conn, tenant.tenant_id, [s.name for s in checks_for(entity)]))
            continue
        latest.update({o.name: o for o in outcomes})
        if report is not None:
            report(outcomes)
    return [latest[s.name] for s in specs if s.entity in wanted and not latest[s.name].passed]
