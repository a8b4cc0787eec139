"""Collection (issue 3): real Scrapy crawls in subprocesses against a local server that answers
like Mastodon, Bluesky, RSS/Atom and HTML sites, filled with real posts from the bundled sample,
into real DuckDB files."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.crawl import ROOT, collect_demo_sample, crawl_command
from pipeline import store
from scrapers.localserver import LocalPlatforms, Reply
from scrapers.sources import SourcesError, load_sources

# politeness off for our own server, short retry waits: seconds per test
FAST = {
    "DOWNLOAD_DELAY": "0",
    "AUTOTHROTTLE_START_DELAY": "0",
    "AUTOTHROTTLE_MAX_DELAY": "2",
    "AUTOTHROTTLE_TARGET_CONCURRENCY": "8",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "8",
    "TRIBES_RETRY_BACKOFF": "0.05",
    "RETRY_TIMES": "2",
    "TRIBES_DB_WAIT_SECONDS": "30",
}
PLATFORMS = ["mastodon", "bluesky", "rss", "atom", "html"]


@pytest.fixture(scope="module")
def sample() -> pl.DataFrame:
    return pl.read_parquet(ROOT / "data" / "sample" / "fb_pages_sample.parquet")


def first_users(sample: pl.DataFrame, n: int) -> pl.DataFrame:
    """The posts of `n` sample pages whose names are no prefix of one another."""
    names: list[str] = []
    for name in sample["user_id"].unique(maintain_order=True):
        if not any(name.startswith(o) or o.startswith(name) for o in names):
            names.append(name)
        if len(names) == n:
            break
    return sample.filter(pl.col("user_id").is_in(names))


@pytest.fixture
def server(sample: pl.DataFrame) -> Iterator[LocalPlatforms]:
    """Three real sample pages (30 posts each), pages of at most 7 posts."""
    with LocalPlatforms(first_users(sample, 3), page_cap=7) as platforms:
        yield platforms


def entry(
    server: LocalPlatforms, platform: str, name: str | None = None, users: list[str] | None = None
) -> dict:
    if platform == "atom":
        return server.source("rss", name or "atom", users, feed="atom")
    return server.source(platform, name, users)


def write_sources(folder: Path, sources: list[dict]) -> Path:
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}, allow_unicode=True), encoding="utf-8")
    return path


def runner_command(
    folder: Path, sources: list[dict], *, overrides: dict | None = None, **options
) -> tuple[list[str], Path]:
    report = folder / "report.json"
    report.unlink(missing_ok=True)
    command = crawl_command(
        folder / "t.duckdb",
        write_sources(folder, sources),
        report,
        options.get("source"),
        options.get("max_posts_per_user"),
        options.get("since"),
        {**FAST, **(overrides or {})},
    )
    return command, report


def crawl(folder: Path, sources: list[dict], **options) -> dict[str, dict]:
    """One real crawl subprocess; its per-account counts by account."""
    command, report = runner_command(folder, sources, **options)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {row["account"]: row for row in json.loads(report.read_text())["accounts"]}


def rows(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    with store.open(db) as con:
        return con.execute(sql, params or []).fetchall()


def plain(text: str) -> str:
    """A post's text as an HTML round trip keeps it (line ends trimmed, paragraphs kept)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ------------------------------------------------------------------ sources.yaml


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("sources:\n  - name: a\n    platform: mastodon\n", "sources[0].accounts: Field required"),
        (
            "sources:\n  - name: a\n    platform: myspace\n    accounts: [x]\n",
            "sources[0].platform: no spider crawls platform 'myspace' "
            "(platforms: bluesky, html, mastodon, rss)",
        ),
        (
            "sources:\n  - name: a\n    platform: html\n    accounts: ['https://e.org/']\n",
            "sources[0]: html sources need selectors",
        ),
        (
            "sources:\n  - name: a\n    platform: html\n    accounts: ['https://e.org/']\n"
            "    selectors: {post: 'div[', text: p}\n",
            "sources[0].selectors.post: 'div[' is not a valid CSS selector",
        ),
        (
            "sources:\n  - name: a\n    platform: rss\n    accounts: [not-a-url]\n",
            "sources[0]: 'not-a-url' must be an http(s) URL for rss",
        ),
        (
            "sources:\n  - name: a\n    platform: mastodon\n    accounts: [{handle: alice}]\n",
            "sources[0]: 'alice' needs a domain (user@instance) or the source an api URL",
        ),
        (
            "sources:\n  - name: a\n    platform: bluesky\n    accounts: [{handle: a.bsky.social, "
            "lable: x}]\n",
            "sources[0].accounts[0].lable: Extra inputs are not permitted",
        ),
        (
            "sources:\n  - {name: a, platform: rss, accounts: ['https://e.org/f']}\n"
            "  - {name: a, platform: rss, accounts: ['https://e.org/g']}\n",
            "sources.yaml: source name 'a' is used twice",
        ),
        ("sources:\n  - name: a\n   platform: rss\n", "not valid YAML at line 3"),
        ("- just\n- a list\n", "expected a mapping with a 'sources:' list"),
    ],
)
def test_bad_sources_file_is_one_clear_line(workdir, content, expected):
    path = workdir / "sources.yaml"
    path.write_text(content)
    with pytest.raises(SourcesError) as caught:
        load_sources(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expected in message
    result = CliRunner().invoke(
        app, ["--db", str(workdir / "t.duckdb"), "crawl", "--sources", str(path)]
    )
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:") and expected in result.output
    assert not (workdir / "t.duckdb").exists()  # nothing was crawled or created


def test_good_sources_file_forms(workdir):
    path = workdir / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - name: fedi\n    platform: mastodon\n    accounts:\n"
        "      - Gargron@mastodon.social\n      - {handle: 'https://mstdn.social/@nasa', "
        "label: science}\n"
        "  - name: sky\n    platform: bluesky\n    accounts: ['@Alice.bsky.social', "
        "'https://bsky.app/profile/did:plc:abc123']\n"
    )
    fedi, sky = load_sources(path).sources
    assert [fedi.account_key(a) for a in fedi.accounts] == [
        "Gargron@mastodon.social",
        "nasa@mstdn.social",
    ]
    assert fedi.accounts[1].label == "science"
    assert [sky.account_key(a) for a in sky.accounts] == ["alice.bsky.social", "did:plc:abc123"]
    assert sky.hosts() == {"public.api.bsky.app"}  # the default AppView
    with pytest.raises(SourcesError, match="no source named 'x' \\(sources: fedi, sky\\)"):
        load_sources(path).select("x")
    example = load_sources(ROOT / "docs" / "sources.example.yaml")  # the documented example
    assert [s.platform for s in example.sources] == ["mastodon", "bluesky", "rss", "html"]


