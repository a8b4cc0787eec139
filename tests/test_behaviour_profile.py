"""Behaviour signals beside the words (pipeline/signals.py, `behaviour_weight`): known blocks on a
small dataset, words-only profiles unchanged at weight 0, and a real refresh with them on."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from test_hostile_cli import assert_one_line_error, tribes

from flows.refresh import refresh
from pipeline import signals, store
from pipeline.settings import RefreshOptions, load_settings

HOURS, DAYS = 24, 7
RHYTHM = slice(0, HOURS + DAYS)
KINDS = slice(HOURS + DAYS, HOURS + DAYS + len(signals.KINDS))
INTERACTIONS = slice(KINDS.stop, KINDS.stop + signals.INTERACTION_DIMS)
USERS = pl.DataFrame({"platform": ["m"] * 3, "user_id": ["early", "late", "undated"]})
MONDAY_9, MONDAY_20 = datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 20)
SATURDAY_20 = datetime(2024, 1, 6, 20)


def activity(*rows: tuple) -> pl.DataFrame:
    """Posts (user_id, created_at, kind, reply_to) of platform m, with no repost."""
    return pl.DataFrame(
        [("m", f"p{i}", *row, None) for i, row in enumerate(rows)],
        schema={
            "platform": pl.Utf8,
            "post_id": pl.Utf8,
            "user_id": pl.Utf8,
            "created_at": pl.Datetime("us"),
            "kind": pl.Utf8,
            "reply_to": pl.Utf8,
            "repost_of": pl.Utf8,
        },
        orient="row",
    )


NO_MENTIONS = pl.DataFrame(schema={"platform": pl.Utf8, "user_id": pl.Utf8, "mentioned": pl.Utf8})
POSTS = activity(  # early posts on Mondays at 9:00, late at 20:00, undated has no times
    ("early", MONDAY_9, "original", "hub"),
    ("early", MONDAY_9, "original", None),
    ("late", MONDAY_20, "original", "hub"),
    ("undated", None, "original", None),
)


def test_rhythm_is_each_users_hours_and_days_centred_and_unit():
    block = signals.centred_unit_rows(signals.rhythm_block(POSTS, USERS, "UTC"))
    half = 1 / np.sqrt(2)
    assert block[0, 9] == pytest.approx(half) and block[0, 20] == pytest.approx(-half)
    assert block[1, 9] == pytest.approx(-half) and block[1, 20] == pytest.approx(half)
    assert block[:2, HOURS:].tolist() == [[0.0] * DAYS] * 2  # both post on Mondays only
    assert not block[2].any()  # no timestamps: zeros


def test_rhythm_follows_the_time_zone():
    shifted = signals.rhythm_block(POSTS, USERS, "Asia/Tokyo")  # UTC+9
    assert shifted[0, 18] == 1.0 and shifted[1, 5] == 1.0  # 9:00 → 18:00; 20:00 → 5:00 next day
    assert shifted[0, HOURS + 0] == 1.0 and shifted[1, HOURS + 1] == 1.0  # Monday; Tuesday


def test_identical_words_and_different_hours_give_different_profiles():
    words = np.ones((3, 4), dtype=np.float32) / 2  # every user writes the same
    on = signals.with_behaviour(
        words, signals.behaviour_signals(POSTS, NO_MENTIONS, USERS, "UTC", 0.25)
    )
    assert on.shape == (3, 4 + INTERACTIONS.stop)
    assert not np.allclose(on[0], on[1])
    assert np.array_equal(on[:, :4], words)  # the words are kept as they are
    assert np.linalg.norm(on[0, 4:][RHYTHM]) == pytest.approx(0.25)  # each block weighs the weight
    off = signals.with_behaviour(words, signals.no_signals(3))
    assert off is words  # weight 0: the words-only profiles, bit for bit


def test_a_signal_every_user_shares_or_none_has_costs_nothing():
    block = signals.behaviour_signals(POSTS, NO_MENTIONS, USERS, "UTC", 0.25)
    assert not block[:, KINDS].any()  # everyone posts originals only: no information, zeros
    assert not block[2, RHYTHM].any() and not block[2, INTERACTIONS].any()  # undated, silent


def test_kinds_are_each_users_shares():
    posts = activity(
        ("early", None, "photo", None),
        ("early", None, "photo", None),
        ("early", None, "video", None),
        ("late", None, "link", None),
        ("late", None, "unknown", None),  # not a kind: left out
    )
    shares = signals.kind_block(posts, USERS)
    kinds = list(signals.KINDS)
    assert shares[0, kinds.index("photo")] == pytest.approx(2 / 3)
    assert shares[0, kinds.index("video")] == pytest.approx(1 / 3)
    assert shares[1].tolist() == [float(k == "link") for k in kinds]
    assert not shares[2].any()


def test_interactions_hash_each_account_to_one_signed_bucket():
    mentions = pl.DataFrame(
        {"platform": ["m", "m"], "user_id": ["late", "late"], "mentioned": ["hub", "other"]}
    )
    block = signals.interaction_block(POSTS, mentions, USERS)
    hub = signals.account_bucket("m", "hub")
    other = signals.account_bucket("m", "other")
    expected = np.zeros((3, signals.INTERACTION_DIMS))
    expected[0, abs(hub) - 1] += np.sign(hub)  # early replied to hub once
    expected[1, abs(hub) - 1] += 2 * np.sign(hub)  # late replied to it and mentioned it
    expected[1, abs(other) - 1] += np.sign(other)
    assert np.array_equal(block, expected)
    assert signals.account_bucket("m", "hub") == hub  # stable: md5, not a process's hash seed


def test_the_weight_is_validated():
    with pytest.raises(ValidationError, match="behaviour_weight"):
        load_settings(behaviour_weight=-0.5)
    with pytest.raises(ValidationError, match="behaviour_weight"):
        RefreshOptions(behaviour_weight=2)


def test_a_negative_weight_is_a_one_line_error(workdir):
    result = tribes("--db", str(workdir / "t.duckdb"), "refresh", "--behaviour-weight", "-1")
    assert_one_line_error(result, "behaviour_weight")


def split_behaviour(settings) -> list[str]:
    """The stored posts' accounts in two halves: the first posts photos on Mondays at 9:00 and
    replies to hub_a, the second originals on Saturdays at 20:00 replying to hub_b; each
    account's posts a week apart in their stored order (its profile chunks, packed oldest first,
    stay as embedded). Returns the first half."""
    with store.open(settings, "write") as con:
        posts = store.frame(
            con, "SELECT platform, post_id, user_id, text, created_at FROM posts"
        ).sort("user_id", "created_at", "post_id", nulls_last=True)
        accounts = sorted(posts["user_id"].unique())
        first = pl.col("user_id").is_in(accounts[: len(accounts) // 2])
        store.upsert_posts(
            con,
            posts.with_columns(
                created_at=pl.when(first).then(pl.lit(MONDAY_9)).otherwise(pl.lit(SATURDAY_20))
                + pl.duration(weeks=pl.int_range(pl.len()).over("user_id")),
                kind=pl.when(first).then(pl.lit("photo")).otherwise(pl.lit("original")),
                reply_to=pl.when(first).then(pl.lit("hub_a")).otherwise(pl.lit("hub_b")),
            ),
        )
    return accounts[: len(accounts) // 2]


@pytest.mark.slow
def test_refresh_clusters_on_words_and_behaviour_when_weighted(
    prefect_harness, refreshed_template: Path, tmp_path: Path, monkeypatch
):
    shutil.copytree(refreshed_template, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(db=tmp_path / "tribes.duckdb")
    first_half = split_behaviour(settings)
    refresh(db=str(settings.db))  # words only
    refresh(db=str(settings.db), options=RefreshOptions(behaviour_weight=0.25))
    profiles = [np.load(path) for path in settings.cache_dir.glob("profile-*.npz")]
    on = next(found for found in profiles if found["signals"].shape[1])
    words_only = [found for found in profiles if not found["signals"].shape[1]]
    assert on["signals"].shape == (len(on["profiles"]), INTERACTIONS.stop) and words_only
    for off in words_only:  # the template's and this database's: the same words
        assert np.array_equal(on["profiles"], off["profiles"])
    users = pl.read_parquet(next(settings.cache_dir.glob("profile-*.users.parquet")))
    first = users["user_id"].is_in(first_half).to_numpy()
    assert 0 < first.sum() < users.height
    # two opposite halves: each block's rows are ±(1, -1, ...) over the slots used, unit, × 0.25
    rhythm = on["signals"][:, RHYTHM][:, [9, 20, HOURS + 0, HOURS + 5]]  # 9:00 20:00 Mon Sat
    assert np.allclose(rhythm[first], [0.125, -0.125, 0.125, -0.125])
    assert np.allclose(rhythm[~first], [-0.125, 0.125, -0.125, 0.125])
    kinds = on["signals"][:, KINDS][:, [signals.KINDS.index("photo"), 0]]  # photo, original
    assert np.allclose(kinds[first], [0.25 / np.sqrt(2), -0.25 / np.sqrt(2)])
    replies = on["signals"][:, INTERACTIONS]  # replies to the hubs, and the texts' @mentions
    assert np.allclose(np.linalg.norm(replies, axis=1), 0.25)
    platform = users["platform"][0]
    towards_a = np.zeros(signals.INTERACTION_DIMS)  # from replying to hub_b to replying to hub_a
    for hub, side in (("hub_a", 1), ("hub_b", -1)):
        bucket = signals.account_bucket(platform, hub)
        towards_a[abs(bucket) - 1] += side * np.sign(bucket)
    assert (replies[first] @ towards_a > 0).all() and (replies[~first] @ towards_a < 0).all()
