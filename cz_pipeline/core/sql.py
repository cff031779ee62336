"""Small typed builders for the SQL expressions the canonical mappings are written in: a payload
field as jsonb or text, a guarded cast, a typed NULL. Field names come from validated
configuration (letters, digits, `_`, `$`, dots), so inlining them as string literals is safe."""

from __future__ import annotations

SAFE_CASTS = ("date", "timestamptz", "numeric", "boolean")
SQL_TYPES = ("text", "date", "timestamptz", "numeric", "boolean", "bigint", "jsonb")


def json_expr(field: str, alias: str = "p") -> str:
    """jsonb value of a source field: a flat key (`custom.cf_x`, Close) or a dotted path
    (`Parent_Account.id`, Zoho)."""
    if "." in field:
        path = ",".join(field.split("."))
        return f"COALESCE({alias}->'{field}', {alias}#>'{{{path}}}')"
    return f"{alias}->'{field}'"


def text_expr(field: str, alias: str = "p") -> str:
    """Text of a source field; a lookup object `{name, id}` yields its id; blank → NULL."""
    j = json_expr(field, alias)
    return (f"NULLIF(btrim(CASE jsonb_typeof({j}) WHEN 'object' THEN {j}->>'id' "
            f"WHEN 'array' THEN {j}->>0 ELSE {j} #>> '{{}}' END), '')")


def typed(expr: str, sql_type: str) -> str:
    """A text expression cast to a type, NULL when the value does not parse (never an error).
    The `sync.try_<type>` functions are inlined by the planner and work on PostgreSQL 14-18."""
    if sql_type not in SAFE_CASTS:
        raise ValueError(f"no safe cast to {sql_type!r}")
    return f"sync.try_{sql_type}({expr})"


def null(sql_type: str) -> str:
    """A typed NULL: a column the CRM has no source for."""
    if sql_type not in SQL_TYPES:
        raise ValueError(f"unknown SQL type {sql_type!r}")
    return f"NULL::{sql_type}"


# Set-based publications hash whole tenants; at the default 4MB a hashed NOT EXISTS or join
# spills and Postgres falls back to rescanning per row.
# Characters pasted into CRM email fields that are not part of the address: NBSP becomes a space
# (then trimmed like one); zero-width space/joiners, word joiner and BOM are dropped.
_EMAIL_JUNK = "chr(160) || chr(8203) || chr(8204) || chr(8205) || chr(8288) || chr(65279)"
_EMAIL_TRIM = "' ' || chr(9) || chr(10) || chr(13)"


def email_expr(expr: str) -> str:
    """An email as text, cleaned of invisible characters and trimmed; '' becomes NULL."""
    return f"NULLIF(btrim(translate({expr}, {_EMAIL_JUNK}, ' '), {_EMAIL_TRIM}), '')"


WORK_MEM = "256MB"


def set_work_mem(conn) -> None:
    """A work_mem that fits a tenant's hash tables, for this transaction only."""
    conn.exec_driver_sql(f"SET LOCAL work_mem = '{WORK_MEM}'")


def analyze_temp(conn, *tables: str) -> None:
    """Statistics on temp tables just filled: autovacuum never analyzes temp tables, and without
    statistics the planner picks nested loops over them."""
    for table in tables:
        conn.exec_driver_sql(f"ANALYZE pg_temp.{table}")
