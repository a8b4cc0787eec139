"""Identity bench: does `tribes people suggest` find one person's two accounts?

    .venv/bin/python bench/identity.py                     # every real set found
    .venv/bin/python bench/identity.py --accounts 10000 30000 100000   # time, synthetic vectors

Each real account's posts are split into two accounts on two pseudo-platforms (by alternate
posts; by time: its older and its newer half), the halves get unrelated names, and every other
account's halves are the distractors. Suggestions run exactly as in the product
(`people.calibrate` on the split data itself, then `people.suggest`): nothing is fitted on the
twins. Prints per set and split: precision@1 (is an account's best-scored candidate its twin?),
precision and recall at the default threshold (`people_min_score`), beside the baseline
precision@1 of the post-embedding cosine alone.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality import (  # noqa: E402 - sets the bench's environment first
    SHARED,
    fb_pages,
    load_into_db,
    stored_post_vectors,
    tweet_users,
)
from pipeline import people  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

SPLITS = ("alternate", "time")


def real_sets() -> dict[str, callable]:
    sets = {}
    if (SHARED / "fb_pages_2016" / "posts.parquet").exists():
        sets["fb_pages"] = lambda: fb_pages("user_label")
    if (SHARED / "tweet_topic_xl" / "posts.parquet").exists():
        sets["tweet_topic_users"] = tweet_users
    return sets


def unrelated_names(halves: pl.DataFrame) -> pl.DataFrame:
    """Each half-account renamed to a digest of its platform and name: twins share nothing."""
    return halves.with_columns(
        user_id=pl.struct("platform", "twin").map_elements(
            lambda r: hashlib.sha1(f"{r['platform']}|{r['twin']}".encode()).hexdigest()[:12],
            return_dtype=pl.Utf8,
        )
    )


def evaluate_split(posts: pl.DataFrame, vectors: np.ndarray, by: str, settings: Settings) -> dict:
    """Precision@1 and precision/recall at the default threshold for one split."""
    keep = posts.select(pl.len().over("platform", "user_id") >= 8).to_series().to_numpy()
    posts, vectors = posts.filter(pl.Series(keep)), vectors[keep]
    halves = unrelated_names(people.split_in_two(posts, by))
    twin = dict(zip(halves["user_id"], halves["twin"], strict=True))
    started = time.perf_counter()
    model = people.calibrate(halves, vectors, settings.people_candidates, settings.random_state)
    signals = people.account_signals(halves, vectors)
    scored = people.suggest(signals, model, settings.people_candidates, 0.0)
    seconds = time.perf_counter() - started
    scored = scored.with_columns(
        right=pl.col("user_a").replace_strict(twin) == pl.col("user_b").replace_strict(twin)
    )
    n_accounts = signals.accounts.filter(pl.col("platform") == "a").height
    best = scored.sort("score", descending=True).unique("user_a", keep="first")
    shown = scored.filter(pl.col("score") >= settings.people_min_score)
    return {
        "set accounts": n_accounts,
        "p@1": best["right"].sum() / n_accounts,
        "cosine p@1 (baseline)": cosine_p_at_1(signals, twin),
        f"precision @ {settings.people_min_score}": shown["right"].mean() if shown.height else None,
        f"recall @ {settings.people_min_score}": shown["right"].sum() / n_accounts,
        "seconds": seconds,
    }


def cosine_p_at_1(signals: people.Signals, twin: dict[str, str]) -> float:
    """The baseline: each `a` account's nearest `b` account by post-embedding cosine alone."""
    platforms = signals.accounts["platform"].to_numpy()
    users = signals.accounts["user_id"].to_numpy()
    left, right = np.flatnonzero(platforms == "a"), np.flatnonzero(platforms == "b")
    nearest = right[(signals.interest[left] @ signals.interest[right].T).argmax(axis=1)]
    return float(
        np.mean([twin[users[a]] == twin[users[b]] for a, b in zip(left, nearest, strict=True)])
    )


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(cell(row[c]) for c in columns) + " |")


def cell(value: object) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def scale(n_accounts: int, settings: Settings, seed: int = 0) -> dict:
    """Time `people.suggest` (blocking, pair features, scoring) on `n_accounts` synthetic
    accounts (two platforms, 512-d interest vectors around 200 topics, style vectors of 100 of
    20,000 terms); the model is a logistic regression on random features (timing only)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((200, 512))
    interest = topics[rng.integers(0, 200, n_accounts)] + rng.standard_normal((n_accounts, 512))
    style = synthetic_style(rng, n_accounts, 20_000, 100)
    signals = people.Signals(
        pl.DataFrame(
            {
                "platform": np.where(np.arange(n_accounts) % 2 == 0, "a", "b"),
                "user_id": [f"u{i}" for i in range(n_accounts)],
                "name": [f"u{i}" for i in range(n_accounts)],
            }
        ),
        normalize(interest).astype(np.float32),
        normalize(style).tocsr(),
        normalize(rng.random((n_accounts, 318))),
        normalize(rng.random((n_accounts, 24))),
        normalize(rng.random((n_accounts, 7))),
    )
    model = LogisticRegression().fit(rng.random((100, 7)), np.arange(100) % 2)
    started, cpu = time.perf_counter(), time.process_time()
    found = people.suggest(signals, model, settings.people_candidates, settings.people_min_score)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "accounts (synthetic vectors)": n_accounts,
        "candidates per account": settings.people_candidates,
        "suggest seconds": seconds,
        "CPU seconds (all threads)": cpu,
        "pairs over threshold": found.height,
    }


def synthetic_style(rng, n_accounts: int, n_terms: int, per_account: int) -> sp.csr_matrix:
    """Random TF-IDF-like rows of `per_account` terms each (built directly: scipy's sparse
    random sampler alone takes minutes at 100,000 rows)."""
    terms = rng.integers(0, n_terms, (n_accounts, per_account))
    rows = np.repeat(np.arange(n_accounts), per_account)
    values = rng.random(n_accounts * per_account)
    return sp.csr_matrix((values, (rows, terms.ravel())), shape=(n_accounts, n_terms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--accounts", type=int, nargs="+", help="time matching on N synthetic accounts (each N)"
    )
    parser.add_argument("--sets", nargs="*", help="real sets to run (default: all found)")
    args = parser.parse_args()
    defaults = Settings()
    if args.accounts:
        print_table([scale(n, defaults) for n in args.accounts])
        return
    sets = real_sets()
    for name in args.sets or list(sets):
        settings = load_into_db(name, sets[name]())
        posts, vectors = stored_post_vectors(settings)
        timed = posts["created_at"].is_not_null().any()
        splits = SPLITS if timed else tuple(by for by in SPLITS if by != "time")
        rows = [{"split": by, **evaluate_split(posts, vectors, by, defaults)} for by in splits]
        print(f"\n### {name}\n")
        print_table(rows)
        if not timed:
            print("\n(no posting times in this set: no split by time)")


if __name__ == "__main__":
    main()
