"""The hierarchy above the fine clusters (pipeline/hierarchy.py), stored, shown and cut on request;
users with too little text placed, never silently dropped."""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline import hierarchy, store

DIM = 24


def blobs(tree: list[list[int]], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points in groups of sub-clusters: `tree[g]` lists the users of each sub-cluster of group
    g. Groups lie far apart, their sub-clusters nearer; users spread about as far as the
    sub-clusters lie apart, as real profiles do (the pages' fine clusters have a silhouette of
    0.16). Returns points, the fine label and the group of each user."""
    rng = np.random.default_rng(seed)
    points, fine, group = [], [], []
    for g, sizes in enumerate(tree):
        centre = rng.normal(size=DIM) * 4
        for size in sizes:
            sub = centre + rng.normal(size=DIM)
            points.append(sub + rng.normal(size=(size, DIM)) * 0.5)
            fine += [len(set(fine))] * size
            group += [g] * size
    return np.vstack(points), np.array(fine), np.array(group)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(set(a)) == len(set(b))


@pytest.mark.parametrize(
    "tree", [[[30, 25, 20], [28, 22, 18]], [[30, 20], [25, 20], [22, 18]], [[40, 10, 10, 10], [30]]]
)
def test_the_best_separated_cut_finds_the_known_groups(tree):
    points, fine, group = blobs(tree)
    found = hierarchy.levels(points, fine)
    assert same_partition(found.parent[found.labels], group)
    assert same_partition(found.labels, fine)  # the fine clusters are kept as they are


def test_groups_are_numbered_largest_first():
    points, fine, _ = blobs([[10, 10], [30, 25]])
    found = hierarchy.levels(points, fine)
    users = np.bincount(found.parent[found.labels])
    assert users.tolist() == [55, 20]


def test_asked_for_fewer_groups_the_tree_is_cut_there_within_the_known_groups():
    points, fine, group = blobs([[30, 25, 20], [28, 22, 18]])
    for n in (2, 3, 4, 5, 6):
        found = hierarchy.levels(points, fine, n_groups=n)
        coarse = found.parent[found.labels]
        assert len(set(coarse)) == n
        assert all(len(set(group[coarse == g])) == 1 for g in set(coarse))  # nested in the tree


def test_asked_for_more_groups_the_largest_clusters_split():
    points, fine, _ = blobs([[60, 20], [20]])
    found = hierarchy.levels(points, fine, n_groups=5)
    assert len(set(found.labels)) == 5 and len(set(found.parent)) == 5
    for new in set(found.labels):  # a split cluster's parts stay inside it
        assert len(set(fine[found.labels == new])) == 1
    assert np.bincount(found.labels).tolist() == sorted(np.bincount(found.labels), reverse=True)


def test_two_clusters_are_their_own_groups_and_one_is_one():
    points, fine, _ = blobs([[20], [20]])
    assert hierarchy.levels(points, fine).parent.tolist() == [0, 1]
    assert hierarchy.levels(points[:20], fine[:20]).parent.tolist() == [0]


def test_the_tree_is_average_linkage_of_the_users_cosine_distances():
    points, fine, _ = blobs([[5, 6], [7]])
    tree = hierarchy.cluster_tree(points, fine)
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    first = (1 - unit[fine == 0] @ unit[fine == 1].T).mean()
    assert tree[0, :2].tolist() == [0, 1] and tree[0, 2] == pytest.approx(first)
    merged = (1 - unit[fine < 2] @ unit[fine == 2].T).mean()
    assert tree[1, 2] == pytest.approx(merged) and tree[1, 3] == 3


def members_of(points: np.ndarray, fine: np.ndarray) -> pl.DataFrame:
    n = len(fine)
    return pl.DataFrame(
        {
            "platform": ["p"] * n,
            "user_id": [f"u{i}" for i in range(n)],
            "n_posts": [5] * n,
            "cluster_id": pl.Series(fine, dtype=pl.Int32),
            "probability": [0.9] * n,
            "is_outlier": [False] * n,
            "x": points[:, 0].astype(float),
            "y": points[:, 1].astype(float),
        }
    )


def test_users_with_too_little_text_join_their_nearest_cluster_flagged():
    points, fine, _ = blobs([[20], [20], [20]])
    few = pl.DataFrame({"platform": ["p", "p"], "user_id": ["few0", "few1"], "n_posts": [1, 2]})
    near = points[[45, 5]] + 0.01  # the first is like cluster 2's users, the second like 0's
    placed = hierarchy.place_users(members_of(points, fine), points, few, near)
    assert placed.height == 62
    added = placed.filter(pl.col("reason").is_not_null())
    assert added["cluster_id"].to_list() == [2, 0]
    assert added["reason"].to_list() == [hierarchy.TOO_LITTLE_TEXT] * 2
    assert added["is_outlier"].all() and added["probability"].is_between(0, 1).all()
    assert placed.filter(pl.col("reason").is_null()).height == 60
    home = placed.filter(pl.col("cluster_id") == 2, pl.col("reason").is_null())
    assert home["x"].min() <= added["x"][0] <= home["x"].max()  # on the map beside its cluster


def test_both_levels_stack_into_one_table_with_parents():
    fine = pl.DataFrame({"cluster_id": [0, 1, 2], "label": ["a", "b", "c"], "size": [5, 4, 3]})
    coarse = pl.DataFrame({"cluster_id": [0, 1], "label": ["ab", "c"], "size": [9, 3]})
    terms = pl.DataFrame({"cluster_id": [0, 1, 2], "term": ["x", "y", "z"]})
    group_terms = pl.DataFrame({"cluster_id": [0, 1], "term": ["xy", "z"]})
    rows, all_terms = hierarchy.stack_levels(fine, terms, coarse, group_terms, np.array([0, 0, 1]))
    assert rows.select("cluster_id", "level", "parent_id").rows() == [
        (0, "fine", 3),
        (1, "fine", 3),
        (2, "fine", 4),
        (3, "coarse", None),
        (4, "coarse", None),
    ]
    assert all_terms.filter(pl.col("cluster_id") == 3)["term"].to_list() == ["xy"]


# ---------------------------------------------------------------- stored


def stored_run(con: duckdb.DuckDBPyConnection) -> str:
    """A run with fine clusters 0, 1 under group 2, a user placed with too little text."""
    members = pl.DataFrame(
        {
            "platform": ["p"] * 3,
            "user_id": ["a", "b", "c"],
            "cluster_id": pl.Series([0, 1, 1], dtype=pl.Int32),
            "probability": [1.0, 1.0, 0.2],
            "is_outlier": [False, False, True],
            "reason": [None, None, hierarchy.TOO_LITTLE_TEXT],
        }
    )
    clusters = pl.DataFrame(
        {
            "cluster_id": [0, 1, 2],
            "label": ["fine a", "fine b", "group"],
            "size": [1, 2, 3],
            "n_outliers": [0, 1, 1],
            "parent_id": [2, 2, None],
            "level": ["fine", "fine", "coarse"],
        }
    )
    terms = pl.DataFrame(
        {"cluster_id": [0, 1, 2], "term": ["ta", "tb", "tg"], "weight": [1.0] * 3, "rank": [1] * 3}
    )
    run_id = store.start_run(con, {}, "v1")
    store.complete_run(con, run_id, members, clusters, terms, {}, 3)
    return run_id


def test_readers_of_fine_clusters_see_only_fine_rows(tmp_path):
    with store.open(tmp_path / "t.duckdb", "write") as con:
        run_id = stored_run(con)
        assert store.run_info(con, run_id)["n_clusters"] == 2
        assert store.run_clusters(con, run_id)["label"].to_list() == ["fine b", "fine a"]
        assert store.run_terms(con, run_id)["term"].to_list() == ["ta", "tb"]
        assert store.run_terms(con, run_id, "coarse")["term"].to_list() == ["tg"]
        assert con.execute("SELECT count(*) FROM latest_clusters").fetchall() == [(2,)]
        fine = store.cluster_table(con, run_id)
        assert fine.select("cluster_id", "parent_id", "parent_label").rows() == [
            (1, 2, "group"),
            (0, 2, "group"),
        ]
        coarse = store.cluster_table(con, run_id, "coarse")
        assert coarse.select("label", "children").rows() == [("group", [1, 0])]
        assert store.left_out(con, run_id) == {hierarchy.TOO_LITTLE_TEXT: 1}


def test_a_database_from_before_the_hierarchy_upgrades_and_reads_as_before(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    for version, statements in enumerate(store.MIGRATIONS, start=1):
        if any("parent_id" in s for s in statements):
            break
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
    con.execute(
        "INSERT INTO runs (run_id, started_at, finished_at, status) "
        "VALUES ('old', now(), now(), 'completed')"
    )
    con.execute("INSERT INTO clusters VALUES ('old', 0, 'kept', 4, 0, [], [])")
    con.close()
    with store.open(path, "write") as con:
        assert store.cluster_table(con, "old")["label"].to_list() == ["kept"]
        assert con.execute("SELECT label, level FROM latest_clusters").fetchall() == [
            ("kept", "fine")
        ]
        assert store.run_clusters(con, "old", "coarse").height == 0


# ---------------------------------------------------------------- refreshed for real


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_refresh_stores_groups_above_its_clusters(refreshed):
    with store.open(refreshed) as con:
        run_id = store.latest_run_id(con)
        fine = store.run_clusters(con, run_id)
        groups = store.run_clusters(con, run_id, "coarse")
    assert 2 <= groups.height < fine.height
    assert set(fine["parent_id"]) == set(groups["cluster_id"])
    sizes = fine.group_by("parent_id").agg(pl.col("size").sum()).sort("parent_id")
    assert sizes["size"].to_list() == groups.sort("cluster_id")["size"].to_list()
    assert groups["label"].str.len_chars().min() > 0


FEW = "few"  # the platform of the users added with too little text


@pytest.fixture(scope="module")
def few_and_four(refreshed_template, tmp_path_factory, prefect_harness):
    """The refreshed sample plus users with one short post each and one with only a link,
    refreshed again asking for 4 groups."""
    from flows.refresh import refresh
    from pipeline.settings import RefreshOptions

    folder = tmp_path_factory.mktemp("few")
    shutil.copytree(refreshed_template, folder, dirs_exist_ok=True)
    db = folder / "tribes.duckdb"
    posts = pl.DataFrame(
        {
            "platform": [FEW] * 4,
            "post_id": ["1", "2", "3", "4"],
            "user_id": ["goalfan", "votefan", "popfan", "linkonly"],
            "text": [
                "What a goal in the league match tonight!",
                "Vote in the election for the senate",
                "New album and tour dates",
                "https://example.com/only-a-link",
            ],
        }
    )
    with store.open(db, "write") as con:
        store.upsert_posts(con, posts)
    run_id = refresh(db=str(db), options=RefreshOptions(clusters=4))
    return db, run_id


@pytest.mark.slow
def test_clusters_4_gives_4_groups(few_and_four):
    db, run_id = few_and_four
    with store.open(db) as con:
        assert store.run_clusters(con, run_id, "coarse").height == 4


@pytest.mark.slow
def test_every_user_with_text_gets_a_cluster_and_the_rest_are_counted(few_and_four):
    db, run_id = few_and_four
    with store.open(db) as con:
        members = store.run_members(con, run_id)
        left_out = store.left_out(con, run_id)
    assert members.filter(pl.col("platform") == "facebook").height == 139
    few = members.filter(pl.col("platform") == FEW).sort("user_id")
    assert few["user_id"].to_list() == ["goalfan", "popfan", "votefan"]
    assert few["reason"].to_list() == [hierarchy.TOO_LITTLE_TEXT] * 3
    assert few["is_outlier"].all()
    assert members.filter(pl.col("platform") != FEW)["reason"].null_count() == 139
    assert left_out == {hierarchy.TOO_LITTLE_TEXT: 3, hierarchy.NO_TEXT: 1}


@pytest.mark.slow
def test_cli_shows_both_levels_and_who_was_placed(few_and_four):
    from flows.cli import app

    db, run_id = few_and_four
    runner = CliRunner()
    coarse = runner.invoke(app, ["--db", str(db), "clusters", "--level", "coarse"])
    assert coarse.exit_code == 0, coarse.output
    assert "Groups (coarse level)" in coarse.output and "sub-groups" in coarse.output
    with store.open(db) as con:
        groups = store.cluster_table(con, run_id, "coarse")
    for children in groups["children"]:
        assert ", ".join(map(str, children)) in coarse.output
    fine = runner.invoke(app, ["--db", str(db), "clusters"])
    assert fine.exit_code == 0, fine.output
    assert "3 users with too little text (fewer than 3 posts) were placed" in fine.output
    assert "not clustered: 1 users whose posts are empty once cleaned" in fine.output
    bad = runner.invoke(app, ["--db", str(db), "clusters", "--level", "middle"])
    assert bad.exit_code == 1 and "--level must be fine or coarse" in bad.output


@pytest.mark.slow
def test_the_report_shows_groups_and_sub_groups(few_and_four):
    from flows.report import write_report
    from pipeline.settings import load_settings

    db, run_id = few_and_four
    page = write_report(load_settings(db=db), run_id).read_text(encoding="utf-8")
    section = page[page.index('id="groups"') : page.index('id="cluster-')]
    assert "Groups and sub-groups" in section
    assert section.count('class="group"') == 4
    with store.open(db) as con:
        fine = store.run_clusters(con, run_id)
    assert section.count('class="subgroup"') == fine.height
    assert "3 users with too little text were placed" in section
    assert "Not clustered: 1 users" in section


def test_refresh_rejects_fewer_than_two_clusters(workdir):
    from flows.cli import app

    result = CliRunner().invoke(
        app, ["--db", str(workdir / "t.duckdb"), "refresh", "--clusters", "1"]
    )
    assert result.exit_code == 1
    assert "bad setting clusters" in result.output


@pytest.fixture(scope="module")
def fb_pages(tmp_path_factory, prefect_harness):
    """The shared Facebook pages (139 pages, 31k posts) imported and refreshed with the defaults."""
    from conftest import shared_file

    from flows.imports import import_file
    from flows.refresh import refresh
    from pipeline.ingest import ColumnMap
    from pipeline.settings import load_settings

    path = shared_file("fb_pages_2016", "posts.parquet")
    settings = load_settings(db=tmp_path_factory.mktemp("fb_pages") / "tribes.duckdb")
    import_file(settings, str(path), "facebook", ColumnMap(label="user_label"))
    return settings.db, refresh(db=str(settings.db))


@pytest.mark.slow
def test_the_pages_sports_clusters_share_one_coarse_group(fb_pages):
    db, run_id = fb_pages
    with store.open(db) as con:
        members = store.run_members(con, run_id)
        fine = store.run_clusters(con, run_id)
        groups = store.run_clusters(con, run_id, "coarse")
    main_label = (
        members.group_by("cluster_id")
        .agg(pl.col("known_label").mode().first(), pl.len())
        .join(fine.select("cluster_id", "parent_id"), on="cluster_id")
    )
    sports = main_label.filter(pl.col("known_label") == "sports")
    assert sports.height >= 2  # the fine level tells US sports from football
    assert sports["parent_id"].n_unique() == 1  # the coarse level puts them together
    assert groups.height >= 2  # and does not put everyone together
