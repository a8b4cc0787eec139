"""Cluster naming on small texts whose topics are known."""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from pipeline.label import (
    cluster_terms,
    coherent_top,
    describe_clusters,
    member_terms,
    npmi_matrix,
    terms_of,
)


def named(frame, cluster_id: int) -> list[str]:
    return frame.filter(frame["cluster_id"] == cluster_id).sort("rank")["term"].to_list()


def test_npmi_matrix_together_never_and_independent():
    present = sp.csr_matrix(
        np.array(
            [  # a and b always together; c never with a; d independent of a
                [1, 1, 0, 1],
                [1, 1, 0, 0],
                [0, 0, 1, 1],
                [0, 0, 1, 0],
            ]
        )
    )
    npmi = npmi_matrix(present)
    assert npmi[0, 1] == pytest.approx(1.0)
    assert npmi[0, 2] == -1.0
    assert npmi[0, 3] == pytest.approx(0.0, abs=1e-9)


def test_coherent_top_prefers_terms_used_together_over_a_slightly_heavier_loner():
    # term 0 leads; term 1 is a bit heavier than 2 but never appears with 0; 2 always does
    present = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 1, 0], [1, 0, 1]]))
    weights = np.array([1.0, 0.9, 0.8])
    assert coherent_top(weights, present, top_n=2, pool=3).tolist() == [0, 2]
    assert coherent_top(weights, present, top_n=2, pool=3, pull=0.0).tolist() == [0, 1]


def test_cluster_terms_name_each_cluster_by_its_own_words_and_not_the_shared_ones():
    football = ["goal striker match today", "match keeper goal today", "striker scores goal"]
    politics = ["senate vote bill today", "vote tax bill", "senate debate vote today"]
    texts = football * 3 + politics * 3
    cluster = np.array([0] * 9 + [1] * 9)
    owner = np.arange(18) // 3  # six users, three texts each
    terms = cluster_terms(texts, cluster, 2, top_n=3, owner=owner)
    assert named(terms, 0)[0] == "goal" and len(named(terms, 0)) == 3
    assert set(named(terms, 0)) <= {"goal", "striker", "match", "keeper", "scores"}
    assert named(terms, 1)[0] == "vote"
    assert set(named(terms, 1)) <= {"senate", "vote", "bill", "tax", "debate"}
    assert "today" not in terms["term"].to_list()  # used by both clusters alike
    weights = terms.filter(terms["cluster_id"] == 0)["weight"].to_list()
    assert weights == sorted(weights, reverse=True)


def test_cluster_terms_of_stop_words_only_is_empty():
    terms = cluster_terms(["the and of", "a an the"], np.array([0, 1]), 2)
    assert terms.is_empty() and terms.columns == ["cluster_id", "term", "weight", "rank"]


def test_terms_of_drops_stop_words_and_pairs_up_chinese_and_japanese():
    assert terms_of("The Warriors WON again, 3 times!") == ["warriors", "won", "times"]
    assert terms_of("今日は野球の試合") == ["今日", "野球", "試合"]
    assert terms_of("新しいレシピ") == ["レシピ"]
    assert terms_of("Big 東京 tower") == ["big", "tower", "東京"]


def test_japanese_clusters_get_terms():
    sports = ["野球の試合", "野球が好き", "試合に勝った"]
    cooking = ["料理のレシピ", "料理が好き", "レシピを作る"]
    texts = sports + cooking
    terms = cluster_terms(texts * 40, np.array([0, 0, 0, 1, 1, 1] * 40), 2, top_n=2)
    sport = {pair for text in texts[:3] for pair in terms_of(text)}
    food = {pair for text in texts[3:] for pair in terms_of(text)}
    assert named(terms, 0) and set(named(terms, 0)) <= sport - food
    assert named(terms, 1) and set(named(terms, 1)) <= food - sport


def test_the_label_step_names_each_cluster_and_quotes_one_post_per_member():
    members = pl.DataFrame(
        {
            "platform": "x",
            "user_id": ["ann", "bob", "cat", "dan"],
            "cluster_id": pl.Series([0, 0, 1, 1], dtype=pl.Int32),
            "probability": [0.6, 0.9, 1.0, 0.4],
            "is_outlier": [False, False, False, True],
        }
    )
    texts = {
        "ann": ["striker scores a late goal", "goal of the match by the striker"],
        "bob": ["the keeper saves, no goal", "match report: striker injured"],
        "cat": ["tomato soup recipe tonight", "slow cooked soup with garlic"],
        "dan": ["garlic bread recipe", "the best soup recipe ever"],
    }
    posts = pl.DataFrame(
        [("x", user, text) for user, own in texts.items() for text in own],
        schema=["platform", "user_id", "text_clean"],
        orient="row",
    )
    topic = np.repeat(np.eye(2, 8, dtype=np.float32), 4, axis=0)  # football, then cooking
    vectors = topic + np.random.default_rng(0).normal(0, 0.05, topic.shape).astype(np.float32)
    names = pl.DataFrame(
        {"platform": "x", "user_id": ["bob", "cat"], "display_name": ["Bob B", None]}
    )

    terms = member_terms(members, posts, top_n=3)
    clusters = describe_clusters(members, terms, posts, vectors, 2, 3, names)

    assert clusters["cluster_id"].to_list() == [0, 1]
    assert {"goal", "striker"} & set(clusters["label"][0].split(" · "))
    assert {"soup", "recipe"} & set(clusters["label"][1].split(" · "))
    assert clusters["size"].to_list() == [2, 2] and clusters["n_outliers"].to_list() == [0, 1]
    assert clusters["example_users"].to_list() == [["Bob B", "ann"], ["cat", "dan"]]
    for cluster_id, quoted in enumerate(clusters["representative_posts"].to_list()):
        own = members.filter(pl.col("cluster_id") == cluster_id)["user_id"]
        authors = [u for u in own for text in texts[u] if text in quoted]
        assert len(quoted) == 2 and sorted(authors) == sorted(own)  # one post per member
