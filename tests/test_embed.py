import numpy as np
import pytest

from pipeline import embed
from pipeline.settings import DEFAULT_MODEL, load_settings


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("intfloat/e5-base-v2", "query: "),
        ("intfloat/multilingual-e5-small", "query: "),
        ("/models/e5-large-v2/", "query: "),
        (DEFAULT_MODEL, ""),
        ("BAAI/bge-small-en-v1.5", ""),
    ],
)
def test_e5_models_get_their_query_prefix(name, prefix):
    assert embed.default_prefix(name) == prefix


def test_explicit_prefix_wins_and_is_part_of_the_model_id(workdir):
    auto = embed.model_spec(load_settings(model="intfloat/e5-small-v2"))
    forced = embed.model_spec(load_settings(model="intfloat/e5-small-v2", query_prefix=""))
    assert auto.prefix == "query: " and forced.prefix == ""
    assert auto.model_id != forced.model_id


def test_bundled_model_loads_offline_and_embeds_each_text(workdir):
    spec = embed.model_spec(load_settings())
    assert spec.load_from == str(embed.bundled_model_path())
    model = embed.load_model(spec, "cpu")
    vectors = embed.encode(model, ["Messi scores again", "Lionel Messi goal", "tax reform bill"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert embed.encode(model, []).shape == (0, 384)


def test_a_local_model_path_works(workdir):
    spec = embed.model_spec(load_settings(model=str(embed.bundled_model_path())))
    assert spec.name == spec.load_from == str(embed.bundled_model_path())


def test_unknown_model_is_a_clear_error(workdir):
    spec = embed.model_spec(load_settings(model="no-such-org/no-such-model"))
    with pytest.raises(embed.ModelError, match="no-such-org/no-such-model"):
        embed.load_model(spec, "cpu")
