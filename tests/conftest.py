"""Shared test set-up: the repository root on sys.path and the location of ../shared/fixtures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURES = Path(os.environ.get("MEDVL_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture
def fixtures_dir() -> Path:
    """The real public fixtures beside the repository; tests using them skip when it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"fixtures folder {FIXTURES} is absent")
    return FIXTURES
