"""Wikipedia sources against a local fake MediaWiki API (no internet)."""
from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from index_builder.sources.mediawiki import (
    DEFAULT_USER_AGENT, RetryPolicy, WikipediaFetchError, retry_after_seconds,
)
from index_builder.sources.wikipedia import (
    WikipediaCategory, WikipediaCrawl, WikipediaOptions, WikipediaTitles, normalize_title,
    wikipedia_source,
)
from mediawiki_stub import MediaWikiStub, StubPage, article

# A small link graph. Depth from Alpha: Beta, Gamma (via the redirect "Gamma ray"),
# Mercury (disambiguation) and Nowhere (missing) at 1; Epsilon and Zeta at 2; Eta at 3.
PAGES = [
    StubPage("Alpha", 1, article("Alpha is the first letter. It comes before Beta.\nA second lead paragraph.",
                                 ("History", "Alpha came from aleph. It is old."),
                                 ("Use", "Alpha is used in science.")),
             links=["Beta", "Gamma ray", "Mercury", "Nowhere"], categories=["Category:Letters"]),
    StubPage("Beta", 2, "Beta is the second letter.", links=["Alpha", "Epsilon"]),
    StubPage("Gamma", 3, "Gamma is the third letter.", links=["Zeta", "Alpha"]),
    StubPage("Epsilon", 5, "Epsilon is the fifth letter.", links=["Eta"]),
    StubPage("Zeta", 6, "Zeta is the sixth letter.", links=["Gamma"]),
    StubPage("Eta", 7, "Eta is the seventh letter."),
    StubPage("Mercury", 9, "Mercury may refer to:\nMercury (planet)\nMercury (element)",
             links=["Eta"], categories=["Category:Disambiguation pages"], disambiguation=True),
    # Disambiguation marked only by the page prop (a non-English category name).
    StubPage("Merkur", 10, "Merkur steht für:", categories=["Category:Begriffsklärung"], disambiguation=True),
    # ... and only by an English tracking category.
    StubPage("Venus (disambiguation)", 11, "Venus may refer to:", categories=["Category:All disambiguation pages"]),
]
REDIRECTS = {"Gamma ray": "Gamma"}
CATEGORIES = {
    "Category:Letters": ["Alpha", "Beta", "Category:Greek letters"],
    "Category:Greek letters": ["Gamma", "Epsilon", "Alpha", "Category:Letters"],
}


@pytest.fixture
def stub():
    # page_size=2 makes link and category listings paginate with `continue`.
    with MediaWikiStub(PAGES, redirects=REDIRECTS, categories=CATEGORIES, page_size=2) as s:
        yield s


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_options(stub: MediaWikiStub, cache: Path, sleeps: list[float], **kw) -> WikipediaOptions:
    retry = kw.pop("retry", None) or RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05,
                                                 sleep=sleeps.append)
    return WikipediaOptions(api_url=stub.api_url, cache_dir=cache, timeout=kw.pop("timeout", 5.0),
                            retry=retry, **kw)


def ids(docs) -> list[str]:
    return [d.id for d in docs]


def assert_nothing_served_twice(stub: MediaWikiStub) -> None:
    twice = {k: n for k, n in stub.served.items() if n > 1}
    assert not twice, f"fetched more than once: {twice}"


def test_titles_list_gives_summaries_with_metadata(stub, tmp_path, sleeps):
    src = WikipediaTitles(["Alpha", "Beta"], make_options(stub, tmp_path, sleeps))
    docs = list(src)
    assert ids(docs) == ["1", "2"]
    alpha = docs[0]
    assert alpha.title == "Alpha"
    assert alpha.text == "Alpha is the first letter. It comes before Beta.\nA second lead paragraph."
    assert alpha.extra == {"url": "https://en.wikipedia.org/wiki/Alpha", "lang": "en", "pageid": 1}
    assert src.stats.pages == 2 and src.stats.pages_fetched == 2
    assert_nothing_served_twice(stub)


def test_full_text_and_paragraph_mode(stub, tmp_path, sleeps):
    full = list(WikipediaTitles(["Alpha"], make_options(stub, tmp_path, sleeps, text="full")))
    assert "Alpha came from aleph." in full[0].text and "Alpha is used in science." in full[0].text

    paras = list(WikipediaTitles(["Alpha"], make_options(stub, tmp_path, sleeps, text="full", mode="paragraphs")))
    assert ids(paras) == ["1#0", "1#1", "1#2", "1#3"]
    assert paras[0].sentences == ["Alpha is the first letter.", "It comes before Beta."]
    assert paras[2].sentences == ["Alpha came from aleph.", "It is old."]
    assert paras[2].extra["section"] == "History" and paras[2].extra["pageid"] == 1
    lead_only = list(WikipediaTitles(["Alpha"], make_options(stub, tmp_path, sleeps, mode="paragraphs")))
    assert ids(lead_only) == ["1#0", "1#1"]


def test_missing_page_is_reported_and_skipped(stub, tmp_path, sleeps):
    src = WikipediaTitles(["Nowhere", "Beta"], make_options(stub, tmp_path, sleeps))
    assert ids(src) == ["2"]
    assert src.stats.missing == ["Nowhere"]


