"""Fixtures of the transfers tests: settings with a state group of their own."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline_harness import pipeline_settings
from portability.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shared test settings, plus a unique state group (views of other tests never join)."""
    return pipeline_settings(tmp_path).model_copy(
        update={"state_group": f"state-{uuid.uuid4().hex[:10]}"}
    )
