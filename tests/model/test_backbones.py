"""Every backbone builds and embeds; real pretrained features mean something."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from monitor.errors import UserError
from monitor.model.backbones import BACKBONES, build_backbone
from monitor.model.frames import read_frames
from support.assets import asset

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("name, size, dim", [("inception_v3", (75, 75), 2048), ("mobilenet_v2", (64, 64), 1280)])
def test_keras_backbones_embed_batches_of_any_size(name, size, dim):
    backbone = build_backbone(name, "none", size)
    assert backbone.input_size == size and backbone.dim == dim == BACKBONES[name].dim, "the registry knows it unbuilt"
    rng = np.random.default_rng(0)
    for n in (1, 3, 8):
        out = backbone.embed(rng.integers(0, 255, (n, *size, 3), dtype=np.uint8))
        assert out.shape == (n, dim) and out.dtype == np.float32 and np.isfinite(out).all()


def test_random_weights_are_the_same_in_training_and_at_run_time(caplog):
    """Training builds its backbone on the first frames it embeds (deferred), the daemon at once: the same network."""
    caplog.set_level(logging.INFO, "monitor.model.backbones")
    frames = np.random.default_rng(1).integers(0, 255, (2, 75, 75, 3), dtype=np.uint8)
    training = build_backbone("inception_v3", "none", (75, 75), seed=3, deferred=True)
    assert training.dim == 2048 and "backbone_built" not in caplog.text, "not built before it embeds"
    a = training.embed(frames)
    assert caplog.text.count("event=backbone_built") == 1
    b = build_backbone("inception_v3", "none", (75, 75), seed=3).embed(frames)
    c = build_backbone("inception_v3", "none", (75, 75), seed=4).embed(frames)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert np.array_equal(training.embed(frames), a) and caplog.text.count("event=backbone_built") == 3, "built once"


def test_backbone_input_errors(tmp_path):
    with pytest.raises(UserError, match="needs at least 75x75"):
        build_backbone("inception_v3", "none", (32, 32))
    with pytest.raises(UserError, match="unknown backbone 'vgg99'"):
        build_backbone("vgg99", "none")
    for deferred in (False, True):  # a deferred build checks the file at once too
        with pytest.raises(UserError, match="file not found"):
            build_backbone("mobilenet_v2", str(tmp_path / "missing.h5"), (64, 64), deferred=deferred)


def test_mobilenet_v2_loads_real_weights_and_refuses_wrong_ones():
    weights = asset("weights", "mobilenet_v2_1.0_224_imagenet_notop.weights.h5")
    backbone = build_backbone("mobilenet_v2", str(weights), (96, 96))
    out = backbone.embed(np.zeros((2, 96, 96, 3), np.uint8))
    assert out.shape == (2, 1280) and (out >= 0).all(), "ReLU6 features after average pooling"
    with pytest.raises(UserError, match="is not inception_v3 weights"):
        build_backbone("inception_v3", str(weights), (75, 75))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_tflite_embedder_separates_real_clips():
    model = asset("weights", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    backbone = build_backbone("tflite", str(model))
    assert backbone.input_size == (224, 224) and backbone.dim == 1024
    juggling = read_frames(str(asset("videos", "ucf101_v_SoccerJuggling_g23_c01.avi")), (224, 224), 2.0)
    worker = read_frames(str(asset("videos", "intel_worker-zone-detection.mp4")), (224, 224), 2.0)
    half = len(juggling) // 2
    a1 = backbone.embed(juggling[:half]).mean(0)
    a2 = backbone.embed(juggling[half:]).mean(0)
    b = backbone.embed(worker).mean(0)
    same, different = _cosine(a1, a2), max(_cosine(a1, b), _cosine(a2, b))
    assert same > different + 0.1, (same, different)
