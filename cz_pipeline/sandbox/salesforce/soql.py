"""A safe compiler for the SOQL subset the fake answers: tokens -> a small AST -> Python closures
(never `eval`). Grammar:

    SELECT path (, path)* FROM Object [WHERE cond] [ORDER BY path [ASC|DESC] [NULLS FIRST|LAST], ...]
    [LIMIT n] [OFFSET n]
    cond := and (OR and)* ; and := atom (AND atom)* ; atom := ( cond ) | NOT atom | comparison
    comparison := path (= | != | <> | < | <= | > | >=) literal | path [NOT] IN (literal, ...) | path LIKE 'x%'
    literal := 'text' | number | true | false | null | 2024-01-01T00:00:00Z | 2024-01-01 | TODAY |
               YESTERDAY | LAST_N_DAYS:n

Paths are fields or relationship paths (`Account.Name`, `Owner.Email`). Anything else raises
`SoqlError('MALFORMED_QUERY', …)`; a path the object lacks, or a literal of the wrong type for its
field (a quoted datetime), raises `SoqlError('INVALID_FIELD', …)`, as Salesforce answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\dT])
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?::\d+)?)
""", re.VERBOSE)
KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC",
            "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "TRUE", "FALSE", "NULL"}
NUMERIC = {"double", "currency", "percent", "int", "integer", "long"}
TEXTUAL = {"id", "string", "picklist", "reference", "email", "url", "textarea", "phone", "multipicklist"}


class SoqlError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Query:
    obj: str
    fields: list[str]
    where: Callable[[dict[str, Any]], bool] | None = None
    order: list[tuple[str, bool, bool]] = field(default_factory=list)  # (path, descending, nulls last)
    limit: int | None = None
    offset: int = 0


