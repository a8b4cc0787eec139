"""The refresh's stage cache (flows/cache.py): one declaration per stage names its artifact and
Prefect's cache key, and the code version covers every file the steps read."""

import shutil
from pathlib import Path

import pytest

from flows import inputs
from flows.cache import Stage, artifact_key
from flows.inputs import CODE_VERSION, STEP_CODE, code_version, run_inputs
from flows.refresh import CLUSTER, EMBED, PROFILE, clean
from pipeline import store
from pipeline.embed import ModelSpec
from pipeline.settings import load_settings


@pytest.fixture
def step_code(tmp_path: Path) -> Path:
    """A copy of the pipeline package (its code, word lists, templates and model metadata)."""
    return Path(shutil.copytree(STEP_CODE[0], tmp_path / "pipeline"))


@pytest.mark.parametrize(
    "data_file", ["stopwords.txt", "report.html.j2", "models/use-multilingual-v3/modules.json"]
)
def test_editing_a_file_the_steps_read_changes_the_code_version(step_code, data_file):
    before = code_version([step_code])
    with (step_code / data_file).open("a", encoding="utf-8") as edited:
        edited.write("\n")
    assert code_version([step_code]) != before


def test_the_code_version_is_the_pipelines_files_and_the_stage_tasks(step_code):
    assert code_version(STEP_CODE) == CODE_VERSION
    assert STEP_CODE[1].name == "refresh.py" and STEP_CODE[1].exists()
    before = code_version([step_code])
    (step_code / "__pycache__").mkdir(exist_ok=True)
    (step_code / "__pycache__" / "label.cpython-311.pyc").write_bytes(b"compiled")
    assert code_version([step_code]) == before  # compiled files are not sources
    (step_code / "stopwords.txt").rename(step_code / "stop_words.txt")
    assert code_version([step_code]) != before  # a renamed file is another file


def test_a_runs_inputs_follow_its_code_result_settings_and_data_not_housekeeping(
    workdir, step_code, monkeypatch
):
    settings = load_settings(db=workdir / "tribes.duckdb")
    with store.open(settings, "write") as con:
        before = run_inputs(settings, con)
        housekeeping = load_settings(db=settings.db, keep_runs=3, lock_wait_seconds=1)
        assert run_inputs(housekeeping, con) == before
        assert run_inputs(load_settings(db=settings.db, min_cluster_size=7), con) != before
        assert run_inputs(load_settings(db=settings.db, top_terms=3), con) != before
        monkeypatch.setattr(inputs, "RUN_CODE", (step_code,))
        ours = run_inputs(settings, con)
        with (step_code / "report.html.j2").open("a", encoding="utf-8") as edited:
            edited.write("\n")
        assert run_inputs(settings, con) != ours
        con.execute("INSERT INTO users (platform, user_id, updated_at) VALUES ('x', 'u', now())")
        assert run_inputs(settings, con) not in (before, ours)


def test_artifact_names_follow_the_declared_settings_and_inputs(workdir):
    settings = load_settings(db=workdir / "tribes.duckdb")
    inputs = {"profile_path": "profile-a.npz", "reduce_path": "reduce-a.npz"}
    out = CLUSTER.artifact(settings, inputs)
    assert out.parent == settings.cache_dir and out.name.startswith("cluster-")
    assert out.suffix == ".parquet"
    assert CLUSTER.artifact(settings, inputs) == out
    assert CLUSTER.artifact(load_settings(db=settings.db, top_terms=3), inputs) == out
    assert CLUSTER.artifact(load_settings(db=settings.db, min_cluster_size=7), inputs) != out
    assert CLUSTER.artifact(settings, inputs | {"reduce_path": "reduce-b.npz"}) != out
    keys = {artifact_key(None, {"out": str(p)}) for p in (out, out.with_name("cluster-b.parquet"))}
    assert len(keys) == 2  # Prefect's key is the artifact's


def test_the_time_zone_keys_the_profiles_only_while_behaviour_counts(workdir):
    inputs = {name: f"{name}-a" for name in PROFILE.inputs}

    def profile_key(**settings):
        return PROFILE.artifact(load_settings(db=workdir / "tribes.duckdb", **settings), inputs)

    assert profile_key() == profile_key(timezone="Asia/Tokyo")  # words alone: no rhythm read
    mixed = profile_key(behaviour_weight=0.1)
    assert mixed != profile_key()
    assert mixed != profile_key(behaviour_weight=0.1, timezone="Asia/Tokyo")


def test_a_model_enters_the_key_by_its_id(workdir):
    settings = load_settings(db=workdir / "tribes.duckdb")
    here = ModelSpec("m", "/models/m", "", 256)
    moved = ModelSpec("m", "/elsewhere/m", "", 256)
    other = ModelSpec("m", "/models/m", "query: ", 256)
    named = [
        EMBED.artifact(settings, {"clean_path": "c", "model": m}) for m in (here, moved, other)
    ]
    assert named[0] == named[1] != named[2]


def test_a_stage_refuses_inputs_or_tasks_that_differ_from_its_declaration(workdir):
    settings = load_settings(db=workdir / "tribes.duckdb")
    with pytest.raises(TypeError, match="takes \\['profile_path', 'reduce_path'\\]"):
        CLUSTER.artifact(settings, {"profile_path": "p"})
    assert Stage("clean", ("version",), (), "parquet").task()(clean.fn).name == "clean"
    loose = Stage("clean", ("other",), (), "parquet")
    with pytest.raises(TypeError, match="differ from its spec"):
        loose.task()(clean.fn)