# ------------------------------------------------------------------ paging and incremental


@pytest.mark.parametrize("platform", PLATFORMS)
def test_pages_to_the_end_and_keeps_text_and_labels(workdir, server, platform):
    counts = crawl(workdir, [entry(server, platform)])
    assert [c["new"] for c in counts.values()] == [30, 30, 30]
    assert sum(c["errors"] + c["skipped"] + c["updated"] for c in counts.values()) == 0
    db = workdir / "t.duckdb"
    stored = rows(db, "SELECT count(*), count(DISTINCT post_id) FROM posts")[0]
    assert stored == (90, 90)
    texts = sorted(t for (t,) in rows(db, "SELECT text FROM posts"))
    originals = sorted(plain(p.text) for a in server.accounts.values() for p in a.posts)
    assert texts == originals
    labels = sorted(rows(db, "SELECT display_name, label FROM users"))
    assert labels == sorted((a.username, a.label) for a in server.accounts.values())
    if platform == "mastodon":  # max_id paging until an empty page
        assert len(server.requests_to("/api/v1/accounts/1")) == 3 * (math.ceil(30 / 7) + 1)
    if platform == "bluesky":  # cursor paging until no cursor
        assert len(server.requests_to("/xrpc/app.bsky.feed.getAuthorFeed")) == 3 * 5


