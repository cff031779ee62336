"""Edge cases of the shared HTTP core, with `responses` stubs (one connector-level concern each)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
import responses

from cz_pipeline.core.http import ApiError, AuthError, HttpClient, RetryPolicy, parse_timestamp

BASE = "https://api.example.test/v1"


def client(**kw) -> tuple[HttpClient, list[float]]:
    slept: list[float] = []
    return HttpClient("close", BASE, policy=RetryPolicy(max_attempts=4, backoff_base=0.01), sleep=slept.append, **kw), slept


@responses.activate
def test_429_waits_for_the_close_ratelimit_reset_then_succeeds():
    responses.get(f"{BASE}/lead/", status=429, headers={"RateLimit": "limit=100, remaining=0, reset=7"})
    responses.get(f"{BASE}/lead/", json={"data": [], "has_more": False})
    http, slept = client()
    assert http.get_json("lead/") == {"data": [], "has_more": False}
    assert 7.0 in slept and http.throttled == 1


@responses.activate
def test_429_honours_retry_after_and_teamwork_epoch_reset():
    responses.get(f"{BASE}/a", status=429, headers={"Retry-After": "3"})
    responses.get(f"{BASE}/a", status=429, headers={"X-Rate-Limit-Reset": str(int(time.time()) + 5)})
    responses.get(f"{BASE}/a", json={})
    http, slept = client()
    http.get_json("a")
    assert slept[0] == 3.0 and 3.0 <= slept[1] <= 6.0


@responses.activate
def test_server_errors_are_retried_with_backoff_then_give_up_with_a_clear_error():
    for _ in range(4):
        responses.get(f"{BASE}/opportunity/", status=503, json={"error": "unavailable"})
    http, slept = client()
    with pytest.raises(ApiError, match=r"close: GET /v1/opportunity/ failed with HTTP 503"):
        http.get_json("opportunity/", params={"api_key": "should_not_leak"})
    assert len(slept) == 3 and http.calls == 4


@responses.activate
def test_401_stops_at_once_with_no_secret_in_the_message():
    responses.get(f"{BASE}/me/", status=401, json={"error": "Unauthorized"})
    http, slept = client()
    with pytest.raises(AuthError) as err:
        http.get_json("me/", params={"token": "tok_SECRET_1"})
    assert "credentials were refused" in str(err.value) and "tok_SECRET_1" not in str(err.value)
    assert http.calls == 1 and slept == []


@responses.activate
def test_no_requests_remaining_makes_the_client_pace_itself():
    responses.get(f"{BASE}/t", json={}, headers={"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "2"})
    responses.get(f"{BASE}/t", json={})
    http, slept = client()
    http.get_json("t")
    http.get_json("t")
    assert len(slept) == 1 and 1.5 < slept[0] <= 2.0


@pytest.mark.parametrize("raw, expected", [
    ("2013-02-06T20:53:01.954000+00:00", datetime(2013, 2, 6, 20, 53, 1, 954000, tzinfo=timezone.utc)),
    ("2021-01-01T00:00:00+00:00", datetime(2021, 1, 1, tzinfo=timezone.utc)),
    ("2019-01-15T12:48:23.395000", datetime(2019, 1, 15, 12, 48, 23, 395000, tzinfo=timezone.utc)),  # Close events
    ("2023-10-15T10:30:00+05:30", datetime(2023, 10, 15, 5, 0, tzinfo=timezone.utc)),  # Zoho local offset
    ("2024-01-15T10:30:00.000+0000", datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)),  # Salesforce
    ("2015-11-18T18:56:08Z", datetime(2015, 11, 18, 18, 56, 8, tzinfo=timezone.utc)),  # Teamwork
    ("", None), ("not a date", None),
])
def test_timestamps_in_every_vendor_format_become_utc(raw, expected):
    assert parse_timestamp(raw) == expected


@responses.activate
def test_the_close_ratelimit_header_is_read_whatever_the_order_of_its_keys():
    responses.get(f"{BASE}/lead/", status=429, headers={"RateLimit": "remaining=0, reset=4, limit=100"})
    responses.get(f"{BASE}/lead/", json={})
    http, slept = client()
    http.get_json("lead/")
    assert slept[0] == 4.0


@responses.activate
def test_html_page_and_truncated_body_with_status_200_are_retried_like_5xx():
    responses.get(f"{BASE}/lead/", body="<html><body>Bad gateway</body></html>", status=200,
                  content_type="text/html")
    responses.get(f"{BASE}/lead/", body='{"data": [{"id": "lead_1"', status=200, content_type="application/json")
    responses.get(f"{BASE}/lead/", json={"data": [{"id": "lead_1"}], "has_more": False})
    http, slept = client()
    assert http.get_json("lead/") == {"data": [{"id": "lead_1"}], "has_more": False}
    assert http.calls == 3 and len(slept) == 2


@responses.activate
def test_non_json_answers_after_every_retry_fail_naming_system_method_and_path():
    responses.get(f"{BASE}/lead/", body="not json at all", status=200, content_type="text/plain")
    http, _ = client()
    with pytest.raises(ApiError) as err:
        http.get_json("lead/", params={"api_key": "hidden"})
    message = str(err.value)
    assert message.startswith("close: GET /v1/lead/ failed with HTTP 200: the answer was not valid JSON after 4 attempts")
    assert "Expecting value" not in message and "hidden" not in message


@responses.activate
def test_deeply_nested_json_page_still_parses():
    deep = "[" * 1500 + "]" * 1500
    responses.get(f"{BASE}/lead/", body='{"data": [{"id": "a", "x": ' + deep + '}, {"id": "b"}]}', status=200,
                  content_type="application/json")
    http, _ = client()
    body = http.get_json("lead/")
    assert [r["id"] for r in body["data"]] == ["a", "b"]


@responses.activate
def test_credential_echoed_in_an_error_body_is_redacted():
    import requests

    class _Bearer:
        def apply(self, session: requests.Session, headers: dict[str, str]) -> None:
            headers["Authorization"] = "Bearer sk_live_SECRET_TOKEN_123"

        def refresh(self, response) -> bool:
            return False

    responses.get(f"{BASE}/me/", status=401, json={"error": "invalid token: Authorization=Bearer sk_live_SECRET_TOKEN_123"})
    http = HttpClient("zoho_crm", BASE, auth=_Bearer(), policy=RetryPolicy(max_attempts=2), sleep=lambda _: None)
    with pytest.raises(AuthError) as err:
        http.get_json("me/")
    assert "sk_live_SECRET_TOKEN_123" not in str(err.value) and "***" in str(err.value)


@responses.activate
def test_basic_api_key_echoed_in_a_400_body_is_redacted():
    import requests

    class _Basic:
        def apply(self, session: requests.Session, headers: dict[str, str]) -> None:
            session.auth = ("api_KEY_0123456789", "")

        def refresh(self, response) -> bool:
            return False

    responses.get(f"{BASE}/lead/", status=400, json={"error": "bad request for key api_KEY_0123456789"})
    http = HttpClient("close", BASE, auth=_Basic(), policy=RetryPolicy(max_attempts=2), sleep=lambda _: None)
    with pytest.raises(ApiError) as err:
        http.get_json("lead/")
    assert "api_KEY_0123456789" not in str(err.value)
