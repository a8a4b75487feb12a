"""Engines: `models optimize` converts a bundle's backbone to OpenVINO, checks it against TensorFlow and stores it;
the daemon runs the engine site.yaml asks for (or the fastest that passed), refuses conversions of another
backbone, altered files and failed checks, and records the engine in each violation it decides.

Small inputs: InceptionV3 at 75x75 with random weights and an untrained head (the check compares two engines,
so the features need not mean anything), and the real MobileNetV2 weights on real clips when ../shared has them.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404  # the CLI as a user runs it
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from monitor.errors import UserError
from monitor.evidence.media import write_video
from monitor.model.bundle import load_bundle
from monitor.model.engines import build_engine, choose_engine, load_records, source_hash
from support.assets import REPO, asset
from support.clips import write_clip
from support.sites import LABELS, write_site, write_tiny_bundle

pytestmark = [pytest.mark.tf]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four short synthetic clips (~20 frames each at the bundle's 5 fps)."""
    folder = tmp_path_factory.mktemp("clips")
    for i, action in enumerate(["walk", "wave", "fall", "idle"]):
        write_clip(folder / f"{action}.mp4", action, n_frames=48, seed=i)
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory, clips) -> Path:
    """A bundle of its own (the session's tiny bundle must stay without engines) with an OpenVINO fp32 conversion."""
    from monitor.cli import main

    bundle = write_tiny_bundle(tmp_path_factory.mktemp("converted") / "tiny")
    assert main(["models", "optimize", str(bundle), "--engine", "openvino", "--precision", "fp32",
                 "--calibration", str(clips)]) == 0
    return bundle


def test_an_fp32_conversion_matches_tensorflow_and_is_stored_under_its_source_hash(converted, capsys):
    bundle = load_bundle(converted)
    [(path, record)] = load_records(bundle)
    source = source_hash(bundle)
    assert path.name == f"openvino-fp32-{source[:12]}.yaml" and record.source == source
    assert sorted(record.files) == [f"openvino-fp32-{source[:12]}.bin", f"openvino-fp32-{source[:12]}.xml"]
    check = record.check
    assert check.passed and not check.forced and check.top1_agreement == 1.0 and check.windows > 20
    assert check.cosine_min > 0.9999, "fp32 is the same network: only rounding differs"
    assert record.speed is not None and record.speed.fps > 0 and record.speed.tensorflow_fps > 0

    choice = choose_engine(bundle, "openvino")
    assert (choice.engine, choice.precision, choice.forced) == ("openvino", "fp32", False)
    frames = np.random.default_rng(0).integers(0, 256, (3, 75, 75, 3), np.uint8)
    ov, tf = build_engine(bundle, choice), bundle.build_backbone()
    assert ov.input_size == tf.input_size == (75, 75) and ov.dim == tf.dim == 2048
    np.testing.assert_allclose(ov.embed(frames), tf.embed(frames), rtol=1e-3, atol=1e-4)


def test_batch_after_batch_of_any_size_each_frame_gets_its_own_vector_while_the_cpu_is_busy(converted):
    """The embedder sends batches of 1-32 frames back to back while decoders load the cores. Once a batch got
    another batch's vectors, or none, when the engine's completion callbacks ran after it had stopped waiting."""
    import threading

    bundle = load_bundle(converted)
    ov = build_engine(bundle, choose_engine(bundle, "openvino"))
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (64, 75, 75, 3), np.uint8)
    reference = np.concatenate([ov.embed(frames[i:i + 1]) for i in range(len(frames))])
    done = threading.Event()

    def busy() -> None:  # the cameras' decoders, in short: numpy work that releases the GIL
        m = rng.random((300, 300))
        while not done.is_set():
            m = np.tanh(m @ m)

    loaders = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    for t in loaders:
        t.start()
    try:
        for size in [*range(1, 33), *rng.integers(1, 33, 100)]:
            start = int(rng.integers(0, len(frames) - size + 1))
            got = ov.embed(frames[start:start + size])
            assert got.shape == (size, 2048)
            np.testing.assert_allclose(got, reference[start:start + size], rtol=1e-3, atol=1e-4)
    finally:
        done.set()
        for t in loaders:
            t.join()


