"""Verified links (docs/people.md): what platforms publish (Mastodon's verified rel=me fields,
Bluesky domain handles, profile descriptions linking each other) links accounts, through real
crawls of a local server answering like Mastodon, Bluesky and RSS into a real DuckDB file."""

from __future__ import annotations

import json

import polars as pl
import pytest
from test_crawl import FAST, first_users, write_sources

from flows.crawl import crawl
from pipeline import people, store
from scrapers.localserver import LocalPlatforms

VERIFIED_AT = "2026-03-04T10:00:00.000+00:00"


def profiles(*rows: tuple) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["platform", "user_id", "url", "description", "verified_links"], orient="row"
    )


def verified(*links: tuple[str, str | None]) -> str:
    return json.dumps([{"url": url, "verified_at": at} for url, at in links])


def pairs(links: pl.DataFrame) -> dict[str, list[str]]:
    return dict(
        links.group_by("person_id")
        .agg(pl.col("evidence").first(), pl.len())
        .select("person_id", "evidence")
        .iter_rows()
    )


FEED = ("rss", "https://jo.example/feed.xml", "https://jo.example/", "Jo's notes", None)


def test_a_verified_field_naming_a_crawled_site_links_but_not_an_uncrawled_one():
    users = profiles(
        FEED,
        (
            "mastodon",
            "jo@social.example",
            "https://social.example/@jo",
            "",
            verified(
                ("https://www.jo.example", VERIFIED_AT),
                ("https://elsewhere.example/me", VERIFIED_AT),
            ),
        ),
    )
    found = people.verified_links(users, set())
    evidence = "mastodon link verified 2026-03-04: https://www.jo.example"
    assert pairs(found) == {"mastodon:jo@social.example|rss:https://jo.example/feed.xml": evidence}
    assert set(found["how"]) == {"verified"} and found.height == 2


def test_descriptions_link_only_when_they_name_each_other():
    one_way = profiles(
        FEED,
        (
            "bluesky",
            "did:plc:jo",
            "https://bsky.app/profile/jo.bsky.social",
            "blog: https://jo.example",
            "[]",
        ),
    )
    assert people.verified_links(one_way, set()).height == 0
    both = one_way.with_columns(
        description=pl.when(pl.col("platform") == "rss")
        .then(pl.lit("also https://bsky.app/profile/jo.bsky.social."))
        .otherwise("description")
    )
    assert list(pairs(people.verified_links(both, set())).values()) == [
        "profile descriptions link each other: https://bsky.app/profile/jo.bsky.social, "
        "https://jo.example"
    ]


def test_rejected_and_ambiguous_addresses_do_not_link():
    users = profiles(
        FEED,
        ("rss", "https://jo.example/other.xml", None, None, None),  # a second feed of the site
        ("mastodon", "jo@social.example", None, None, verified(("https://jo.example", "x"))),
    )
    assert people.verified_links(users, set()).height == 0  # the site names two feeds
    alone = users.filter(pl.col("user_id") != "https://jo.example/other.xml")
    pair = "mastodon:jo@social.example|rss:https://jo.example/feed.xml"
    assert people.verified_links(alone, {pair}).height == 0


@pytest.mark.usefixtures("prefect_harness")
def test_crawled_profiles_give_verified_links_only_for_verified_fields_and_domain_handles(
    workdir, sample_path
):
    posts = first_users(pl.read_parquet(sample_path), 3)
    jo, bob, dee = posts["user_id"].unique(maintain_order=True).to_list()
    with LocalPlatforms(posts, page_cap=40) as server:
        feed = f"{server.url}/rss/{dee}.xml"
        server.profiles[jo] = {
            "fields": [
                field("Blog", feed, VERIFIED_AT),
                field("Bob", f"{server.url}/@{bob}", None),  # not verified: links nothing
                field("Web", "https://nowhere.example/", VERIFIED_AT),  # names nothing crawled
            ]
        }
        server.profiles[bob] = {"handle": "127.0.0.1"}  # a domain handle: the feed's host
        sources = [
            server.source("mastodon", users=[jo, bob]),
            server.source("bluesky", users=[bob]),
            server.source("rss", users=[dee]),
        ]
        db = workdir / "t.duckdb"
        crawl(db=str(db), sources=str(write_sources(workdir, sources)), scrapy_settings=FAST)
    with store.open(db) as con:
        links = store.read_links(con)
        accounts = dict(store.frame(con, "SELECT user_id, platform FROM users").iter_rows())
    mastodon_jo = next(u for u, p in accounts.items() if p == "mastodon" and u.startswith(jo))
    did = next(u for u, p in accounts.items() if p == "bluesky")
    found = pairs(links.filter(pl.col("how") == "verified"))
    assert set(found) == {
        people.pair_id(("mastodon", mastodon_jo), ("rss", feed)),
        people.pair_id(("bluesky", did), ("rss", feed)),
    }
    assert found[people.pair_id(("mastodon", mastodon_jo), ("rss", feed))] == (
        f"mastodon link verified 2026-03-04: {feed}"
    )
    handle = found[people.pair_id(("bluesky", did), ("rss", feed))]
    assert handle.startswith("bluesky link verified ") and handle.endswith(": https://127.0.0.1")
    merging = people.merging_links(links, None)
    persons = people.person_of(merging.select("platform", "user_id").unique(), merging)
    assert persons["person_id"].n_unique() == 1  # jo's Mastodon, bob's Bluesky and the feed


def field(name: str, url: str, verified_at: str | None) -> dict:
    """A Mastodon profile field as the API gives it: the value is HTML with a rel=me link."""
    value = f'<a href="{url}" target="_blank" rel="nofollow noopener me">{url}</a>'
    return {"name": name, "value": value, "verified_at": verified_at}
