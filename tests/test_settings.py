from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import DEFAULT_MODEL, MINILM, load_settings


def test_defaults(workdir):
    settings = load_settings()
    assert settings.model == DEFAULT_MODEL
    assert settings.db == Path(".tribes/tribes.duckdb")
    assert settings.state == Path(".tribes")


def test_chunks_fit_what_the_model_reads(workdir):
    assert load_settings().chunk_chars == 2000  # the default model reads whole texts
    assert load_settings(model=MINILM).chunk_chars == 1024  # 4 characters per token of 256
    assert load_settings(model=MINILM, max_seq_length=128).chunk_chars == 512
    assert load_settings(model=MINILM, profile_chunk_chars=700).chunk_chars == 700


def test_precedence_defaults_toml_env_flags(workdir, monkeypatch):
    (workdir / "tribes.toml").write_text("min_cluster_size = 4\nbatch_size = 16\ntop_terms = 7\n")
    monkeypatch.setenv("TRIBES_BATCH_SIZE", "32")
    monkeypatch.setenv("TRIBES_TOP_TERMS", "8")
    settings = load_settings(top_terms=9)
    assert settings.min_cluster_size == 4  # toml beats default
    assert settings.batch_size == 32  # env beats toml
    assert settings.top_terms == 9  # flag beats env
    assert load_settings(top_terms=None).top_terms == 8  # an absent flag changes nothing


def test_wrong_config_is_rejected(workdir, monkeypatch):
    monkeypatch.setenv("TRIBES_BATCH_SIZE", "many")
    with pytest.raises(ValidationError, match="batch_size"):
        load_settings()
    monkeypatch.delenv("TRIBES_BATCH_SIZE")
    (workdir / "tribes.toml").write_text("min_cluster_sise = 4\n")
    with pytest.raises(ValidationError, match="min_cluster_sise"):
        load_settings()


def test_state_dir_follows_db(workdir):
    assert load_settings(db=workdir / "x" / "t.duckdb").state == workdir / "x"
