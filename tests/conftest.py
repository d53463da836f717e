"""Shared fixtures. Real data lives in ../shared/data beside the checkout (never in the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HISTOCLR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MoNuSeg/SVS data root; the test is skipped when it is absent."""
    if not (SHARED_DATA / "monuseg2018").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set HISTOCLR_SHARED_DATA to a copy of "
                    "shared/data to run this test)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Every test logs to its own temporary MLflow store, never to the user's mlflow.db."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
