import pytest

from pipeline.evaluate import agreement, mean_pairwise_ari, npmi_coherence, topic_diversity

TEXTS = [
    "goal match striker",
    "goal match keeper",
    "striker goal",
    "vote senate bill",
    "senate vote",
    "bill vote tax",
    "cooking pasta",
    "pasta sauce",
]


def test_agreement_perfect_and_permuted():
    scores = agreement(["a", "a", "b", "b"], [1, 1, 0, 0])
    assert scores == pytest.approx({"ari": 1.0, "nmi": 1.0, "ami": 1.0})
    assert agreement(["a", "a", "b", "b"], [0, 1, 0, 1])["ari"] < 0.01


def test_stability_of_identical_and_different_runs():
    assert mean_pairwise_ari([[0, 0, 1, 1]] * 3) == 1.0
    assert mean_pairwise_ari([[0, 0, 1, 1], [0, 1, 0, 1]]) < 0.01


def test_npmi_rewards_terms_that_occur_together():
    coherent, mixed = npmi_coherence(
        TEXTS, [["goal", "match", "striker"], ["goal", "vote", "pasta"]]
    )
    assert coherent > 0.3 and mixed == -1.0
    assert npmi_coherence(TEXTS, [["goal"]]) == [0.0]


def test_topic_diversity():
    assert topic_diversity([["a", "b"], ["c", "d"]]) == 1.0
    assert topic_diversity([["a", "b"], ["a", "c"]]) == 0.75
