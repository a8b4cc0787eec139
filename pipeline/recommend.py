"""Product recommendations: read and validate a catalogue, rank products by interest similarity.

Pure: frames and arrays in, frames and arrays out. Interests are centroids of post embeddings,
centered by the corpus mean (so the direction every post shares does not dominate); products are
ranked by cosine similarity to them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.clean import WORD, best_post_in, clean_text, excerpt

REQUIRED = ("id", "name", "description")
OPTIONAL = ("category", "url")
FORMATS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
URL_OK = re.compile(r"^https?://[^\s<>\"']+$", re.IGNORECASE)
MAX_TEXT = 5_000
MIN_REASON_WORDS = 5


class RecommendError(ValueError):
    """Recommendations cannot be made; the message says why in one line."""


class CatalogueError(RecommendError):
    """The product catalogue is unreadable or has a bad row."""


# ---------------------------------------------------------------- catalogue


def read_catalogue(path: Path) -> pl.DataFrame:
    """The catalogue file as a frame of strings: id, name, description, category, url."""
    if not path.is_file():
        raise CatalogueError(f"{path}: no such file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise CatalogueError(f"{path.name}: use a .csv, .json, .jsonl or .parquet catalogue")
    try:
        if kind == "parquet":
            table = pl.read_parquet(path)
        elif kind == "csv":
            table = pl.read_csv(path, infer_schema=False, encoding="utf8")
        elif kind == "jsonl":
            table = pl.read_ndjson(path, infer_schema_length=None)
        else:
            rows = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(rows, dict):  # {"products": [...]}
                rows = rows.get("products", rows)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise CatalogueError(f"{path.name}: expected a JSON list of product objects")
            table = pl.DataFrame(rows, infer_schema_length=None)
    except CatalogueError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CatalogueError(f"{path.name} is not readable as {kind}: {first}") from None
    return validate_catalogue(table, path.name)


def _as_text(table: pl.DataFrame, column: str) -> pl.Expr:
    if column not in table.columns:
        return pl.lit(None, pl.Utf8).alias(column)
    return pl.col(column).cast(pl.Utf8).str.strip_chars().replace("", None).alias(column)


def row_problem() -> pl.Expr:
    """Why a catalogue row is bad (null when it is fine)."""
    return (
        pl.when(pl.col("id").is_null())
        .then(pl.lit("missing id"))
        .when(pl.col("name").is_null())
        .then(pl.lit("missing name"))
        .when(pl.col("description").is_null())
        .then(pl.lit("missing description"))
        .when((pl.col("name").str.len_chars() + pl.col("description").str.len_chars()) > MAX_TEXT)
        .then(pl.lit(f"name + description longer than {MAX_TEXT} characters"))
        .when(pl.col("url").is_not_null() & ~pl.col("url").str.contains(URL_OK.pattern))
        .then(pl.lit("url must start with http:// or https://"))
        .when(pl.col("id").is_duplicated())
        .then(pl.lit("duplicate id"))
    )


def validate_catalogue(table: pl.DataFrame, name: str = "catalogue") -> pl.DataFrame:
    """Check columns and every row; the first bad row is reported in one line."""
    if table.height == 0:
        raise CatalogueError(f"{name} has no products")
    table = table.rename({c: c.strip().lower() for c in table.columns})
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        shown = ", ".join(table.columns[:12])
        raise CatalogueError(
            f"{name} lacks column(s) {', '.join(missing)} (has: {shown}); "
            "a catalogue needs id, name, description and may have category, url"
        )
    products = table.select(*(_as_text(table, c) for c in REQUIRED + OPTIONAL))
    checked = products.with_row_index("row", offset=1).with_columns(problem=row_problem())
    bad = checked.filter(pl.col("problem").is_not_null())
    if bad.height:
        first = bad.row(0, named=True)
        ident = f" (id {first['id']!r})" if first["id"] is not None else ""
        more = f"; {bad.height - 1} more bad row(s)" if bad.height > 1 else ""
        raise CatalogueError(f"{name} row {first['row']}{ident}: {first['problem']}{more}")
    return products


def product_texts(products: pl.DataFrame) -> list[str]:
    """The text embedded for each product: cleaned 'name (category): description'."""
    texts = []
    for row in products.iter_rows(named=True):
        category = f" ({row['category'].replace('_', ' ')})" if row.get("category") else ""
        texts.append(clean_text(f"{row['name']}{category}: {row['description']}"))
    return texts


# ---------------------------------------------------------------- ranking


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def interests(
    vectors: np.ndarray, group_of_post: np.ndarray, n_groups: int, names: list[str] | None = None
) -> np.ndarray:
    """Unit centroid of each group's posts, centered by the mean of all posts.

    Raises RecommendError naming the first group (user or cluster) that has no posts.
    """
    counts = np.bincount(group_of_post, minlength=n_groups)
    if (counts == 0).any():
        empty = int(np.flatnonzero(counts == 0)[0])
        who = names[empty] if names else f"group {empty}"
        raise RecommendError(f"{who} has no posts: nothing to recommend from")
    centered = vectors - vectors.mean(axis=0)
    sums = np.zeros((n_groups, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, group_of_post, centered)
    return unit(sums / counts[:, None]).astype(np.float32)


def rank(interest: np.ndarray, products: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top `top_k` products per interest row by cosine similarity: (indices, scores), best first.

    Product vectors are centered by the catalogue mean, so a product scores by what sets it
    apart from the rest of the catalogue.
    """
    if products.shape[0] == 0:
        raise RecommendError("the product catalogue is empty: run `tribes products import FILE`")
    items = unit(products - products.mean(axis=0)) if products.shape[0] > 1 else unit(products)
    scores = unit(interest) @ items.T
    k = min(top_k, products.shape[0])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def best_post(post_vectors: np.ndarray, product: np.ndarray) -> int:
    """Row of the post most similar to one product vector."""
    return int(np.argmax(post_vectors @ product))


