"""Product recommendations: catalogue validation, ranking on the real sample, clear errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.recommend import import_catalogue, recommendations_for
from flows.refresh import refresh
from pipeline import recommend as rec
from pipeline import store
from pipeline.clean import clean_posts
from pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "data" / "sample" / "products.csv"
FOOTBALL = {
    "arsenal",
    "chelseafc",
    "liverpoolfc",
    "manchesterunited",
    "fcbarcelona",
    "realmadrid",
    "englandteam",
    "equipedefrance",
    "figc",
    "officialussoccer",
}
BASKETBALL = {"nba", "cavs", "chicagobulls", "goldenstatewarriors", "nikebasketball"}
runner = CliRunner()


@pytest.fixture(scope="module")
def recommended(
    refreshed_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A copy of the refreshed sample, the demo catalogue imported, refreshed again (real flow)."""
    folder = tmp_path_factory.mktemp("recommended")
    shutil.copytree(refreshed_template, folder, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        settings = load_settings(db=folder / "tribes.duckdb")
        assert import_catalogue(settings, str(CATALOGUE)) >= 60
        refresh(db=str(settings.db))
        yield settings.db


def cli(db: Path, *args: str):
    return runner.invoke(app, ["--db", str(db), *args])


def recs(db: Path) -> tuple[str, pl.DataFrame, pl.DataFrame]:
    with store.open(db) as con:
        run_id = store.latest_run_id(con)
        return run_id, store.read_recommendations(con, run_id), store.run_members(con, run_id)


def home_cluster(members: pl.DataFrame, users: set[str]) -> int:
    """The cluster holding most of `users` (it must be mostly pages labelled sports)."""
    ours = members.filter(pl.col("user_id").is_in(list(users)))
    home = ours["cluster_id"].mode().sort()[0]
    group = members.filter(pl.col("cluster_id") == home)
    share = (group["known_label"] == "sports").mean()
    assert share >= 0.5, f"cluster {home} of {sorted(users)[:3]}… is {share:.0%} sports pages"
    return home


def test_football_products_rank_first_for_the_football_cluster(recommended):
    run_id, found, members = recs(recommended)
    football = home_cluster(members, FOOTBALL)
    top = found.filter((pl.col("scope") == "cluster") & (pl.col("scope_id") == str(football)))
    assert top["rank"].to_list() == [1, 2, 3, 4, 5]
    assert top["category"][0] == "football", top.select("name", "category", "reason")
    assert (top["category"].head(3) == "football").all(), top.select("name", "category")
    assert top["score"].is_sorted(descending=True)
    assert top["reason"][0].startswith("terms: ") and "; post: " in top["reason"][0]


def test_basketball_cluster_and_users_get_basketball_products(recommended):
    run_id, found, members = recs(recommended)
    basketball = home_cluster(members, BASKETBALL)
    top = found.filter((pl.col("scope") == "cluster") & (pl.col("scope_id") == str(basketball)))
    assert top["category"][0] == "basketball", top.select("name", "category")
    firsts = found.filter((pl.col("scope") == "user") & (pl.col("rank") == 1)).with_columns(
        user_id=pl.col("scope_id").str.split_exact(":", 1).struct.field("field_1")
    )
    hoops = firsts.filter(pl.col("user_id").is_in(list(BASKETBALL)))
    assert hoops.height == len(BASKETBALL)
    assert (hoops["category"] == "basketball").mean() >= 0.8, hoops.select("user_id", "name")
    clubs = firsts.filter(pl.col("user_id").is_in(list(FOOTBALL)))
    assert (clubs["category"] == "football").mean() >= 0.7, clubs.select("user_id", "name")


def test_every_clustered_user_and_cluster_has_ranked_products(recommended):
    run_id, found, members = recs(recommended)
    users = found.filter(pl.col("scope") == "user")
    assert users["scope_id"].n_unique() == members.height
    assert (
        found.filter(pl.col("scope") == "cluster")["scope_id"].n_unique()
        == members["cluster_id"].n_unique()
    )
    assert users.group_by("scope_id").len()["len"].eq(5).all()
    assert users["reason"].str.contains('^post: [“"]').all()  # ours, or the post's own quote


def test_reasons_quote_one_real_post_of_the_user_not_a_chunk(recommended):
    run_id, found, members = recs(recommended)
    with store.open(recommended) as con:
        posts = clean_posts(store.read_posts(con))
    own = dict(posts.group_by("user_id").agg("text_clean").iter_rows())
    firsts = found.filter((pl.col("scope") == "user") & (pl.col("rank") == 1))
    for scope_id, reason in firsts.select("scope_id", "reason").iter_rows():
        quote = reason.removeprefix("post: ").removeprefix("“").removesuffix("”").removesuffix("…")
        user = scope_id.split(":", 1)[1]
        assert "\n" not in quote
        # a post longer than a chunk is embedded in pieces: the quote may be one of its pieces
        assert any(quote in " ".join(p.split()) for p in own[user]), (user, reason)


def test_cli_recommend_for_user_and_cluster(recommended):
    shown = cli(recommended, "recommend", "--user", "liverpoolfc")
    assert shown.exit_code == 0, shown.output
    assert "facebook:liverpoolfc" in shown.output and "football" in shown.output
    _, _, members = recs(recommended)
    football = home_cluster(members, FOOTBALL)
    shown = cli(recommended, "recommend", "--cluster", str(football))
    assert shown.exit_code == 0, shown.output
    assert "football" in shown.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody-here"], "no user 'nobody-here' in the database"),
        (["--cluster", "999"], "has no cluster 999"),
        ([], "pass exactly one of --user NAME or --cluster ID"),
        (["--user", "nba", "--run", "no-such-run"], "no run 'no-such-run'"),
    ],
)
def test_cli_recommend_errors_are_one_line(recommended, args, message):
    shown = cli(recommended, "recommend", *args)
    assert shown.exit_code == 1
    assert message in shown.output
    assert len(shown.output.strip().splitlines()) == 1, shown.output


