"""Behaviour signals beside the words of a profile: when a user posts, what kinds of posts, whom
they talk to. Pure: frames in, arrays out (one row per row of `users`, `profile.user_index`).

Three blocks, each centred over the users that have its data (a signal every user shares, such
as all posts being `original`, becomes zeros) and L2-normalised; a user without the data gets
zeros, so a block costs nothing where data is missing:

- rhythm: the shares of the user's posts per hour of day (24) and per weekday (7), in `timezone`;
- kinds: the shares of the user's posts per kind (store.KINDS);
- interactions: the accounts the user replies to, mentions and reposts, counted and hashed into
  `INTERACTION_DIMS` signed buckets (the same account, the same bucket, in any run).

`with_behaviour` puts them, times `behaviour_weight`, after the words (unit vectors): the words
stay the main signal. Inputs as pipeline/behaviour.py's (`activity`, `mentions`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
from sklearn.preprocessing import normalize

from pipeline.behaviour import interaction_edges, local_times
from pipeline.profile import USER_KEYS, rows_of
from pipeline.store import KINDS

INTERACTION_DIMS = 64  # signed hash buckets of the accounts a user interacts with


def counts(frame: pl.DataFrame, users: pl.DataFrame, column: str, width: int) -> np.ndarray:
    """Per user (row of `users`), the sum of `weight` (1 when absent) of `frame`'s rows in each
    column index `column` (0 to `width` - 1); rows of other users are left out."""
    known = frame.join(users.select(USER_KEYS), on=USER_KEYS, how="semi")
    weight = known["weight"].to_numpy() if "weight" in known.columns else 1.0
    table = np.zeros((users.height, width), dtype=np.float64)
    np.add.at(table, (rows_of(known, users), known[column].to_numpy()), weight)
    return table


def centred_unit_rows(block: np.ndarray) -> np.ndarray:
    """Rows with data centred on their mean and L2-normalised; rows without data stay zeros."""
    has_data = block.any(axis=1)
    out = np.zeros_like(block)
    if has_data.any():
        rows = block[has_data]
        out[has_data] = normalize(rows - rows.mean(axis=0, keepdims=True))
    return out


def shares(table: np.ndarray) -> np.ndarray:
    """Each row over its sum (rows of zeros stay zeros)."""
    return normalize(table, norm="l1")


def rhythm_block(activity: pl.DataFrame, users: pl.DataFrame, timezone: str) -> np.ndarray:
    """Each user's share of posts per hour of day and per weekday (local to `timezone`)."""
    timed = local_times(activity, timezone).with_columns(day=pl.col("weekday") - 1)
    return np.hstack(
        [shares(counts(timed, users, "hour", 24)), shares(counts(timed, users, "day", 7))]
    )


def kind_block(activity: pl.DataFrame, users: pl.DataFrame) -> np.ndarray:
    """Each user's share of posts per kind (store.KINDS); posts of no known kind are left out."""
    index = pl.DataFrame({"kind": KINDS, "slot": range(len(KINDS))})
    return shares(counts(activity.join(index, on="kind"), users, "slot", len(KINDS)))


def account_bucket(platform: str, account: str) -> int:
    """An account's signed hash bucket: 1 to INTERACTION_DIMS, negative for half of them."""
    digest = hashlib.md5(f"{platform}\x1f{account}".encode()).digest()
    bucket = int.from_bytes(digest[:4], "little") % INTERACTION_DIMS + 1
    return bucket if digest[4] & 1 else -bucket


def interaction_block(
    activity: pl.DataFrame, mentions: pl.DataFrame, users: pl.DataFrame
) -> np.ndarray:
    """Each user's replies, mentions and reposts per account, hashed into INTERACTION_DIMS
    signed buckets (feature hashing: inner products of the account counts are kept on average)."""
    edges = interaction_edges(activity, mentions)
    buckets = [account_bucket(p, t) for p, t in edges.select("platform", "target").iter_rows()]
    signed = edges.with_columns(bucket=pl.Series(buckets, dtype=pl.Int64))
    hashed = signed.select(
        *USER_KEYS,
        slot=pl.col("bucket").abs() - 1,
        weight=pl.col("count") * pl.col("bucket").sign(),
    )
    return counts(hashed, users, "slot", INTERACTION_DIMS)


def behaviour_signals(
    activity: pl.DataFrame,
    mentions: pl.DataFrame,
    users: pl.DataFrame,
    timezone: str,
    weight: float,
) -> np.ndarray:
    """The three blocks (rhythm, kinds, interactions), each centred, unit and times `weight`."""
    blocks = [
        rhythm_block(activity, users, timezone),
        kind_block(activity, users),
        interaction_block(activity, mentions, users),
    ]
    return (weight * np.hstack([centred_unit_rows(b) for b in blocks])).astype(np.float32)


def no_signals(n_users: int) -> np.ndarray:
    """The signals of words-only profiles (behaviour_weight 0): none."""
    return np.zeros((n_users, 0), dtype=np.float32)


def with_behaviour(words: np.ndarray, signals: np.ndarray) -> np.ndarray:
    """The profiles the clustering spaces are made of: the words, then the signals, if any."""
    return np.hstack([words, signals]) if signals.shape[1] else words