def tokenize(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{text[pos:pos + 20]}'")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind == "ws":
            continue
        value = m.group(kind)
        if kind == "ident" and value.upper() in KEYWORDS:
            kind, value = "kw", value.upper()
        out.append((kind, value))
    return out


class Compiler:
    """`resolve(obj, path)` returns the describe type of a path (raising INVALID_FIELD when the
    object lacks it); `getter(obj, path)` returns a function record -> value."""

    def __init__(self, objects: set[str], resolve: Callable[[str, str], str],
                 getter: Callable[[str, str], Callable[[dict[str, Any]], Any]], today: Callable[[], date]):
        self.objects, self.resolve, self.getter, self.today = objects, resolve, getter, today

    def compile(self, text: str) -> Query:
        self.tokens, self.pos = tokenize(text), 0
        self._expect("kw", "SELECT")
        paths = [self._ident()]
        while self._accept("punct", ","):
            paths.append(self._ident())
        self._expect("kw", "FROM")
        obj = self._ident()
        if obj not in self.objects:
            raise SoqlError("INVALID_TYPE", f"sObject type '{obj}' is not supported.")
        self.obj = obj
        for path in paths:
            self.resolve(obj, path)
        query = Query(obj, list(dict.fromkeys(paths)))
        if self._accept("kw", "WHERE"):
            query.where = self._or()
        if self._accept("kw", "ORDER"):
            self._expect("kw", "BY")
            while True:
                path = self._ident()
                self.resolve(obj, path)
                desc = self._accept("kw", "DESC") is not None
                if not desc:
                    self._accept("kw", "ASC")
                nulls_last = desc  # Salesforce's default: nulls first ascending, last descending
                if self._accept("kw", "NULLS"):
                    nulls_last = self._accept("kw", "LAST") is not None
                    if not nulls_last:
                        self._expect("kw", "FIRST")
                query.order.append((path, desc, nulls_last))
                if not self._accept("punct", ","):
                    break
        if self._accept("kw", "LIMIT"):
            query.limit = int(self._expect("number"))
        if self._accept("kw", "OFFSET"):
            query.offset = int(self._expect("number"))
        if self.pos != len(self.tokens):
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{self.tokens[self.pos][1]}'")
        return query

    # ---- token helpers ---------------------------------------------------------------------
    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _accept(self, kind: str, value: str | None = None) -> str | None:
        tok = self._peek()
        if tok and tok[0] == kind and (value is None or tok[1] == value):
            self.pos += 1
            return tok[1]
        return None

    def _expect(self, kind: str, value: str | None = None) -> str:
        got = self._accept(kind, value)
        if got is None:
            tok = self._peek()
            raise SoqlError("MALFORMED_QUERY", f"expecting {value or kind}, unexpected token: "
                                               f"'{tok[1] if tok else '<end of query>'}'")
        return got

    def _ident(self) -> str:
        name = self._expect("ident")
        if ":" in name:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{name}'")
        return name

    # ---- conditions --------------------------------------------------------------------------
    def _or(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._and()]
        while self._accept("kw", "OR"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def _and(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._atom()]
        while self._accept("kw", "AND"):
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def _atom(self) -> Callable[[dict[str, Any]], bool]:
        if self._accept("punct", "("):
            inner = self._or()
            self._expect("punct", ")")
            return inner
        if self._accept("kw", "NOT"):
            inner = self._atom()
            return lambda r: not inner(r)
        path = self._ident()
        ftype = self.resolve(self.obj, path)
        get = self.getter(self.obj, path)
        negate = bool(self._accept("kw", "NOT"))
        if self._accept("kw", "IN"):
            self._expect("punct", "(")
            values = [self._literal(path, ftype)]
            while self._accept("punct", ","):
                values.append(self._literal(path, ftype))
            self._expect("punct", ")")
            keys = {_key(v) for v in values}
            return lambda r: (_key(get(r)) in keys) != negate
        if negate:
            raise SoqlError("MALFORMED_QUERY", "NOT must be followed by IN here")
        if self._accept("kw", "LIKE"):
            pattern = self._literal(path, "string")
            if not isinstance(pattern, str):
                raise SoqlError("MALFORMED_QUERY", "LIKE needs a quoted string")
            rx = re.compile("^" + "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern) + "$",
                            re.IGNORECASE | re.DOTALL)
            return lambda r: isinstance(get(r), str) and rx.match(get(r)) is not None
        op = self._expect("op")
        value = self._literal(path, ftype)
        return _comparison(get, op, value)

    def _literal(self, path: str, ftype: str) -> Any:
        tok = self._peek()
        if tok is None:
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query")
        kind, text = tok
        self.pos += 1
        if kind == "kw" and text == "NULL":
            return None
        wanted = {"datetime": "dateTime", "date": "date", "boolean": "boolean"}.get(ftype, "number" if ftype in NUMERIC else None)
        if kind == "string":
            if wanted:
                raise SoqlError("INVALID_FIELD", f"value of filter criterion for field '{path}' must be of type "
                                                 f"{wanted} and should not be enclosed in quotes")
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if ftype == "boolean" and kind == "kw" and text in ("TRUE", "FALSE"):
            return text == "TRUE"
        if ftype in NUMERIC and kind == "number":
            return float(text)
        if ftype == "datetime" and kind == "datetime":
            return _parse_datetime(text)
        if ftype == "date" and kind == "date":
            return date.fromisoformat(text)
        if ftype in ("date", "datetime") and kind == "ident":
            return self._date_literal(text)
        if ftype in TEXTUAL and kind == "number":
            raise SoqlError("INVALID_FIELD", f"value of filter criterion for field '{path}' must be a quoted string")
        raise SoqlError("INVALID_FIELD" if kind in ("datetime", "date", "number", "kw") else "MALFORMED_QUERY",
                        f"value of filter criterion for field '{path}' must be of type {wanted or ftype}: '{text}'")

    def _date_literal(self, text: str) -> tuple[date, date]:
        today = self.today()
        name, _, n = text.upper().partition(":")
        if name == "TODAY" and not n:
            return today, today
        if name == "YESTERDAY" and not n:
            return today - timedelta(days=1), today - timedelta(days=1)
        if name == "LAST_N_DAYS" and n:
            return today - timedelta(days=int(n)), today
        raise SoqlError("MALFORMED_QUERY", f"unknown date literal: '{text}'")


def _parse_datetime(text: str) -> datetime:
    text = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", text):
        text = f"{text[:-2]}:{text[-2:]}"
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def _key(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _comparison(get: Callable[[dict[str, Any]], Any], op: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    if value is None:
        if op not in ("=", "!=", "<>"):
            raise SoqlError("MALFORMED_QUERY", "null can only be compared with = or !=")
        return (lambda r: get(r) is None) if op == "=" else (lambda r: get(r) is not None)
    if isinstance(value, tuple):  # a date literal: a range of days
        low, high = value

        def day(r: dict[str, Any]) -> date | None:
            v = get(r)
            return v.date() if isinstance(v, datetime) else v

        tests = {"=": lambda d: low <= d <= high, "!=": lambda d: not low <= d <= high, "<": lambda d: d < low,
                 "<=": lambda d: d <= high, ">": lambda d: d > high, ">=": lambda d: d >= low}
        tests["<>"] = tests["!="]
        test = tests[op]
        return lambda r: day(r) is not None and test(day(r))
    key = _key(value)
    ops: dict[str, Callable[[Any], bool]] = {
        "=": lambda v: v == key, "!=": lambda v: v != key, "<>": lambda v: v != key, "<": lambda v: v < key,
        "<=": lambda v: v <= key, ">": lambda v: v > key, ">=": lambda v: v >= key}
    test = ops[op]
    if op in ("!=", "<>"):
        return lambda r: test(_key(get(r)))

    def compare(r: dict[str, Any]) -> bool:
        v = _key(get(r))
        return v is not None and test(v)
    return compare
