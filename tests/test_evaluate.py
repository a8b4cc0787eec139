import numpy as np
import pytest

from pipeline.evaluate import (
    agreement,
    cluster_composition,
    main_label_ari,
    mean_pairwise_ari,
    npmi_coherence,
    plain_clusters,
    topic_diversity,
)

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


def test_composition_shows_clusters_finer_than_the_labels():
    known = ["sports"] * 4 + ["music"] * 3 + ["news"]
    found = [0, 0, 1, 1, 2, 2, 2, 2]  # sports split in two; news inside the music cluster
    table = cluster_composition(known, found)
    assert table.rows() == [
        (0, 2, "sports 2", "sports", 1.0),
        (1, 2, "sports 2", "sports", 1.0),
        (2, 4, "music 3 · news 1", "music", 0.75),
    ]
    merged = main_label_ari(known, found)
    assert merged == pytest.approx(agreement(known, [0, 0, 0, 0, 2, 2, 2, 2])["ari"])
    assert merged > agreement(known, found)["ari"]
    assert main_label_ari(known, known) == 1.0


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


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_tribes_beats_the_study_on_real_labelled_pages(make_settings):
    """139 real Facebook pages (≤ 300 posts each, 9 known categories) from ../shared: Tribes'
    defaults against the original study's method, same model, same posts, same seeds."""
    from conftest import shared_file

    from flows.evaluate import evaluate_study, evaluate_tribes, read_labels
    from flows.imports import import_file
    from pipeline.ingest import ColumnMap

    pages = shared_file("fb_pages_2016", "posts.parquet")
    settings = make_settings()
    import_file(settings, str(pages), "facebook", ColumnMap(label="user_label"))
    known = read_labels(settings, "label")
    seeds = (42, 0, 1)
    tribes = evaluate_tribes(settings, known, seeds)
    study = evaluate_study(settings, known, seeds)
    # measured (bench/quality.py --protocol, 5 seeds, 2026-12-02): Tribes mean ARI 0.334, NMI
    # 0.572; the study 0.314, 0.515 (the size rule, chosen on all 14 sets, costs this set 0.02);
    # on these 3 seeds Tribes 0.338 / 0.570, the study 0.296 / 0.484
    assert tribes.seed_ari > study.seed_ari, (tribes, study)
    assert tribes.nmi > study.nmi + 0.03, (tribes, study)
    assert tribes.n_clusters >= 5 and tribes.largest < 0.5 * known.height


def test_seed_means_average_every_seed_never_the_best():
    from flows.evaluate import seed_means

    truth = ["a", "a", "b", "b"]
    runs = [np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([0, 0, 0, 1])]
    means = seed_means(truth, runs)
    # ARI 1, -0.5, 0 and NMI 1, 0, 0.3113 (sklearn, arithmetic mean)
    assert means["seed_ari"] == pytest.approx((1 - 0.5 + 0) / 3)
    assert means["seed_nmi"] == pytest.approx((1 + 0 + agreement(truth, runs[2])["nmi"]) / 3)
    assert means["seed_clusters"] == 2.0


def test_plain_baseline_finds_separated_groups_and_leaves_nobody_out():
    """Three groups of 40 users (one direction each, noisy): users/40 = 3 per cluster; every
    user gets a cluster (noise joins the nearest)."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 40)
    vectors = np.eye(20)[truth] + rng.normal(scale=0.05, size=(120, 20))
    found = plain_clusters(vectors, seed=0)
    assert agreement(truth, found)["ari"] == 1.0 and (found >= 0).all()