@pytest.mark.parametrize("platform", PLATFORMS)
def test_second_crawl_fetches_only_new_posts(workdir, server, platform):
    crawl(workdir, [entry(server, platform)])
    before = len(server.requests)
    first = next(iter(server.accounts))
    server.add_posts(
        pl.DataFrame(
            {
                "user_id": [first] * 3,
                "post_id": ["n1", "n2", "n3"],
                "created_at": [
                    datetime(2017, 1, 1, 9),
                    datetime(2017, 1, 2, 9),
                    datetime(2017, 1, 3, 9),
                ],
                "text": ["a new post", "a new reply", "a new boost"],
                "kind": ["original", "reply", "repost"],
            }
        )
    )
    counts = crawl(workdir, [entry(server, platform)])
    news = [c["new"] for c in counts.values()]
    assert news == [3, 0, 0]
    assert sum(c["unchanged"] + c["updated"] + c["errors"] for c in counts.values()) == 0
    db = workdir / "t.duckdb"
    assert rows(db, "SELECT count(*), count(DISTINCT post_id) FROM posts")[0] == (93, 93)
    second = server.requests[before:]
    if platform == "mastodon":
        statuses = [r for r in second if r.path.endswith("/statuses")]
        assert all("since_id" in r.query for r in statuses)
        assert len(statuses) == 4  # one page each, and one more for the account with news
        kinds = dict(rows(db, "SELECT text, kind FROM posts WHERE text LIKE 'a new %'"))
        assert kinds == {"a new post": "original", "a new reply": "reply", "a new boost": "repost"}
    if platform == "bluesky":
        kinds = dict(rows(db, "SELECT text, kind FROM posts WHERE text LIKE 'a new %'"))
        assert kinds == {"a new post": "original", "a new reply": "reply", "a new boost": "repost"}
        assert len([r for r in second if "getAuthorFeed" in r.path]) == 3
    if platform in ("rss", "atom"):
        assert sorted(r.status for r in second if r.path.endswith(".xml")) == [200, 304, 304]
    if platform == "html":
        assert len([r for r in second if r.path.startswith("/html/")]) == 3  # first pages only


def test_max_posts_per_user_and_since(workdir, server):
    counts = crawl(workdir, [entry(server, "mastodon")], max_posts_per_user=4)
    assert [c["new"] for c in counts.values()] == [4, 4, 4]
    newest = sorted(p.status_id for a in server.accounts.values() for p in a.posts[:4])
    assert (
        sorted(int(i) for (i,) in rows(workdir / "t.duckdb", "SELECT post_id FROM posts")) == newest
    )
    (workdir / "t.duckdb").unlink()
    crawl(workdir, [entry(server, "bluesky")], since=date(2016, 6, 1))
    wanted = sum(
        1 for a in server.accounts.values() for p in a.posts if p.created_at >= datetime(2016, 6, 1)
    )
    assert rows(
        workdir / "t.duckdb", "SELECT count(*), min(created_at) >= '2016-06-01' FROM posts"
    )[0] == (wanted, True)


# ------------------------------------------------------------------ politeness and faults


def test_429_waits_for_retry_after(workdir, server):
    account = next(iter(server.accounts.values()))
    path = f"/api/v1/accounts/{account.number}/statuses"
    server.script(path, Reply(429, '{"error": "Too many requests"}', {"Retry-After": "1"}))
    counts = crawl(workdir, [entry(server, "mastodon")])
    assert counts[f"{account.username}@127.0.0.1"]["new"] == 30
    assert sum(c["errors"] for c in counts.values()) == 0
    refused, retried = server.requests_to(path)[:2]
    assert refused.status == 429 and retried.status == 200
    assert retried.at - refused.at >= 0.95


def test_server_errors_are_retried_with_backoff(workdir, server):
    account = next(iter(server.accounts.values()))
    path = "/xrpc/app.bsky.actor.getProfile"
    server.script(path, Reply(500, "oops"), Reply(503, "busy"))
    counts = crawl(workdir, [entry(server, "bluesky")])
    assert [c["new"] for c in counts.values()] == [30, 30, 30]
    assert sum(c["errors"] for c in counts.values()) == 0
    assert [r.status for r in server.requests_to(path)][:2] == [500, 503]
    assert account.handle in counts


