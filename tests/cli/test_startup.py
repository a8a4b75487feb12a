"""QA's commands never import TensorFlow (it alone takes seconds to import): they start fast.

Each runs as a user runs it, `python -m monitor ...` in a fresh process, under `-X importtime`,
which names every module the process imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "keras", "ai_edge_litert", "sklearn", "matplotlib")


def imported(args: list[str], stdin: str | None = None) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "monitor", *args], input=stdin,
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> str:
    """An upgraded SQLite record with a user, as QA finds it."""
    from monitor.cli import main

    url = f"sqlite:///{tmp_path_factory.mktemp('qa') / 'violations.db'}"
    assert main(["db", "upgrade", "--db", url]) == 0
    return url


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A bundle's manifest (its head is never read by `rules check`)."""
    directory = tmp_path_factory.mktemp("model")
    labels = ["idle", "walking", "smoking", "eating", "drinking", "sanitize_hands", "enter_cleanroom", "gowning",
              "station_unattended", "line_clearance", "no_gloves", "no_gown", "fall"]
    (directory / "model.yaml").write_text(yaml.safe_dump({"backbone": {"name": "inception_v3"}, "labels": labels}))
    (directory / "head.keras").write_bytes(b"")
    return directory


@pytest.mark.parametrize("command", [  # one per command group (db upgrade made the record)
    ["violations", "list", "--db", "{db}"],
    ["users", "add", "rita", "--role", "reviewer", "--password-stdin", "--db", "{db}"],
    ["rules", "check", "--model", "{model}", *(str(p) for p in sorted((REPO / "rules").glob("*.yaml")))],
    ["rules", "test", *(str(p) for p in sorted((REPO / "rules" / "tests").glob("*.yaml")))],
], ids=lambda c: " ".join(c[:2]))
def test_qa_commands_do_not_import_tensorflow(command, record, model_dir):
    args = [a.format(db=record, model=model_dir) for a in command]
    modules = imported(args, stdin="correct horse battery staple\n" if "--password-stdin" in args else None)
    assert "monitor.cli.main" in modules, "the import log was read"
    assert not [m for m in modules if m.split(".")[0] in HEAVY], sorted(m for m in modules if m.split(".")[0] in HEAVY)
