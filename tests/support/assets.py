"""The real clips and pretrained weights in ../shared/assets (never copied into this repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASSETS = (REPO / ".." / "shared" / "assets").resolve()


def asset(*parts: str) -> Path:
    """A file from ../shared/assets, or skip the test with the reason."""
    path = ASSETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/assets holds the real clips and weights)")
    return path
