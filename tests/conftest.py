"""Shared fixtures: an isolated Prefect (test harness + temp result store) and real sample data."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "fb_pages_sample.parquet"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Flows run against a throwaway Prefect database and result store (use in flow tests)."""
    results = tmp_path_factory.mktemp("prefect-results")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(results)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory (no tribes.toml, no TRIBES_* variables)."""
    for key in [k for k in os.environ if k.startswith("TRIBES_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def make_settings(workdir: Path) -> Callable[..., object]:
    from pipeline.settings import load_settings

    def build(**overrides: object):
        return load_settings(db=workdir / "tribes.duckdb", **overrides)

    return build


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def refreshed_template(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Path:
    """A database with the bundled sample imported and one completed refresh (built once)."""
    from flows.imports import import_file
    from flows.refresh import refresh
    from pipeline.ingest import ColumnMap
    from pipeline.settings import load_settings

    folder = tmp_path_factory.mktemp("refreshed")
    settings = load_settings(db=folder / "tribes.duckdb")
    import_file(settings, str(SAMPLE), "facebook", ColumnMap(label="user_label"))
    refresh(db=str(settings.db))
    return folder


@pytest.fixture
def refreshed(refreshed_template: Path, workdir: Path) -> Path:
    """A private copy of the refreshed database and its caches, in the working directory."""
    shutil.copytree(refreshed_template, workdir, dirs_exist_ok=True)
    return workdir / "tribes.duckdb"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test cleanly where it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (real shared data is optional)")
    return path
