"""Issue 17, data safety on import and storage: hostile files change no stored post's author, no
time is silently wrong or empty, odd column types and files with no valid row are one-line
errors, posts and users are written together, a huge post costs no huge memory, and a mistyped
--platform is called out. `tribes import` runs as a user runs it, on real files and DuckDB."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from flows.crawl import crawl_command
from flows.imports import import_file
from pipeline import store
from pipeline.clean import pack_chunks
from pipeline.ingest import ColumnMap
from pipeline.settings import load_settings
from scrapers.localserver import LocalPlatforms

runner = CliRunner()


def tribes(db: Path, *args: str):
    return runner.invoke(app, ["--db", str(db), *args])


def stored(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    with store.open(db) as con:
        return con.execute(sql, params or []).fetchall()


def write_csv(path: Path, rows: list[tuple], header: str = "user_id,post_id,text,created_at"):
    lines = [header, *(",".join(str(v) for v in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error:"), result.output
    return lines[0]


# ------------------------------------------------------------ item 5: a post keeps its author


def test_second_file_with_row_number_ids_cannot_take_over_posts(workdir):
    db = workdir / "t.duckdb"
    first = write_csv(workdir / "a.csv", [("ann", i, f"ann says {i}", "") for i in (1, 2, 3)])
    second = write_csv(workdir / "b.csv", [("cy", i, f"cy says {i}", "") for i in (1, 2, 3, 4)])
    assert tribes(db, "import", str(first), "--platform", "forum").exit_code == 0
    result = tribes(db, "import", str(second), "--platform", "forum")
    assert result.exit_code == 0, result.output
    assert "1 inserted, 0 updated, 0 unchanged, 3 skipped" in result.output
    assert "3 id belongs to another account" in result.output
    posts = stored(db, "SELECT post_id, user_id, text FROM posts ORDER BY post_id")
    assert posts == [
        ("1", "ann", "ann says 1"),
        ("2", "ann", "ann says 2"),
        ("3", "ann", "ann says 3"),
        ("4", "cy", "cy says 4"),
    ]


def test_one_id_under_two_users_in_one_file_keeps_the_first(workdir):
    db = workdir / "t.duckdb"
    path = write_csv(
        workdir / "p.csv",
        [
            ("ann", 1, "first", ""),
            ("bob", 1, "second", ""),
            ("ann", 2, "v1", ""),
            ("ann", 2, "v2", ""),
        ],
    )
    result = tribes(db, "import", str(path))
    assert "2 inserted" in result.output, result.output
    assert "1 duplicate post id in file" in result.output  # ann's edit of her own post 2
    assert "1 id belongs to another account" in result.output
    assert stored(db, "SELECT post_id, user_id, text FROM posts ORDER BY post_id") == [
        ("1", "ann", "first"),
        ("2", "ann", "v2"),
    ]


def crawl(folder: Path, db: Path, sources: list[dict]) -> dict[str, dict]:
    """One real crawl subprocess into `db`; its per-account counts."""
    sources_path = folder / "sources.yaml"
    sources_path.write_text(yaml.safe_dump({"sources": sources}), encoding="utf-8")
    report = folder / "report.json"
    fast = {"DOWNLOAD_DELAY": "0", "AUTOTHROTTLE_START_DELAY": "0", "RETRY_TIMES": "0"}
    command = crawl_command(db, sources_path, report, None, None, None, fast)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {row["account"]: row for row in json.loads(report.read_text())["accounts"]}


def test_crawled_posts_whose_ids_belong_to_another_account_are_skipped(workdir, sample_path):
    sample = pl.read_parquet(sample_path)
    page = sample["user_id"][0]
    with LocalPlatforms(sample.filter(pl.col("user_id") == page).head(5)) as server:
        sources = [server.source("mastodon")]
        learn = workdir / "learn.duckdb"
        crawl(workdir, learn, sources)
        crawled = stored(learn, "SELECT platform, post_id FROM posts ORDER BY post_id")
        db = workdir / "t.duckdb"
        taken = pl.DataFrame(
            {
                "platform": [p for p, _ in crawled],
                "post_id": [i for _, i in crawled],
                "user_id": "someone-else",
                "created_at": None,
                "text": "mine",
                "url": None,
                "kind": "original",
            },
            schema_overrides={"created_at": pl.Datetime, "url": pl.Utf8},
        )
        with store.open(db, "write") as con:
            store.upsert_posts(con, taken)
        counts = crawl(workdir, db, sources)
    assert [(c["new"], c["updated"], c["unchanged"], c["skipped"]) for c in counts.values()] == [
        (0, 0, 0, 5)
    ]
    assert stored(db, "SELECT DISTINCT user_id, text FROM posts") == [("someone-else", "mine")]


# ------------------------------------------------------------ item 8: times, each value on its own


def imported_times(db: Path) -> dict[str, datetime | None]:
    return dict(stored(db, "SELECT post_id, created_at FROM posts"))


def test_iso_times_with_any_offset_parse_per_value_as_utc(workdir):
    db = workdir / "t.duckdb"
    path = write_csv(
        workdir / "p.csv",
        [
            ("ann", 1, "zulu", "2024-05-01T10:00:00Z"),
            ("ann", 2, "india", "2024-05-01T10:00:00+05:30"),
            ("ann", 3, "naive", "2024-05-01T10:00:00"),
            ("ann", 4, "space and fraction", "2024-05-01 10:00:00.250-02:00"),
            ("ann", 5, "date only", "2024-05-01"),
        ],
    )
    result = tribes(db, "import", str(path))
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert imported_times(db) == {
        "1": datetime(2024, 5, 1, 10),
        "2": datetime(2024, 5, 1, 4, 30),
        "3": datetime(2024, 5, 1, 10),
        "4": datetime(2024, 5, 1, 12, 0, 0, 250_000),
        "5": datetime(2024, 5, 1),
    }


def test_parquet_datetimes_with_a_time_zone_are_stored_as_utc(workdir):
    local = pl.Series([datetime(2024, 5, 1, 15, 30)]).dt.replace_time_zone("Asia/Kolkata")
    frame = pl.DataFrame({"user_id": "ann", "post_id": ["1"], "text": "a", "created_at": local})
    frame.write_parquet(workdir / "p.parquet")
    assert tribes(workdir / "t.duckdb", "import", str(workdir / "p.parquet")).exit_code == 0
    assert imported_times(workdir / "t.duckdb") == {"1": datetime(2024, 5, 1, 10)}


def test_epoch_seconds_milliseconds_and_microseconds_by_magnitude(workdir):
    moment = datetime(2024, 5, 1, 10, 0, 0, 123_000)
    seconds = int(moment.replace(tzinfo=UTC).timestamp())
    values = [seconds, seconds * 1000 + 123, seconds * 1_000_000 + 123_000]
    expected = {"1": moment.replace(microsecond=0), "2": moment, "3": moment}
    frame = pl.DataFrame(
        {
            "user_id": "ann",
            "post_id": ["1", "2", "3"],
            "text": ["a", "b", "c"],
            "created_at": values,
        }
    )
    frame.write_parquet(workdir / "p.parquet")
    assert tribes(workdir / "n.duckdb", "import", str(workdir / "p.parquet")).exit_code == 0
    assert imported_times(workdir / "n.duckdb") == expected
    path = write_csv(
        workdir / "p.csv", [("ann", i, t, v) for i, t, v in zip("123", "abc", values, strict=True)]
    )
    assert tribes(workdir / "c.duckdb", "import", str(path)).exit_code == 0
    assert imported_times(workdir / "c.duckdb") == expected


def test_unreadable_and_future_times_are_counted_not_silent(workdir):
    db = workdir / "t.duckdb"
    path = write_csv(
        workdir / "p.csv",
        [
            ("ann", 1, "fine", "2024-05-01T10:00:00Z"),
            ("ann", 2, "garbage", "not a date"),
            ("ann", 3, "impossible", "2024-13-45"),
            ("ann", 4, "future", "2999-01-01T00:00:00Z"),
            ("ann", 5, "no time at all", ""),
        ],
    )
    result = tribes(db, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "5 inserted" in result.output
    assert "warning: created_at: 2 unreadable times stored empty" in result.output
    assert "warning: created_at: 1 times in the future" in result.output
    assert imported_times(db)["4"] == datetime(2999, 1, 1)


def test_slash_dates_are_read_only_when_the_column_decides_the_order(workdir):
    db = workdir / "t.duckdb"
    ambiguous = write_csv(
        workdir / "a.csv", [("ann", 1, "one", "01/02/2016"), ("ann", 2, "two", "03/04/2016")]
    )
    result = tribes(db, "import", str(ambiguous))
    assert result.exit_code == 0, result.output
    assert "2 ambiguous dates like 01/02/2016 (day/month or month/day?)" in result.output
    assert imported_times(db) == {"1": None, "2": None}
    day_first = write_csv(
        workdir / "d.csv", [("bob", 3, "three", "01/02/2016"), ("bob", 4, "four", "25/12/2016")]
    )
    result = tribes(db, "import", str(day_first))
    assert "dates like 01/02/2016 read as day/month" in result.output, result.output
    times = imported_times(db)
    assert (times["3"], times["4"]) == (datetime(2016, 2, 1), datetime(2016, 12, 25))


# ------------------------------------------------------------ item 9 and 19: column types


def test_float_post_ids_are_refused_before_they_collide(workdir):
    db = workdir / "t.duckdb"
    ids = [1234567890123456700 + i for i in range(6)]  # distinct, equal once rounded to float
    frame = pl.DataFrame(
        {"user_id": "ann", "post_id": [float(i) for i in ids], "text": list("abcdef")}
    )
    frame.write_parquet(workdir / "p.parquet")
    error = one_line_error(tribes(db, "import", str(workdir / "p.parquet"), "--time-col", ""))
    assert "column 'post_id' (--id-col) is Float64" in error and "round" in error
    assert not db.exists() or stored(db, "SELECT count(*) FROM posts") == [(0,)]


@pytest.mark.parametrize(
    ("column", "values", "dtype"),
    [
        ("text", [["a", "b"]], "List(String)"),
        ("text", [{"a": 1}], "Struct"),
        ("user_id", [b"ann"], "Binary"),
    ],
)
def test_parquet_with_wrong_column_types_is_one_line(workdir, column, values, dtype):
    frame = pl.DataFrame({"user_id": ["ann"], "post_id": ["1"], "text": ["hi"]}).with_columns(
        pl.Series(column, values)
    )
    frame.write_parquet(workdir / "p.parquet")
    result = tribes(workdir / "t.duckdb", "import", str(workdir / "p.parquet"), "--time-col", "")
    error = one_line_error(result)
    assert f"column {column!r}" in error and dtype in error


def test_a_file_with_no_valid_row_exits_non_zero(workdir):
    path = write_csv(workdir / "p.csv", [("ann", "", "no id", ""), ("", 2, "no user", "")])
    error = one_line_error(tribes(workdir / "t.duckdb", "import", str(path)))
    assert "no valid row" in error and "1 missing post id" in error and "1 missing user id" in error


# ------------------------------------------------------------ item 10: one transaction


def test_posts_and_users_are_written_in_one_transaction(workdir):
    db = workdir / "t.duckdb"
    # a users table that refuses one name: the users write fails
    with store.open(db, "write") as con:
        con.execute("DROP TABLE users")
        con.execute(
            """CREATE TABLE users (platform VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
            display_name VARCHAR CHECK (display_name <> 'boom'), label VARCHAR, url VARCHAR,
            description VARCHAR, updated_at TIMESTAMP NOT NULL, verified_links VARCHAR,
            PRIMARY KEY (platform, user_id))"""
        )
    path = write_csv(
        workdir / "p.csv", [("ann", 1, "hello", "", "boom")], "user_id,post_id,text,created_at,name"
    )
    settings = load_settings(db=db)
    with pytest.raises(duckdb.ConstraintException):
        import_file(settings, str(path), columns=ColumnMap(name="name"))
    assert stored(db, "SELECT count(*) FROM posts") == [(0,)]


# ------------------------------------------------------------ item 11: bounded post length


def test_max_post_chars_is_bounded(workdir):
    with pytest.raises(ValidationError, match="max_post_chars"):
        load_settings(db=workdir / "t.duckdb", max_post_chars=5_000_000)
    result = runner.invoke(
        app, ["--db", str(workdir / "t.duckdb"), "status"], env={"TRIBES_MAX_POST_CHARS": "5000000"}
    )
    assert "bad setting max_post_chars" in one_line_error(result)


def test_a_five_megabyte_post_is_skipped_and_counted(workdir):
    huge = "word " * 1_000_000
    frame = pl.DataFrame({"user_id": ["ann", "ann"], "post_id": ["1", "2"], "text": [huge, "ok"]})
    frame.write_parquet(workdir / "p.parquet")
    result = tribes(workdir / "t.duckdb", "import", str(workdir / "p.parquet"), "--time-col", "")
    assert "1 inserted" in result.output and "1 text longer than 20000 chars" in result.output


def test_a_long_post_is_embedded_in_chunk_sized_pieces():
    words = [f"w{i}" for i in range(30_000)]
    posts = pl.DataFrame(
        {
            "platform": "x",
            "post_id": ["1", "2"],
            "user_id": "ann",
            "created_at": [datetime(2024, 1, 1), datetime(2024, 1, 2)],
            "text_clean": [" ".join(words), "short"],
        }
    )
    chunks = pack_chunks(posts, max_chars=2000)["text_clean"]
    assert chunks.str.len_chars().max() <= 2000
    assert " ".join(chunks).replace("\n", " ").split() == [*words, "short"]  # every word, once


# ------------------------------------------------------------ item 12: a mistyped --platform


def test_reimport_under_a_mistyped_platform_warns(workdir, sample_path):
    db = workdir / "t.duckdb"
    assert tribes(db, "import", str(sample_path), "--platform", "facebook").exit_code == 0
    again = tribes(db, "import", str(sample_path), "--platform", "facebok")
    assert again.exit_code == 0, again.output
    warning = [line for line in again.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "already stored under platform 'facebook'" in warning[0]
    other = write_csv(workdir / "o.csv", [("ann", 1, "something new entirely", "")])
    assert "warning" not in tribes(db, "import", str(other), "--platform", "facebok").output
