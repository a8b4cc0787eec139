"""The refresh flow run for real (Prefect test harness) on the bundled sample of real posts."""

import re
import shutil

import polars as pl
import pytest
from prefect.client.orchestration import get_client
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from flows.cli import app
from flows.refresh import refresh
from pipeline import store
from pipeline.settings import RefreshOptions

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
ARI_FLOOR = 0.22  # measured 0.379 (mean of 5 seeds 0.375) on the bundled sample; README "Quality"


def assignments(db):
    with store.open(db) as con:
        return store.frame(
            con,
            """SELECT uc.user_id, uc.cluster_id, uc.is_outlier, uc.probability,
                                          u.label FROM latest_user_clusters uc
                                   JOIN users u USING (platform, user_id)""",
        )


def test_every_user_is_assigned_and_clusters_match_known_interests(refreshed):
    members = assignments(refreshed)
    assert members.height == 139  # every page of the sample, noise included
    assert members["probability"].is_between(0, 1).all()
    n_clusters = members["cluster_id"].n_unique()
    assert 3 <= n_clusters <= 30
    ari = adjusted_rand_score(members["label"], members["cluster_id"])
    assert ari >= ARI_FLOOR, f"ARI {ari:.3f} fell below the measured floor {ARI_FLOOR}"


def test_football_clubs_share_a_cluster_named_with_football_terms(refreshed):
    clubs = ["arsenal", "chelseafc", "liverpoolfc", "manchesterunited", "realmadrid"]
    members = assignments(refreshed)
    clusters = members.filter(pl.col("user_id").is_in(clubs))["cluster_id"]
    home = clusters.mode()[0]
    assert (clusters == home).sum() >= 4
    with store.open(refreshed) as con:
        table = store.cluster_table(con, store.latest_run_id(con))
    terms = table.filter(pl.col("cluster_id") == home)["top_terms"][0]
    football = {
        "football",
        "goal",
        "league",
        "match",
        "club",
        "arsenal",
        "chelsea",
        "madrid",
        "liverpool",
        "united",
        "champions",
        "premier",
        "win",
        "season",
        "fans",
    }
    assert football & set(terms.split(", ")), terms
    with store.open(refreshed) as con:
        examples = store.run_clusters(con, store.latest_run_id(con))["representative_posts"]
    quoted = [post for posts in examples.to_list() for post in posts]
    assert quoted and not any("\n" in post for post in quoted)  # single posts, never a chunk


def test_unchanged_refresh_reuses_work_and_new_posts_embed_only_themselves(refreshed):
    with store.open(refreshed) as con:
        embedded = store.scalar(con, "SELECT count(*) FROM embeddings")
    second = refresh(db=str(refreshed))
    with store.open(refreshed, "write") as con:
        assert store.scalar(con, "SELECT count(*) FROM embeddings") == embedded
        assert store.latest_run_id(con) == second
        new = pl.DataFrame(
            {
                "platform": "facebook",
                "post_id": ["n1", "n2"],
                "user_id": "arsenal",
                "created_at": None,
                "text": ["Gunners win the derby 3-0!", "Gunners win the derby 3-0!"],
                "url": None,
                "kind": "original",
            },
            schema_overrides={"created_at": pl.Datetime, "url": pl.Utf8},
        )
        store.upsert_posts(con, new)
    refresh(db=str(refreshed))
    with store.open(refreshed) as con:
        # the two new posts (one text) change only arsenal's last chunk: one new vector
        assert store.scalar(con, "SELECT count(*) FROM embeddings") == embedded + 1
        assert store.scalar(con, "SELECT count(*) FROM runs WHERE status = 'completed'") == 3


def test_unchanged_refresh_shows_cached_tasks(refreshed):
    refresh(db=str(refreshed))
    run_id = refresh(db=str(refreshed), options=RefreshOptions(min_cluster_size=6))
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs()
    cached = {tr.name.rsplit("-", 1)[0] for tr in task_runs if tr.state_name == "Cached"}
    assert {"clean", "embed", "profile", "reduce"} <= cached, sorted(
        {(tr.name, tr.state_name) for tr in task_runs}
    )
    assert run_id


def test_full_refresh_redoes_stages_but_keeps_embeddings_and_model_exports(refreshed):
    models = refreshed.parent / "cache" / "models"
    exports = sorted(p.name for p in models.iterdir()) if models.exists() else []
    with store.open(refreshed) as con:
        embedded = store.scalar(con, "SELECT count(*) FROM embeddings")
    run_id = refresh(db=str(refreshed), full=True)
    with store.open(refreshed) as con:
        assert store.latest_run_id(con) == run_id
        assert store.scalar(con, "SELECT count(*) FROM embeddings") == embedded
    assert (sorted(p.name for p in models.iterdir()) if models.exists() else []) == exports


def test_refresh_recovers_when_its_cache_folder_was_deleted(refreshed):
    """Prefect still remembers the stages' results, but the files they name are gone."""
    refresh(db=str(refreshed))  # every stage now answered from Prefect's cache
    for artifact in (refreshed.parent / "cache").glob("*.*"):
        artifact.unlink()
    run_id = refresh(db=str(refreshed))
    with store.open(refreshed) as con:
        assert store.latest_run_id(con) == run_id
        assert store.run_members(con, run_id).height == 139
    assert list((refreshed.parent / "cache").glob("label-*.parquet"))


