"""Issue 17, the crawler against a hostile world: real Scrapy crawls in subprocesses against local
HTTP servers that serve hostile pages, redirects, broken feeds and 429s, into real DuckDB files.

Items: 1 (only http(s) to the configured hosts), 4 (handles cannot inject hosts or paths), 5 (HTML
post ids scoped by site), 6 (a broken feed keeps the mark), 19 (`tribes crawl` fails when every
account failed, with reasons), 20 (one pace per host across sources, a contact in the UA).
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml
from test_crawl import FAST, first_users
from typer.testing import CliRunner

from flows.cli import app
from flows.crawl import ROOT, crawl_command
from pipeline import store
from scrapers.localserver import HTML_SELECTORS, LocalPlatforms, Reply
from scrapers.sources import SourcesError, load_sources

QUICK = {**FAST, "RETRY_TIMES": "1", "DOWNLOAD_TIMEOUT": "5"}  # test_crawl's, fewer retries
HTML = {"Content-Type": "text/html; charset=utf-8"}
# The crawler starts requests to a host at least crawl_delay apart; the server's clock sees them
# arrive with a few ms of jitter (connection set-up, thread start on a loaded CPU): allow that.
NETWORK_SLACK = 0.05


# ------------------------------------------------------------------ helpers


def crawl(
    folder: Path,
    sources: list[dict],
    overrides: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, dict], dict]:
    """One real crawl subprocess: per-account rows by account, and the whole report."""
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}), encoding="utf-8")
    report = folder / "report.json"
    report.unlink(missing_ok=True)
    command = crawl_command(
        folder / "t.duckdb",
        path,
        report,
        None,
        None,
        None,
        QUICK if overrides is None else overrides,
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=180, cwd=folder, env=environment
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(report.read_text())
    return {row["account"]: row for row in data["accounts"]}, data


def rows(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    with store.open(db) as con:
        return con.execute(sql, params or []).fetchall()


def article(post_id: str, text: str, permalink: str | None = None) -> str:
    link = f'<a class="permalink" href="{html.escape(permalink)}">#</a>' if permalink else ""
    return (
        f'<article class="post" id="{post_id}">{link}<time datetime="2024-05-01T10:00:00Z">'
        f'</time><div class="text">{html.escape(text)}</div></article>'
    )


def page(*articles: str, next_href: str | None = None) -> Reply:
    """An HTML page of posts, with a next link when given."""
    following = f'<a rel="next" href="{html.escape(next_href)}">Older</a>' if next_href else ""
    body = f"<html><head><title>t</title></head><body>{''.join(articles)}{following}</body></html>"
    return Reply(200, body, HTML)


def html_source(name: str, urls: list[str], **extra: object) -> dict:
    return {
        "name": name,
        "platform": "html",
        "accounts": urls,
        "selectors": dict(HTML_SELECTORS),
        **extra,
    }


def one_feed_of(n: int, start: datetime) -> pl.DataFrame:
    """`n` posts of one account ('feedy'), an hour apart from `start`."""
    return pl.DataFrame(
        {
            "user_id": ["feedy"] * n,
            "post_id": [f"feedy-{start:%m%d}-{i}" for i in range(n)],
            "created_at": [start + timedelta(hours=i) for i in range(n)],
            "text": [
                f"Entry {i} of the feed, posted at {start + timedelta(hours=i)}" for i in range(n)
            ],
        }
    )


# ------------------------------------------------------------------ 1. only http(s), only our hosts


def test_hostile_links_and_redirects_are_refused_and_nothing_local_is_stored(workdir):
    secret = workdir / "secret.html"
    secret.write_text(page(article("s1", "SECRET local file")).body, encoding="utf-8")
    metadata = "http://169.254.169.254/latest/meta-data/"
    with LocalPlatforms() as server:
        away = server.url.replace("127.0.0.1", "localhost") + "/html/target"
        hostile = {
            "file": secret.as_uri(),
            "passwd": "file:///etc/passwd",
            "metadata": metadata,
            "hop-metadata": "/hop/metadata",
            "hop-away": "/hop/away",
            "hop-file": "/hop/file",
        }
        for name, href in hostile.items():
            server.script(f"/html/{name}", page(article("p1", f"{name} post"), next_href=href))
        server.script("/hop/metadata", Reply(302, "", {"Location": metadata}))
        server.script("/hop/away", Reply(302, "", {"Location": away}))
        server.script("/hop/file", Reply(302, "", {"Location": secret.as_uri()}))
        server.script("/html/good", page(article("p1", "good post"), next_href="/html/good2"))
        server.script("/html/good2", page(article("p2", "good older post")))
        server.script(
            "/html/js",
            page(
                article("p1", "js post", permalink="javascript:alert(document.cookie)"),
                article("p2", "data post", permalink="data:text/html,<script>x</script>"),
                article("p3", "fine post", permalink="/html/js/p3"),
            ),
        )
        server.script("/html/named", page(article("p1", "named post"), next_href=away))
        accounts = {name: f"{server.url}/html/{name}" for name in [*hostile, "good", "js"]}
        named = f"{server.url}/html/named"
        counts, report = crawl(
            workdir,
            [
                html_source("hostile", list(accounts.values())),
                # a host the source lists, but its name resolves to a loopback address
                html_source("named", [named], allowed_hosts=["localhost"]),
            ],
        )
        assert not server.requests_to("/html/target")  # the other host was never asked
    db = workdir / "t.duckdb"
    texts = [t for (t,) in rows(db, "SELECT text FROM posts")]
    assert not any("SECRET" in t or "root:" in t for t in texts)
    reasons = {name: counts[url]["reason"] or "" for name, url in accounts.items()}
    for name in ("file", "passwd"):
        assert counts[accounts[name]]["errors"] == 1
        assert "refused: only http(s) URLs are fetched, not file: URLs" in reasons[name]
    assert "refused: 169.254.169.254 is not a host of this source" in reasons["metadata"]
    assert "not fetched (refused: 169.254.169.254 is not a host" in reasons["hop-metadata"]
    assert "not fetched (refused: localhost is not a host of this source" in reasons["hop-away"]
    assert f"HTTP 302: redirect to {secret.as_uri()} not followed" in reasons["hop-file"]
    assert "localhost resolves to 127.0.0.1, a non-public address" in counts[named]["reason"]
    assert report["spiders"][0]["tribes/refused_requests"] >= 2  # the redirects' targets
    # every hostile account kept the posts of its page and no crawl mark (it did not complete)
    failed = [*[accounts[n] for n in hostile], named]
    assert (
        rows(db, "SELECT count(*) FROM crawl_state WHERE list_contains(?, account)", [failed])[0][0]
        == 0
    )
    assert (
        rows(db, "SELECT count(*) FROM posts WHERE list_contains(?, user_id)", [failed])[0][0] == 7
    )
    # same-host links are followed as before; only http(s) post URLs are stored
    assert (counts[accounts["good"]]["new"], counts[accounts["good"]]["errors"]) == (2, 0)
    urls = dict(rows(db, "SELECT text, url FROM posts WHERE user_id = ?", [accounts["js"]]))
    assert urls == {
        "js post": None,
        "data post": None,
        "fine post": f"{accounts['js']}/p3",
    }


# ------------------------------------------------------------------ 4. handles are validated


def test_a_crawl_opens_no_door_and_leaves_no_file_behind(workdir):
    """No listening socket in the crawl process (Scrapy's remote control would run any Python
    code sent to it) and no job file in the user's state folder, even after kill -9."""
    sample = pl.read_parquet(ROOT / "data" / "sample" / "fb_pages_sample.parquet")
    state = workdir / "state"
    with LocalPlatforms(first_users(sample, 3), page_cap=5, delay=0.05) as server:
        path = workdir / "sources.yaml"
        path.write_text(yaml.safe_dump({"sources": [server.source("mastodon", "m")]}))
        command = crawl_command(
            workdir / "t.duckdb", path, workdir / "r.json", None, None, None, QUICK
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(state)}
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir, env=env
        )
        try:
            deadline = time.monotonic() + 60
            while len(server.requests_to("/api/v1/accounts/")) < 5:
                assert process.poll() is None and time.monotonic() < deadline, "crawl ended"
                time.sleep(0.05)
            listening = [
                c for c in psutil.Process(process.pid).net_connections() if c.status == "LISTEN"
            ]
        finally:
            process.kill()
            process.wait()
    assert listening == []
    assert not (state / "scrapy").exists(), sorted(state.rglob("*"))


