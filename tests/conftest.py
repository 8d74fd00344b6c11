"""Shared test set-up: the location of ../shared/fixtures (the repository root is on sys.path through
pyproject.toml's pytest ``pythonpath``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FIXTURES = Path(os.environ.get("MEDVL_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture
def fixtures_dir() -> Path:
    """The real public fixtures beside the repository; tests using them skip when it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"fixtures folder {FIXTURES} is absent")
    return FIXTURES
