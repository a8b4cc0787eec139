"""A person of several accounts shows once, with all its accounts, where clusters list their
users: `tribes clusters` (terminal, control characters stripped) and the report (escaped)."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import polars as pl
import pytest
from conftest import SAMPLE
from typer.testing import CliRunner

from flows.cli import app
from flows.imports import import_file
from flows.refresh import refresh
from pipeline import store
from pipeline.ingest import ColumnMap
from pipeline.settings import load_settings

runner = CliRunner()
HOSTILE = "<b>Top</b>\x1b[2J\x07 page"
SHOWN_NAME = "<b>Top</b> page"  # the terminal shows it without its control characters


def first_example(db) -> str:
    """The most probable example user of the first cluster (the sample's names are its ids)."""
    with store.open(db) as con:
        clusters = store.run_clusters(con, store.latest_run_id(con))
    return clusters["example_users"][0][0]


def cross_post(db: Path, user: str, platform: str, folder: Path) -> str:
    """Import `user`'s posts again as a `platform` account: a person who posts the same on two
    platforms, so linking the two keeps the profile the account had alone. Returns its id."""
    copy = f"{user}-copy"
    posts = (
        pl.read_parquet(SAMPLE)
        .filter(pl.col("user_id") == user)
        .with_columns(user_id=pl.lit(copy), post_id=pl.col("post_id") + "-copy")
    )
    posts.write_parquet(folder / "copy.parquet")
    import_file(load_settings(db=db), str(folder / "copy.parquet"), platform, ColumnMap())
    return copy


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_linked_person_shows_once_with_both_accounts_in_clusters_and_report(refreshed):
    first = first_example(refreshed)
    second = cross_post(refreshed, first, "mastodon", refreshed.parent)
    with store.open(refreshed, "write") as con:
        store.upsert_users(
            con,
            pl.DataFrame({"platform": ["facebook"], "user_id": [first], "display_name": [HOSTILE]}),
        )
    one, two = f"facebook:{first}", f"mastodon:{second}"
    linked = runner.invoke(app, ["--db", str(refreshed), "people", "link", one, two])
    assert linked.exit_code == 0, linked.output
    run_id = refresh(db=str(refreshed))
    person = f"{HOSTILE} ({one}, {two})"

    with store.open(refreshed) as con:
        clusters = store.run_clusters(con, run_id)
    examples = [name for names in clusters["example_users"] for name in names]
    assert examples.count(person) == 1  # once, as the person
    assert not any(first == n or second == n for n in examples)  # not as lone accounts

    shown = runner.invoke(app, ["--db", str(refreshed), "clusters"], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert f"{SHOWN_NAME} ({one}, {two})" in shown.output
    assert "\x1b[2J" not in shown.output and "\x07" not in shown.output

    page = load_settings(db=refreshed).reports_dir / run_id / "report.html"
    html = page.read_text(encoding="utf-8")
    assert "<b>Top</b>" not in html  # escaped
    cells = re.findall(r"<tr><td>(.*?)</td>", html, re.S)
    members = [unescape(re.sub(r"\s*<span[^>]*>.*?</span>", "", cell)) for cell in cells]
    assert [m for m in members if f"({one}, {two})" in m] == [f"{HOSTILE} ({one}, {two})"]
    assert second not in members  # the second account is not listed on its own
