"""SOQL text the connector sends: datetime literals (unquoted, UTC, `Z`), quoted strings, and
SELECT lists cut into chunks so that every request URL stays under a length limit (Salesforce
refuses over-long URIs; the exact limit is not published, so it is configurable)."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import quote_plus

DEFAULT_MAX_URL_LENGTH = 16_384
KEY_FIELDS = ("Id", "SystemModstamp")
_ID_IN_COST = len(quote_plus("'001000000000000AAA',"))  # one id in an `Id IN (...)` list, encoded


def datetime_literal(moment: datetime) -> str:
    """`2024-01-01T00:00:00Z`: unquoted in SOQL, floored to the second (only widens a `>=` window)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def string_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def encoded_length(soql: str) -> int:
    return len(quote_plus(soql))


def select(fields: list[str], obj: str, where: str | None = None, order_by: str | None = None) -> str:
    text = f"SELECT {', '.join(fields)} FROM {obj}"
    if where:
        text += f" WHERE {where}"
    if order_by:
        text += f" ORDER BY {order_by}"
    return text


def chunk_fields(fields: list[str], obj: str, budget: int, keys: tuple[str, ...] = KEY_FIELDS) -> list[list[str]]:
    """Cut `fields` into SELECT lists that each start with `keys` and whose encoded
    `SELECT … FROM obj` text fits in `budget` characters."""
    rest = [f for f in dict.fromkeys(fields) if f not in keys]
    chunks: list[list[str]] = []
    current = list(keys)
    for name in rest:
        if len(current) > len(keys) and encoded_length(select([*current, name], obj)) > budget:
            chunks.append(current)
            current = list(keys)
        current.append(name)
    chunks.append(current)
    return chunks


def ids_per_query(remaining: int) -> int:
    """How many ids fit in an `Id IN (...)` list with `remaining` encoded characters left."""
    return max(1, remaining // _ID_IN_COST)
