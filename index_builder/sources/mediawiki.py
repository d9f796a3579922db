"""A Wikipedia-API client that can talk to any MediaWiki endpoint and retries our way.

`wikipediaapi.Wikipedia` builds its endpoint in `_build_url(language)` (always
https://{lang}.wikipedia.org/w/api.php) and has no constructor argument for another base
URL, so `MediaWikiClient` overrides that one method; the test suite points it at a local
stub server, and a mirror or a private wiki works the same way.

Retries: the library wraps every request in its own tenacity loop (`max_retries`, default
3). We pass `max_retries=0`, which turns that loop into a single attempt, and retry in
`_get` instead, so there is exactly one policy: `RetryPolicy`. It honours `Retry-After` on
HTTP 429 (seconds or an HTTP date), backs off exponentially with a cap on timeouts,
connection errors and 5xx, and after the last attempt raises `WikipediaFetchError` naming
the request. Requests are strictly serial (one client, no threads), as Wikimedia asks.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import wikipediaapi

from onegen.errors import OneGenError

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = (
    "OneGenExplorer-index-builder/0.1 "
    "(https://github.com/onegen-explorer; contact via repository issues)"
)
WIKIPEDIA_API_URL = "https://{lang}.wikipedia.org/w/api.php"


class WikipediaFetchError(OneGenError, RuntimeError):
    """A request failed for good: retries exhausted, a 4xx answer, or an API error body."""


@dataclass
class RetryPolicy:
    """How long to keep trying one API request.

    `max_attempts` counts every try, the first included. Timeouts, connection errors and
    5xx wait `base_delay * 2**(n-1)` seconds, capped at `max_delay`. A 429 waits what its
    Retry-After says (or the backoff when absent); a Retry-After above `max_retry_after`
    fails at once rather than hanging the build for hours. `sleep` is injectable for tests.
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 600.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1))


def retry_after_seconds(value: str | None, now: datetime | None = None) -> int | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0, math.ceil((when - now).total_seconds()))


def describe_request(params: dict[str, Any]) -> str:
    """A short human description of an API call for log lines and errors."""
    keys = ("prop", "list", "titles", "cmtitle", "plcontinue", "cmcontinue")
    return " ".join(f"{k}={params[k]}" for k in keys if k in params) or str(params)


class MediaWikiClient(wikipediaapi.Wikipedia):
    """`wikipediaapi.Wikipedia` with a configurable endpoint and a single retry policy.

    `api_url` may contain `{lang}`, replaced by the page language; `requests_sent` counts HTTP attempts (retries
    included) for build statistics.
    """

    def __init__(
        self,
        *,
        language: str,
        user_agent: str = DEFAULT_USER_AGENT,
        api_url: str = WIKIPEDIA_API_URL,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        # max_retries=0: the library's tenacity loop makes one attempt; `_get` below retries.
        super().__init__(user_agent=user_agent, language=language, max_retries=0, timeout=timeout)
        self.api_url = api_url
        self.retry = retry or RetryPolicy()
        self.requests_sent = 0

    def _build_url(self, language: str) -> str:  # type: ignore[override]
        return self.api_url.format(lang=language)

    def _process_response(self, r: Any, url: str) -> dict[str, Any]:
        if r.status_code == 429:
            # The library only reads integer Retry-After values; servers may send a date.
            raise wikipediaapi.WikiRateLimitError(url, retry_after_seconds(r.headers.get("Retry-After")))
        return super()._process_response(r, url)

    def _get(self, language: str, params: dict[str, Any]) -> dict[str, Any]:
        what = describe_request(params)
        policy = self.retry
        for attempt in range(1, policy.max_attempts + 1):
            self.requests_sent += 1
            try:
                raw = super()._get(language, params)
            except wikipediaapi.WikiRateLimitError as e:
                delay = float(e.retry_after) if e.retry_after is not None else policy.backoff(attempt)
                if delay > policy.max_retry_after:
                    raise WikipediaFetchError(
                        f"rate limited on {what}: server asks to wait {delay:.0f} s, more than "
                        f"max_retry_after={policy.max_retry_after:.0f} s; rerun later "
                        f"(fetched pages are cached)") from e
                reason = f"HTTP 429, Retry-After {e.retry_after}"
                error: Exception = e
            except (wikipediaapi.WikiHttpTimeoutError, wikipediaapi.WikiConnectionError) as e:
                delay, reason, error = policy.backoff(attempt), type(e).__name__, e
            except wikipediaapi.WikiHttpError as e:
                if e.status_code < 500:
                    raise WikipediaFetchError(f"HTTP {e.status_code} on {what} at {e.url}") from e
                delay, reason, error = policy.backoff(attempt), f"HTTP {e.status_code}", e
            except wikipediaapi.WikiInvalidJsonError as e:
                raise WikipediaFetchError(f"answer to {what} is not JSON: is {self.api_url!r} "
                                          f"a MediaWiki API endpoint?") from e
            else:
                if "error" in raw:
                    err = raw["error"]
                    raise WikipediaFetchError(f"API error on {what}: {err.get('code')}: {err.get('info')}")
                return raw
            if attempt == policy.max_attempts:
                raise WikipediaFetchError(
                    f"giving up on {what} after {attempt} attempts (last: {reason}); "
                    f"rerun later: fetched pages are cached") from error
            log.warning("%s on %s; retry %d/%d in %.1f s", reason, what, attempt,
                        policy.max_attempts - 1, delay)
            policy.sleep(delay)
        raise AssertionError("unreachable")

    def _build_categories(self, extract: Any, page: Any) -> dict[str, Any]:
        # Keep pageprops when the categories call asked for them (disambiguation marker);
        # the library's builder reads only the category list.
        page._attributes["pageprops"] = extract.get("pageprops", {})
        return super()._build_categories(extract, page)

    # The three calls the sources need, in terms of the library's public methods.

    def categories_and_props(self, page: Any) -> tuple[list[str], dict[str, Any]]:
        """Category titles and page props (only the disambiguation marker) in one request."""
        cats = self.categories(page, prop="categories|pageprops", ppprop="disambiguation")
        return list(cats), dict(page._attributes.get("pageprops") or {})

    def article_links(self, page: Any) -> list[str]:
        """Titles of main-namespace pages `page` links to (all continuation pages)."""
        return [t for t, p in self.links(page, plnamespace=0).items() if p.ns == 0]

    def category_members(self, category_title: str) -> list[tuple[str, int]]:
        """(title, namespace) of every member of a category (all continuation pages)."""
        cat = self.page(category_title, ns=wikipediaapi.Namespace.CATEGORY)
        return [(t, p.ns) for t, p in self.categorymembers(cat).items()]
