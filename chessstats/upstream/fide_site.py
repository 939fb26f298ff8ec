"""The official FIDE rating site's top-list table (``<site>/a_top.php?list=open``), the FIDE top
list's last fallback when the community FIDE API fails.

The answer is an HTML fragment: a ``div`` and a ``table.top_recors_table`` (FIDE's spelling) whose
rows are ``#, Name, Fed, Rating, B-Year``; the FIDE id is only in the name's ``/profile/<id>``
link. It is read with the standard library's HTML parser (:class:`html.parser.HTMLParser`), never
with regular expressions. The request goes through the FIDE client's gate (the community API
scrapes this same site).
"""

from __future__ import annotations

from html.parser import HTMLParser

from chessstats.errors import UpstreamError
from chessstats.models.player import FidePlayer
from chessstats.upstream.fide import UPSTREAM, FideClient, TopList, _int
from chessstats.upstream.http import gated_stream

#: How values read here are labelled.
SOURCE = "ratings.fide.com"
#: The class of the top-list table (FIDE's spelling).
TABLE_CLASS = "top_recors_table"


class _TopTable(HTMLParser):
    """Collects the rows of ``table.top_recors_table``: per row the cells' text and the links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # > 0 inside the table (nested tables counted)
        self.in_head = False
        self.rows: list[tuple[list[str], list[str]]] = []
        self._cells: list[str] | None = None
        self._links: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            classes = (dict(attrs).get("class") or "").split()
            if self.depth or TABLE_CLASS in classes:
                self.depth += 1
            return
        if not self.depth:
            return
        if tag == "thead":
            self.in_head = True
        elif tag == "tr" and not self.in_head:
            self._cells, self._links = [], []
        elif tag in ("td", "th") and self._cells is not None:
            self._cell = []
        elif tag == "a" and self._cells is not None:
            href = dict(attrs).get("href")
            if href:
                self._links.append(href)

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if tag == "table":
            self.depth -= 1
        elif tag == "thead":
            self.in_head = False
        elif tag in ("td", "th") and self._cells is not None and self._cell is not None:
            self._cells.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._cells is not None:
            self.rows.append((self._cells, self._links))
            self._cells = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _profile_id(links: list[str]) -> int | None:
    for href in links:
        parts = href.strip().rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "profile":
            return _int(parts[-1])
    return None


def parse_top_list(html: str) -> TopList:
    """The players of a top-list fragment in rank order (``source: "ratings.fide.com"``, ratings ``0``/empty
    → None); rows without a numeric FIDE id in their profile link are skipped (counted)."""
    parser = _TopTable()
    parser.feed(html)
    parser.close()
    players, skipped = [], 0
    for cells, links in parser.rows:
        fid = _profile_id(links)
        if fid is None or len(cells) < 4:
            skipped += 1
            continue
        name = cells[1] or None
        federation = cells[2] or None
        birth_year = _int(cells[4]) if len(cells) > 4 else None
        players.append(FidePlayer(fide_id=fid, name=name, federation=federation, birth_year=birth_year or None,
                                  ratings={"standard": _int(cells[3]) or None}, source=SOURCE))
    return TopList(players, skipped)


async def fetch_official_top(client: FideClient, list_name: str = "open", *,
                             max_wait_s: float | None = None) -> TopList:
    """``GET <client.site_url>/a_top.php?list=<list_name>``: the official top list, parsed (values
    labelled ``source: "ratings.fide.com"``).

    Raises:
        UpstreamError (and its subclasses): as every FIDE request, or a page without the table.
    """
    url = client.site_url + "/a_top.php"
    async with gated_stream(client.gate, client._client, url, accept="text/html", params={"list": list_name},
                            max_wait_s=max_wait_s) as resp:
        text = (await resp.aread()).decode("utf-8")
    top = parse_top_list(text)
    if not top.players:
        raise UpstreamError(f"{UPSTREAM}: the official top list has no readable row", UPSTREAM)
    return top
