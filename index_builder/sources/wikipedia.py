"""Wikipedia pages as Documents: from a list of titles, a category, or a link crawl.

Fetching goes through the Wikipedia-API package (`MediaWikiClient` in `mediawiki.py`):
one `prop=extracts` call per page (plain text with section markers, redirects followed),
one `prop=categories|pageprops` call (disambiguation detection), and for crawls one
paginated `prop=links` call; categories are listed with `list=categorymembers`.

Every fetched page and category listing is cached on disk as one JSON file keyed by a hash
of language and title, written atomically, so a rerun fetches nothing it already has. A
crawl also keeps a state file (frontier, seen titles, accepted pages); an interrupted crawl
resumes from it without refetching: iterating it again yields the crawl's documents from
the start, already-fetched pages coming from the cache, and then carries on.

Documents: `mode="pages"` gives one per page, id = str(pageid), text = summary or full text
(`text=`); `mode="paragraphs"` gives one per paragraph with its sentences split (multi-hop
indexes encode one vector per sentence), id = f"{pageid}#{n}". extra = {url, lang, pageid}.
Missing pages are logged and skipped; redirects resolve to the target (its title and id);
disambiguation pages are skipped unless `keep_disambiguation=True`. `stats` holds the counts.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from onegen.documents import Document

from .common import paragraph_documents, split_paragraphs
from .json_store import JsonCache, cache_key, read_json, write_json
from .mediawiki import DEFAULT_USER_AGENT, WIKIPEDIA_API_URL, MediaWikiClient, RetryPolicy

log = logging.getLogger(__name__)

WIKIPEDIA_PAGE_URL = "https://{lang}.wikipedia.org/wiki/{title}"
# English Wikipedia's tracking categories; other languages name theirs differently, which
# is why the language-independent `disambiguation` page prop is checked as well.
DISAMBIGUATION_CATEGORIES = frozenset({
    "Disambiguation pages", "All disambiguation pages", "All article disambiguation pages",
})
TEXT_CHOICES = ("summary", "full")
MODES = ("pages", "paragraphs")
CACHE_VERSION = 1


def normalize_title(title: str) -> str:
    """MediaWiki's title normalisation for cache keys: underscores to spaces, collapsed
    whitespace, first letter upper-cased."""
    t = " ".join(title.replace("_", " ").split())
    return t[:1].upper() + t[1:]


def category_title(name: str) -> str:
    """'Physics' or 'Category:Physics' -> 'Category:Physics' (the canonical prefix works in
    every language edition)."""
    name = normalize_title(name)
    return name if name.lower().startswith("category:") else f"Category:{name}"


@dataclass
class PageRecord:
    """What the cache stores for one page (also for a missing one, so it is not asked again)."""

    lang: str
    fetched_as: str
    missing: bool = False
    title: str = ""
    pageid: int = 0
    url: str = ""
    summary: str = ""
    text: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)  # ("" for the lead, body)
    categories: list[str] = field(default_factory=list)
    disambiguation: bool = False
    links: list[str] | None = None  # fetched only for crawls

    def to_json(self) -> dict[str, Any]:
        return {"version": CACHE_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PageRecord | None:
        if d.get("version") != CACHE_VERSION:
            return None
        d = {k: v for k, v in d.items() if k != "version"}
        d["sections"] = [(s, t) for s, t in d.get("sections", [])]
        return cls(**d)


@dataclass
class WikipediaOptions:
    """Settings shared by the three Wikipedia sources."""

    language: str = "en"
    text: str = "summary"  # "summary" (lead section) or "full"
    mode: str = "pages"  # "pages" or "paragraphs"
    keep_disambiguation: bool = False
    disambiguation_categories: frozenset[str] = DISAMBIGUATION_CATEGORIES
    cache_dir: str | Path = ".cache/wikipedia"
    user_agent: str = DEFAULT_USER_AGENT
    api_url: str = WIKIPEDIA_API_URL
    page_url: str = WIKIPEDIA_PAGE_URL
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.text not in TEXT_CHOICES:
            raise ValueError(f"text must be one of {TEXT_CHOICES}, got {self.text!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.language.strip():
            raise ValueError("language must not be empty")


@dataclass
class WikipediaStats:
    requests: int = 0  # HTTP attempts, retries included
    pages_fetched: int = 0  # pages asked from the API (cache misses)
    cache_hits: int = 0
    pages: int = 0  # pages turned into documents
    documents: int = 0
    duplicates: int = 0  # same page reached twice (e.g. through a redirect)
    empty: int = 0  # pages with no text in the chosen part
    missing: list[str] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)
    disambiguation: list[str] = field(default_factory=list)  # detected, skipped unless kept


class PageFetcher:
    """Cache-first access to pages and category listings; opens no connection until a
    cache miss needs one."""

    def __init__(self, options: WikipediaOptions, stats: WikipediaStats) -> None:
        self.options = options
        self.stats = stats
        self.cache = JsonCache(Path(options.cache_dir) / "pages")
        self._client: MediaWikiClient | None = None

    @property
    def client(self) -> MediaWikiClient:
        if self._client is None:
            o = self.options
            self._client = MediaWikiClient(language=o.language, user_agent=o.user_agent,
                                           api_url=o.api_url, timeout=o.timeout, retry=o.retry)
        return self._client

    def _sync_requests(self) -> None:
        if self._client is not None:
            self.stats.requests = self._client.requests_sent

    def page(self, title: str, *, with_links: bool = False) -> PageRecord:
        key = normalize_title(title)
        if not key:
            raise ValueError(f"empty page title {title!r}")
        lang = self.options.language
        raw = self.cache.get("page", lang, key)
        record = PageRecord.from_json(raw) if raw else None
        if record is not None and (record.missing or record.links is not None or not with_links):
            self.stats.cache_hits += 1
            return record
        if record is not None:  # cached without links; a crawl now needs them
            record.links = self.client.article_links(self.client.page(record.title))
        else:
            record = self._fetch(key, with_links)
        self._sync_requests()
        self.cache.put(record.to_json(), "page", lang, key)
        if not record.missing and normalize_title(record.title) != key:
            # Also file it under the redirect target, so reaching the target directly is a hit.
            self.cache.put(record.to_json(), "page", lang, normalize_title(record.title))
        return record

    def _fetch(self, title: str, with_links: bool) -> PageRecord:
        o, client = self.options, self.client
        page = client.page(title)
        summary = page.summary  # the extracts call; it also resolves redirects and the page id
        self.stats.pages_fetched += 1
        if not page.exists():
            return PageRecord(lang=o.language, fetched_as=title, missing=True, title=title)
        categories, props = client.categories_and_props(page)
        names = {c.partition(":")[2] for c in categories}
        return PageRecord(
            lang=o.language,
            fetched_as=title,
            title=page.title,
            pageid=int(page.pageid),
            url=o.page_url.format(lang=o.language, title=quote(page.title.replace(" ", "_"), safe="/:()'!,")),
            summary=summary,
            text=page.text,
            sections=[("", summary), *_flatten_sections(page.sections)],
            categories=categories,
            disambiguation="disambiguation" in props or bool(names & o.disambiguation_categories),
            links=client.article_links(page) if with_links else None,
        )

    def category_members(self, title: str) -> list[tuple[str, int]]:
        lang = self.options.language
        cached = self.cache.get("category", lang, title)
        if cached is not None and cached.get("version") == CACHE_VERSION:
            self.stats.cache_hits += 1
            return [(t, ns) for t, ns in cached["members"]]
        members = self.client.category_members(title)
        self._sync_requests()
        if not members:
            log.warning("category %r has no members (missing or empty)", title)
        self.cache.put({"version": CACHE_VERSION, "title": title, "members": members}, "category", lang, title)
        return members


def _flatten_sections(sections: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(section path, body) depth first; nested titles are joined with ' > '."""
    for sec in sections:
        name = f"{prefix} > {sec.title}" if prefix else sec.title
        yield name, sec.text
        yield from _flatten_sections(sec.sections, name)


