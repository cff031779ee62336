"""Teamwork Desk fake: the Mongo-style `filter` parameter compiler ($eq, $ne, $gt, $in, $and,
$or, ...), compiled once per request so a bad filter is a 400 even on no rows.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Iterator

from .common import parse_ts


# ---- Mongo-style filter: compiled once per request, so a bad filter is a 400 even on no rows ----
Getter = Callable[[str], list[Any]]  # field name -> its values (a list: `contacts.value` is multi-valued)


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[[list[Any], Any], bool]:
    return lambda vals, arg: arg is not None and any(v is not None and op(v, arg) for v in vals)


OPS: dict[str, Callable[[list[Any], Any], bool]] = {
    "$eq": lambda vals, arg: arg in vals, "$ne": lambda vals, arg: arg not in vals,
    "$in": lambda vals, arg: any(v in arg for v in vals), "$nin": lambda vals, arg: not any(v in arg for v in vals),
    "$lt": _cmp(operator.lt), "$lte": _cmp(operator.le), "$gt": _cmp(operator.gt), "$gte": _cmp(operator.ge),
}


def _coerce(kind: str, value: Any, field: str) -> Any:
    if value is None:
        return None
    try:
        return parse_ts(str(value)) if kind == "ts" else int(value) if kind == "int" else str(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid value {value!r} for filter field {field!r}") from None


def compile_filter(flt: Any, kinds: dict[str, str]) -> Callable[[Getter], bool]:
    if not isinstance(flt, dict):
        raise ValueError("filter must be a JSON object")
    preds: list[Callable[[Getter], bool]] = []
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise ValueError(f"{key} expects a non-empty list of filters")
            subs = [compile_filter(c, kinds) for c in cond]
            combine = all if key == "$and" else any
            preds.append(lambda get, subs=subs, combine=combine: combine(p(get) for p in subs))
        elif key in kinds:
            tests = []
            for op, raw in (cond if isinstance(cond, dict) else {"$eq": cond}).items():
                if op not in OPS:
                    raise ValueError(f"unknown operator {op!r} on {key!r}")
                if op in ("$in", "$nin"):
                    if not isinstance(raw, list):
                        raise ValueError(f"{op} on {key!r} expects a list")
                    tests.append((OPS[op], [_coerce(kinds[key], v, key) for v in raw]))
                else:
                    tests.append((OPS[op], _coerce(kinds[key], raw, key)))
            preds.append(lambda get, key=key, tests=tests: all(fn(get(key), arg) for fn, arg in tests))
        else:
            raise ValueError(f"{key!r} is not a filterable field")
    return lambda get: all(p(get) for p in preds)


def filter_fields(flt: Any) -> Iterator[str]:
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            for sub in cond:
                yield from filter_fields(sub)
        else:
            yield key
