"""Notifications to a tenant's admins, over real SMTP (the aiosmtpd sink) from real sync runs:
refused credentials are announced once per incident and once when they work again; a failure
streak of FAILURE_STREAK syncs is announced once; every message is recorded."""

from __future__ import annotations

import pytest

from cz_pipeline.notify import FAILURE_STREAK, notify
from cz_pipeline.notify.mail import Mailer, SmtpConfigError
from cz_pipeline.sandbox.mail import MailSink
from cz_pipeline_tests.conftest import CLOSE_KEY, CLOSE_KEY_ENV, SyncRunner, close_crm_config, rows

ADMINS = ["cs-lead@acme.example", "ops@acme.example"]


@pytest.fixture
def mail_sink(monkeypatch):
    sink = MailSink()
    monkeypatch.setenv("CZ_SMTP_URL", sink.url)
    monkeypatch.delenv("CZ_SMTP_PASSWORD", raising=False)
    yield sink
    sink.stop()


def notifications(engine, tenant_id):
    return rows(engine, "SELECT kind, recipients, subject, body, sent_at, error FROM sync.notifications "
                        "WHERE tenant_id = :t ORDER BY id", t=tenant_id)


def test_refused_credentials_and_a_failure_streak_are_mailed_once_and_their_end_once(
        close_server, write_tenants, warehouse_url, engine, tenant_id, mail_sink, monkeypatch):
    path = write_tenants({tenant_id: {"notify": ADMINS, "crm": close_crm_config(close_server.url)}})
    monkeypatch.setenv(CLOSE_KEY_ENV, "api_revoked_key")
    runner = SyncRunner(path, warehouse_url)
    for n in range(1, FAILURE_STREAK + 2):
        assert not runner.run("routine_sync", tenant_id, raise_on_error=False).success
        kinds = [r["kind"] for r in notifications(engine, tenant_id)]
        if n < FAILURE_STREAK:
            assert kinds == ["credentials_refused"], n
    assert kinds == ["credentials_refused", "sync_failing"]  # the 4th failure adds nothing

    sent = notifications(engine, tenant_id)
    assert all(r["sent_at"] is not None and r["error"] is None and r["recipients"] == ADMINS for r in sent)
    assert [m["Subject"] for _, m in mail_sink.messages] == [r["subject"] for r in sent]
    assert all(sorted(to) == ADMINS for to, _ in mail_sink.messages)
    assert "close" in sent[0]["subject"] and tenant_id in sent[0]["body"]
    assert all("api_revoked_key" not in m.get_content() for _, m in mail_sink.messages)

    # the key is fixed: the credentials end at once, the failure streak with the next sync
    monkeypatch.setenv(CLOSE_KEY_ENV, CLOSE_KEY)
    assert runner.run("routine_sync", tenant_id, raise_on_error=False).success
    assert [r["kind"] for r in notifications(engine, tenant_id)][2:] == ["credentials_refused_resolved"]
    runner.run("routine_sync", tenant_id)
    runner.run("routine_sync", tenant_id)
    assert [r["kind"] for r in notifications(engine, tenant_id)][2:] == ["credentials_refused_resolved",
                                                                          "sync_failing_resolved"]
    assert len(mail_sink.messages) == 4


def test_without_smtp_a_message_is_recorded_with_the_reason_it_was_not_sent(engine, tenant_id, monkeypatch):
    monkeypatch.delenv("CZ_SMTP_URL", raising=False)
    notify(engine, tenant_id, ADMINS, "test", "subject", "body")
    (row,) = notifications(engine, tenant_id)
    assert row["sent_at"] is None and "CZ_SMTP_URL" in row["error"]


def test_an_unreachable_smtp_server_is_recorded_never_raised(engine, tenant_id, monkeypatch):
    sink = MailSink()
    url = sink.url
    sink.stop()  # nothing listens there now
    monkeypatch.setenv("CZ_SMTP_URL", url)
    notify(engine, tenant_id, ADMINS, "test", "subject", "body")
    (row,) = notifications(engine, tenant_id)
    assert row["sent_at"] is None and row["error"]


def test_the_smtp_password_comes_from_its_own_variable_and_never_shows(monkeypatch):
    monkeypatch.setenv("CZ_SMTP_URL", "smtp://mailer@smtp.acme.example:587")
    monkeypatch.setenv("CZ_SMTP_PASSWORD", "hunter2-secret")
    mailer = Mailer.from_env()
    assert (mailer.host, mailer.port, mailer.username, mailer.password) == ("smtp.acme.example", 587, "mailer", "hunter2-secret")
    assert "hunter2" not in repr(mailer)
    monkeypatch.setenv("CZ_SMTP_URL", "smtp://mailer:inline@smtp.acme.example")
    with pytest.raises(SmtpConfigError, match="CZ_SMTP_PASSWORD"):
        Mailer.from_env()


def test_tenant_notify_recipients_are_validated(write_tenants):
    from cz_pipeline.config.tenants import ConfigError, parse_tenants

    base = {"crm": close_crm_config("http://127.0.0.1:1")}
    assert parse_tenants({"tenants": {"acme": {**base, "notify": ADMINS}}})["acme"].notify == tuple(ADMINS)
    with pytest.raises(ConfigError, match=r"tenant 'acme': key 'notify\[1\]': not an email address"):
        parse_tenants({"tenants": {"acme": {**base, "notify": ["ok@acme.example", "not-an-address"]}}})
    with pytest.raises(ConfigError, match="bad tenant id"):
        parse_tenants({"tenants": {"acme\n": base}})