@pytest.mark.parametrize(
    ("platform", "handle", "expected"),
    [
        ("mastodon", "@user@evil.example/../../admin", "is not a host name"),
        ("mastodon", "user@evil.example/admin?x=", "is not a host name"),
        ("mastodon", "user@evil.example:8080", "is not a host name"),
        ("mastodon", "user@evil.example#frag", "is not a host name"),
        ("mastodon", "user@-evil.example", "is not a host name"),
        ("mastodon", "https://mstdn.social/@user@evil.example%2F..%2Fadmin", "is not a host name"),
        ("bluesky", "alice.bsky.social/../admin", "is not a Bluesky handle"),
        (
            "bluesky",
            "https://bsky.app/profile/alice.bsky.social/../../x",
            "is not a Bluesky handle",
        ),
    ],
)
def test_handles_cannot_smuggle_hosts_or_paths_into_urls(workdir, platform, handle, expected):
    path = workdir / "sources.yaml"
    path.write_text(
        yaml.safe_dump({"sources": [{"name": "s", "platform": platform, "accounts": [handle]}]})
    )
    with pytest.raises(SourcesError, match=expected) as caught:
        load_sources(path)
    assert "\n" not in str(caught.value)


def test_allowed_hosts_must_be_host_names(workdir):
    path = workdir / "sources.yaml"
    path.write_text(
        "sources:\n  - {name: s, platform: rss, accounts: ['https://e.org/f'],"
        " allowed_hosts: ['cdn.e.org/../x']}\n"
    )
    with pytest.raises(SourcesError, match="'cdn.e.org/../x' is not a host name"):
        load_sources(path)


