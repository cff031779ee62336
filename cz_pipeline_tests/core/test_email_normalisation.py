"""Emails are normalised for NBSP and zero-width characters as for ordinary spaces, by every
CRM's contact mapping (the SQL that fills cs.contacts) and by ticket matching."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from cz_pipeline.core.sql import email_expr
from cz_pipeline.sources.registry import SOURCES, systems

PAYLOADS = {"close": lambda e: {"emails": [{"email": e}]}, "zoho_crm": lambda e: {"Email": e},
            "salesforce": lambda e: {"Email": e}}
DIRTY = ["\u00a0ann@acme.example", "ann@acme.example\u200b", "\ufeffann@acme.example\u00a0\u00a0",
         " ann@acme.example\u2060 ", "ann\u200d@acme.example", "\tann@acme.example\r\n"]


def evaluate(engine, sql: str, payload: dict):
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT {sql} FROM (SELECT CAST(:p AS jsonb) AS p) x"),
                            {"p": json.dumps(payload)}).scalar()


def test_every_crm_mapping_is_covered():
    assert set(PAYLOADS) == set(systems("crm"))


@pytest.mark.parametrize("system", sorted(PAYLOADS))
@pytest.mark.parametrize("dirty", DIRTY)
def test_a_contact_email_with_invisible_characters_is_the_plain_address(engine, system, dirty):
    expr = SOURCES[system].canonical()["contacts"]["email"]
    assert evaluate(engine, expr, PAYLOADS[system](dirty)) == "ann@acme.example"


@pytest.mark.parametrize("system", sorted(PAYLOADS))
def test_an_email_of_only_invisible_characters_is_no_email(engine, system):
    expr = SOURCES[system].canonical()["contacts"]["email"]
    assert evaluate(engine, expr, PAYLOADS[system]("\u00a0\u200b ")) is None


def test_ticket_emails_are_cleaned_the_same_way(engine):
    assert evaluate(engine, email_expr("p->>'customer_email'"), {"customer_email": "\u00a0Ann@Acme.example\u200b"}) \
        == "Ann@Acme.example"  # matching lower-cases both sides
