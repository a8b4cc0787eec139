"""The refresh's stage cache: one declaration per stage, from which both the file a stage writes
and Prefect's cache key derive.

A stage's artifact is named by a digest of everything its result depends on: the database, the
code version (every file the steps read), the settings the stage declares and the task's
inputs. The flow computes that name once and hands it to the task as `out`; Prefect caches the
task on it, so an unchanged refresh finds its work done and shows the stage as Cached.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import CacheKeyFnPolicy

from flows.files import unreadable
from flows.inputs import CODE_VERSION
from pipeline.embed import ModelSpec
from pipeline.settings import Settings


def key_value(value: Any) -> Any:
    """How a task input enters a stage's key: a model by its id, anything else as it is."""
    return value.model_id if isinstance(value, ModelSpec) else value


@dataclass(frozen=True)
class Stage:
    """One cached stage of the refresh: the task inputs and the settings its result depends on,
    the artifact's suffix and, for stages that write two files, the second one's suffix."""

    name: str
    inputs: tuple[str, ...]
    settings: tuple[str, ...]
    suffix: str
    companion: str | None = None

    def artifact(self, settings: Settings, inputs: Mapping[str, Any]) -> Path:
        """The file the stage writes for these inputs, named by a digest of everything its
        result depends on."""
        if set(inputs) != set(self.inputs):
            raise TypeError(f"stage {self.name} takes {list(self.inputs)}, not {sorted(inputs)}")
        key = [
            str(settings.db.resolve()),
            CODE_VERSION,
            *(getattr(settings, name) for name in self.settings),
            *(key_value(inputs[name]) for name in self.inputs),
        ]
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        return settings.cache_dir / f"{self.name}-{digest.hexdigest()[:20]}.{self.suffix}"

    def companion_of(self, out: Path | str) -> Path:
        """The stage's second file, beside its artifact `out`."""
        assert self.companion is not None, f"stage {self.name} writes one file"
        return Path(out).with_suffix(self.companion)

    def done(self, out: Path | str) -> bool:
        """Whether the artifact (and its companion) are there and readable; an unreadable one is
        removed, so the stage computes it again."""
        done = True
        files = [Path(out), *([self.companion_of(out)] if self.companion else [])]
        for path in files:
            if not path.exists():
                done = False
            elif problem := unreadable(path):
                get_run_logger().warning(
                    "unreadable cache file %s (%s): recomputing it", path, problem
                )
                path.unlink()
                done = False
        return done

    def task(self, **options: Any) -> Callable[[Callable[..., str]], Any]:
        """Make `compute(settings, out, *inputs)` the stage's Prefect task, cached on `out` (the
        artifact's path, which the flow passes); it carries this declaration as `.stage`."""

        def define(compute: Callable[..., str]) -> Any:
            found = list(inspect.signature(compute).parameters)
            if found != ["settings", "out", *self.inputs]:
                raise TypeError(f"stage {self.name}: task parameters {found} differ from its spec")
            stage_task = task(
                compute,
                name=self.name,
                task_run_name=self.name,  # what it does, not `embed-cb0`
                cache_policy=CacheKeyFnPolicy(cache_key_fn=artifact_key),
                persist_result=True,
                **options,
            )
            stage_task.stage = self
            return stage_task

        return define


def artifact_key(_context: Any, params: dict[str, Any]) -> str:
    """Prefect's cache key of a stage task: the artifact it writes."""
    return hashlib.sha256(str(params["out"]).encode()).hexdigest()