def test_redirect_is_followed_and_resolved_title_recorded(stub, tmp_path, sleeps):
    src = WikipediaTitles(["Gamma_ray", "Gamma"], make_options(stub, tmp_path, sleeps))
    docs = list(src)
    assert ids(docs) == ["3"]  # the direct title is the same page: counted once
    assert docs[0].title == "Gamma" and docs[0].extra["redirected_from"] == "Gamma_ray"
    assert src.stats.redirects == {"Gamma_ray": "Gamma"} and src.stats.duplicates == 1
    # The record was also filed under the target title: asking for it sent nothing.
    assert stub.received[("extracts", "Gamma")] == 0


def test_disambiguation_pages_skipped_or_kept(stub, tmp_path, sleeps):
    titles = ["Mercury", "Merkur", "Venus (disambiguation)", "Beta"]
    src = WikipediaTitles(titles, make_options(stub, tmp_path, sleeps))
    assert ids(src) == ["2"]
    assert src.stats.disambiguation == ["Mercury", "Merkur", "Venus (disambiguation)"]
    kept = WikipediaTitles(titles, make_options(stub, tmp_path, sleeps, keep_disambiguation=True))
    assert ids(kept) == ["9", "10", "11", "2"]
    assert len(kept.stats.disambiguation) == 3


def test_category_members_with_depth(stub, tmp_path, sleeps):
    flat = WikipediaCategory("Letters", depth=0, options=make_options(stub, tmp_path, sleeps))
    assert ids(flat) == ["1", "2"]
    deep = WikipediaCategory("Category:Letters", depth=1, options=make_options(stub, tmp_path, sleeps))
    assert ids(deep) == ["1", "2", "3", "5"]  # Alpha listed twice and the cycle back: once
    capped = WikipediaCategory("Letters", depth=1, max_pages=3, options=make_options(stub, tmp_path, sleeps))
    assert ids(capped) == ["1", "2", "3"]
    assert_nothing_served_twice(stub)


def test_crawl_to_depth_two_breadth_first(stub, tmp_path, sleeps):
    crawl = WikipediaCrawl(["Alpha"], depth=2, options=make_options(stub, tmp_path, sleeps))
    assert ids(crawl) == ["1", "2", "3", "5", "6"]  # Eta is at depth 3
    assert crawl.stats.missing == ["Nowhere"] and crawl.stats.disambiguation == ["Mercury"]
    assert stub.received[("extracts", "Eta")] == 0
    assert_nothing_served_twice(stub)

    capped = WikipediaCrawl(["Alpha"], depth=2, max_pages=3, options=make_options(stub, tmp_path / "c2", sleeps))
    assert ids(capped) == ["1", "2", "3"]


def test_language_and_user_agent(stub, tmp_path, sleeps):
    docs = list(WikipediaTitles(["Beta"], make_options(stub, tmp_path, sleeps, language="de")))
    assert stub.langs == {"de"} and docs[0].extra["lang"] == "de"
    assert docs[0].extra["url"] == "https://de.wikipedia.org/wiki/Beta"
    assert stub.user_agents[0].startswith(DEFAULT_USER_AGENT)
    list(WikipediaTitles(["Alpha"], make_options(stub, tmp_path, sleeps, user_agent="MyBot/2.0 (me@example.org)")))
    assert stub.user_agents[-1].startswith("MyBot/2.0 (me@example.org)")


def test_rate_limit_honours_retry_after(stub, tmp_path, sleeps):
    stub.rate_limit(2, retry_after="1")
    src = WikipediaTitles(["Beta"], make_options(stub, tmp_path, sleeps))
    assert ids(src) == ["2"]
    assert sleeps == [1.0, 1.0]  # the server's Retry-After, not our backoff
    assert stub.received[("extracts", "Beta")] == 3 and stub.served[("extracts", "Beta")] == 1


def test_rate_limit_beyond_cap_fails_clearly(stub, tmp_path, sleeps):
    stub.rate_limit(1, retry_after="7200")
    with pytest.raises(WikipediaFetchError, match="wait 7200 s"):
        list(WikipediaTitles(["Beta"], make_options(stub, tmp_path, sleeps)))
    assert sleeps == []


def test_retry_after_http_date():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_seconds("5") == 5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_timeout_is_retried_with_backoff(stub, tmp_path, sleeps):
    stub.stall(1, seconds=3.0)
    src = WikipediaTitles(["Beta"], make_options(stub, tmp_path, sleeps, timeout=0.3))
    assert ids(src) == ["2"]
    assert sleeps == [0.01]
    assert stub.received[("extracts", "Beta")] == 2


def test_persistent_failure_gives_a_clear_error(stub, tmp_path, sleeps):
    stub.fail_titles["Beta"] = 503
    with pytest.raises(WikipediaFetchError, match=r"giving up on prop=extracts titles=Beta after 4 attempts"):
        list(WikipediaTitles(["Beta"], make_options(stub, tmp_path, sleeps)))
    assert sleeps == [0.01, 0.02, 0.04]  # exponential, capped at max_delay=0.05 next


