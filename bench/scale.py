"""Scale bench: a full refresh of N real-derived posts from 302 users, a +1% nightly increment,
and a re-clustering with new parameters, with wall seconds and peak RSS per stage.

    .venv/bin/python bench/scale.py 50000
    .venv/bin/python bench/scale.py 200000
    .venv/bin/python bench/scale.py 716649 --study-scale     # the study's corpus size

The corpus comes from ../shared/data/fb_pages_2016/posts_all.parquet (233,137 real posts of 144
pages). Each page's posts are spread over 302 accounts (by page size, at least one each). Beyond
the distinct real texts, new texts are pairs of sentences of the same page, so no text repeats
and no cache can shortcut the work. The +1% posts are newer than all others, as a night's would be.

Everything runs in this process through the real flows (import, refresh) on a fresh DuckDB file
under .tribes/bench/scale/; stage windows come from Prefect's task runs, RSS from sampling
/proc every 50 ms (the refresh process itself; Prefect's temporary API server is shown apart).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import polars as pl
import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".tribes" / "bench" / "scale"
SOURCE = ROOT.parent / "shared" / "data" / "fb_pages_2016" / "posts_all.parquet"
CATALOGUE = ROOT / "data" / "sample" / "products.csv"  # so the recommend stage does real work
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_HOME", str(BENCH / "prefect"))
os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(BENCH / "prefect" / "storage"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId  # noqa: E402

from flows.imports import import_file  # noqa: E402
from flows.recommend import import_catalogue  # noqa: E402
from flows.refresh import refresh  # noqa: E402
from pipeline import store  # noqa: E402
from pipeline.ingest import ColumnMap  # noqa: E402
from pipeline.settings import RefreshOptions, load_settings  # noqa: E402

ACCOUNTS = 302
STUDY_POSTS = 716_649
STAGES = ["clean", "people", "embed", "profile", "reduce", "cluster", "hierarchy", "label"]
STAGES += ["behaviour", "publish", "recommend products", "write report", "show results in the UI"]
STAGES += ["prune old runs"]  # the refresh's task names, in run order
MIN_SENTENCE_CHARS = 25


# ---------------------------------------------------------------- the corpus


def stable_rank(column: str) -> pl.Expr:
    """A deterministic pseudo-random order (the same on every machine and run)."""
    return pl.col(column).hash(seed=42)


def accounts_per_page(pages: pl.DataFrame) -> pl.DataFrame:
    """302 accounts shared out by page size (largest remainder), at least one per page."""
    spare = ACCOUNTS - pages.height
    share = pages["n"] / pages["n"].sum() * spare
    base = share.floor().cast(pl.Int64)
    left = spare - int(base.sum())
    bonus = (share - base).rank("ordinal", descending=True) <= left
    return pages.with_columns(accounts=1 + base + bonus.cast(pl.Int64))


def sentence_pairs(real: pl.DataFrame, wanted: int) -> pl.DataFrame:
    """`wanted` new texts: sentence i + sentence i+r of the same page, round r = 1, 2, ..."""
    sentences = (
        real.select(
            "page",
            "user_label",
            "created_at",
            pl.col("text").str.replace_all(r"([.!?])\s+", "$1\n").str.split("\n").alias("s"),
        )
        .explode("s")
        .with_columns(pl.col("s").str.strip_chars())
        .filter(pl.col("s").str.len_chars() >= MIN_SENTENCE_CHARS)
        .unique(["page", "s"], keep="first", maintain_order=True)
        .with_columns(i=pl.int_range(pl.len()).over("page"), m=pl.len().over("page"))
    )
    quota = (
        real.group_by("page")
        .len("n")
        .with_columns(q=(pl.col("n") / real.height * wanted * 1.25).ceil().cast(pl.Int64))
    )
    out, rounds = [], 1
    while sum(f.height for f in out) < wanted * 1.2 and rounds < 200:
        pairs = sentences.with_columns(j=(pl.col("i") + rounds) % pl.col("m")).filter(
            pl.col("m") > rounds
        )
        pairs = pairs.join(
            sentences.select("page", pl.col("i").alias("j"), pl.col("s").alias("s2")),
            on=["page", "j"],
        ).join(quota, on="page")
        pairs = pairs.filter((rounds - 1) * pl.col("m") + pl.col("i") < pl.col("q"))
        out.append(
            pairs.select(
                "page",
                "user_label",
                (pl.col("created_at") + pl.duration(seconds=rounds)).alias("created_at"),
                pl.concat_str("s", "s2", separator=" ").alias("text"),
                pl.format("{}-pair{}-{}", "page", pl.lit(rounds), "i").alias("post_id"),
            )
        )
        rounds += 1
    return pl.concat(out)


def build_corpus(n: int) -> pl.DataFrame:
    """n + 1% distinct texts (user_id, user_label, post_id, created_at, text, is_new)."""
    n_new = max(1, n // 100)
    real = (
        pl.read_parquet(SOURCE)
        .rename({"user_id": "page"})
        .filter(pl.col("text").str.strip_chars().str.len_chars() > 0)
        .unique("text", keep="first", maintain_order=True)
        .select("page", "user_label", "post_id", "created_at", "text")
    )
    total = n + n_new
    if total <= real.height:
        texts = real.sort(stable_rank("post_id")).head(total)
    else:
        extra = sentence_pairs(real, total - real.height)
        texts = pl.concat([real, extra.select(real.columns)], how="vertical_relaxed")
        texts = texts.unique("text", keep="first", maintain_order=True)
        texts = texts.sort(stable_rank("post_id")).head(total)
    if texts.height < total:
        raise SystemExit(f"could build only {texts.height:,} distinct texts, not {total:,}")
    pages = accounts_per_page(texts.group_by("page").len("n").sort("page"))
    newest = texts["created_at"].max()
    return (
        texts.join(pages.select("page", "accounts"), on="page")
        .with_row_index("row")
        .with_columns(
            user_id=pl.format(
                "{}~{}", "page", (stable_rank("post_id") % pl.col("accounts")).cast(pl.Int64)
            ),
            is_new=pl.col("row") >= n,
        )
        .with_columns(
            created_at=pl.when("is_new")
            .then(newest + pl.duration(seconds=pl.col("row") - n + 1))
            .otherwise("created_at")
        )
        .select("user_id", "user_label", "post_id", "created_at", "text", "is_new")
    )


def corpus_files(n: int) -> tuple[Path, Path]:
    """The base and +1% parquet files for n posts (built once, then reused)."""
    base, new = BENCH / f"corpus-{n}.parquet", BENCH / f"corpus-{n}-new.parquet"
    if not (base.exists() and new.exists()):
        started = time.perf_counter()
        corpus = build_corpus(n)
        BENCH.mkdir(parents=True, exist_ok=True)
        corpus.filter(~pl.col("is_new")).drop("is_new").write_parquet(base)
        corpus.filter(pl.col("is_new")).drop("is_new").write_parquet(new)
        print(f"built the corpus in {time.perf_counter() - started:.0f} s", flush=True)
    return base, new


# ---------------------------------------------------------------- measuring


class RssSampler:
    """Samples this process's RSS (and its children's) every 50 ms in a thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            children = 0
            for child in self._me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    children += child.memory_info().rss
            self.samples.append((time.time(), self._me.memory_info().rss, children))

    def peak(self, start: float, end: float, column: int = 1) -> float:
        """Peak MB in [start, end] (the last sample before `start` when none falls inside)."""
        inside = [s[column] for s in self.samples if start <= s[0] <= end]
        before = [s[column] for s in self.samples if s[0] < start][-1:]
        return max(inside or before or [0]) / 2**20

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def stage_windows(flow_run_id) -> dict[str, tuple[float, float]]:
    """(start, end) epoch seconds of each stage's task run in one flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    windows = {}
    for run in runs:
        stage = run.name.rsplit("-", 1)[0]
        if run.start_time and run.end_time:
            windows[stage] = (run.start_time.timestamp(), run.end_time.timestamp())
        elif run.state and run.state.timestamp:  # cached: no start, done at once
            moment = run.state.timestamp.timestamp()
            windows[stage] = (moment, moment)
    return windows


def measured_refresh(db: Path, sampler: RssSampler, **options) -> dict[str, tuple[float, float]]:
    """Run the refresh flow; (seconds, peak MB) per stage, plus 'total' and 'overhead'."""
    started = time.time()
    state = refresh(db=str(db), options=RefreshOptions(**options), return_state=True)
    state.result()
    ended = time.time()
    windows = stage_windows(state.state_details.flow_run_id)
    rows = {s: (w[1] - w[0], sampler.peak(*w)) for s, w in windows.items()}
    busy = sum(seconds for seconds, _ in rows.values())
    rows["overhead"] = (ended - started - busy, sampler.peak(started, ended))
    rows["total"] = (ended - started, sampler.peak(started, ended))
    rows["server"] = (0.0, sampler.peak(started, ended, column=2))
    return rows


def measured_import(db: Path, path: Path, sampler: RssSampler) -> tuple[float, float]:
    settings = load_settings(db=str(db))
    started = time.time()
    report = import_file(settings, str(path), "facebook", ColumnMap(label="user_label"))
    ended = time.time()
    print(f"import {path.name}: {report.summary()}", flush=True)
    return ended - started, sampler.peak(started, ended)


def embeddings_count(db: Path) -> int:
    """Stored vectors of post chunks (the units the refresh embeds; not product or term texts)."""
    units = sorted(str(p) for p in (db.parent / "cache").glob("embed-*.parquet"))
    with store.open(db) as con:
        return store.scalar(
            con,
            """SELECT count(*) FROM embeddings WHERE text_hash IN
            (SELECT text_hash FROM read_parquet(?))""",
            [units],
        )


# ---------------------------------------------------------------- output


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()}"


def table(n: int, runs: dict[str, dict[str, tuple[float, float]]]) -> str:
    names = list(runs)
    header = "| stage | " + " | ".join(f"{name} s | {name} peak MB" for name in names) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(names)]
    for stage in ["import", *STAGES, "overhead", "total", "server"]:
        if not any(stage in run for run in runs.values()):
            continue
        cells = []
        for name in names:
            seconds, mb = runs[name].get(stage, (None, None))
            cells.append(
                "–" if seconds is None else ("" if stage == "server" else f"{seconds:.1f}")
            )
            cells.append("–" if mb is None else f"{mb:,.0f}")
        label = "child processes (Prefect's API server, helpers)" if stage == "server" else stage
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(n: int, runs, re_embedded: dict[str, int]) -> list[str]:
    full, inc, again = runs["full"]["total"], runs["+1%"]["total"], runs["re-cluster"]["total"]
    peak = max(mb for run in runs.values() for stage, (_, mb) in run.items() if stage != "server")
    posts_per_s = n / runs["full"]["embed"][0] if runs["full"]["embed"][0] else float("nan")
    estimate = (
        ""
        if n == STUDY_POSTS
        else f"; linear estimate at {STUDY_POSTS:,} posts: {full[0] * STUDY_POSTS / n / 60:.1f} min"
    )
    return [
        f"- full refresh: {full[0] / 60:.1f} min for {n:,} posts "
        f"(embedding {posts_per_s:,.0f} posts/s){estimate} (target ≤ 20 min at {STUDY_POSTS:,})",
        f"- peak RSS of the refresh process: {peak:,.0f} MB (target ≤ 4,096 MB)",
        f"- +1% increment: {inc[0]:.0f} s end to end, {re_embedded['+1%']:,} chunks embedded "
        "(the new posts' chunks and each active account's last chunk) (target ≤ 60 s)",
        f"- re-cluster with new parameters: {again[0]:.0f} s, "
        f"{re_embedded['re-cluster']} chunks embedded (target ≤ 60 s, none embedded)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="posts in the corpus (50000, 200000 or 716649)")
    parser.add_argument(
        "--study-scale", action="store_true", help=f"allow n above 200,000 (up to {STUDY_POSTS:,})"
    )
    args = parser.parse_args()
    if args.n > 200_000 and not args.study_scale:
        parser.error("n above 200,000 takes ~30 min here: add --study-scale")
    if not SOURCE.exists():
        raise SystemExit(f"{SOURCE} is absent: the scale bench needs the shared pages data")
    base, new = corpus_files(args.n)
    work = BENCH / str(args.n)
    shutil.rmtree(work, ignore_errors=True)
    db = work / "tribes.duckdb"
    sampler = RssSampler()
    runs: dict[str, dict[str, tuple[float, float]]] = {}
    re_embedded: dict[str, int] = {}

    runs["full"] = {"import": measured_import(db, base, sampler)}
    import_catalogue(load_settings(db=str(db)), str(CATALOGUE))
    runs["full"] |= measured_refresh(db, sampler)
    before = embeddings_count(db)
    runs["+1%"] = {"import": measured_import(db, new, sampler)}
    runs["+1%"] |= measured_refresh(db, sampler)
    re_embedded["+1%"] = embeddings_count(db) - before
    before = embeddings_count(db)
    runs["re-cluster"] = measured_refresh(db, sampler, min_cluster_size=8, umap_n_neighbors=12)
    re_embedded["re-cluster"] = embeddings_count(db) - before
    sampler.stop()

    print(f"\n## Scale bench: {args.n:,} posts, {ACCOUNTS} accounts ({dt.date.today()})")
    print(f"machine: {machine()}\n")
    print(table(args.n, runs))
    print()
    print("\n".join(verdicts(args.n, runs, re_embedded)))


if __name__ == "__main__":
    main()