def record_documents(record: PageRecord, options: WikipediaOptions) -> list[Document]:
    """The Documents of one fetched page under the chosen text part and mode."""
    extra = {"url": record.url, "lang": record.lang, "pageid": record.pageid}
    if options.mode == "pages":
        text = (record.summary if options.text == "summary" else record.text).strip()
        return [Document(id=str(record.pageid), title=record.title, text=text, extra=extra)] if text else []
    sections = record.sections[:1] if options.text == "summary" else record.sections
    # Plain-text extracts hold one paragraph per line.
    paragraphs = ((name, p) for name, body in sections for p in split_paragraphs(body, blank_lines_only=False))
    return list(paragraph_documents(str(record.pageid), record.title, paragraphs, **extra))


class _Run:
    """One pass of a source: the fetcher plus the skip/dedupe rules and their counts."""

    def __init__(self, options: WikipediaOptions) -> None:
        self.options = options
        self.stats = WikipediaStats()
        self.fetcher = PageFetcher(options, self.stats)
        self.pageids: set[int] = set()

    def accept(self, requested: str, record: PageRecord) -> tuple[bool, list[Document]]:
        """Whether the page counts as a corpus page, and its Documents."""
        if record.missing:
            log.warning("missing Wikipedia page %r (%s): skipped", requested, record.lang)
            self.stats.missing.append(requested)
            return False, []
        if normalize_title(record.title) != normalize_title(requested):
            self.stats.redirects[requested] = record.title
        if record.disambiguation:
            self.stats.disambiguation.append(record.title)
            if not self.options.keep_disambiguation:
                log.info("disambiguation page %r: skipped", record.title)
                return False, []
        if record.pageid in self.pageids:
            self.stats.duplicates += 1
            return False, []
        docs = record_documents(record, self.options)
        if not docs:
            self.stats.empty += 1
            return False, []
        if requested in self.stats.redirects:
            for d in docs:
                d.extra["redirected_from"] = requested
        self.pageids.add(record.pageid)
        self.stats.pages += 1
        self.stats.documents += len(docs)
        return True, docs

    def log_summary(self, what: str) -> None:
        s = self.stats
        log.info("%s: %d pages, %d documents, %d fetched, %d cache hits, %d requests, %d missing, "
                 "%d redirects, %d disambiguation, %d duplicates", what, s.pages, s.documents,
                 s.pages_fetched, s.cache_hits, s.requests, len(s.missing), len(s.redirects),
                 len(s.disambiguation), s.duplicates)