def _set_speed(record_path: Path, fps: float, tensorflow_fps: float) -> None:
    data = yaml.safe_load(record_path.read_text())
    data["speed"] |= {"fps": fps, "tensorflow_fps": tensorflow_fps}
    record_path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_auto_runs_the_fastest_passing_conversion_and_tensorflow_otherwise(converted, tmp_path):
    bundle_dir = shutil.copytree(converted, tmp_path / "bundle")
    bundle = load_bundle(bundle_dir)
    [(path, _)] = load_records(bundle)
    _set_speed(path, 300.0, 30.0)
    choice = choose_engine(bundle, "auto")
    assert (choice.engine, choice.precision) == ("openvino", "fp32") and "300.0 frames/s" in choice.why
    assert choose_engine(bundle, "auto", "int8").engine == "tensorflow", "no int8 conversion: the reference"
    _set_speed(path, 20.0, 30.0)
    assert choose_engine(bundle, "auto").engine == "tensorflow", "a conversion measured slower is not used"
    assert choose_engine(bundle, "tensorflow").engine == "tensorflow"


def test_a_conversion_of_another_backbone_or_with_altered_files_is_refused(converted, tmp_path):
    bundle_dir = shutil.copytree(converted, tmp_path / "bundle")
    manifest = yaml.safe_load((bundle_dir / "model.yaml").read_text())
    manifest["backbone"]["seed"] = 7  # other random weights: another backbone, the same file names
    (bundle_dir / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    with pytest.raises(UserError, match=r"no openvino conversion of this bundle's backbone.*source hash differs"):
        choose_engine(load_bundle(bundle_dir), "openvino")
    assert choose_engine(load_bundle(bundle_dir), "auto").engine == "tensorflow"

    bundle_dir = shutil.copytree(converted, tmp_path / "altered")
    [weights] = (bundle_dir / "engines").glob("*.bin")
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(UserError, match=r"\.bin does not match its recorded SHA-256"):
        choose_engine(load_bundle(bundle_dir), "openvino")
    assert choose_engine(load_bundle(bundle_dir), "auto").engine == "tensorflow"


def test_engines_that_are_not_built_or_cannot_run_a_precision_are_user_errors(tmp_path, converted, capsys):
    from monitor.cli import main
    from monitor.site.config import load_site

    camera = [{"id": "cam-1", "url": "clip.mp4"}]
    site = write_site(tmp_path, converted, camera, inference={"engine": "onnxruntime"})
    with pytest.raises(UserError, match=r"site.yaml.*inference.*onnxruntime is not built"):
        load_site(site)
    site = write_site(tmp_path, converted, camera, inference={"engine": "tensorflow", "precision": "int8"})
    with pytest.raises(UserError, match=r"inference.*tensorflow runs fp32 only"):
        load_site(site)
    with pytest.raises(UserError, match="no openvino int8 conversion"):
        choose_engine(load_bundle(converted), "openvino", "int8")
    assert main(["models", "optimize", str(converted), "--engine", "onnxruntime"]) == 2
    assert "onnxruntime is not built" in capsys.readouterr().err


def test_a_backbone_that_is_not_keras_runs_as_it_is_and_says_so(tmp_path):
    from monitor.model.bundle import BackboneSpec, ModelManifest, write_manifest

    write_manifest(tmp_path, ModelManifest(backbone=BackboneSpec(name="raw", weights="none"), labels=LABELS))
    (tmp_path / "head.keras").write_bytes(b"not read here")
    choice = choose_engine(load_bundle(tmp_path), "auto")
    assert (choice.engine, choice.precision) == ("raw", "native"), "the provenance names what really ran"
    with pytest.raises(UserError, match="raw backbone is not a Keras network"):
        choose_engine(load_bundle(tmp_path), "openvino")


# -- int8: a conversion that changes the head's decisions is refused, or stored as forced --------------------

@pytest.fixture(scope="module")
def flipping(tmp_path_factory) -> tuple[Path, Path]:
    """A bundle whose head decides on the side of a line drawn between TensorFlow's and int8's embeddings of
    a still scene: every window's decision flips under int8. (calibration clip, held-out still clip)."""
    import keras

    from monitor.demo.synthetic import render_clip
    from monitor.model.backbones import keras_graph
    from monitor.model.bundle import load_bundle
    from monitor.model.engines import openvino_compile, openvino_embed
    from monitor.training.optimize import OptimizeOptions, convert, gather_frames

    root = tmp_path_factory.mktemp("flipping")
    clips = root / "clips"
    write_clip(clips / "a-calibrate.mp4", "walk", n_frames=48, seed=3)
    still = render_clip("idle", 1, (120, 160), 5)[0]
    write_video(clips / "b-still.mp4", [still] * 48, 12.0, keyframe_interval=12)
    bundle_dir = write_tiny_bundle(root / "bundle")
    bundle = load_bundle(bundle_dir)
    opts = OptimizeOptions(bundle_dir, "openvino", "int8", clips)
    frames = gather_frames(bundle, opts, (75, 75))
    graph = keras_graph("inception_v3", "none", (75, 75))
    reference = graph.function(frames.check[0]).numpy().mean(0)
    int8 = openvino_embed(openvino_compile(convert(graph.function, "int8", frames.calibration), "int8"))
    quantized = int8(frames.check[0]).mean(0)
    direction = (quantized - reference) / np.linalg.norm(quantized - reference)
    middle = float(direction @ (reference + quantized) / 2)
    head = keras.Sequential([keras.Input((4, 2048)), keras.layers.GlobalAveragePooling1D(),
                             keras.layers.Dense(len(LABELS), activation="softmax")])
    weights = np.zeros((2048, len(LABELS)), np.float32)
    weights[:, 0], weights[:, 1] = -direction, direction  # label 0 on TensorFlow's side of the line, 1 on int8's
    bias = np.full(len(LABELS), -1e3, np.float32)
    bias[0], bias[1] = middle, -middle
    head.layers[-1].set_weights([weights * 1e3, bias * 1e3])
    head.save(bundle.head_file)
    return bundle_dir, clips


def test_a_conversion_under_99_percent_agreement_is_refused_and_stored_only_when_forced(flipping, capsys):
    from monitor.cli import main

    bundle_dir, clips = flipping
    args = ["models", "optimize", str(bundle_dir), "--engine", "openvino", "--precision", "int8", "--calibration", str(clips)]
    # as a user runs it: the process must end (exit 2), not hang in the engines' threads after the refusal
    refused = subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, timeout=600,
                             cwd=REPO)
    assert refused.returncode == 2, refused.stderr[-2000:]
    out, err = refused.stdout, refused.stderr
    assert "head top-1 agreement: 0.0000" in out and "FAILED" in out
    assert "refused" in err and "nothing stored" in err and "--force" in err
    assert not (bundle_dir / "engines").exists() or not list((bundle_dir / "engines").iterdir()), "nothing stored"

    assert main([*args, "--force"]) == 0
    assert "(stored: forced)" in capsys.readouterr().out
    bundle = load_bundle(bundle_dir)
    [(_, record)] = load_records(bundle)
    assert record.check.forced and not record.check.passed and record.precision == "int8"
    assert choose_engine(bundle, "auto").engine == "tensorflow", "auto never takes a forced conversion"
    choice = choose_engine(bundle, "openvino", "int8")
    assert choice.forced and "FORCED" in choice.why, "named in site.yaml, it runs, recorded as forced"