def test_broken_pages_count_as_errors_and_the_crawl_goes_on(workdir, server):
    one, two, three = server.accounts.values()
    server.script(f"/api/v1/accounts/{one.number}/statuses", Reply(200, '[{"id": "12", "conte'))
    server.script(f"/api/v1/accounts/{two.number}/statuses", *[Reply(502, "bad gateway")] * 3)
    server.script(
        f"/rss/{two.username}.xml",
        Reply(200, "<html><body>We moved!</body></html>", {"Content-Type": "text/html"}),
    )
    server.script(
        f"/html/{three.username}",
        Reply(
            200,
            "<html><body><div class='new-design'>hi</div></body></html>",
            {"Content-Type": "text/html"},
        ),
    )
    sources = [entry(server, p) for p in ("mastodon", "rss", "html")]
    counts = crawl(workdir, sources)
    failed = {
        f"{one.username}@127.0.0.1",
        f"{two.username}@127.0.0.1",
        f"{server.url}/rss/{two.username}.xml",
        f"{server.url}/html/{three.username}",
    }
    for account, row in counts.items():
        assert (row["errors"], row["new"]) == ((1, 0) if account in failed else (0, 30)), account
    # failed accounts keep no crawl state, so the next crawl fetches them in full
    again = crawl(workdir, sources)
    for account, row in again.items():
        assert (row["errors"], row["new"]) == ((0, 30) if account in failed else (0, 0)), account
    assert rows(workdir / "t.duckdb", "SELECT count(*) FROM posts")[0][0] == 9 * 30


def test_robots_txt_disallow_is_respected(workdir, server):
    blocked = list(server.accounts.values())[1]
    server.robots = f"User-agent: *\nDisallow: /html/{blocked.username}\n"
    counts = crawl(workdir, [entry(server, "html")])
    assert not server.requests_to(f"/html/{blocked.username}")
    row = counts[f"{server.url}/html/{blocked.username}"]
    assert (row["new"], row["errors"]) == (0, 1)
    assert sorted(c["new"] for c in counts.values()) == [0, 30, 30]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_emoji_rtl_and_entities_are_stored_exactly(workdir, server, platform):
    texts = [
        "Café ☕ 🎉 👩‍👩‍👧 “quoted” & <b>not bold</b> &amp; stays &lt;literal&gt;",
        "שלום עולם! مرحبا بالعالم 123 — mixed עברית and English",
        "Zero width\u200bjoiner, NBSP-free; tab\tinside\nsecond line",
    ]
    first = next(iter(server.accounts))
    server.add_posts(
        pl.DataFrame(
            {
                "user_id": [first] * 3,
                "post_id": ["u1", "u2", "u3"],
                "created_at": [datetime(2017, 2, 1), datetime(2017, 2, 2), datetime(2017, 2, 3)],
                "text": texts,
            }
        )
    )
    crawl(workdir, [entry(server, platform)])
    stored = {t for (t,) in rows(workdir / "t.duckdb", "SELECT text FROM posts")}
    assert set(texts) <= stored


# ------------------------------------------------------------------ crashes and locks


def test_kill_9_mid_crawl_then_rerun_loses_nothing_committed(workdir, sample):
    with LocalPlatforms(first_users(sample, 40), page_cap=5, delay=0.01) as server:
        command, _ = runner_command(
            workdir, [entry(server, "mastodon")], overrides={"TRIBES_BATCH_SIZE": "50"}
        )
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir
        )
        deadline = time.monotonic() + 60
        while len(server.requests_to("/api/v1/accounts/1")) < 120:
            assert process.poll() is None and time.monotonic() < deadline, "crawl ended early"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        db = workdir / "t.duckdb"
        committed = {i for (i,) in rows(db, "SELECT post_id FROM posts")}
        assert len(committed) >= 50  # whole batches were committed before the kill
        # an account's crawl state never runs ahead of its posts
        users = {
            f"{a.username}@127.0.0.1": sum(len(p.text) <= 20_000 for p in a.posts)
            for a in server.accounts.values()
        }  # longer posts are skipped
        for account, stored in rows(
            db,
            """SELECT s.account, count(p.post_id) FROM crawl_state s
                LEFT JOIN posts p ON p.user_id = s.account GROUP BY s.account""",
        ):
            assert stored == users[account]
        counts = crawl(workdir, [entry(server, "mastodon")], overrides={"TRIBES_BATCH_SIZE": "50"})
        total = sum(users.values())
        final = rows(db, "SELECT count(*), count(DISTINCT post_id) FROM posts")[0]
        assert final == (total, total)
        assert committed <= {i for (i,) in rows(db, "SELECT post_id FROM posts")}
        assert sum(c["new"] for c in counts.values()) == total - len(committed)


