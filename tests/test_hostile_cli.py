"""Issue 17, the CLI and opening the database: what the terminal shows, which files count as a
database, who waits for whom, and one-line errors for every broken setting or file."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline import store
from pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
EVIL = "Eve\x1b[2J\x1b]0;pwned\x07\x9b2J\x7f\u202eli"
CONTROL = ("\x1b", "\x07", "\x9b", "\x7f", "\u202e")


def tribes(*args: str, env: dict[str, str] | None = None):
    """The real CLI in this process; stdout and stderr apart."""
    return CliRunner().invoke(app, list(args), env=env)


def assert_one_line_error(result, *words: str) -> None:
    """Exit 1, exactly one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def write_posts(path: Path, users: int, posts_each: int) -> Path:
    rows = ["user_id,post_id,created_at,text"] + [
        f"u{u},{u}-{p},2024-01-0{p % 9 + 1}T10:00:00,post number {p} of user {u} about gardening"
        for u in range(users)
        for p in range(posts_each)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


# ---------------------------------------------------------------- item 3: terminal escapes


def test_clusters_print_no_terminal_control_codes(refreshed):
    with store.open(refreshed, "write") as con:
        run_id = store.latest_run_id(con)
        con.execute("UPDATE users SET display_name = ?", [EVIL])
        con.execute(
            "UPDATE clusters SET label = ?, example_users = [?, 'plain'] WHERE run_id = ?",
            [EVIL, EVIL, run_id],
        )
        con.execute("UPDATE cluster_terms SET term = ? WHERE rank = 1", [EVIL])
    shown = tribes("--db", str(refreshed), "clusters")
    assert shown.exit_code == 0, shown.output
    assert "Eve[2J" not in shown.output  # the sequences go whole, not only their ESC
    assert shown.output.count("Eve2Jli") >= 3  # the printable rest of label, term, user stays
    assert not [c for c in CONTROL if c in shown.output], repr(shown.output[:500])

    missing = tribes("--db", str(refreshed), "clusters", "--run", EVIL)  # an error echoes it
    assert_one_line_error(missing, "has no clusters")
    assert not [c for c in CONTROL if c in missing.stderr], repr(missing.stderr)


# ---------------------------------------------------------------- item 7: what is a database


def test_a_file_that_is_not_a_duckdb_database_is_refused(workdir, sample_path):
    posts = write_posts(workdir / "posts.csv", 3, 3)
    before = posts.read_bytes()
    result = tribes("--db", str(posts), "import", str(posts))
    assert_one_line_error(result, "posts.csv", "not a DuckDB database")
    assert posts.read_bytes() == before

    copy = shutil.copy(sample_path, workdir / "sample.parquet")
    assert_one_line_error(tribes("--db", str(copy), "status"), "not a DuckDB database")

    fresh = tribes("--db", str(workdir / "new.parquet"), "import", str(posts))
    assert_one_line_error(fresh, "needs a .duckdb or .db name")
    assert not (workdir / "new.parquet").exists()

    made = tribes("--db", str(workdir / "new.db"), "import", str(posts))
    assert made.exit_code == 0, made.output  # a new .db (or .duckdb) path is fine


@pytest.mark.parametrize(
    "command",
    [
        ["clusters"],
        ["status"],
        ["report"],
        ["recommend", "--cluster", "0"],
        ["evaluate", "--seeds", "1"],
        ["refresh"],
    ],
)
def test_read_commands_refuse_a_missing_database_and_create_none(workdir, command):
    db = workdir / "data" / "missing.duckdb"
    result = tribes("--db", str(db), *command)
    assert_one_line_error(result, f"no database at {db}", "import or crawl first")
    assert not db.exists()


def test_truncated_and_damaged_databases_are_named_in_one_line(refreshed, workdir):
    truncated = shutil.copy(refreshed, workdir / "truncated.duckdb")
    os.truncate(truncated, Path(truncated).stat().st_size // 2)
    for command in (["status"], ["clusters"], ["report"]):
        result = tribes("--db", str(truncated), *command)
        assert_one_line_error(result, "truncated.duckdb", "damaged or truncated")

    damaged = Path(shutil.copy(refreshed, workdir / "damaged.duckdb"))
    with damaged.open("r+b") as file:  # scribble over the middle of every data block
        for block in range(3 * 4096, damaged.stat().st_size, 1 << 18):
            file.seek(block + 4096)
            file.write(b"\x55" * 8192)
    result = tribes("--db", str(damaged), "clusters")
    assert_one_line_error(result, "damaged.duckdb")


# ---------------------------------------------------------------- item 18: read-only, one wait


def hold(path: str, read_only: bool, ready, release) -> None:
    con = duckdb.connect(path, read_only=read_only)
    ready.set()
    release.wait(60)
    con.close()


def holder(path: Path, read_only: bool):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    process = ctx.Process(target=hold, args=(str(path), read_only, ready, release))
    process.start()
    assert ready.wait(60)
    return process, release


def test_read_commands_share_the_database_with_another_reader(refreshed):
    """A read-write open would wait for the other reader's lock; read-only opens at once."""
    process, release = holder(refreshed, read_only=True)
    try:
        started = time.monotonic()
        shown = tribes(
            "--db",
            str(refreshed),
            "status",
            env={"TRIBES_LOCK_WAIT_SECONDS": "0", "COLUMNS": "160"},
        )
        assert shown.exit_code == 0, shown.output
        assert "completed" in shown.output and time.monotonic() - started < 10
    finally:
        release.set()
        process.join(30)


def test_a_writer_makes_readers_wait_up_to_lock_wait_seconds_then_one_line(refreshed):
    process, release = holder(refreshed, read_only=False)
    try:
        started = time.monotonic()
        busy = tribes("--db", str(refreshed), "clusters", env={"TRIBES_LOCK_WAIT_SECONDS": "1"})
        waited = time.monotonic() - started
        assert_one_line_error(busy, "locked by another process", f"(pid {process.pid})", "1 s")
        assert 1 <= waited < 10
        quick = load_settings(db=refreshed, lock_wait_seconds=0.2)
        with pytest.raises(store.StoreLocked), store.open(quick):  # the class callers catch
            pass
    finally:
        release.set()
        process.join(30)


def test_a_reader_gets_in_once_the_writer_lets_go(refreshed):
    process, release = holder(refreshed, read_only=False)
    letting_go = threading.Timer(1.5, release.set)
    letting_go.start()
    try:
        started = time.monotonic()
        shown = tribes("--db", str(refreshed), "status", env={"TRIBES_LOCK_WAIT_SECONDS": "30"})
        assert shown.exit_code == 0, shown.output
        assert 1.5 <= time.monotonic() - started < 10
    finally:
        letting_go.join()
        process.join(30)


# ---------------------------------------------------------------- item 19: one-line errors


@pytest.mark.parametrize(
    "content",
    [b"batch_size = [\n", b"\xff\xfe = 3\n", b"batch_sise = 3\n"],
    ids=["syntax", "not-utf8", "unknown-key"],
)
@pytest.mark.parametrize(
    "command", [["import", "--help"], ["config"], ["status"], ["refresh"], ["crawl"]]
)
def test_a_broken_tribes_toml_is_one_line_naming_it_for_every_command(workdir, content, command):
    (workdir / "tribes.toml").write_bytes(content)
    result = tribes(*command)
    assert_one_line_error(result, str(workdir / "tribes.toml"))
    if content.startswith(b"batch_sise"):
        assert "did you mean batch_size?" in result.stderr


def test_a_broken_tribes_toml_in_a_real_process(workdir):
    (workdir / "tribes.toml").write_text("[broken\n")
    done = subprocess.run(
        [sys.executable, "-P", "-m", "flows.cli", "import", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {workdir / 'tribes.toml'} is not valid TOML: "
        "Expected ']' at the end of a table declaration (at line 1, column 8)"
    ]


def test_bad_setting_values_and_an_unwritable_state_dir_are_one_line(workdir):
    bad = tribes("config", env={"TRIBES_BATCH_SIZE": "abc"})
    assert_one_line_error(bad, "bad setting batch_size", "valid integer")

    (workdir / "afile").write_text("not a folder")
    state = tribes("config", env={"TRIBES_STATE_DIR": str(workdir / "afile" / "state")})
    assert_one_line_error(state, "cannot create state folder", "afile", "Not a directory")


def test_unknown_tribes_variables_warn_with_the_closest_setting(workdir):
    shown = tribes("config", env={"TRIBES_BATCHSIZE": "3", "TRIBES_ZZZ": "1"})
    assert shown.exit_code == 0, shown.output
    assert shown.stderr.splitlines() == [
        "warning: TRIBES_BATCHSIZE is not a Tribes setting and is ignored: did you mean "
        "TRIBES_BATCH_SIZE?",
        "warning: TRIBES_ZZZ is not a Tribes setting and is ignored",
    ]


def test_report_out_naming_an_existing_file_is_one_line(refreshed, workdir):
    taken = workdir / "report.html"
    taken.write_text("mine")
    result = tribes("--db", str(refreshed), "report", "--out", str(taken))
    assert_one_line_error(result, str(taken), "is a file")
    assert taken.read_text() == "mine"


def test_a_bad_model_path_is_refused_before_a_run_starts(refreshed, workdir):
    (workdir / "empty_model").mkdir()
    (workdir / "model.bin").write_bytes(b"\0" * 10)
    with store.open(refreshed) as con:
        runs = store.scalar(con, "SELECT count(*) FROM runs")
    for model, problem in (
        ("./no/such/model", "no model folder at ./no/such/model"),
        (str(workdir / "empty_model"), "holds no sentence-transformers model"),
        (str(workdir / "model.bin"), "is a file"),
    ):
        started = time.monotonic()
        result = tribes("--db", str(refreshed), "refresh", "--model", model)
        assert_one_line_error(result, problem)
        assert time.monotonic() - started < 10
    with store.open(refreshed) as con:
        assert store.scalar(con, "SELECT count(*) FROM runs") == runs  # no run was started


def test_refresh_says_when_no_user_has_enough_posts(workdir):
    db = workdir / "few.duckdb"
    imported = tribes("--db", str(db), "import", str(write_posts(workdir / "p.csv", 4, 2)))
    assert imported.exit_code == 0, imported.output
    result = tribes("--db", str(db), "refresh")
    assert_one_line_error(
        result, "no user has at least min_posts_per_user=3 posts (4 users, 8 posts)"
    )


def test_min_cluster_size_above_the_users_warns(refreshed):
    result = tribes("--db", str(refreshed), "refresh", "--min-cluster-size", "500")
    assert result.exit_code == 0, result.output
    assert (
        "warning: min_cluster_size=500 exceeds the 139 users to cluster (those with at least "
        "min_posts_per_user=3 posts): it is capped at half of them"
    ) in result.stderr