# -- the daemon on OpenVINO, and the engine in every violation's provenance ---------------------------------

@pytest.mark.slow
def test_the_daemon_runs_on_openvino_and_records_the_engine_in_each_violation(tmp_path, converted, clip, capsys):
    from monitor.cli import main
    from monitor.record import ledger
    from monitor.record.review import query
    from support.daemon import RunningDaemon

    site = write_site(tmp_path, converted, [{"id": "cam-1", "url": str(clip), "loop": True}],
                      inference={"max_batch": 8, "max_wait_ms": 20, "engine": "openvino", "precision": "fp32"})
    [(_, record)] = load_records(load_bundle(converted))
    assert main(["check", "--cameras", str(site)]) == 0
    assert "engine openvino fp32: named in the site" in capsys.readouterr().out, "check says what will run"
    with RunningDaemon(site) as d:
        d.wait_for(lambda: d.value("har_monitor_frame_to_violation_seconds_count") >= 1, 120, "a violation stored")
        info = next(labels for (name, labels) in d.scrape() if name == "har_monitor_build_info")
    info = dict(info)
    assert (info["engine"], info["precision"], info["engine_forced"], info["engine_model"]) == (
        "openvino", "fp32", "false", record.model_hash)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'violations.db'}")
    with engine.connect() as conn:
        rows = [v.row for v in query(conn)]
        assert ledger.verify(conn) == []
    engine.dispose()
    assert rows and all((r["engine"], r["precision"], r["engine_forced"], r["engine_hash"]) ==
                        ("openvino", "fp32", False, record.model_hash) for r in rows)


