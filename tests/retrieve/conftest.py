"""Fixtures for the retrieve stage: a real cross-encoder trained for the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cross_encoder import build_test_cross_encoder


@pytest.fixture(scope="session")
def cross_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the test cross-encoder (trained once per session, in seconds)."""
    return build_test_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))
