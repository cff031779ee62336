"""A generic next-URL paginator: fetch the first page, then follow the URL each page names until
the server says it is done. Bounded: a repeated next URL fails instead of looping."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from cz_pipeline.core.http import ApiError


class NextUrlPaginator:
    """`fetch(url_or_None)` returns a page body; `items(body)` its rows; `next_url(body)` the URL
    of the following page or None when done. The page size is whatever the server chose."""

    def __init__(self, fetch: Callable[[str | None], dict[str, Any]], *,
                 items: Callable[[dict[str, Any]], list[Any]], next_url: Callable[[dict[str, Any]], str | None],
                 system: str):
        self.fetch, self.items, self.next_url, self.system = fetch, items, next_url, system

    def pages(self) -> Iterator[list[Any]]:
        seen: set[str] = set()
        url: str | None = None
        while True:
            body = self.fetch(url)
            rows = self.items(body)
            if rows:
                yield rows
            url = self.next_url(body)
            if not url:
                return
            if url in seen:
                raise ApiError(self.system, "GET", url, None, "the next-page URL repeats an earlier one: "
                                                               "the walk would never end")
            seen.add(url)
