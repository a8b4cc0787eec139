"""Files of the state folder: written whole or not at all, checked before reuse, and a full disk
reported as such (`store.writing`: one line naming the file, no retries)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.store import writing


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temp)` to a temporary name beside `path`, then rename it to `path`: a reader sees
    the whole file or none (a kill or a full disk mid-write leaves no torn `path`)."""
    temp = path.with_name(f"{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        with writing(path):
            write(temp)
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def unreadable(path: Path) -> str | None:
    """Why an existing artifact (.parquet or .npz) cannot be read, e.g. a write cut short before
    writes were atomic or damaged since; None when its index reads."""
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                archive.files  # noqa: B018 (reads the zip's directory)
        else:
            pl.read_parquet_schema(path)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def writable_folder(folder: Path, what: str) -> None:
    """Create `folder` (`what` it is, for the message) if needed; one that cannot be created or
    written to raises ValueError in one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {what} {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder} is not writable")
