"""Fixtures of the core tests: stderr as a pipe, and progress left to its default."""
from __future__ import annotations

import io
import sys

import pytest

from attnsift import progress


class _Pipe(io.StringIO):
    """stderr as a pipe or a log file (not a terminal); installed inside each test body, because pytest
    replaces sys.stderr between a fixture's setup and the test call."""

    def isatty(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def _unconfigured(monkeypatch):
    """Each test starts with progress unconfigured (the Python default: follow the terminal)."""
    monkeypatch.setattr(progress, "_configured", None)


@pytest.fixture
def pipe(monkeypatch):
    """``pipe()`` installs a non-terminal stderr and returns it (call it in the test body)."""
    def install() -> _Pipe:
        out = _Pipe()
        monkeypatch.setattr(sys, "stderr", out)
        return out
    return install
