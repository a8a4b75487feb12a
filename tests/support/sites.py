"""Small real sites for tests: a model bundle (InceptionV3 at 75x75, random weights, untrained GRU) and site.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

LABELS = ["idle", "wave", "walk", "fall", "get_up"]


def write_tiny_bundle(out: Path, frames: int = 4, sample_fps: float = 5.0, stride: int = 2,
                      size: int = 75, units: int = 8) -> Path:
    """A real bundle: InceptionV3 (random weights, 75x75) + an untrained GRU head."""
    from monitor.model.bundle import BackboneSpec, ModelManifest, WindowSpec, write_bundle
    from monitor.model.heads import build_head

    manifest = ModelManifest(name="tiny", backbone=BackboneSpec(name="inception_v3", weights="none", input_size=(size, size)),
                             window=WindowSpec(frames=frames, sample_fps=sample_fps, stride=stride), labels=LABELS,
                             groups={"anything": LABELS})
    write_bundle(out, manifest, build_head("gru", frames, 2048, len(LABELS), units))
    return out


ALWAYS_RULES = {"rules": [  # "anything" covers every label, so it fires on every window
    {"id": "always", "severity": "major", "when": {"action": "anything", "min_confidence": 0.5, "for_windows": 1}},
]}


def write_site(directory: Path, bundle: Path, cameras: list[dict], rules: dict | None = None, **extra) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rules_path = directory / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules or ALWAYS_RULES))
    site = {"site": "test-site", "model": str(bundle), "rules": [str(rules_path)],
            "storage": {"url": f"sqlite:///{directory / 'violations.db'}"},
            "metrics": {"host": "127.0.0.1", "port": 0},
            "inference": {"max_batch": 8, "max_wait_ms": 20},
            "reconnect": {"initial_seconds": 0.5, "max_seconds": 2},
            "cameras": cameras, **extra}
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def copy_demo(build: Path, directory: Path, **changes) -> Path:
    """A fresh copy of the built demo site (no record yet) with metrics on any free port and `changes` to site.yaml."""
    import shutil

    shutil.copytree(build, directory)
    path = directory / "site.yaml"
    data = yaml.safe_load(path.read_text())
    data["metrics"]["port"] = 0
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
