"""People: one person's accounts on several platforms, linked, and candidate links suggested.

Links are groups of accounts (the `people` table: a `person_id` shared by the accounts one source
says are one person, with `how`: declared, verified, confirmed, suggested, rejected). Accounts
that share any merging group are one person (connected components, a union-find); the person's
id is the smallest `platform:user_id` of its accounts, so it stays put while links are added to
it. An account linked to nobody is its own person.

Suggestions compare accounts on different platforms by what and how they write: interest (the
mean of their post vectors), writing style (character n-gram TF-IDF and function-word profiles),
posting times (hour-of-day and weekday histograms). A logistic regression turns these into a
probability, fitted on pseudo-pairs built from the data itself: each account's posts split in
two are a true pair, its nearest other accounts false ones. Candidates come from nearest
neighbours (blocking), never from all pairs.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
import polars as pl

if TYPE_CHECKING:  # scipy and sklearn load in the steps that use them: a crawl needs neither
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

ACCOUNT = ["platform", "user_id"]
MERGING = ("declared", "verified", "confirmed")  # links that make one person by themselves
HOWS = (*MERGING, "suggested", "rejected")
MAX_ACCOUNT_CHARS = 300
LINK_SCHEMA = {
    "person_id": pl.Utf8,
    "platform": pl.Utf8,
    "user_id": pl.Utf8,
    "how": pl.Utf8,
    "score": pl.Float64,
    "evidence": pl.Utf8,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class AccountError(ValueError):
    """A `P:USER` account that cannot be used, in one line."""


def parse_account(text: str) -> tuple[str, str]:
    """`platform:user_id` as (platform, user_id); a one-line AccountError for anything else."""
    shown = _CONTROL.sub("?", text)[:80]
    if _CONTROL.search(text):
        raise AccountError(f"account {shown!r} holds control characters")
    if len(text) > MAX_ACCOUNT_CHARS:
        raise AccountError(f"account {shown!r}... is longer than {MAX_ACCOUNT_CHARS} characters")
    platform, colon, user_id = text.strip().partition(":")
    if not colon or not platform.strip() or not user_id.strip():
        raise AccountError(f"account {shown!r} is not PLATFORM:USER (e.g. mastodon:Gargron)")
    return platform.strip(), user_id.strip()


def account_key(platform: str, user_id: str) -> str:
    return f"{platform}:{user_id}"


def pair_id(a: tuple[str, str], b: tuple[str, str]) -> str:
    """The id of the link group of two accounts, the same in either order."""
    return "|".join(sorted([account_key(*a), account_key(*b)]))


# ---------------------------------------------------------------- people from links


def declared_links(accounts: pl.DataFrame, platform: str, evidence: str) -> pl.DataFrame:
    """Link rows from (user id, person name) columns: accounts with the same name are one person
    (empty names link nothing)."""
    user, person = accounts.columns
    return (
        accounts.select(
            person_id=pl.col(person).cast(pl.Utf8).str.strip_chars(),
            platform=pl.lit(platform),
            user_id=pl.col(user).cast(pl.Utf8).str.strip_chars(),
        )
        .filter((pl.col("person_id").str.len_chars() > 0) & (pl.col("user_id").str.len_chars() > 0))
        .unique(["person_id", "platform", "user_id"], maintain_order=True)
        .with_columns(
            how=pl.lit("declared"), score=pl.lit(None, pl.Float64), evidence=pl.lit(evidence)
        )
    )


def person_of(accounts: pl.DataFrame, links: pl.DataFrame) -> pl.DataFrame:
    """Each account of `accounts` (platform, user_id) with its `person_id`: accounts that share a
    link group of `links` (person_id, platform, user_id) are one person, named by the smallest
    `platform:user_id` among them (accounts of `links` not in `accounts` still join people)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    keys = pl.concat([accounts.select(ACCOUNT), links.select(ACCOUNT)]).unique().sort(ACCOUNT)
    keyed = keys.with_columns(key=pl.col("platform") + ":" + pl.col("user_id")).with_row_index()
    groups = links.select("person_id").unique().sort("person_id").with_row_index("group")
    edges = links.join(keyed, on=ACCOUNT).join(groups, on="person_id")
    n_accounts, n_groups = keyed.height, groups.height
    graph = sp.coo_matrix(
        (
            np.ones(edges.height),
            (edges["index"].to_numpy(), n_accounts + edges["group"].to_numpy()),
        ),
        shape=(n_accounts + n_groups, n_accounts + n_groups),
    )
    _, component = connected_components(graph, directed=False)
    named = keyed.with_columns(component=pl.Series(component[:n_accounts]))
    named = named.with_columns(person_id=pl.col("key").min().over("component"))
    return accounts.select(ACCOUNT).join(
        named.select(*ACCOUNT, "person_id"), on=ACCOUNT, how="left", maintain_order="left"
    )


