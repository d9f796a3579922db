"""A local fake of the MediaWiki Action API, enough for the Wikipedia sources' tests.

It answers the calls the Wikipedia-API client makes (`action=query` with `prop=extracts`,
`prop=categories|pageprops`, `prop=links`, `prop=info`, `list=categorymembers`, title
normalisation and `redirects=1`, `continue` pagination) from an in-memory set of pages, on
127.0.0.1 with a free port. The endpoint is `{api_url}` with `{lang}` in the path, so the
language a client asks for is visible in `langs`.

Fault knobs: answer 429 with a Retry-After for the next N calls, stall one call longer than
the client's timeout, fail every call about a title with a given HTTP status. Counters:
`received[(kind, title)]` counts every request, `served[(kind, title)]` only the 200 answers
that carried data (kind is the prop or list name, plus "@cursor" on continuation calls), so a test can assert that nothing was
fetched twice.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class StubPage:
    title: str
    pageid: int
    extract: str = ""  # plain text; sections as "\n\n== Heading ==\n" like TextExtracts
    links: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # full titles, "Category:..."
    disambiguation: bool = False  # sets the `disambiguation` page prop


def article(lead: str, *sections: tuple[str, str]) -> str:
    """Extract text in TextExtracts' wiki section format."""
    return lead + "".join(f"\n\n== {h} ==\n{body}" for h, body in sections)


def normalize(title: str) -> str:
    t = " ".join(title.replace("_", " ").split())
    return t[:1].upper() + t[1:]


class MediaWikiStub:
    def __init__(
        self,
        pages: list[StubPage] = (),  # type: ignore[assignment]
        *,
        redirects: dict[str, str] | None = None,
        categories: dict[str, list[str]] | None = None,
        page_size: int = 500,
    ) -> None:
        self.pages = {p.title: p for p in pages}
        self.redirects = dict(redirects or {})
        self.categories = dict(categories or {})
        self.page_size = page_size
        self.lock = threading.Lock()
        self.received: Counter[tuple[str, str]] = Counter()
        self.served: Counter[tuple[str, str]] = Counter()
        self.total = 0
        self.langs: set[str] = set()
        self.user_agents: list[str] = []
        self.rate_limited = 0
        self.retry_after = "1"
        self.stalls = 0
        self.stall_seconds = 0.0
        self.fail_titles: dict[str, int] = {}
        self._wake = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- knobs ------------------------------------------------------------------------
    def rate_limit(self, calls: int, retry_after: str = "1") -> None:
        """Answer the next `calls` requests with 429 and this Retry-After header."""
        self.rate_limited, self.retry_after = calls, retry_after

    def stall(self, calls: int = 1, seconds: float = 2.0) -> None:
        """Hold the next `calls` requests for `seconds` before answering."""
        self.stalls, self.stall_seconds = calls, seconds

    def reset_counts(self) -> None:
        with self.lock:
            self.received.clear()
            self.served.clear()
            self.total = 0

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> MediaWikiStub:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.stub = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._wake.set()  # release stalled handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MediaWikiStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        assert self._server is not None, "stub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/{{lang}}/w/api.php"

    # -- API --------------------------------------------------------------------------
    def resolve(self, title: str, query: dict[str, Any], follow: bool) -> str:
        norm = normalize(title)
        if norm != title:
            query.setdefault("normalized", []).append({"from": title, "to": norm})
        if follow and norm in self.redirects:
            target = self.redirects[norm]
            query.setdefault("redirects", []).append({"from": norm, "to": target})
            return target
        return norm

    def answer(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("action") != "query" or params.get("format") != "json":
            return {"error": {"code": "badparams", "info": f"unsupported call {params}"}}
        if params.get("list") == "categorymembers":
            return self.category_members(params)
        props = set(params.get("prop", "").split("|"))
        query: dict[str, Any] = {}
        out: dict[str, Any] = {"batchcomplete": "", "query": query}
        pages: dict[str, Any] = {}
        for title in params.get("titles", "").split("|"):
            resolved = self.resolve(title, query, params.get("redirects") == "1")
            page = self.pages.get(resolved)
            if page is None:
                pages["-1"] = {"ns": 0, "title": resolved, "missing": ""}
                continue
            entry: dict[str, Any] = {"pageid": page.pageid, "ns": 0, "title": page.title}
            if "extracts" in props:
                entry["extract"] = page.extract
            if "info" in props:
                entry.update(contentmodel="wikitext", length=len(page.extract),
                             fullurl=f"https://stub.test/wiki/{page.title.replace(' ', '_')}")
            if "categories" in props and page.categories:
                entry["categories"] = [{"ns": 14, "title": c} for c in page.categories]
            if "pageprops" in props and page.disambiguation:
                entry["pageprops"] = {"disambiguation": ""}
            if "links" in props:
                start = int(params.get("plcontinue", "0|0|0").split("|")[2])
                chunk = page.links[start:start + self.page_size]
                if chunk:
                    entry["links"] = [{"ns": 0, "title": t} for t in chunk]
                if start + self.page_size < len(page.links):
                    out["continue"] = {"plcontinue": f"{page.pageid}|0|{start + self.page_size}",
                                       "continue": "||"}
            pages[str(page.pageid)] = entry
        query["pages"] = pages
        return out

    def category_members(self, params: dict[str, str]) -> dict[str, Any]:
        members = self.categories.get(normalize(params.get("cmtitle", "")), [])
        start = int(params.get("cmcontinue", "0"))
        chunk = members[start:start + self.page_size]
        out: dict[str, Any] = {"batchcomplete": "", "query": {"categorymembers": [
            {"pageid": self.pages[t].pageid if t in self.pages else 10_000 + i,
             "ns": 14 if t.startswith("Category:") else 0, "title": t}
            for i, t in enumerate(chunk, start)]}}
        if start + self.page_size < len(members):
            out["continue"] = {"cmcontinue": str(start + self.page_size), "continue": "-||"}
        return out


def request_key(params: dict[str, str]) -> tuple[str, str]:
    """(kind, title); a continuation call's kind carries its cursor ("links@2|0|2")."""
    kind = params.get("list") or params.get("prop") or "?"
    cursor = params.get("plcontinue") or params.get("cmcontinue")
    return (f"{kind}@{cursor}" if cursor else kind), params.get("cmtitle") or params.get("titles") or ""


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        stub: MediaWikiStub = self.server.stub  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if parts[-2:] != ["w", "api.php"]:
            return self.send(404, {"error": "not found"})
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        key = request_key(params)
        with stub.lock:
            stub.total += 1
            stub.received[key] += 1
            stub.langs.add(parts[0] if len(parts) == 3 else "")
            stub.user_agents.append(self.headers.get("User-Agent", ""))
            limited = stub.rate_limited > 0
            if limited:
                stub.rate_limited -= 1
            stalled = not limited and stub.stalls > 0
            if stalled:
                stub.stalls -= 1
            failure = stub.fail_titles.get(key[1])
        if limited:
            return self.send(429, {"error": "rate limited"}, {"Retry-After": stub.retry_after})
        if stalled:
            stub._wake.wait(stub.stall_seconds)
            return self.send(200, stub.answer(params))  # the client has given up by now
        if failure:
            return self.send(failure, {"error": f"HTTP {failure}"})
        body = stub.answer(params)
        with stub.lock:
            stub.served[key] += 1
        self.send(200, body)

    def send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and closed the connection
