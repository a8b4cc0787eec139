"""Behaviour bench: the refresh's behaviour stage (pipeline/behaviour.describe_behaviour) on N
real posts beside the label stage's terms (label.member_terms) on the same posts, in seconds.

    .venv/bin/python bench/behaviour.py 200000

Posts: the first N of ../shared/data/fb_pages_2016/posts_all.parquet (233,137 real posts of 144
pages, with their times, status_type and reaction, comment and share counts); each page is a
user, its known label its cluster; each post replies to the page before it in its cluster, so the
interaction graph has work to do. Run with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "fb_pages_2016" / "posts_all.parquet"
sys.path.insert(0, str(ROOT))

from pipeline import behaviour, clean, label, store  # noqa: E402


def corpus(n: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(activity, cleaned posts, members) of the first `n` posts."""
    posts = pl.read_parquet(SOURCE).head(n).with_columns(platform=pl.lit("facebook"))
    members = (
        posts.group_by("platform", "user_id")
        .agg(pl.col("user_label").first())
        .sort("user_id")
        .with_columns(cluster_id=pl.col("user_label").rank("dense").cast(pl.Int32) - 1)
    )
    previous = members.with_columns(reply_to=pl.col("user_id").shift(1).over("cluster_id")).select(
        "user_id", "reply_to"
    )
    activity = posts.join(previous, on="user_id", how="left").select(
        "platform",
        "post_id",
        "user_id",
        "created_at",
        kind=pl.col("status_type"),
        lang=pl.lit("en"),
        likes=pl.col("num_reactions"),
        reposts=pl.col("num_shares"),
        replies=pl.col("num_comments"),
        reply_to="reply_to",
        repost_of=pl.lit(None, pl.Utf8),
    )
    return activity, clean.clean_posts(posts), members


def timed(step) -> tuple[float, object]:
    started = time.perf_counter()
    result = step()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="posts (at most 233,137)")
    n = parser.parse_args().n
    activity, cleaned, members = corpus(n)
    mentions = pl.DataFrame(schema=store.MENTIONS)
    label_s, terms = timed(lambda: label.member_terms(members, cleaned, 10))
    behaviour_s, tables = timed(
        lambda: behaviour.describe_behaviour(
            activity,
            mentions,
            behaviour.dated_texts(cleaned, activity),
            members,
            terms,
            "UTC",
            10,
        )
    )
    print(
        f"{cleaned.height:,} cleaned posts of {members.height} users in "
        f"{members['cluster_id'].n_unique()} clusters"
    )
    print("| step | seconds |\n|---|---:|")
    print(f"| label terms (baseline: label.member_terms) | {label_s:.1f} |")
    print(f"| behaviour (all {len(tables)} tables) | {behaviour_s:.1f} |")


if __name__ == "__main__":
    main()
