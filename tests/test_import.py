"""`tribes import` as a user runs it: counts, idempotence, and one-line errors for bad input."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline import store

runner = CliRunner()


def tribes(db, *args):
    return runner.invoke(app, ["--db", str(db), *args])


def post_count(db):
    with store.open(db) as con:
        return store.scalar(con, "SELECT count(*) FROM posts")


def test_import_parquet_sample_then_reimport_adds_nothing(workdir, sample_path):
    db = workdir / "t.duckdb"
    first = tribes(
        db, "import", str(sample_path), "--platform", "facebook", "--label-col", "user_label"
    )
    assert first.exit_code == 0, first.output
    assert "4164 inserted" in first.output and "1 text longer than 20000 chars" in first.output
    second = tribes(db, "import", str(sample_path), "--platform", "facebook")
    assert "0 inserted, 0 updated, 4164 unchanged" in second.output
    assert post_count(db) == 4164
    with store.open(db) as con:
        labels = dict(con.execute("SELECT user_id, label FROM users").fetchall())
    assert labels["arsenal"] == "sports" and len(labels) == 139  # labels survive a re-import


def test_import_csv_and_jsonl_with_renamed_columns(workdir):
    db = workdir / "t.duckdb"
    csv = workdir / "posts.csv"
    csv.write_text(
        "author,body,id,when\nann,Hello world ☕,1,2024-05-01T10:00:00\n"
        "ann,,2,2024-05-01\nbob,Bonjour &amp; merci,3,not a date\n",
        encoding="utf-8",
    )
    result = tribes(
        db,
        "import",
        str(csv),
        "--platform",
        "mastodon",
        "--user-col",
        "author",
        "--text-col",
        "body",
        "--id-col",
        "id",
        "--time-col",
        "when",
    )
    assert result.exit_code == 0, result.output
    assert "2 inserted" in result.output and "1 empty text" in result.output
    jsonl = workdir / "posts.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"user_id": "cy", "post_id": "9", "text": "שלום עולם", "created_at": 1714550400},
            ]
        ),
        encoding="utf-8",
    )
    assert tribes(db, "import", str(jsonl)).exit_code == 0
    with store.open(db) as con:
        rows = dict(con.execute("SELECT post_id, text FROM posts").fetchall())
    assert rows == {"1": "Hello world ☕", "3": "Bonjour &amp; merci", "9": "שלום עולם"}


@pytest.mark.parametrize(
    ("content", "name", "args", "message"),
    [
        ("user_id,text\nann,hi\n", "p.csv", [], "has no column 'post_id'"),
        ("user_id,post_id,body\nann,1,hi\n", "p.csv", ["--time-col", ""], "--text-col"),
        ("", "p.csv", [], "p.csv is empty"),
        (b"user_id,post_id,text,created_at\nann,1,caf\xe9,\n", "p.csv", [], "not valid utf-8"),
        (b"PAR1 broken", "p.parquet", [], "not readable as parquet"),
        ("{not json", "p.jsonl", [], "not readable as jsonl"),
        ("a,b\n1,2\n", "p.xlsx", [], "pass --format"),
        ("user_id,post_id,text,created_at\n", "p.csv", [], "has no rows"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    workdir, sample_path, content, name, args, message
):
    db = workdir / "t.duckdb"
    tribes(db, "import", str(sample_path), "--platform", "facebook")
    before = post_count(db)
    bad = workdir / name
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = tribes(db, "import", str(bad), *args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert message.lower() in lines[0].lower()
    assert post_count(db) == before


def test_latin1_file_imports_with_encoding_flag(workdir):
    db = workdir / "t.duckdb"
    path = workdir / "latin.csv"
    path.write_bytes("user_id,post_id,text,created_at\nann,1,café olé,\n".encode("latin-1"))
    result = tribes(db, "import", str(path), "--encoding", "latin-1")
    assert result.exit_code == 0, result.output
    with store.open(db) as con:
        assert store.scalar(con, "SELECT text FROM posts") == "café olé"


def test_enormous_and_duplicate_posts_are_skipped_with_reasons(workdir):
    db = workdir / "t.duckdb"
    frame = pl.DataFrame(
        {
            "user_id": ["a", "a", "a", "b"],
            "post_id": ["1", "1", "2", "3"],
            "text": ["first", "second", "x" * 50_000, "ok"],
            "created_at": [None] * 4,
        },
        schema_overrides={"created_at": pl.Utf8},
    )
    path = workdir / "p.parquet"
    frame.write_parquet(path)
    result = tribes(db, "import", str(path))
    assert "2 inserted" in result.output
    assert "1 duplicate post id in file" in result.output
    assert "1 text longer than 20000 chars" in result.output
    with store.open(db) as con:
        assert store.scalar(con, "SELECT text FROM posts WHERE post_id = '1'") == "second"


def test_error_naming_a_bracketed_file_prints_it_as_is(workdir):
    """File names and crawled names are text, not console markup (it swallowed '[bold]')."""
    bad = workdir / "posts[bold]2016.csv"
    bad.write_text("user_id,post_id,text,created_at\n")
    result = tribes(workdir / "t.duckdb", "import", str(bad))
    assert result.exit_code == 1, result.output
    assert "posts[bold]2016.csv" in result.output and "has no rows" in result.output
