"""Clean post text for embedding and terms; never touches the stored posts."""

from __future__ import annotations

import hashlib
import re

import polars as pl

URL = r"(?i)(?:https?://|www\.)\S+"
EMAIL = r"[\w.+-]+@[\w-]+\.[\w.-]+"
HANDLE = r"(^|[^\w@])@[\w.]{0,29}\w"
ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&nbsp;": " "}
CHUNK_SEPARATOR = "\n"  # between the posts of a chunk; cleaning turns every other newline to " "
WORD = re.compile(r"\w+")
CONTROL = r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff]"


def clean_expr(column: str = "text") -> pl.Expr:
    """Unicode-normalise, unescape common entities, drop URLs, e-mails, @handles, control chars."""
    text = pl.col(column).fill_null("").str.normalize("NFKC")
    for entity, char in ENTITIES.items():
        text = text.str.replace_all(entity, char, literal=True)
    return (
        text.str.replace_all(URL, " ")
        .str.replace_all(EMAIL, " ")
        .str.replace_all(HANDLE, "$1 ")
        .str.replace_all(CONTROL, " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def clean_text(text: str | None) -> str:
    """`clean_expr` applied to one string."""
    return pl.DataFrame({"text": [text]}, schema={"text": pl.Utf8}).select(clean_expr()).item()


def text_hash(text: str) -> str:
    """A stable 128-bit hash of a cleaned text: the embedding cache key."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _hash_series(texts: pl.Series) -> pl.Series:
    return pl.Series([text_hash(t) for t in texts], dtype=pl.Utf8)


def clean_posts(posts: pl.DataFrame, min_posts_per_user: int = 1) -> pl.DataFrame:
    """Posts with `text_clean` and `text_hash`; empty and per-user duplicate texts dropped.

    Users left with fewer than `min_posts_per_user` posts are dropped too (too little to profile).
    """
    cleaned = (
        posts.select(
            "platform",
            "post_id",
            "user_id",
            pl.col("created_at")
            if "created_at" in posts.columns
            else pl.lit(None, pl.Datetime).alias("created_at"),
            clean_expr().alias("text_clean"),
        )
        .filter(pl.col("text_clean").str.len_chars() > 0)
        .sort("platform", "post_id")
        .unique(["platform", "user_id", "text_clean"], keep="first", maintain_order=True)
        .with_columns(text_hash=pl.col("text_clean").map_batches(_hash_series, pl.Utf8))
    )
    return cleaned.filter(enough_posts(min_posts_per_user))


def enough_posts(min_posts_per_user: int) -> pl.Expr:
    """Whether a cleaned post's user has at least `min_posts_per_user` of them (enough to
    cluster; the others are placed in their nearest cluster: pipeline/hierarchy.py)."""
    return pl.len().over("platform", "user_id") >= min_posts_per_user


def pack_chunks(posts: pl.DataFrame, max_chars: int) -> pl.DataFrame:
    """Each user's cleaned posts, oldest first, packed greedily into texts of at most `max_chars`.

    Every post lands in a chunk (a longer post is cut at spaces into chunks of its own, so the
    model never reads more than `max_chars` at once: it holds memory by text length), so a
    profile built from the chunks covers ALL of a user's posts; new posts only change the user's
    last chunk. Posts are joined by a newline (cleaned posts have none), so `chunk_posts` can
    split a chunk again. Returns platform, user_id, text_clean, text_hash, one row per chunk.
    """
    rows: list[tuple[str, str, str]] = []
    ordered = posts.sort("platform", "user_id", "created_at", "post_id", nulls_last=True)
    for (platform, user_id), group in ordered.group_by("platform", "user_id", maintain_order=True):
        current = ""
        for post in group["text_clean"]:
            for text in pieces(post, max_chars):
                if current and len(current) + 1 + len(text) > max_chars:
                    rows.append((platform, user_id, current))
                    current = ""
                current = f"{current}{CHUNK_SEPARATOR}{text}" if current else text
        rows.append((platform, user_id, current))
    chunks = pl.DataFrame(
        rows, schema={"platform": pl.Utf8, "user_id": pl.Utf8, "text_clean": pl.Utf8}, orient="row"
    )
    return chunks.with_columns(text_hash=pl.col("text_clean").map_batches(_hash_series, pl.Utf8))


def pieces(text: str, max_chars: int) -> list[str]:
    """A cleaned text cut at spaces into pieces of at most `max_chars` (a longer word is cut)."""
    found, start = [], 0
    while len(text) - start > max_chars:
        cut = text.rfind(" ", start, start + max_chars + 1)
        if cut <= start:
            cut = start + max_chars
        found.append(text[start:cut])
        start = cut + 1 if text[cut] == " " else cut
    found.append(text[start:])
    return found


def chunk_posts(chunk: str) -> list[str]:
    """The posts a chunk was packed from (a single post is a chunk of one)."""
    return chunk.split(CHUNK_SEPARATOR)


def best_post_in(chunk: str, words: set[str], min_words: int = 5) -> str:
    """The post of a chunk that shares the most of `words` (lower case), preferring posts of at
    least `min_words` words, then longer ones: a chunk's most telling sentence to quote."""

    def score(post: str) -> tuple[int, bool, int]:
        tokens = WORD.findall(post.lower())
        return len(words.intersection(tokens)), len(tokens) >= min_words, len(post)

    return max(chunk_posts(chunk), key=score)


def excerpt(text: str, limit: int) -> str:
    """`text` with whitespace folded, in at most `limit` characters: when longer, cut at the
    last word boundary (mid-word only for one very long word) and ended with "…"."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if text[limit - 1] != " " and cut.rfind(" ") > limit // 2:  # a word goes on: drop it
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "…"
