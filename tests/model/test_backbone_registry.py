"""Adding a backbone is one registered function: bundles, training, the CLI and the config schema see it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.cli.config import json_schema
from monitor.cli.main import parser
from monitor.model.backbones import BACKBONES, Backbone, build_backbone, register_backbone
from monitor.model.bundle import BackboneSpec


@pytest.fixture
def mean_colour():
    @register_backbone("mean_colour", (8, 12), min_side=4)
    def mean_colour(weights: str, size: tuple[int, int], seed: int, where: str) -> Backbone:
        return Backbone("mean_colour", size, 3, lambda frames: frames.mean(axis=(1, 2)).astype(np.float32))

    yield "mean_colour"
    del BACKBONES["mean_colour"]


def test_a_registered_backbone_is_known_everywhere(mean_colour, capsys):
    backbone = build_backbone(mean_colour, "none")
    assert backbone.input_size == (8, 12), "its default size"
    assert backbone.embed(np.full((2, 8, 12, 3), 7, np.uint8)).tolist() == [[7.0] * 3] * 2
    assert BackboneSpec(name=mean_colour, weights="none").name == mean_colour, "bundles accept it"
    assert mean_colour in json_schema("model")["$defs"]["BackboneSpec"]["properties"]["name"]["enum"]
    with pytest.raises(SystemExit):
        parser().parse_args(["train", "--help"])
    assert mean_colour in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")

    from monitor.training.train import TrainOptions, backbone_spec

    spec = backbone_spec(TrainOptions(data=Path("data"), out=Path("out"), backbone=mean_colour, weights="none"))
    assert spec.input_size == (8, 12)


def test_the_registry_refuses_what_a_backbone_cannot_take(mean_colour):
    from monitor.errors import UserError

    with pytest.raises(UserError, match="mean_colour needs at least 4x4"):
        build_backbone(mean_colour, "none", (2, 2))
    with pytest.raises(UserError, match="unknown backbone 'vgg99'"):
        build_backbone("vgg99", "none")
    with pytest.raises(ValueError, match="tflite backbone needs weights: PATH"):
        BackboneSpec(name="tflite", weights="none")