# -- real weights: MobileNetV2 (ImageNet) on real clips -----------------------------------------------------

@pytest.mark.slow
def test_real_mobilenet_v2_converts_with_embeddings_close_to_tensorflow(tmp_path):
    from monitor.model.bundle import BackboneSpec, ModelManifest, WindowSpec, write_bundle
    from monitor.model.heads import build_head
    from monitor.training.optimize import OptimizeOptions, format_check, optimize

    weights = asset("weights", "mobilenet_v2_1.0_224_imagenet_notop.weights.h5")
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("hmdb51_*_wave_*.avi", "mmaction2_test.mp4"):
        for video in sorted(asset("videos").glob(name))[:2]:
            (clips / video.name).symlink_to(video)
    manifest = ModelManifest(name="mnv2", backbone=BackboneSpec(name="mobilenet_v2", weights=str(weights),
                                                                input_size=(128, 128)),
                             window=WindowSpec(frames=4, sample_fps=5.0, stride=2), labels=LABELS)
    write_bundle(tmp_path / "bundle", manifest, build_head("gru", 4, 1280, len(LABELS), 8))
    results = {}
    for precision in ("fp32", "int8"):
        results[precision] = optimize(OptimizeOptions(tmp_path / "bundle", "openvino", precision, clips, force=True,
                                                      check_frames=120))
        print(format_check(results[precision]))
    fp32, int8 = results["fp32"].record.check, results["int8"].record.check
    assert fp32.cosine_min > 0.9999 and fp32.top1_agreement == 1.0 and fp32.passed
    assert 0.8 < int8.cosine_mean < 0.9999, "int8 on real weights: close, not equal (measured here ~0.9)"


def test_int8_calibrated_on_a_single_clip_calibrates_on_one_half_and_checks_on_the_other(tmp_path, clips):
    from monitor.training.optimize import OptimizeOptions, gather_frames

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(clips / "walk.mp4", one / "walk.mp4")
    bundle = load_bundle(write_tiny_bundle(tmp_path / "tiny"))
    size = bundle.manifest.backbone.input_size
    assert size is not None
    frames = gather_frames(bundle, OptimizeOptions(bundle.path, precision="int8", calibration=one), tuple(size))
    assert len(frames.calibration) and sum(len(f) for f in frames.check), "both halves of the one clip are used"