def matching_terms(
    term_vectors: np.ndarray, terms: list[str], product: np.ndarray, n: int = 3
) -> list[str]:
    """The `n` cluster terms closest in meaning to the product, best first."""
    if not terms:
        return []
    order = np.argsort(-(unit(term_vectors) @ product), kind="stable")[:n]
    return [terms[i] for i in order]


QUOTE_MARKS = tuple('"“”„«»')


def quoted(post: str, limit: int = 120) -> str:
    """A post cut at a word (`excerpt`), in typographic quotation marks (a post's own straight
    ones never double them) unless it opens with its own."""
    text = excerpt(post, limit)
    return text if text.startswith(QUOTE_MARKS) else f"“{text}”"


def cluster_reason(terms: list[str], post: str | None) -> str:
    """'terms: a, b, c; post: "…"' (either part may be absent)."""
    parts = [f"terms: {', '.join(terms)}"] if terms else []
    if post:
        parts.append(f"post: {quoted(post, 100)}")
    return "; ".join(parts)


def user_reason(post: str) -> str:
    return f"post: {quoted(post)}"


def recommendations_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows of (scope, scope_id, product_id, score, rank, reason) as a typed frame."""
    schema = {
        "scope": pl.Utf8,
        "scope_id": pl.Utf8,
        "product_id": pl.Utf8,
        "score": pl.Float64,
        "rank": pl.Int32,
        "reason": pl.Utf8,
    }
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def recommend_all(
    units: pl.DataFrame,
    unit_vectors: np.ndarray,
    products: pl.DataFrame,
    product_vectors: np.ndarray,
    terms: pl.DataFrame,
    term_vectors: np.ndarray,
    top_k: int,
) -> pl.DataFrame:
    """Ranked products for every cluster and every user of a run.

    `units`: platform, user_id, cluster_id, text_clean (one row per vector in `unit_vectors`;
    a unit is a post or a chunk of posts); `terms`: cluster_id, term, rank (one row per vector in
    `term_vectors`). Scope ids are the cluster id and 'platform:user_id'. A reason quotes the
    post, within the unit closest to the product, that shares most words with it.
    """
    if units.height == 0:
        raise RecommendError("the run has no posts: nothing to recommend from")
    product_ids = products["product_id"].to_list()
    product_words = [set(WORD.findall(t.lower())) for t in product_texts(products)]
    texts = units["text_clean"].to_list()
    wordy = np.array([len(t.split()) >= MIN_REASON_WORDS for t in texts])
    rows: list[dict] = []

    users = units.select("platform", "user_id").unique(maintain_order=True)
    user_keys = [f"{p}:{u}" for p, u in users.iter_rows()]
    user_of_post = units.join(
        users.with_row_index("row"), on=["platform", "user_id"], how="left", maintain_order="left"
    )["row"].to_numpy()
    cluster_ids = sorted(set(units["cluster_id"].to_list()))
    cluster_of_post = np.searchsorted(cluster_ids, units["cluster_id"].to_numpy())

    for scope, keys, group_of_post in (
        ("cluster", [str(c) for c in cluster_ids], cluster_of_post),
        ("user", user_keys, user_of_post),
    ):
        order, scores = rank(
            interests(unit_vectors, group_of_post, len(keys), keys), product_vectors, top_k
        )
        for g, key in enumerate(keys):
            own = np.flatnonzero(group_of_post == g)
            if wordy[own].any():  # explain with a sentence rather than a caption
                own = own[wordy[own]]
            for r, (item, score) in enumerate(zip(order[g], scores[g], strict=True), start=1):
                vector = product_vectors[item]
                closest = texts[own[best_post(unit_vectors[own], vector)]]
                post = best_post_in(closest, product_words[item], MIN_REASON_WORDS)
                if scope == "cluster":
                    mask = (terms["cluster_id"] == cluster_ids[g]).to_numpy()
                    words = matching_terms(
                        term_vectors[mask], terms.filter(mask)["term"].to_list(), vector
                    )
                    reason = cluster_reason(words, post)
                else:
                    reason = user_reason(post)
                rows.append(
                    {
                        "scope": scope,
                        "scope_id": key,
                        "product_id": product_ids[item],
                        "score": float(score),
                        "rank": r,
                        "reason": reason,
                    }
                )
    return recommendations_frame(rows)


def provisional_recommendations(members: pl.DataFrame, cluster_recs: pl.DataFrame) -> pl.DataFrame:
    """For accounts with a provisional cluster (platform, user_id, cluster_id), their cluster's
    ranked products as their own (scope 'user'), the reason saying so."""
    picks = cluster_recs.filter(pl.col("scope") == "cluster").select(
        pl.col("scope_id").cast(pl.Int32).alias("cluster_id"),
        "product_id",
        "score",
        "rank",
        "reason",
    )
    return recommendations_frame(
        members.join(picks, on="cluster_id", how="inner", maintain_order="left")
        .select(
            scope=pl.lit("user"),
            scope_id=pl.format("{}:{}", "platform", "user_id"),
            product_id="product_id",
            score="score",
            rank="rank",
            reason=pl.format("cluster {}'s pick (provisional); {}", "cluster_id", "reason"),
        )
        .rows()
    )
