"""Files of the state folder: written whole or not at all, checked before reuse, and a full disk
reported as such (one line naming the file, no retries)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.store import DiskFull

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# libraries that drop the errno keep its text ("No space left on device", "Disk quota exceeded")
DISK_FULL_TEXTS = tuple(os.strerror(code) for code in DISK_FULL_ERRNOS)


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` says the disk or quota is full (OSError, DuckDB's and polars' IO errors)."""
    return getattr(error, "errno", None) in DISK_FULL_ERRNOS or any(
        text in str(error) for text in DISK_FULL_TEXTS
    )


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn a full disk while writing `path` into DiskFull('disk full writing PATH')."""
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFull(f"disk full writing {path}") from exc
        raise


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