def test_a_mastodon_account_id_cannot_inject_a_path(workdir):
    with LocalPlatforms() as server:
        server.script("/api/v1/accounts/lookup", Reply(200, '{"id": "1/../../../admin"}', HTML))
        source = {"name": "m", "platform": "mastodon", "api": server.url, "accounts": ["alice"]}
        counts, _ = crawl(workdir, [source])
        assert not [r for r in server.requests if "admin" in r.path]
    row = counts["alice@127.0.0.1"]
    assert row["errors"] == 1 and "no valid account id" in row["reason"]


# ------------------------------------------------------------------ 5. HTML ids scoped by site


def test_two_sites_with_the_same_element_ids_keep_their_own_posts(workdir):
    with LocalPlatforms() as one, LocalPlatforms() as two:
        for server, site in ((one, "one"), (two, "two")):
            server.script(
                "/html/news",
                page(article("p1", f"{site}: first story"), article("p2", f"{site}: second story")),
            )
        sites = [f"{one.url}/html/news", f"{two.url}/html/news"]
        counts, _ = crawl(workdir, [html_source("sites", sites)])
    assert [counts[s]["new"] for s in sites] == [2, 2]
    stored = rows(workdir / "t.duckdb", "SELECT user_id, post_id, text FROM posts ORDER BY text")
    assert [(user, text) for user, _, text in stored] == [
        (sites[0], "one: first story"),
        (sites[0], "one: second story"),
        (sites[1], "two: first story"),
        (sites[1], "two: second story"),
    ]
    assert [post_id for _, post_id, _ in stored] == [
        f"{sites[0]}#p1",
        f"{sites[0]}#p2",
        f"{sites[1]}#p1",
        f"{sites[1]}#p2",
    ]


# ------------------------------------------------------------------ 6. a broken feed keeps its mark


def test_a_truncated_feed_is_an_error_that_keeps_the_mark_and_loses_nothing(workdir):
    start = datetime(2024, 1, 1)
    with LocalPlatforms(one_feed_of(10, start)) as server:
        source = server.source("rss", "feeds")
        feed = source["accounts"][0]["handle"]
        db = workdir / "t.duckdb"
        with urllib.request.urlopen(feed) as answer:  # served with a benign charset mismatch
            server.script(
                "/rss/feedy.xml", Reply(200, answer.read(), {"Content-Type": "text/plain"})
            )
        counts, _ = crawl(workdir, [source])
        assert (counts[feed]["new"], counts[feed]["errors"]) == (10, 0)
        mark = rows(db, "SELECT newest_post_id FROM crawl_state WHERE account = ?", [feed])
        server.add_posts(one_feed_of(40, start + timedelta(days=30)))  # 50 entries now
        with urllib.request.urlopen(feed) as answer:
            body = answer.read()
        truncated = body[: len(body) // 2]
        server.script(
            "/rss/feedy.xml", Reply(200, truncated, {"Content-Type": "application/rss+xml"})
        )
        broken, _ = crawl(workdir, [source])
        assert broken[feed]["errors"] == 1 and "the feed is broken" in broken[feed]["reason"]
        assert 0 < broken[feed]["new"] < 40  # what parsed is kept...
        assert rows(db, "SELECT newest_post_id FROM crawl_state WHERE account = ?", [feed]) == mark
        whole, _ = crawl(workdir, [source])  # ...and the next crawl fetches the rest
    assert (whole[feed]["errors"], whole[feed]["new"]) == (0, 40 - broken[feed]["new"])
    assert rows(db, "SELECT count(*) FROM posts")[0][0] == 50


# ------------------------------------------------------------------ 20. one pace per host


@pytest.fixture
def three_sources(workdir) -> Iterator[tuple[LocalPlatforms, list[dict]]]:
    """Mastodon, RSS and HTML sources of one account (30 real posts) on one local host."""
    sample = pl.read_parquet(ROOT / "data" / "sample" / "fb_pages_sample.parquet")
    first = sample.filter(pl.col("user_id") == sample["user_id"][0])
    with LocalPlatforms(first) as server:
        yield server, [server.source(p) for p in ("mastodon", "rss", "html")]


UNTHROTTLED = {
    k: v for k, v in QUICK.items() if k not in ("DOWNLOAD_DELAY", "CONCURRENT_REQUESTS_PER_DOMAIN")
}
UNTHROTTLED["AUTOTHROTTLE_ENABLED"] = "False"  # only the documented delay paces the crawl


def test_three_sources_on_one_host_keep_the_delay_floor_and_send_a_contact(workdir, three_sources):
    server, sources = three_sources
    env = {"TRIBES_CRAWL_DELAY": "0.5", "TRIBES_CONTACT": "https://example.org/tribes-bot"}
    counts, _ = crawl(workdir, sources, UNTHROTTLED, env)
    assert sum(c["new"] for c in counts.values()) == 90
    times = sorted(r.at for r in server.requests)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) >= 8
    assert min(gaps) >= 0.5 - NETWORK_SLACK, f"least gap {min(gaps):.3f}s"
    assert times[-1] - times[0] >= (len(times) - 1) * 0.5 - NETWORK_SLACK  # at most 2 per second
    agents = {r.headers.get("user-agent") for r in server.requests}
    assert agents == {"TribesBot/0.1 (research crawler; +https://example.org/tribes-bot)"}


