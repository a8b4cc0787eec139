from datetime import datetime

import polars as pl

from pipeline.clean import clean_posts, clean_text, pack_chunks, text_hash


def test_clean_text_strips_urls_emails_handles_and_entities():
    raw = "Hi @bob_99, see https://x.com/a?b=1 &amp; write to a.b@c.org\u200b  now\n"
    assert clean_text(raw) == "Hi , see & write to now"


def test_clean_text_normalises_unicode_and_keeps_scripts():
    assert clean_text("ﬁne café") == "fine café"
    assert clean_text("مرحبا @user بالعالم 🎉") == "مرحبا بالعالم 🎉"
    assert clean_text(None) == "" and clean_text("   ") == ""


def test_text_hash_is_stable():
    assert text_hash("goal!") == text_hash("goal!") != text_hash("goal?")
    assert len(text_hash("")) == 32


def test_clean_posts_drops_empty_and_per_user_duplicates_only():
    posts = pl.DataFrame(
        {
            "platform": ["x"] * 6,
            "post_id": ["1", "2", "3", "4", "5", "6"],
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "text": ["Goal!", "Goal! https://t.co/x", "   ", "Goal!", "Match day", "@only"],
        }
    )
    cleaned = clean_posts(posts)
    assert cleaned.sort("post_id")["post_id"].to_list() == ["1", "4", "5"]
    assert set(cleaned.columns) == {
        "platform",
        "post_id",
        "user_id",
        "created_at",
        "text_clean",
        "text_hash",
    }
    assert posts.height == 6  # the input frame is untouched
    assert clean_posts(posts, min_posts_per_user=2)["user_id"].unique().to_list() == ["b"]


def test_pack_chunks_covers_every_post_in_time_order():
    posts = pl.DataFrame(
        {
            "platform": "x",
            "post_id": ["3", "1", "2", "4", "5"],
            "user_id": ["a", "a", "a", "a", "b"],
            "created_at": [datetime(2024, 1, d) for d in (3, 1, 2, 4, 1)],
            "text_clean": ["third", "first", "second", "x" * 30, "other"],
        }
    )
    chunks = pack_chunks(posts, max_chars=20)
    assert chunks.filter(pl.col("user_id") == "a")["text_clean"].to_list() == [
        "first\nsecond\nthird",
        "x" * 20,  # a post longer than a chunk is cut into chunks of its own (issue 17, item 11)
        "x" * 10,
    ]
    assert chunks.filter(pl.col("user_id") == "b")["text_clean"].to_list() == ["other"]
    assert chunks["text_hash"].to_list() == [text_hash(t) for t in chunks["text_clean"]]