def test_mastodon_stores_each_status_language(workdir, server):
    one = next(iter(server.accounts.values()))
    page = [server.mastodon_status(one, p) | {"language": "de"} for p in one.posts[:2]]
    server.script(
        f"/api/v1/accounts/{one.number}/statuses",
        Reply(200, json.dumps(page), {"Content-Type": "application/json"}),
    )
    crawl(workdir, [entry(server, "mastodon", users=[one.username])])
    languages = rows(workdir / "t.duckdb", "SELECT lang, count(*) FROM posts GROUP BY ALL")
    assert set(languages) == {("de", 2), (None, 28)}  # the server gives the others none


def test_crawl_waits_for_another_writer(workdir, server):
    command, report = runner_command(workdir, [entry(server, "rss")])
    db = workdir / "t.duckdb"
    waiting = "is busy (another writer); waiting for it"
    with store.open(db, "write"):  # a refresh holding the write lock until the crawl waits
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir
        )
        before = []
        for line in process.stdout:  # however long the crawl takes to start on a busy machine
            before.append(line)
            if waiting in line:
                break
        assert process.poll() is None, "".join(before)[-2000:]  # still waiting, not failed
    output = "".join(before) + process.communicate(timeout=120)[0]
    assert process.returncode == 0, output[-2000:]
    assert waiting in output
    assert rows(db, "SELECT count(*) FROM posts")[0][0] == 90


def test_a_refresh_gets_the_database_during_a_long_crawl(workdir, sample):
    with LocalPlatforms(first_users(sample, 12), page_cap=5, delay=0.1) as server:
        command, _ = runner_command(
            workdir,
            [entry(server, "mastodon")],
            overrides={
                "TRIBES_BATCH_SIZE": "20",
                "TRIBES_DB_HOLD_SECONDS": "1",
                "TRIBES_DB_IDLE_SECONDS": "0.5",
                "CONCURRENT_REQUESTS_PER_DOMAIN": "2",
            },
        )
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir
        )
        while len(server.requests_to("/api/v1/accounts/1")) < 10:
            assert process.poll() is None
            time.sleep(0.02)
        db = workdir / "t.duckdb"
        asked = time.monotonic()
        with store.open(db, "write") as con:  # what a refresh task does
            waited = time.monotonic() - asked
            stored = store.scalar(con, "SELECT count(*) FROM posts")
            assert process.poll() is None  # the crawl is still going: we did not wait it out
            time.sleep(1.5)  # hold the lock a while: the crawl queues posts, then goes on
        assert waited < 6  # hold (1 s) + the crawl giving way + store.open's polling
        assert process.wait(timeout=120) == 0
        total = sum(len(a.posts) for a in server.accounts.values())
        assert 0 < stored < total
        assert rows(db, "SELECT count(*), count(DISTINCT post_id) FROM posts")[0] == (total, total)


# ------------------------------------------------------------------ flow, CLI and demo