def test_three_sources_on_one_host_share_its_concurrency(workdir, three_sources):
    server, sources = three_sources
    server.delay = 0.3  # each answer takes this long
    env = {"TRIBES_CRAWL_DELAY": "0", "TRIBES_CRAWL_CONCURRENCY_PER_DOMAIN": "2"}
    crawl(workdir, sources, UNTHROTTLED, env)
    busy = [(r.at, r.at + server.delay - NETWORK_SLACK) for r in server.requests]
    most = max(sum(start <= at < end for start, end in busy) for at, _ in busy)
    assert most == 2


def test_a_429_retry_after_pauses_every_source_on_that_host(workdir, three_sources):
    server, sources = three_sources
    account = next(iter(server.accounts.values()))
    path = f"/api/v1/accounts/{account.number}/statuses"
    server.script(path, Reply(429, '{"error": "Too many requests"}', {"Retry-After": "2"}))
    env = {"TRIBES_CRAWL_DELAY": "0", "TRIBES_CRAWL_CONCURRENCY_PER_DOMAIN": "1"}
    counts, _ = crawl(workdir, sources, UNTHROTTLED, env)
    assert sum(c["new"] for c in counts.values()) == 90
    refused = next(r for r in server.requests if r.status == 429)
    later = [r for r in server.requests if r.at > refused.at]
    assert {r.path for r in later} > {path}  # other sources asked the host afterwards too
    first = min(r.at for r in later)
    assert first - refused.at >= 2.0 - NETWORK_SLACK, f"asked again after {first - refused.at:.2f}s"


# ------------------------------------------------------------------ 19. the CLI when all fail


def test_cli_crawl_fails_when_every_account_failed_and_shows_why(
    prefect_harness, workdir, monkeypatch
):
    monkeypatch.setenv("TRIBES_CRAWL_DELAY", "0")
    monkeypatch.setenv("COLUMNS", "300")  # the reasons on one line each
    with LocalPlatforms() as server:
        server.script("/html/gone", Reply(404, "<html>gone</html>", HTML))
        server.script("/rss/moved.xml", Reply(200, "<html>We moved!</html>", HTML))
        sources = workdir / "sources.yaml"
        sources.write_text(
            yaml.safe_dump(
                {
                    "sources": [
                        html_source("site", [f"{server.url}/html/gone"]),
                        {
                            "name": "feeds",
                            "platform": "rss",
                            "accounts": [f"{server.url}/rss/moved.xml"],
                        },
                    ]
                }
            )
        )
        db = workdir / "t.duckdb"
        result = CliRunner().invoke(app, ["--db", str(db), "crawl", "--sources", str(sources)])
    assert result.exit_code == 1, result.output
    assert "every account failed" in result.output
    assert "HTTP 404 after retries" in result.output
    assert "not an RSS or Atom feed" in result.output
    with store.open(db) as con:
        stats = json.loads(store.crawls_table(con)["stats"][0])
    assert all(a["reason"] for a in stats["accounts"])
