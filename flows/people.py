"""People across platforms: link, unlink, list, suggest and forget accounts (`tribes people`,
`tribes forget`). The linking logic is pipeline/people.py; the links live in the `people` table.
"""

from __future__ import annotations

import polars as pl

from flows.vectors import stored_vectors
from pipeline import clean, store
from pipeline import people as people_step
from pipeline.profile import profile_units
from pipeline.settings import Settings

CONFIRMED = "confirmed with `tribes people link`"
REJECTED = "rejected with `tribes people unlink`"


def two_accounts(first: str, second: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two different accounts from their `P:USER` texts (AccountError otherwise)."""
    a, b = people_step.parse_account(first), people_step.parse_account(second)
    if a == b:
        raise people_step.AccountError(f"{first} and {second} are the same account")
    return a, b


def pair_rows(a: tuple[str, str], b: tuple[str, str], how: str, evidence: str) -> pl.DataFrame:
    """The two rows of a link group of two accounts."""
    return pl.DataFrame(
        {
            "person_id": [people_step.pair_id(a, b)] * 2,
            "platform": [a[0], b[0]],
            "user_id": [a[1], b[1]],
            "how": [how] * 2,
            "score": pl.Series([None, None], dtype=pl.Float64),
            "evidence": [evidence] * 2,
        }
    )


def require_stored(con, *accounts: tuple[str, str]) -> None:
    for platform, user_id in accounts:
        if not store.has_account(con, platform, user_id):
            raise store.StoreError(f"no account {platform}:{user_id} is stored")


def link(settings: Settings, first: str, second: str) -> str:
    """Confirm that two accounts are one person (from the next refresh on)."""
    a, b = two_accounts(first, second)
    with store.open(settings, "write") as con:
        require_stored(con, a, b)
        store.save_links(con, pair_rows(a, b, "confirmed", CONFIRMED))
    return f"linked {first} and {second}: one person from the next `tribes refresh` on"


def unlink(settings: Settings, first: str, second: str) -> str:
    """Reject a pair: its confirmed or suggested link goes, and it is never suggested again."""
    a, b = two_accounts(first, second)
    with store.open(settings, "write") as con:
        require_stored(con, a, b)
        store.save_links(con, pair_rows(a, b, "rejected", REJECTED))
        persons = persons_of(con, settings)
    same = persons.filter(pl.col("user_id").is_in([a[1], b[1]]))
    keys = {(p, u): person for p, u, person in same.iter_rows()}
    if keys.get(a) is not None and keys.get(a) == keys.get(b):
        return (
            f"unlinked {first} and {second}, but they are still one person through other links "
            "(see `tribes people list`: edit sources.yaml's person: or unlink those)"
        )
    return f"unlinked {first} and {second}: never suggested again"


def persons_of(con, settings: Settings) -> pl.DataFrame:
    """Every linked account with its person (platform, user_id, person_id)."""
    links = people_step.merging_links(store.read_links(con), settings.auto_link_min_score)
    return people_step.person_of(links.select("platform", "user_id").unique(), links)


def list_people(settings: Settings) -> pl.DataFrame:
    """People of more than one account: person_id, platform, user_id, name, how (each way the
    account is linked, with its evidence)."""
    with store.open(settings) as con:
        links = store.read_links(con)
        persons = persons_of(con, settings)
        names = store.read_users(con).select("platform", "user_id", "display_name")
    merging = people_step.merging_links(links, settings.auto_link_min_score)
    hows = merging.group_by("platform", "user_id").agg(
        how=pl.concat_str(
            "how", pl.lit(" ("), pl.col("evidence").fill_null(""), pl.lit(")")
        ).str.join("; ")
    )
    return (
        persons.filter(pl.len().over("person_id") > 1)
        .join(names, on=["platform", "user_id"], how="left")
        .join(hows, on=["platform", "user_id"], how="left")
        .sort("person_id", "platform", "user_id")
        .select("person_id", "platform", "user_id", name="display_name", how="how")
    )


def suggest(settings: Settings, min_score: float) -> pl.DataFrame:
    """Candidate pairs of accounts on different platforms scoring `min_score` or more, best
    first (SUGGESTION_COLUMNS), less rejected pairs and pairs already one person. They are kept
    as `suggested` links (only `auto_link_min_score` lets them merge people)."""
    with store.open(settings) as con:
        posts = clean.clean_posts(store.read_posts(con), settings.min_posts_per_user)
        names = store.read_users(con).select("platform", "user_id", "display_name")
        links = store.read_links(con)
    if posts.select("platform").n_unique() < 2:
        raise ValueError("suggestions need accounts on two or more platforms")
    vectors = stored_vectors(settings, posts["text_clean"].to_list(), "posts")
    model = people_step.calibrate(posts, vectors, settings.people_candidates, settings.random_state)
    signals = people_step.account_signals(posts, vectors, names)
    found = people_step.suggest(signals, model, settings.people_candidates, min_score)
    with store.open(settings, "write") as con:
        persons = persons_of(con, settings)
        found = people_step.without_known_pairs(found, links, persons)
        store.replace_found(con, "suggested", suggested_rows(found))
    return found


def suggested_rows(found: pl.DataFrame) -> pl.DataFrame:
    """Suggestions as link rows: one group of two accounts per pair."""
    pairs = found.with_columns(
        person_id=pl.struct("platform_a", "user_a", "platform_b", "user_b").map_elements(
            lambda r: people_step.pair_id(
                (r["platform_a"], r["user_a"]), (r["platform_b"], r["user_b"])
            ),
            return_dtype=pl.Utf8,
        ),
        how=pl.lit("suggested"),
    )
    sides = [
        pairs.select(
            "person_id",
            platform=f"platform_{side}",
            user_id=f"user_{side}",
            how="how",
            score="score",
            evidence="evidence",
        )
        for side in ("a", "b")
    ]
    return pl.concat(sides).select(store.LINK_COLUMNS)


def account_hashes(settings: Settings, posts: pl.DataFrame, platform: str, user_id: str):
    """The text hashes of an account's posts and profile chunks that no other account's cleaned
    post shares: the embeddings forgetting it removes."""
    cleaned = clean.clean_posts(posts)
    own = (pl.col("platform") == platform) & (pl.col("user_id") == user_id)
    mine = cleaned.filter(own)
    chunks = profile_units(mine, "chunk_mean", settings.chunk_chars)["text_hash"]
    others = set(cleaned.filter(~own)["text_hash"].to_list())
    return sorted((set(mine["text_hash"].to_list()) | set(chunks.to_list())) - others)


def forget(settings: Settings, account: str) -> str:
    """Remove an account everywhere (store.forget_account); returns the confirmation line."""
    platform, user_id = people_step.parse_account(account)
    with store.open(settings, "write") as con:
        require_stored(con, (platform, user_id))
        hashes = account_hashes(settings, store.read_posts(con), platform, user_id)
        counts = store.forget_account(con, platform, user_id, hashes)
    removed = ", ".join(f"{n} {what}" for what, n in counts.items())
    return (
        f"forgot {account}: removed {removed}; importing it again is refused "
        "(add it to sources.yaml's forget: list so crawls skip it)"
    )