def test_cli_crawl_prints_counts_and_records_the_crawl(
    prefect_harness, workdir, server, monkeypatch
):
    monkeypatch.setenv("TRIBES_CRAWL_DELAY", "0")
    monkeypatch.setenv("TRIBES_CRAWL_CONCURRENCY_PER_DOMAIN", "8")
    sources = write_sources(workdir, [entry(server, "mastodon"), entry(server, "rss")])
    db = workdir / "t.duckdb"
    cli = CliRunner()
    first = cli.invoke(
        app, ["--db", str(db), "crawl", "--sources", str(sources), "--source", "rss"]
    )
    assert first.exit_code == 0, first.output
    assert "6 accounts" not in first.output and "3 accounts, 90 new, 0 updated" in first.output
    assert "unchanged" in first.output and "errors" in first.output
    second = cli.invoke(app, ["--db", str(db), "crawl", "--sources", str(sources)])
    assert second.exit_code == 0, second.output
    assert "6 accounts, 90 new, 0 updated, 0 unchanged, 0 skipped, 0 errors" in second.output
    with store.open(db) as con:
        crawls = store.crawls_table(con)
    assert crawls["status"].to_list() == ["completed", "completed"]
    assert crawls["source"].to_list() == ["all", "rss"]
    stats = json.loads(crawls["stats"][0])
    assert sum(a["new"] for a in stats["accounts"]) == 90
    assert stats["spiders"][0]["finish_reason"] == "finished"
    bad = cli.invoke(app, ["--db", str(db), "crawl", "--sources", str(sources), "--since", "May"])
    assert bad.exit_code == 1 and "is not a date like 2024-01-31" in bad.output


ENGAGEMENT = "SUM(likes), SUM(replies), SUM(reposts), COUNT(*) FILTER (kind = 'photo')"


def demo_engagement(db: Path) -> list[tuple]:
    """Per page: its summed likes, replies, reposts and photo posts, as the demo stored them."""
    return rows(
        db,
        f"SELECT u.display_name, {ENGAGEMENT} FROM posts p JOIN users u USING (platform, user_id) "
        "GROUP BY ALL ORDER BY 1",
    )


def sample_engagement(sample: pl.DataFrame) -> list[tuple]:
    """The same from the sample's Facebook columns (its one over-long post is not stored)."""
    stored = sample.filter(pl.col("text").str.len_chars() <= 20_000)
    sums = stored.group_by("user_id").agg(
        pl.col("num_reactions", "num_comments", "num_shares").sum(),
        (pl.col("status_type") == "photo").sum(),
    )
    return sorted(sums.rows())


def test_demo_collects_the_sample_with_the_spider(prefect_harness, make_settings, sample):
    settings = make_settings()
    summary = collect_demo_sample(settings)
    assert len(summary.accounts) == 139 and summary.total("errors") == 0
    assert summary.total("new") == sample.height - 1  # one post is over max_post_chars
    assert summary.total("skipped") == 1
    labels = dict(rows(settings.db, "SELECT display_name, label FROM users"))
    assert labels == dict(sample.select("user_id", "user_label").unique().iter_rows())
    assert demo_engagement(settings.db) == sample_engagement(sample)  # served, crawled, stored
    again = collect_demo_sample(settings)  # a rerun is incremental: nothing new
    assert again.total("new") == 0 and again.total("unchanged") == 0


def test_cli_demo_crawls_imports_products_refreshes_and_reports(prefect_harness, workdir):
    """`tribes demo`, the command `make demo` runs, end to end on a fresh database."""
    db = workdir / "demo.duckdb"
    result = CliRunner().invoke(app, ["--db", str(db), "demo"])
    assert result.exit_code == 0, result.output
    assert "139 accounts" in result.output and "0 errors" in result.output
    report = Path(result.output.split("report:")[-1].split()[0])
    assert report.name == "report.html" and report.exists()
    with store.open(db) as con:
        assert store.scalar(con, "SELECT count(*) FROM runs WHERE status = 'completed'") == 1
        assert store.scalar(con, "SELECT count(DISTINCT cluster_id) FROM latest_user_clusters") >= 5
        assert store.scalar(con, "SELECT count(*) FROM products") > 0


def test_retry_after_header_forms():
    from email.utils import format_datetime

    from scrapers.middlewares import retry_after_seconds

    assert retry_after_seconds(b"7") == 7.0
    later = datetime.now().astimezone() + timedelta(seconds=30)
    assert 25 <= retry_after_seconds(format_datetime(later)) <= 31
    assert retry_after_seconds(b"Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds(None) is None and retry_after_seconds(b"soon") is None