def merging_links(links: pl.DataFrame, auto_link_min_score: float | None) -> pl.DataFrame:
    """The link rows that make people: declared, verified and confirmed ones, and suggested ones
    scoring at least `auto_link_min_score` when that is set."""
    merges = pl.col("how").is_in(MERGING)
    if auto_link_min_score is not None:
        merges |= (pl.col("how") == "suggested") & (pl.col("score") >= auto_link_min_score)
    return links.filter(merges)


def as_persons(frame: pl.DataFrame, persons: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its (platform, user_id) replaced by its person's first account, so steps that
    group by account group by person (`persons`: platform, user_id, person_id)."""
    first = first_accounts(persons).rename({"platform": "_platform", "user_id": "_user_id"})
    return (
        frame.join(persons.select(*ACCOUNT, "person_id"), on=ACCOUNT, how="left")
        .join(first, on="person_id", how="left")
        .with_columns(
            platform=pl.coalesce("_platform", "platform"),
            user_id=pl.coalesce("_user_id", "user_id"),
        )
        .select(frame.columns)
    )


def first_accounts(persons: pl.DataFrame) -> pl.DataFrame:
    """One row per person: its id and its first account (platform, user_id)."""
    return (
        persons.select("person_id", *ACCOUNT)
        .sort(ACCOUNT)
        .group_by("person_id", maintain_order=True)
        .first()
    )


def person_index(accounts: pl.DataFrame, persons: pl.DataFrame) -> pl.DataFrame:
    """One row per person, sorted (row i is person i, as `profile.user_index` for accounts): its
    first account (platform, user_id), its posts (n_posts), person_id and `accounts` (a list of
    platform, user_id, n_posts), from `accounts` (`profile.user_index`) and `persons`."""
    first = first_accounts(persons)
    grouped = (
        accounts.join(persons.select(*ACCOUNT, "person_id"), on=ACCOUNT, how="left")
        .with_columns(
            person_id=pl.coalesce("person_id", pl.col("platform") + ":" + pl.col("user_id"))
        )
        .group_by("person_id")
        .agg(n_posts=pl.col("n_posts").sum(), accounts=pl.struct(*ACCOUNT, "n_posts"))
    )
    keyed = grouped.join(first, on="person_id", how="left").with_columns(
        platform=pl.coalesce("platform", pl.col("accounts").list.first().struct.field("platform")),
        user_id=pl.coalesce("user_id", pl.col("accounts").list.first().struct.field("user_id")),
    )
    return keyed.select(*ACCOUNT, "n_posts", "person_id", "accounts").sort(ACCOUNT)


def spread_to_accounts(members: pl.DataFrame) -> pl.DataFrame:
    """Per-person results (rows of `person_index` with more columns) as one row per account,
    with its own n_posts and its person_id: all accounts of a person share the rest."""
    shared = [c for c in members.columns if c not in (*ACCOUNT, "n_posts", "accounts")]
    return (
        members.select("accounts", *shared)
        .explode("accounts")
        .unnest("accounts")
        .select(*ACCOUNT, "n_posts", *shared)
        .sort(ACCOUNT)
    )


def with_persons(members: pl.DataFrame, persons: pl.DataFrame) -> pl.DataFrame:
    """`members` whose first rows are the persons of `persons` (person_id, accounts; row for row)
    and whose other rows are single accounts (placed apart), each given its person_id and
    accounts: a single account is its own person."""
    own = members.slice(persons.height).select(
        person_id=pl.col("platform") + ":" + pl.col("user_id"),
        accounts=pl.concat_list(pl.struct(*ACCOUNT, "n_posts")),
    )
    linked = pl.concat([persons.select("person_id", "accounts"), own], how="vertical_relaxed")
    return members.hstack(linked)


def one_per_person(members: pl.DataFrame) -> pl.DataFrame:
    """Account rows (with `person_id`) reduced to each person's first account."""
    return members.sort(ACCOUNT).unique("person_id", keep="first", maintain_order=True)


def person_named(members: pl.DataFrame) -> pl.DataFrame:
    """Account rows (platform, user_id, person_id, name) whose `name` shows the person: for a
    person of several accounts `NAME (P:USER, P:USER)`, NAME being its first account's."""
    account = pl.col("platform") + ":" + pl.col("user_id")
    keyed = members.with_columns(_person=pl.coalesce("person_id", account), _account=account)
    people = (
        keyed.sort(ACCOUNT)
        .group_by("_person")
        .agg(
            _first=pl.col("name").first(),
            _accounts=pl.col("_account").str.join(", "),
            _several=pl.len() > 1,
        )
    )
    return (
        keyed.join(people, on="_person", how="left", maintain_order="left")
        .with_columns(
            name=pl.when("_several")
            .then(pl.format("{} ({})", "_first", "_accounts"))
            .otherwise("name")
        )
        .select(members.columns)
    )


def per_person(members: pl.DataFrame) -> pl.DataFrame:
    """Account rows (with person_id and n_posts) as one row per person, in their order: its
    first row, with the posts of all its accounts (each account its own person without a
    person_id column)."""
    account = pl.col("platform") + ":" + pl.col("user_id")
    person = pl.coalesce("person_id", account) if "person_id" in members.columns else account
    return members.with_columns(n_posts=pl.col("n_posts").sum().over(person)).filter(
        pl.int_range(pl.len()).over(person) == 0
    )


def person_display_names(members: pl.DataFrame, names: pl.DataFrame) -> pl.DataFrame:
    """`names` (platform, user_id, display_name) for the accounts of `members` (with person_id),
    each showing its person as `person_named` does."""
    named = members.select(*ACCOUNT, "person_id").join(names, on=ACCOUNT, how="left")
    shown = named.select(*ACCOUNT, "person_id", name=pl.coalesce("display_name", "user_id"))
    return person_named(shown).select(*ACCOUNT, display_name="name")


# ---------------------------------------------------------------- verified links

PROFILE_URL = re.compile(r"https?://[^\s<>\"'()\[\]]+")


def address(url: str | None) -> str | None:
    """What an http(s) URL names, comparable across spellings: host (less `www.`) and path, no
    scheme, query or trailing slash; None for anything else."""
    try:
        parts = urlsplit((url or "").strip())
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return host.lower().removeprefix("www.") + parts.path.rstrip("/")


def named_accounts(users: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """Each address naming exactly one account of `users` (platform, user_id, url): its profile
    or site URL, a feed's own URL and the site (host) a feed lives on."""
    names: dict[str, set[tuple[str, str]]] = {}
    for platform, user_id, url in users.select(*ACCOUNT, "url").iter_rows():
        own = {address(url), address(user_id)}
        if address(user_id):  # a feed or page: a link to its site names it too
            own.add(address(user_id).split("/", 1)[0])
        for name in own - {None}:
            names.setdefault(name, set()).add((platform, user_id))
    return {name: next(iter(found)) for name, found in names.items() if len(found) == 1}


def platform_verified(stored: str | None) -> list[dict]:
    """The links of a `verified_links` value (JSON [{url, verified_at}]); none when malformed."""
    try:
        links = json.loads(stored or "[]")
    except ValueError:
        return []
    return [link for link in links if isinstance(link, dict)] if isinstance(links, list) else []


def verified_links(users: pl.DataFrame, rejected: set[str]) -> pl.DataFrame:
    """Link rows (`how='verified'`) from what platforms publish, in `users` (platform, user_id,
    url, description, verified_links): a link the platform verified (a Mastodon field with
    `verified_at`, a Bluesky domain handle) naming another stored account, and two accounts
    whose profile descriptions link each other. Pairs in `rejected` (pair ids) stay apart."""
    named = named_accounts(users)
    found: dict[str, tuple] = {}  # pair id -> (account, account, evidence)
    described: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
    for row in users.iter_rows(named=True):
        account = (row["platform"], row["user_id"])
        for link in platform_verified(row["verified_links"]):
            other = named.get(address(link.get("url")))
            if other and other != account:
                when = str(link.get("verified_at") or "")[:10]
                evidence = f"{account[0]} link verified {when}: {link['url']}"
                found.setdefault(pair_id(account, other), (account, other, evidence))
        for found_url in PROFILE_URL.findall(row["description"] or ""):
            url = found_url.rstrip(".,;:!?")
            other = named.get(address(url))
            if other and other != account:
                described.setdefault(account, {})[other] = url
    for account, others in described.items():
        for other, url in others.items():
            if back := described.get(other, {}).get(account):
                evidence = f"profile descriptions link each other: {url}, {back}"
                found.setdefault(pair_id(account, other), (account, other, evidence))
    rows = [
        (pair, *account, "verified", None, evidence)
        for pair, (first, second, evidence) in sorted(found.items())
        if pair not in rejected
        for account in (first, second)
    ]
    return pl.DataFrame(rows, schema=LINK_SCHEMA, orient="row")


# ---------------------------------------------------------------- account signals


@dataclass(frozen=True)
class Signals:
    """What suggestions compare, one row per account (row i of `accounts`)."""

    accounts: pl.DataFrame  # platform, user_id, name
    interest: np.ndarray  # mean post vector, L2-normalised
    style: sp.csr_matrix  # character n-gram TF-IDF, L2-normalised
    function_words: np.ndarray  # function-word frequencies, L2-normalised
    hours: np.ndarray  # hour-of-day histogram, L2-normalised
    days: np.ndarray  # weekday histogram, L2-normalised


def account_signals(
    posts: pl.DataFrame, vectors: np.ndarray, names: pl.DataFrame | None = None
) -> Signals:
    """Signals of each account of `posts` (platform, user_id, created_at, text_clean; `vectors`
    row for row), with display names from `names` (platform, user_id, display_name)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfVectorizer
    from sklearn.preprocessing import normalize

    accounts = posts.select(ACCOUNT).unique().sort(ACCOUNT).with_row_index("row")
    owner = posts.join(accounts, on=ACCOUNT, how="left", maintain_order="left")["row"].to_numpy()
    n = accounts.height
    interest = _sums(owner, vectors, n)
    documents = (
        posts.with_columns(row=pl.Series(owner))
        .group_by("row")
        .agg(pl.col("text_clean").str.join("\n"))
        .sort("row")["text_clean"]
        .to_list()
    )
    style = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 4), min_df=2, max_features=100_000, sublinear_tf=True
    ).fit_transform(documents)
    words = CountVectorizer(vocabulary=sorted(ENGLISH_STOP_WORDS)).transform(documents)
    times = posts["created_at"]
    known = times.is_not_null().to_numpy()
    hours = _histogram(owner[known], times.dt.hour().to_numpy()[known], n, 24)
    days = _histogram(owner[known], times.dt.weekday().to_numpy()[known], n, 7)
    named = accounts.drop("row").with_columns(name=pl.col("user_id"))
    if names is not None:
        named = (
            accounts.drop("row")
            .join(names, on=ACCOUNT, how="left", maintain_order="left")
            .select(*ACCOUNT, name=pl.coalesce("display_name", "user_id"))
        )
    return Signals(
        named,
        normalize(interest),
        normalize(style).tocsr(),
        normalize(words.astype(np.float64)).toarray(),
        normalize(hours),
        normalize(days),
    )


def _sums(owner: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    sums = np.zeros((n, values.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, values)
    return sums


def _histogram(owner: np.ndarray, bins: np.ndarray, n: int, n_bins: int) -> np.ndarray:
    counts = np.zeros((n, n_bins), dtype=np.float64)
    np.add.at(counts, (owner, bins.astype(int) % n_bins), 1.0)
    return counts


def blocking_vectors(
    signals: Signals, dims: int = 64, random_state: int = 42, fit_rows: int = 10_000
) -> np.ndarray:
    """A small vector per account whose dot products approximate interest and style similarity
    together: what candidates are found by (`nearest_candidates`). The style reduction is fitted
    on at most `fit_rows` accounts (all of them below that), then applied to every account."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    parts = [signals.interest]
    if signals.style.shape[1] > dims:
        rows = np.random.default_rng(random_state).permutation(signals.style.shape[0])[:fit_rows]
        svd = TruncatedSVD(dims, random_state=random_state).fit(signals.style[np.sort(rows)])
        parts.append(normalize(svd.transform(signals.style)))
    return normalize(np.hstack(parts)).astype(np.float32)


BLOCK_CELLS = 1_000_000  # similarities computed at once while finding candidates (4 MB: cache)


def nearest_candidates(
    vectors: np.ndarray,
    platforms: np.ndarray,
    k: int,
    cell_size: int = 1000,
    probes: int = 6,
    random_state: int = 42,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (rows a < b) where b is among a's `k` most similar accounts on another platform or
    a among b's. Accounts fall into cells of about `cell_size` similar accounts (k-means); each
    account is compared, by matrix products in blocks, with the accounts of its `probes` nearest
    cells on other platforms: exact up to `probes` cells, about linear in the number of accounts
    beyond."""
    codes = np.unique(platforms, return_inverse=True)[1]
    centres = cell_centres(vectors, max(1, len(vectors) // cell_size), random_state)
    closeness = vectors @ centres.T
    nearest_cells = np.argsort(-closeness, axis=1)
    members_of = rows_by_value(balanced_cells(closeness, nearest_cells), len(centres))
    queries_of = rows_by_value(nearest_cells[:, :probes], len(centres))
    best = np.full((len(vectors), k), -1)
    best_similarity = np.full((len(vectors), k), -np.inf, dtype=np.float32)
    for cell_members, cell_queries in zip(members_of, queries_of, strict=True):
        for code in np.unique(codes[cell_members]):
            members = cell_members[codes[cell_members] == code]
            queries = cell_queries[codes[cell_queries] != code]
            for block in np.array_split(queries, 1 + len(queries) * len(members) // BLOCK_CELLS):
                keep_nearest(vectors, block, members, best, best_similarity)
    found = np.isfinite(best_similarity)
    a, b = np.repeat(np.arange(len(vectors)), k)[found.ravel()], best[found]
    pairs = np.unique(np.minimum(a, b) * len(vectors) + np.maximum(a, b))
    return pairs // len(vectors), pairs % len(vectors)


def balanced_cells(closeness: np.ndarray, nearest_cells: np.ndarray) -> np.ndarray:
    """Each row's cell: its nearest one (`nearest_cells`: cells by `closeness`, per row) that has
    room, each cell taking at most twice the mean, the closest rows first. A crowded cell would
    cost its members times the accounts probing it: quadratic where the data crowds."""
    n_rows, n_cells = closeness.shape
    room = np.full(n_cells, 2 * -(-n_rows // n_cells))
    cell = np.full(n_rows, -1)
    for rank in range(n_cells):
        waiting = np.flatnonzero(cell < 0)
        if len(waiting) == 0:
            break
        choice = nearest_cells[waiting, rank]
        ranked = np.lexsort((-closeness[waiting, choice], choice))
        waiting, choice = waiting[ranked], choice[ranked]
        placed = np.arange(len(choice)) - np.searchsorted(choice, choice) < room[choice]
        cell[waiting[placed]] = choice[placed]
        room -= np.bincount(choice[placed], minlength=n_cells)
    return cell


def rows_by_value(values: np.ndarray, n_values: int) -> list[np.ndarray]:
    """For each value 0..n_values-1, the rows of `values` (one value or a row of distinct values
    per row) holding it, ascending: one sort instead of a scan of all rows per value."""
    flat = values.reshape(len(values), -1)
    order = np.argsort(flat.ravel(), kind="stable")
    counts = np.bincount(flat.ravel(), minlength=n_values)
    return np.split(order // flat.shape[1], np.cumsum(counts)[:-1])


def keep_nearest(
    vectors: np.ndarray,
    queries: np.ndarray,
    members: np.ndarray,
    best: np.ndarray,
    best_similarity: np.ndarray,
) -> None:
    """Merge each query's most similar `members` into its `best` (ids) and `best_similarity`,
    in place, keeping the `k` (their width) most similar."""
    k = best.shape[1]
    similarity = vectors[queries] @ vectors[members].T
    take = min(k, len(members))
    local = np.argpartition(similarity, -take, axis=1)[:, -take:]
    ids = np.hstack([best[queries], members[local]])
    scores = np.hstack([best_similarity[queries], np.take_along_axis(similarity, local, 1)])
    top = np.argpartition(scores, -k, axis=1)[:, -k:]
    best[queries] = np.take_along_axis(ids, top, axis=1)
    best_similarity[queries] = np.take_along_axis(scores, top, axis=1)


def cell_centres(vectors: np.ndarray, n_cells: int, random_state: int) -> np.ndarray:
    """`n_cells` unit centres of k-means on (a sample of) `vectors`: the blocking cells."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    if n_cells == 1:
        return normalize(vectors.mean(axis=0, keepdims=True))
    rows = np.random.default_rng(random_state).permutation(len(vectors))[: 50 * n_cells]
    fitted = KMeans(n_cells, n_init=1, max_iter=20, random_state=random_state).fit(
        vectors[rows].astype(np.float64)  # sklearn's k-means++ is 5x slower on float32
    )
    return normalize(fitted.cluster_centers_).astype(vectors.dtype)


PAIR_BLOCK = 16_384  # pairs whose rows are gathered at once: memory stays flat at any size


def _row_cosines(left: np.ndarray | sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            _block_cosines(left, a[start : start + PAIR_BLOCK], b[start : start + PAIR_BLOCK])
            for start in range(0, max(len(a), 1), PAIR_BLOCK)
        ]
    )


def _block_cosines(left: np.ndarray | sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not isinstance(left, np.ndarray):  # a scipy sparse matrix
        return np.asarray(left[a].multiply(left[b]).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", left[a], left[b])


def pair_features(signals: Signals, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One row per pair (a[i], b[i]): the cosines of each signal, and for interest and style how
    far the pair stands out from each account's other candidates (rank among them)."""
    interest = _row_cosines(signals.interest, a, b)
    style = _row_cosines(signals.style, a, b)
    return np.column_stack(
        [
            interest,
            _standing(interest, a, b),
            style,
            _standing(style, a, b),
            _row_cosines(signals.function_words, a, b),
            _row_cosines(signals.hours, a, b),
            _row_cosines(signals.days, a, b),
        ]
    )


def _standing(score: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair, 1 when it is the best candidate of both its accounts, lower (1/rank, the worse
    of the two) when other candidates score higher."""
    frame = pl.DataFrame({"a": a, "b": b, "s": score})
    rank_a = frame.select(pl.col("s").rank("ordinal", descending=True).over("a"))["s"]
    rank_b = frame.select(pl.col("s").rank("ordinal", descending=True).over("b"))["s"]
    return 1.0 / np.maximum(rank_a.to_numpy(), rank_b.to_numpy())


# ---------------------------------------------------------------- calibration


def split_in_two(posts: pl.DataFrame, by: str = "alternate") -> pl.DataFrame:
    """Each account's posts as two pseudo-accounts on platforms `a` and `b` (the original account
    in `twin`): alternate posts, or (`by="time"`) its older and its newer half."""
    order = pl.col("created_at").rank("ordinal").over(ACCOUNT) - 1
    position = pl.int_range(pl.len()).over(ACCOUNT)
    side = (position % 2 == 0) if by == "alternate" else (order < pl.len().over(ACCOUNT) / 2)
    return posts.with_columns(
        twin=pl.col("platform") + ":" + pl.col("user_id"),
        platform=pl.when(side).then(pl.lit("a")).otherwise(pl.lit("b")),
    )


CALIBRATION_ACCOUNTS = 5_000  # accounts split to fit the calibration: enough pairs, bounded time


def calibration_rows(posts: pl.DataFrame, random_state: int) -> np.ndarray:
    """Rows of `posts` whose account has 4 or more posts, of at most CALIBRATION_ACCOUNTS such
    accounts (a random sample where there are more: 100,000 accounts calibrate like 5,000)."""
    enough = posts.select(pl.len().over(ACCOUNT) >= 4).to_series().to_numpy()
    accounts = posts.filter(enough).select(ACCOUNT).unique().sort(ACCOUNT)
    if accounts.height > CALIBRATION_ACCOUNTS:
        accounts = accounts.sample(CALIBRATION_ACCOUNTS, seed=random_state)
    marked = accounts.with_columns(kept=pl.lit(True))
    kept = posts.join(marked, on=ACCOUNT, how="left", maintain_order="left")["kept"]
    return np.flatnonzero(kept.fill_null(False).to_numpy())


def calibrate(
    posts: pl.DataFrame, vectors: np.ndarray, k: int, random_state: int = 42
) -> LogisticRegression:
    """A logistic regression from pair features to the probability that a pair is one person,
    fitted on the data itself: each account's posts split in two (alternate posts and by time)
    give true pairs; the other accounts each half is compared with give false ones."""
    from sklearn.linear_model import LogisticRegression

    rows = calibration_rows(posts, random_state)
    features, labels = [], []
    for by in ("alternate", "time"):
        halves = split_in_two(posts[rows], by)
        halves = halves.with_columns(user_id=pl.col("twin"))
        signals = account_signals(halves, vectors[rows])
        platforms = signals.accounts["platform"].to_numpy()
        a, b = nearest_candidates(
            blocking_vectors(signals, random_state=random_state), platforms, k
        )
        features.append(pair_features(signals, a, b))
        user = signals.accounts["user_id"].to_numpy()
        labels.append(user[a] == user[b])
    x, y = np.vstack(features), np.concatenate(labels)
    if y.all() or not y.any():
        raise ValueError("too few accounts with 4 or more posts to calibrate suggestions")
    return LogisticRegression(C=1.0, max_iter=1000).fit(x, y)


# ---------------------------------------------------------------- suggestions

SUGGESTION_COLUMNS = ["platform_a", "user_a", "platform_b", "user_b", "score", "evidence"]
SUGGESTION_SCHEMA = dict.fromkeys(SUGGESTION_COLUMNS, pl.Utf8) | {"score": pl.Float64}


def name_similarity(left: str, right: str) -> float:
    return difflib.SequenceMatcher(None, left.lower(), right.lower()).ratio()


def evidence_text(features: np.ndarray, name: float) -> str:
    """A short line of what made a pair's score."""
    interest, _, style, _, words, hours, days = features
    return (
        f"interest {interest:.2f}, style {style:.2f}, function words {words:.2f}, "
        f"hours {hours:.2f}, weekdays {days:.2f}, name {name:.2f}"
    )


def suggest(signals: Signals, model: LogisticRegression, k: int, min_score: float) -> pl.DataFrame:
    """Candidate pairs of accounts on different platforms scoring at least `min_score`, best
    first (SUGGESTION_COLUMNS)."""
    platforms = signals.accounts["platform"].to_numpy()
    a, b = nearest_candidates(blocking_vectors(signals), platforms, k)
    if len(a) == 0:
        return pl.DataFrame(
            schema=dict.fromkeys(SUGGESTION_COLUMNS, pl.Utf8) | {"score": pl.Float64}
        )
    features = pair_features(signals, a, b)
    score = model.predict_proba(features)[:, 1]
    keep = np.flatnonzero(score >= min_score)
    names = signals.accounts["name"].to_list()
    users = signals.accounts["user_id"].to_list()
    rows = [
        {
            "platform_a": platforms[a[i]],
            "user_a": users[a[i]],
            "platform_b": platforms[b[i]],
            "user_b": users[b[i]],
            "score": round(float(score[i]), 4),
            "evidence": evidence_text(features[i], name_similarity(names[a[i]], names[b[i]])),
        }
        for i in keep
    ]
    return pl.DataFrame(rows, schema=SUGGESTION_SCHEMA).sort(
        ["score", "platform_a", "user_a", "platform_b", "user_b"],
        descending=[True, False, False, False, False],
    )


def without_known_pairs(
    suggestions: pl.DataFrame, links: pl.DataFrame, persons: pl.DataFrame
) -> pl.DataFrame:
    """`suggestions` less the pairs a user rejected (`links`' rejected groups) and the pairs
    already one person (`persons`: platform, user_id, person_id)."""
    rejected = set(links.filter(pl.col("how") == "rejected")["person_id"].to_list())
    person = dict(
        zip(persons["platform"] + ":" + persons["user_id"], persons["person_id"], strict=True)
    )
    keep = [
        pair_id((pa, ua), (pb, ub)) not in rejected
        and person.get(account_key(pa, ua), 1) != person.get(account_key(pb, ub), 2)
        for pa, ua, pb, ub in suggestions.select(SUGGESTION_COLUMNS[:4]).iter_rows()
    ]
    return suggestions.filter(pl.Series(keep, dtype=pl.Boolean))
