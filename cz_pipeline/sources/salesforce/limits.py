"""The org's daily API budget: `Sforce-Limit-Info: api-usage=N/M` is read from every answer; a
sync stops cleanly (`ApiBudgetExhausted`) before `max_share` of the allowance is used, and a 403
`REQUEST_LIMIT_EXCEEDED` stops it at once (`DailyApiLimitReached`), never retried."""

from __future__ import annotations

import re
from dataclasses import dataclass

import requests

from cz_pipeline.core.http import AllowanceExhausted

SYSTEM = "salesforce"
DEFAULT_MAX_SHARE = 0.8
_USAGE = re.compile(r"api-usage\s*=\s*(\d+)\s*/\s*(\d+)")


class DailyApiLimitReached(AllowanceExhausted):
    """Salesforce answered 403 REQUEST_LIMIT_EXCEEDED: the org's daily API request limit is reached."""


class ApiBudgetExhausted(AllowanceExhausted):
    """The run stopped itself before using more than its configured share of the daily allowance."""


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    m = _USAGE.search(header or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class ApiBudget:
    max_share: float = DEFAULT_MAX_SHARE
    used: int | None = None  # the org's usage as last reported
    allowance: int | None = None
    first_used: int | None = None  # usage at the start of the run

    def observe(self, response: requests.Response) -> None:
        parsed = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if parsed:
            self.used, self.allowance = parsed
            if self.first_used is None:
                self.first_used = self.used

    @property
    def used_by_run(self) -> int | None:
        return None if self.used is None or self.first_used is None else self.used - self.first_used

    def as_metadata(self) -> dict[str, int | float | None]:
        return {"api_usage": self.used, "api_allowance": self.allowance, "api_used_by_run": self.used_by_run,
                "api_max_share": self.max_share}

    def check(self, method: str, url: str) -> None:
        """Before a call: refuse it when the org's usage has reached the share we may use."""
        if self.used is None or not self.allowance:
            return
        if self.used >= self.max_share * self.allowance:
            raise ApiBudgetExhausted(SYSTEM, method, url, None,
                                     f"stopped before the next call: the org has used {self.used} of its "
                                     f"{self.allowance} daily API requests, at or above the configured share of "
                                     f"{self.max_share:.0%}; the sync resumes when usage falls")
