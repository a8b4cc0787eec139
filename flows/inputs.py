"""What a refresh reads, as digests: the code (CODE_VERSION keys the stage cache), and a whole
run's inputs (code, settings, model, stored data), so an unchanged `tribes refresh` is known
without starting Prefect. Imports no Prefect: the CLI asks before it starts any flow."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import duckdb

import pipeline
from pipeline import store
from pipeline.embed import model_spec
from pipeline.settings import Settings

PIPELINE = Path(pipeline.__file__).parent  # the steps, word lists, templates, model metadata
FLOWS = Path(__file__).parent
STEP_CODE = (PIPELINE, FLOWS / "refresh.py")  # what the cached stages run
RUN_CODE = (PIPELINE, FLOWS)  # what a whole run runs: the stages, publish, report, artifacts


def code_version(sources: Iterable[Path]) -> str:
    """A digest of every file under `sources` (folders or files), names and bytes: a changed
    step, word list or template never reuses old cached results."""
    digest = hashlib.sha256()
    for source in sources:
        files = sorted(source.rglob("*")) if source.is_dir() else [source]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(source.parent).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


CODE_VERSION = code_version(STEP_CODE)


def run_inputs(settings: Settings, con: duckdb.DuckDBPyConnection) -> str:
    """A digest of everything a refresh's results depend on: the code, the settings that
    change results, the model and what is stored. Two runs with the same digest publish the
    same clusters, labels, recommendations and report."""
    key = [
        code_version(RUN_CODE),
        settings.analysis_fingerprint(),
        model_spec(settings).model_id,
        store.stored_inputs_version(con),
    ]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