def test_failed_refresh_keeps_previous_results(refreshed):
    with store.open(refreshed) as con:
        before = store.latest_run_id(con)
    with pytest.raises(Exception, match="cannot load model"):
        refresh(db=str(refreshed), options=RefreshOptions(model="no-such-org/no-such-model"))
    with store.open(refreshed) as con:
        assert store.latest_run_id(con) == before
        status, error = con.execute(
            "SELECT status, error FROM runs ORDER BY started_at DESC LIMIT 1"
        ).fetchall()[0]
    assert status == "failed" and "no-such-org/no-such-model" in error


def test_cli_clusters_table_and_empty_database_error(refreshed, workdir):
    runner = CliRunner()
    shown = runner.invoke(app, ["--db", str(refreshed), "clusters"])
    assert shown.exit_code == 0, shown.output
    assert "Interest clusters of run" in shown.output
    with store.open(workdir / "empty.duckdb", "write"):
        pass  # a database without posts
    empty = runner.invoke(app, ["--db", str(workdir / "empty.duckdb"), "refresh"])
    assert empty.exit_code == 1
    assert "holds no posts" in empty.output and "tribes import" in empty.output


def test_evaluate_scores_the_refresh_against_known_labels(refreshed, workdir):
    runner = CliRunner()
    result = runner.invoke(app, ["--db", str(refreshed), "evaluate", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "Clusters vs known labels (139 labelled users)" in result.output
    header = next(line for line in result.output.splitlines() if "metric" in line)
    assert [cell.strip() for cell in header.split("┃")[1:5]] == [
        "metric",
        "tribes",
        "study",
        "plain",
    ]
    ari_row = next(line for line in result.output.splitlines() if line.startswith("│ ARI "))
    assert all(0 <= float(cell) <= 1 for cell in ari_row.split("│")[2:5]), ari_row
    assert "plain = the mean of each user's single-post vectors" in result.output
    composition = result.output.split("Tribes' clusters and the known labels in them")[1]
    cells = [line.split("│")[1:6] for line in composition.splitlines() if line.startswith("│")]
    rows = [row for row in cells if row[0].strip()]  # not a wrapped cell's second line
    assert sum(int(row[2]) for row in rows) == 139 and len(rows) >= 5, composition
    assert all(0 < float(row[4].strip(" %")) <= 100 for row in rows), composition
    oracle = re.search(
        r"ARI (\S+); with the clusters that share a main label merged: (\S+) ", composition
    )
    assert oracle[1] == ari_row.split("│")[2].strip() and 0 <= float(oracle[2]) <= 1, composition

    labels = workdir / "bracketed.csv"  # label text is the user's: printed as is, never as markup
    with store.open(refreshed) as con:
        users = store.read_users(con).select("user_id", pl.format("[/]{}", "label").alias("label"))
    users.write_csv(labels)
    odd = runner.invoke(
        app, ["--db", str(refreshed), "evaluate", "--labels", str(labels), "--seeds", "1"]
    )
    assert odd.exit_code == 0, odd.output
    assert "[/]sports" in odd.output

    labels = workdir / "labels.csv"
    labels.write_text("user_id,category\narsenal,sports\n")
    bad = runner.invoke(app, ["--db", str(refreshed), "evaluate", "--labels", str(labels)])
    assert bad.exit_code == 1 and "lacks columns ['label']" in bad.output


def test_cli_status_and_config_show_the_runs_and_settings(refreshed):
    runner = CliRunner()
    status = runner.invoke(app, ["--db", str(refreshed), "status"], env={"COLUMNS": "160"})
    assert status.exit_code == 0, status.output
    assert "completed" in status.output and "139" in status.output
    shown = runner.invoke(app, ["--db", str(refreshed), "config"])
    assert (
        shown.exit_code == 0 and "profile_method" in shown.output and "chunk_mean" in shown.output
    )


def test_readme_refresh_commands_run_through_the_cli(refreshed, workdir):
    """`tribes refresh`, with a setting overridden, and with a model given as a local folder."""
    from pipeline.embed import minilm_path

    model_dir = workdir / "models" / "all-MiniLM-L6-v2"  # a user's own sentence-transformers folder
    shutil.copytree(minilm_path(), model_dir)
    runner = CliRunner()
    for args in (
        ["refresh"],  # nothing changed since the fixture's run: no new run
        ["refresh", "--min-cluster-size", "5"],
        ["refresh", "--model", str(model_dir)],
    ):
        result = runner.invoke(app, ["--db", str(refreshed), *args])
        assert result.exit_code == 0, (args, result.output)
    with store.open(refreshed) as con:
        assert store.scalar(con, "SELECT count(*) FROM runs WHERE status = 'completed'") == 3
        from_folder = store.scalar(
            con, "SELECT count(*) FROM embeddings WHERE model_id LIKE ?", [f"{model_dir}%"]
        )
    assert from_folder > 0  # the folder's model embedded the posts' chunks itself
