"""Casts from payload text to typed columns never raise, on every supported PostgreSQL version:
the `sync.try_*` functions agree with PostgreSQL's own input parsers (pg_input_is_valid, where
the server has it) on valid and invalid values alike."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cz_pipeline.model.mapping import typed

CASES = {
    "date": ["2024-02-29", "2023-02-29", "2024-04-31", "2024-12-31", "0001-01-01", "0000-01-01", "2024-13-01",
             "2024-1-01", "20240101", "", " ", "not a date", "9999-12-31"],
    "timestamptz": ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123456+00:00", "2024-05-01T10:00:00.000+0000",
                    "2024-05-01T10:00:00+05:30", "2024-05-01 10:00", "2024-05-01", "0001-01-01T00:00:00+05:00",
                    "9999-12-31T23:59:59-05:00", "2024-02-30T00:00:00Z", "2024-05-01T24:00:00Z",
                    "2024-05-01T10:61:00Z", "yesterday", "", "2024-05-01T10:00:00+99:00"],
    "numeric": ["1", "-1.5", "+2.", ".5", "1e3", "1.5E-2", " 42 ", "", "1,000", "abc", "1e", "--1", "NaN"],
    "boolean": ["true", "FALSE", "t", "f", "yes", "no", "1", "0", " on ", "off", "maybe", "", "2"],
}


def _server_version(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SHOW server_version_num")).scalar())


@pytest.mark.parametrize("sql_type", sorted(CASES))
def test_safe_cast_never_raises_and_matches_postgres_parser(engine, sql_type):
    values = CASES[sql_type]
    with engine.connect() as conn:
        got = conn.execute(sa.text(f"SELECT v, {typed('v', sql_type)}::text AS c FROM unnest(CAST(:vs AS text[])) v"),
                           {"vs": values}).all()
        assert len(got) == len(values)
        if _server_version(engine) < 160000:
            return  # no reference parser to compare with; not raising is the point
        for value, cast in got:
            valid = conn.execute(sa.text("SELECT pg_input_is_valid(:v, :t)"), {"v": value, "t": sql_type}).scalar()
            # Our guards may be stricter than Postgres (e.g. 'NaN', 'yesterday', a missing
            # zero in '+2.'), never looser: what we cast, Postgres parses the same way.
            if cast is not None:
                assert valid, (sql_type, value)
                assert cast == conn.execute(sa.text(f"SELECT CAST(:v AS {sql_type})::text"), {"v": value}).scalar()


def test_is_complete_that_is_not_a_boolean_is_treated_as_open(engine):
    from cz_pipeline.sources.close.mapping import CLOSE

    expr = CLOSE["tasks"]["is_complete"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {expr} FROM (VALUES (CAST(:a AS jsonb)), (CAST(:b AS jsonb))) v(p)"),
                            {"a": '{"is_complete": "maybe"}', "b": '{"is_complete": true}'}).scalars().all()
    assert rows == [False, True]


def test_unknown_cast_target_is_refused():
    with pytest.raises(ValueError):
        typed("x", "interval")