@dataclass
class WikipediaTitles:
    """The pages named in `titles`, in that order."""

    titles: Sequence[str]
    options: WikipediaOptions = field(default_factory=WikipediaOptions)
    stats: WikipediaStats = field(default_factory=WikipediaStats, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.titles, str):
            raise TypeError("titles must be a sequence of titles, not one string")

    def __iter__(self) -> Iterator[Document]:
        run = _Run(self.options)
        self.stats = run.stats
        for title in self.titles:
            yield from run.accept(title, run.fetcher.page(title))[1]
        run.log_summary("wikipedia titles")

    def __length_hint__(self) -> int:
        return len(self.titles) if self.options.mode == "pages" else NotImplemented


@dataclass
class WikipediaCategory:
    """Article members of a category; with `depth` > 0 also of its sub-categories, that
    many levels down (breadth first, each category listed once)."""

    category: str
    depth: int = 0
    max_pages: int | None = None
    options: WikipediaOptions = field(default_factory=WikipediaOptions)
    stats: WikipediaStats = field(default_factory=WikipediaStats, init=False)

    def __post_init__(self) -> None:
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")

    def member_titles(self, fetcher: PageFetcher) -> list[str]:
        root = category_title(self.category)
        queue, seen_cats = deque([(root, 0)]), {root}
        titles: list[str] = []
        seen_titles: set[str] = set()
        while queue:
            cat, d = queue.popleft()
            for title, ns in fetcher.category_members(cat):
                if ns == 14 and d < self.depth and title not in seen_cats:  # 14: Category namespace
                    seen_cats.add(title)
                    queue.append((title, d + 1))
                elif ns == 0 and title not in seen_titles:
                    seen_titles.add(title)
                    titles.append(title)
        return titles

    def __iter__(self) -> Iterator[Document]:
        run = _Run(self.options)
        self.stats = run.stats
        for title in self.member_titles(run.fetcher):
            if self.max_pages is not None and run.stats.pages >= self.max_pages:
                break
            yield from run.accept(title, run.fetcher.page(title))[1]
        run.log_summary(f"wikipedia category {self.category!r}")

    def __length_hint__(self) -> int:
        return NotImplemented


@dataclass
class CrawlState:
    """Where a crawl stands. `accepted` lists the requested titles of the corpus pages in
    the order they were emitted; `frontier` the (title, depth) still to visit."""

    lang: str
    seeds: list[str]
    depth: int
    frontier: list[tuple[str, int]]
    seen: list[str]
    accepted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"version": CACHE_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CrawlState:
        d = {k: v for k, v in d.items() if k != "version"}
        d["frontier"] = [(t, int(n)) for t, n in d["frontier"]]
        return cls(**d)


