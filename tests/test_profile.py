"""User profiles from chunk vectors."""

import numpy as np
import pytest

from pipeline.profile import build_profiles


def test_a_short_leftover_chunk_weighs_by_the_square_root_of_its_length():
    full, leftover = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    owner = np.array([0, 0])
    vectors = np.stack([full, leftover]).astype(np.float32)
    weighted = build_profiles(owner, vectors, 1, text_chars=np.array([1600, 100]))[0]
    assert weighted == pytest.approx(np.array([40.0, 10.0]) / np.hypot(40, 10), abs=1e-6)
    equal = build_profiles(owner, vectors, 1)[0]
    assert equal == pytest.approx(np.array([1.0, 1.0]) / np.sqrt(2), abs=1e-6)


def test_single_post_means_ignore_lengths():
    vectors = np.eye(2, dtype=np.float32)
    profiles = build_profiles(np.array([0, 0]), vectors, 1, "mean", text_chars=np.array([900, 1]))
    assert profiles[0] == pytest.approx(np.array([1.0, 1.0]) / np.sqrt(2), abs=1e-6)


def test_no_posts_is_a_clear_error():
    with pytest.raises(ValueError, match="no posts to profile"):
        build_profiles(np.array([], int), np.zeros((0, 2), np.float32), 0)
