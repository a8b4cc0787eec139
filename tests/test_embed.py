import numpy as np
import pytest

from pipeline import embed
from pipeline.settings import DEFAULT_MODEL, MINILM, load_settings


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


def test_bundled_model_loads_offline_and_embeds_each_text_across_languages(workdir):
    spec = embed.model_spec(load_settings())
    assert spec.load_from == str(embed.bundled_model_path()) and spec.backend == "torch"
    model = embed.load_model(spec, "cpu")
    texts = ["Messi scores again", "Lionel Messi marca otro gol", "tax reform bill", "税制改革法案"]
    vectors = embed.encode(model, texts)
    assert vectors.shape == (4, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar = vectors @ vectors.T
    assert similar[0, 1] > similar[0, 2] + 0.3  # the same topic in Spanish beats English taxes
    assert similar[2, 3] > similar[2, 0] + 0.3  # the same topic in Japanese beats English football
    alone = embed.encode(model, texts[:1])  # a text's vector does not depend on its batch
    np.testing.assert_allclose(alone[0], vectors[0], atol=1e-5)
    assert embed.encode(model, []).shape == (0, 512)


def test_the_bundled_english_minilm_loads_offline(workdir):
    spec = embed.model_spec(load_settings(model="all-MiniLM-L6-v2", embed_backend="torch"))
    assert spec.name == MINILM and spec.load_from == str(embed.minilm_path())
    vectors = embed.encode(embed.load_model(spec, "cpu"), ["Messi scores", "Messi goal", "tax"])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_a_local_model_path_works(workdir):
    for folder in (embed.bundled_model_path(), embed.minilm_path()):
        spec = embed.model_spec(load_settings(model=str(folder), embed_backend="torch"))
        assert spec.name == spec.load_from == str(folder)
        assert embed.load_model(spec, "cpu").get_embedding_dimension() in (384, 512)


def test_unknown_model_is_a_clear_error(workdir):
    spec = embed.model_spec(load_settings(model="no-such-org/no-such-model"))
    with pytest.raises(embed.ModelError, match="no-such-org/no-such-model"):
        embed.load_model(spec, "cpu")


def _sample_posts(n: int = 20) -> list[str]:
    from pathlib import Path

    import polars as pl

    from pipeline.clean import clean_posts

    source = Path(__file__).resolve().parents[1] / "data/sample/fb_pages_sample.parquet"
    posts = pl.read_parquet(source).with_columns(platform=pl.lit("facebook"))
    return clean_posts(posts)["text_clean"].head(n).to_list()


def test_default_backend_matches_torch_on_real_posts(workdir):
    settings = load_settings(model=MINILM)  # a transformer: the bundled USE has no export
    pytest.importorskip(embed.BACKEND_PACKAGES[settings.embed_backend])
    texts = _sample_posts()
    spec = embed.prepare_model(settings)
    assert spec.backend == settings.embed_backend != "torch"
    fast = embed.encode(embed.load_model(spec, "cpu"), texts)
    torch_spec = embed.model_spec(load_settings(model=MINILM, embed_backend="torch"))
    ref = embed.encode(embed.load_model(torch_spec, "cpu"), texts)
    assert fast.shape == ref.shape == (len(texts), 384)
    assert (fast * ref).sum(axis=1).min() >= 0.99
    assert embed.prepare_model(settings).export_dir == spec.export_dir  # exported once, reused


def test_backend_falls_back_to_torch_when_its_package_is_missing(workdir, monkeypatch, caplog):
    real_find_spec = embed.importlib.util.find_spec
    monkeypatch.setattr(
        embed.importlib.util,
        "find_spec",
        lambda name, *a: None if name in embed.BACKEND_PACKAGES.values() else real_find_spec(name),
    )
    spec = embed.model_spec(load_settings(model=MINILM, embed_backend="openvino"))
    assert spec.backend == "torch" and spec.export_dir is None
    torch_spec = embed.model_spec(load_settings(model=MINILM, embed_backend="torch"))
    assert spec.model_id == torch_spec.model_id
    assert "not installed" in caplog.text


def test_backend_falls_back_to_torch_when_the_export_fails(workdir, monkeypatch, caplog):
    pytest.importorskip("openvino")

    def broken(*args):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(embed, "_export", broken)
    monkeypatch.setattr(embed, "_EXPORTED", {})
    monkeypatch.setattr(embed, "_FAILED", {})
    spec = embed.prepare_model(load_settings(model=MINILM, embed_backend="openvino"))
    assert spec.backend == "torch" and "conversion failed" in caplog.text
    assert not list((workdir / ".tribes/cache/models").glob("*openvino*"))


def test_model_spec_is_a_lookup_and_loading_needs_the_export(workdir):
    pytest.importorskip("openvino")
    settings = load_settings(model=MINILM, embed_backend="openvino")
    spec = embed.model_spec(settings)
    assert spec.backend == "openvino" and spec.export_dir is None
    assert not (workdir / ".tribes/cache/models").exists()  # nothing exported by a lookup
    with pytest.raises(embed.ModelError, match="not exported to openvino"):
        embed.load_model(spec, "cpu")


def test_cuda_always_runs_torch():
    assert embed.resolve_backend("openvino", "cuda") == "torch"
    assert embed.resolve_backend("onnx", "cuda:1") == "torch"
    assert embed.resolve_backend("torch", "cpu") == "torch"


def test_model_id_names_the_backend_so_vectors_never_mix():
    ids = {
        embed.ModelSpec(DEFAULT_MODEL, "/m", "", 256, backend).model_id
        for backend in ("torch", "openvino", "onnx", "onnx-int8")
    }
    assert len(ids) == 4
    assert "backend" not in embed.ModelSpec(DEFAULT_MODEL, "/m", "", 256).model_id