@dataclass
class WikipediaCrawl:
    """Breadth-first link crawl from `seeds`: seeds are depth 0, pages they link to depth 1,
    and so on up to `depth`; stops after `max_pages` corpus pages.

    The state file (default: under the cache directory, named by language, seeds and
    depth) is checkpointed every `checkpoint_every` pages and whenever iteration stops, by
    exhaustion, an exception or the consumer breaking off. Raising `max_pages` and iterating
    again extends a finished crawl.
    """

    seeds: Sequence[str]
    depth: int = 1
    max_pages: int = 1000
    options: WikipediaOptions = field(default_factory=WikipediaOptions)
    state_path: str | Path | None = None
    checkpoint_every: int = 10
    stats: WikipediaStats = field(default_factory=WikipediaStats, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.seeds, str) or not self.seeds:
            raise ValueError("seeds must be a non-empty sequence of titles")
        if self.depth < 0 or self.max_pages < 1 or self.checkpoint_every < 1:
            raise ValueError("need depth >= 0, max_pages >= 1 and checkpoint_every >= 1")
        self.seeds = [normalize_title(s) for s in self.seeds]
        if self.state_path is None:
            name = cache_key("crawl", self.options.language, str(self.depth), *self.seeds)[:16]
            self.state_path = Path(self.options.cache_dir) / "crawls" / f"{name}.json"
        self.state_path = Path(self.state_path)

    def load_state(self) -> CrawlState:
        raw = read_json(Path(self.state_path))
        if raw is None:
            return CrawlState(lang=self.options.language, seeds=list(self.seeds), depth=self.depth,
                              frontier=[(s, 0) for s in self.seeds], seen=list(dict.fromkeys(self.seeds)))
        state = CrawlState.from_json(raw)
        if (state.lang, state.seeds, state.depth) != (self.options.language, list(self.seeds), self.depth):
            raise ValueError(f"crawl state {self.state_path} belongs to another crawl "
                             f"({state.lang}, seeds {state.seeds}, depth {state.depth}); "
                             f"delete it or pass another state_path")
        return state

    def save_state(self, state: CrawlState) -> None:
        write_json(Path(self.state_path), state.to_json())

    def __iter__(self) -> Iterator[Document]:
        run = _Run(self.options)
        self.stats = run.stats
        state = self.load_state()
        # Pages accepted by an earlier, interrupted pass: from the cache, no request.
        for title in state.accepted:
            yield from run.accept(title, run.fetcher.page(title))[1]
        frontier, seen = deque(state.frontier), set(state.seen)
        since_checkpoint = 0
        try:
            while frontier and len(state.accepted) < self.max_pages:
                title, d = frontier[0]
                record = run.fetcher.page(title, with_links=d < self.depth)
                accepted, docs = run.accept(title, record)
                # Update the state for this page in one go, before anything is yielded.
                if not record.missing:
                    seen.add(normalize_title(record.title))
                if accepted:
                    state.accepted.append(title)
                    if d < self.depth:
                        for link in record.links or []:
                            key = normalize_title(link)
                            if key not in seen:
                                seen.add(key)
                                frontier.append((link, d + 1))
                frontier.popleft()
                since_checkpoint += 1
                if since_checkpoint >= self.checkpoint_every:
                    state.frontier, state.seen = list(frontier), list(seen)
                    self.save_state(state)
                    since_checkpoint = 0
                yield from docs
        finally:
            state.frontier, state.seen = list(frontier), list(seen)
            self.save_state(state)
        run.log_summary(f"wikipedia crawl from {list(self.seeds)}")

    def __length_hint__(self) -> int:
        return self.max_pages if self.options.mode == "pages" else NotImplemented


def wikipedia_source(
    *,
    titles: Sequence[str] | None = None,
    category: str | None = None,
    seeds: Sequence[str] | None = None,
    depth: int | None = None,
    max_pages: int | None = None,
    state_path: str | Path | None = None,
    **options: Any,
) -> WikipediaTitles | WikipediaCategory | WikipediaCrawl:
    """Pick the Wikipedia source from exactly one of `titles`, `category` or `seeds`; the
    remaining keyword arguments are `WikipediaOptions` fields (language, text, mode, ...).
    `depth` is the sub-category depth (default 0) or the crawl depth (default 1)."""
    given = [name for name, v in (("titles", titles), ("category", category), ("seeds", seeds)) if v]
    if len(given) != 1:
        raise ValueError(f"give exactly one of titles, category or seeds (got {given or 'none'})")
    opts = WikipediaOptions(**options)
    if titles:
        return WikipediaTitles(list(titles), opts)
    if category:
        return WikipediaCategory(category, depth if depth is not None else 0, max_pages, opts)
    return WikipediaCrawl(list(seeds or []), depth if depth is not None else 1,
                          max_pages if max_pages is not None else 1000, opts, state_path)


__all__ = [
    "DEFAULT_USER_AGENT", "PageRecord", "WikipediaOptions", "WikipediaStats", "PageFetcher",
    "WikipediaTitles", "WikipediaCategory", "WikipediaCrawl", "CrawlState", "RetryPolicy",
    "record_documents", "wikipedia_source", "normalize_title",
]
