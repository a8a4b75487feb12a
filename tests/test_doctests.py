"""The examples in monitor/'s docstrings run, so they stay true."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

MONITOR = Path(__file__).resolve().parents[1] / "monitor"
NEEDS_TF = {"monitor.model.backbones"}


def modules_with_examples() -> list:
    names = sorted(".".join(p.relative_to(MONITOR.parent).with_suffix("").parts)
                   for p in MONITOR.rglob("*.py") if ">>> " in p.read_text(encoding="utf-8"))
    return [pytest.param(n, marks=[pytest.mark.tf] if n in NEEDS_TF else []) for n in names]


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed, f"{name}: {result.failed} of {result.attempted} examples failed"