def test_user_without_posts_gets_a_clear_error(recommended):
    settings = load_settings(db=recommended)
    with store.open(recommended, "write") as con:
        store.upsert_users(
            con,
            pl.DataFrame(
                {"platform": ["facebook"], "user_id": ["ghost"], "display_name": ["Ghost Page"]}
            ),
        )
    with pytest.raises(rec.RecommendError, match="user ghost has no posts"):
        recommendations_for(settings, user="ghost")
    shown = cli(recommended, "recommend", "--user", "Ghost Page")
    assert shown.exit_code == 1
    assert "has no posts: nothing to recommend from" in shown.output
    with pytest.raises(rec.RecommendError, match="facebook:ghost has no posts"):
        rec.interests(
            np.ones((2, 4), np.float32), np.array([0, 0]), 2, ["facebook:a", "facebook:ghost"]
        )


def test_failed_run_drops_its_recommendations(recommended, tmp_path):
    copy = tmp_path / "copy.duckdb"
    shutil.copy(recommended, copy)
    with store.open(copy, "write") as con:
        run_id = store.latest_run_id(con)
        assert store.read_recommendations(con, run_id).height > 0
        store.fail_run(con, run_id, "boom")
        assert store.read_recommendations(con, run_id).height == 0


BAD = [
    ("products.csv", "id,name\na,Ball\n", "lacks column(s) description"),
    (
        "products.csv",
        "id,name,description\na,Ball,Round\nb,,No name\n",
        "row 2 (id 'b'): missing name",
    ),
    (
        "products.csv",
        "id,name,description\na,Ball,Round\na,Shirt,Red\n",
        "row 1 (id 'a'): duplicate id; 1 more bad row(s)",
    ),
    (
        "products.csv",
        "id,name,description,url\na,Ball,Round,javascript:alert(1)\n",
        "row 1 (id 'a'): url must start with http:// or https://",
    ),
    ("products.csv", "id,name,description\n,Ball,Round\n", "row 1: missing id"),
    ("products.json", '["just a string"]', "expected a JSON list of product objects"),
    ("products.json", "{not json", "is not readable as json"),
    ("products.xlsx", "whatever", "use a .csv, .json, .jsonl or .parquet catalogue"),
    ("products.csv", "id,name,description\n", "has no products"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD)
def test_bad_catalogue_is_one_line_and_changes_nothing(workdir, name, content, message):
    db = workdir / "tribes.duckdb"
    good = workdir / "good.jsonl"
    good.write_text('{"id": "k1", "name": "Kit", "description": "A football kit"}\n')
    assert cli(db, "products", "import", str(good)).exit_code == 0
    bad = workdir / name
    bad.write_text(content, encoding="utf-8")
    shown = cli(db, "products", "import", str(bad))
    assert shown.exit_code == 1
    assert message in shown.output, shown.output
    assert len(shown.output.strip().splitlines()) == 1, shown.output
    with store.open(db) as con:
        assert store.read_products(con)["product_id"].to_list() == ["k1"]


def test_catalogue_formats_and_the_bundled_catalogue(tmp_path):
    products = rec.read_catalogue(CATALOGUE)
    assert 60 <= products.height <= 100
    assert products["id"].is_unique().all()
    categories = set(products["category"])
    assert {
        "football",
        "basketball",
        "music",
        "entertainment",
        "news",
        "politics",
        "religion_inspiration",
        "science",
        "gaming",
        "fashion_lifestyle",
    } <= categories
    products.write_parquet(tmp_path / "c.parquet")
    (tmp_path / "c.json").write_text(products.write_json(), encoding="utf-8")
    for path in (tmp_path / "c.parquet", tmp_path / "c.json"):
        assert rec.read_catalogue(path).equals(products)


def test_rank_orders_by_cosine_similarity():
    items = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.7, 0.7, 0]], dtype=np.float32)
    order, scores = rec.rank(np.array([[0.0, 1.0, 0.1]], np.float32), items, 2)
    assert order.tolist() == [[1, 3]]
    assert scores[0, 0] > scores[0, 1]
    with pytest.raises(rec.RecommendError, match="catalogue is empty"):
        rec.rank(np.ones((1, 3), np.float32), np.zeros((0, 3), np.float32), 3)
