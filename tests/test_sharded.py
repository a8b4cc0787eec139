"""The embedding stage sharded over a real 2-worker Dask LocalCluster, through Prefect."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from flows import vectors as embedding
from flows.vectors import embed_missing
from pipeline import embed, store
from pipeline.clean import clean_posts
from pipeline.settings import Settings, load_settings


def sample_texts(path: Path, n: int) -> pl.DataFrame:
    posts = pl.read_parquet(path).with_columns(platform=pl.lit("facebook"))
    texts = clean_posts(posts).select("text_hash", "text_clean")
    return texts.unique("text_hash", maintain_order=True).head(n)


def stored(settings: Settings, model_id: str, hashes: list[str]) -> tuple[np.ndarray, int]:
    """The vectors of `hashes`, and how many embeddings the database holds."""
    with store.open(settings) as con:
        vectors = store.load_embeddings(con, model_id, hashes)
        return vectors, con.execute("SELECT count(*) FROM embeddings").fetchone()[0]


def test_dask_settings_change_no_result(workdir):
    plain = load_settings().analysis_fingerprint()
    assert load_settings(embed_dask_workers=2).analysis_fingerprint() == plain
    assert load_settings(embed_dask_address="tcp://h:8786").analysis_fingerprint() == plain
    with pytest.raises(ValidationError, match="embed_dask_address or embed_dask_workers"):
        load_settings(embed_dask_address="tcp://h:8786", embed_dask_workers=2)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_two_dask_workers_embed_the_shards_like_one_process(workdir, sample_path, monkeypatch):
    texts = sample_texts(sample_path, 60)
    hashes = texts["text_hash"].to_list()
    # torch: OpenVINO's vectors move by up to 1e-3 with the padding of their batch, torch's by 3e-7
    here = load_settings(db=workdir / "here.duckdb", embed_backend="torch")
    on_dask = load_settings(db=workdir / "dask.duckdb", embed_backend="torch", embed_dask_workers=2)
    model = embed.prepare_model(here)
    model_id = model.model_id
    runs: list[list[embedding.Shard]] = []
    real = embedding.embed_on_dask

    def spy(*args: object) -> list[embedding.Shard]:
        runs.append(real(*args))
        return runs[-1]

    monkeypatch.setattr(embedding, "embed_on_dask", spy)

    assert embed_missing(here, texts, model, "posts") == 60
    assert embed_missing(on_dask, texts, model, "posts") == 60
    assert embed_missing(on_dask, texts, model, "posts") == 0  # nothing embedded twice

    [shards] = runs
    assert len(shards) >= 2 and sum(s.posts for s in shards) == 60
    assert len({s.worker for s in shards}) == 2
    expected, _ = stored(here, model_id, hashes)
    vectors, rows = stored(on_dask, model_id, hashes)
    assert rows == 60
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    assert not list(on_dask.cache_dir.glob("shards-*"))  # shard files are removed
