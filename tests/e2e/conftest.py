"""Fixtures of the end-to-end tests: a private runtime directory short enough for Unix socket paths."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture()
def runtime() -> Iterator[Path]:
    """A fresh XDG_RUNTIME_DIR (0700) under /tmp, removed afterwards: a Unix socket path has 107 bytes at most,
    too few for one under pytest's tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="ms-run-", dir="/tmp"))
    path.chmod(0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