def test_rerun_is_served_from_cache(stub, tmp_path, sleeps):
    first = list(WikipediaTitles(["Alpha", "Gamma ray", "Nowhere"], make_options(stub, tmp_path, sleeps)))
    cat = list(WikipediaCategory("Letters", depth=1, options=make_options(stub, tmp_path, sleeps)))
    crawl = list(WikipediaCrawl(["Alpha"], depth=2, options=make_options(stub, tmp_path, sleeps)))
    stub.reset_counts()
    again = WikipediaTitles(["Alpha", "Gamma ray", "Nowhere"], make_options(stub, tmp_path, sleeps))
    assert list(again) == first
    assert list(WikipediaCategory("Letters", depth=1, options=make_options(stub, tmp_path, sleeps))) == cat
    assert list(WikipediaCrawl(["Alpha"], depth=2, options=make_options(stub, tmp_path, sleeps))) == crawl
    assert stub.total == 0
    assert again.stats.cache_hits == 3 and again.stats.requests == 0


def reference_crawl(stub, tmp_path, sleeps) -> list[str]:
    ref = ids(WikipediaCrawl(["Alpha"], depth=2, options=make_options(stub, tmp_path / "ref", sleeps)))
    stub.reset_counts()
    return ref


def test_crawl_stopped_by_consumer_resumes_without_refetching(stub, tmp_path, sleeps):
    expected = reference_crawl(stub, tmp_path, sleeps)
    opts = make_options(stub, tmp_path / "run", sleeps)
    first = WikipediaCrawl(["Alpha"], depth=2, options=opts, checkpoint_every=100)
    pages = iter(first)
    partial = ids(itertools.islice(pages, 2))  # the consumer stops after two pages ...
    assert partial == expected[:2]
    pages.close()  # ... and closes the generator: the state is saved on the way out
    state = json.loads(Path(WikipediaCrawl(["Alpha"], depth=2, options=opts).state_path).read_text())
    assert state["accepted"] == ["Alpha", "Beta"]
    resumed = WikipediaCrawl(["Alpha"], depth=2, options=opts)
    assert ids(resumed) == expected
    assert resumed.stats.cache_hits >= 2
    assert_nothing_served_twice(stub)


def test_crawl_interrupted_by_error_resumes_without_losing_pages(stub, tmp_path, sleeps):
    expected = reference_crawl(stub, tmp_path, sleeps)
    stub.fail_titles["Epsilon"] = 500
    opts = make_options(stub, tmp_path / "run", sleeps, retry=RetryPolicy(max_attempts=1))
    got: list[str] = []
    with pytest.raises(WikipediaFetchError):
        for doc in WikipediaCrawl(["Alpha"], depth=2, options=opts):
            got.append(doc.id)
    assert got == ["1", "2", "3"]
    stub.fail_titles.clear()
    resumed = WikipediaCrawl(["Alpha"], depth=2, options=opts)
    assert ids(resumed) == expected
    assert stub.served[("extracts", "Epsilon")] == 1
    assert_nothing_served_twice(stub)


def test_crawl_killed_between_checkpoints_refetches_nothing(stub, tmp_path, sleeps, monkeypatch):
    """A hard kill skips the final save: pages done since the last checkpoint are redone
    from the page cache, not from the network."""
    expected = reference_crawl(stub, tmp_path, sleeps)
    opts = make_options(stub, tmp_path / "run", sleeps)
    saved: list[int] = []
    real_save = WikipediaCrawl.save_state

    def save_only_first_checkpoint(self, state):
        if not saved:
            saved.append(len(state.accepted))
            real_save(self, state)

    monkeypatch.setattr(WikipediaCrawl, "save_state", save_only_first_checkpoint)
    ids(itertools.islice(WikipediaCrawl(["Alpha"], depth=2, options=opts, checkpoint_every=2), 4))
    monkeypatch.setattr(WikipediaCrawl, "save_state", real_save)
    assert saved == [2]
    assert ids(WikipediaCrawl(["Alpha"], depth=2, options=opts)) == expected
    assert_nothing_served_twice(stub)


def test_crawl_state_of_another_crawl_is_refused(stub, tmp_path, sleeps):
    state = tmp_path / "state.json"
    list(WikipediaCrawl(["Beta"], depth=0, options=make_options(stub, tmp_path, sleeps), state_path=state))
    with pytest.raises(ValueError, match="belongs to another crawl"):
        list(WikipediaCrawl(["Alpha"], depth=1, options=make_options(stub, tmp_path, sleeps), state_path=state))


def test_source_factory_and_bad_options(stub, tmp_path, sleeps):
    src = wikipedia_source(seeds=["Alpha"], depth=0, api_url=stub.api_url, cache_dir=tmp_path)
    assert isinstance(src, WikipediaCrawl) and ids(src) == ["1"]
    with pytest.raises(ValueError, match="exactly one"):
        wikipedia_source(titles=["A"], seeds=["B"])
    with pytest.raises(ValueError, match="mode"):
        WikipediaOptions(mode="sentences")
    with pytest.raises(TypeError):
        WikipediaTitles("Alpha")
    assert normalize_title("  united_kingdom ") == "United kingdom"
