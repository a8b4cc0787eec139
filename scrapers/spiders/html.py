"""A generic HTML spider for sites the operator may crawl: selectors come from sources.yaml.

Each account is a start URL. Posts are the elements matching `selectors.post`; inside each,
`text`, `date`, `id` and `url` select the fields; `next_page` selects the link to older posts.
A post's id is the account URL, `#` and its `id` (else its url, else a hash of text and date), so
two sites never share one. A page where the post selector matches nothing counts as an error (the
site changed); a next link to another host or scheme too (it is not followed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import scrapy
from parsel import Selector, SelectorList
from scrapy.http import Response

from scrapers.sources import is_xpath
from scrapers.spiders.base import AccountRun, AccountSpider, ParseError
from scrapers.text import html_to_text, parse_time


def select(node: Selector | Response, query: str) -> SelectorList:
    return node.xpath(query) if is_xpath(query) else node.css(query)


def selection_text(results: SelectorList) -> str:
    """Text of selected nodes: text and attribute results as they are, elements as plain text."""
    parts = [r.root if isinstance(r.root, str) else html_to_text(r.get()) for r in results]
    return "\n".join(p.strip() for p in parts if p and p.strip())


def first_value(node: Selector, query: str | None) -> str | None:
    if not query:
        return None
    value = selection_text(select(node, query)[:1])
    return value or None


class HtmlSpider(AccountSpider):
    name = "html"
    needs_selectors = True

    def first_requests(self, run: AccountRun) -> Iterable[scrapy.Request]:
        run.user_id = run.account
        yield self.request(run.account, run, self.parse_page, cb_kwargs={"first": True})

    def parse_page(self, response: Response, first: bool = False) -> Iterator[Any]:
        run: AccountRun = response.meta["tribes"]
        rules = self.source.selectors
        assert rules is not None  # html sources always have selectors
        run.pages.add(response.url)
        if not hasattr(response, "css"):
            raise ParseError("not an HTML page")
        posts = select(response, rules.post)
        if not posts:
            raise ParseError(f"no element matches the post selector {rules.post!r}")
        if first:
            title = (response.css("title::text").get() or "").strip() or None
            yield self.profile(run, title, url=response.url)
        finished = False
        for element in posts:
            text = selection_text(select(element, rules.text))
            created = parse_time(first_value(element, rules.date))
            link = first_value(element, rules.url)
            url = response.urljoin(link) if link else None
            local_id = (
                first_value(element, rules.id)
                or url
                or hashlib.sha1(f"{text}|{created}".encode()).hexdigest()
            )
            post_id = f"{run.account}#{local_id}"  # two sites' element ids never collide
            if self.stop_before(run, post_id, created):
                finished = True
                break
            yield self.post(run, post_id=post_id, created_at=created, text=text, url=url)
        link = first_value(response, rules.next_page)
        following = response.urljoin(link) if link else None
        if (
            finished
            or not following
            or following in run.pages
            or (self.max_posts is not None and run.fetched >= self.max_posts)
        ):
            yield self.done(run)
        else:
            yield self.request(following, run, self.parse_page)
