#!/usr/bin/env python
"""Cameras per box (issue 13): the largest number of real RTSP cameras the daemon keeps up with.

    python bench/cameras.py [--seconds 300] [--n N[,N...]] [--engine tensorflow,openvino] [--precision fp32,bf16,int8]
                            [--motion on|off] [--prepare] [--start 2] [--max-n 64] [--work-dir DIR]

For each engine x precision: N cameras are served over RTSP on 127.0.0.1 by bench/rtsp_streams.py
(Debian's /usr/bin/python3 + GStreamer): 1280x720 H.264 at 25 fps, GOP 2 s, no B-frames, a camera's
bitrate, people crossing a room (the shared Intel clip, transcoded ONCE to that format into --work-dir;
then every camera is passed through without re-encoding, each starting at another point of the clip).
The real daemon (`build_pipeline` + `Daemon`, as `har-monitor run` builds it, in a child process per
run) watches them with an InceptionV3 299x299 bundle (weights none: throughput only; an untrained GRU
head), 4 sampled frames/s per camera, SQLite, evidence clips as by default, and a rule on the label
whose probability moves most, at its median over calibration windows (for_windows 1, cooldown
--cooldown): episodes open often, so frame-to-violation latency is measured on every camera.

A run passes when, for --seconds after a warm-up, no frame was dropped (har_monitor_frames_dropped_total
per camera, scraped from the daemon's /metrics), every camera sampled >= 90% of its 4 fps (a
decoder that falls behind loses frames in the network buffer, which no counter sees) and the p99
frame-to-violation latency is <= the window stride + 2 s (1 s + 2 s here). N is searched by doubling
from --start, then bisection (or `--n 2,4` runs those N). A failing run stops early (--fail-fast seconds
after its first drop) unless --full.

Per run: embeddings/s, CPU (% of one core) of decode (the cameras' reader threads and their FFmpeg
threads) vs inference (the embedder thread and the engine's native compute pools; the GRU head's TF
calls run in the same pools), p50/p99 latency, frames dropped, and what other processes took (the
machine may be shared). Baseline in the same run: the raw engine (`backbone.embed` of the very backbone
the daemon used, on uint8 batches of 8, 16, 32, right after the daemon stopped, no pipeline); ratio
pipeline/raw = the embeddings/s the daemon sustained in a run it could not keep up with (the search's
failing N) / that raw figure (target >= 0.85).

Engines: `--engine`/`--precision`/`--motion` are written into site.yaml only where they differ from
the site schema's defaults (a version without `inference.engine` runs TensorFlow only). `--prepare`
converts the bundle first with `har-monitor models optimize` for engines other than TensorFlow;
top-1 agreement is read from the conversion's accuracy-check record (TensorFlow is the reference).
The last line printed is `cameras: N` for the best engine (one with >= 99% top-1 agreement).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import itertools
import json
import logging
import math
import os
import re
import subprocess  # nosec B404  # runs this script, the RTSP server script and the monitor CLI
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
SIZE = (1280, 720)
SAMPLE_FPS = 4.0
TICK = 5.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_pipeline() -> Any:
    """bench/pipeline.py as a module: its camera-like clips and its bundle maker are reused here."""
    if "bench_pipeline" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH / "pipeline.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_pipeline"] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules["bench_pipeline"]


# ---------------------------------------------------------------------------------------------
# Metrics, CPU, load
# ---------------------------------------------------------------------------------------------

def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """The daemon's /metrics over HTTP: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:  # nosec B310  # http://127.0.0.1 only
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def per_camera(snap: dict, name: str) -> dict[str, float]:
    return {dict(labels)["camera"]: v for (n, labels), v in snap.items() if n == name and "camera" in dict(labels)}


def total(snap: dict, name: str) -> float:
    return sum(per_camera(snap, name).values())


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, its threads included."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def name_native_threads() -> None:
    """Give every Python thread its name at the OS level (prctl), so that the native threads it starts
    (FFmpeg's, an engine's) inherit it and the CPU profile can tell decode from inference."""
    libc = ctypes.CDLL(None)
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named(self: threading.Thread) -> None:
        with contextlib.suppress(Exception):
            libc.prctl(15, ctypes.c_char_p(self.name[:15].encode()), 0, 0, 0)  # PR_SET_NAME
        bootstrap(self)

    threading.Thread._bootstrap_inner = named  # type: ignore[attr-defined]


def thread_group(name: str | None, comm: str) -> str:
    """decode | inference | analysis | evidence | other, from a Python thread's name or a native one's comm."""
    label = name if name is not None else comm
    if label.startswith(("reader-", "camera-")):
        return "decode"
    if label.startswith("evidence"):
        return "evidence"
    if label.startswith("analysis"):
        return "analysis"
    if label == "embedder" or name is None:
        return "inference"  # native threads: the engine's compute pools (TF/oneDNN, OpenVINO)
    return "other"


def thread_cpu() -> dict[int, tuple[str, float]]:
    """tid -> (group, CPU seconds) for every live thread of this process."""
    tick = os.sysconf("SC_CLK_TCK")
    py = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        out[int(tid)] = (thread_group(py.get(int(tid)), comm), (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_by_group(c0: dict, c1: dict, process_seconds: float) -> dict[str, float]:
    """CPU seconds per group between two thread_cpu() readings; threads that ended in between count as 'exited'."""
    groups: dict[str, float] = {}
    for tid, (g, cpu) in c1.items():
        groups[g] = groups.get(g, 0.0) + cpu - (c0[tid][1] if tid in c0 else 0.0)
    groups["exited"] = max(0.0, process_seconds - sum(groups.values()))
    return groups


# ---------------------------------------------------------------------------------------------
# Child processes: the bundle, and one daemon run
# ---------------------------------------------------------------------------------------------

def child_bundle(work: Path, clip: Path, input_size: int) -> dict:
    """Build the InceptionV3 bundle (weights none, untrained GRU head) and calibrate the bench's rule."""
    from monitor.model.backbones import build_backbone
    from monitor.ops.logs import import_tensorflow

    import_tensorflow()
    backbone = build_backbone("inception_v3", "none", (input_size, input_size))
    bundle, label, threshold, _ = bench_pipeline().make_bundle(work, input_size, backbone, clip, SAMPLE_FPS)
    return {"bundle": str(bundle), "label": label, "threshold": threshold}


def child_run(cfg: dict) -> dict:
    """One daemon run on the site `cfg['site']`; returns what was measured (JSON-able)."""
    name_native_threads()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    from monitor.ops.logs import import_tensorflow
    from monitor.pipeline.daemon import Daemon
    from monitor.pipeline.factory import build_pipeline
    from monitor.record.db import upgrade
    from monitor.site.check import check_site

    checked = check_site(Path(cfg["site"]))
    upgrade(checked.site.database_url)
    import_tensorflow()
    latencies: list[tuple[float, float]] = []  # (when, seconds): exact; the histogram's buckets are coarse
    pipeline = build_pipeline(checked, on_stored=lambda _event, seconds: latencies.append((time.monotonic(), seconds)))
    daemon, stop = Daemon(pipeline), threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,), name="bench-daemon", daemon=True)
    runner.start()
    try:
        result = measure(cfg, daemon, latencies, runner)
    finally:
        stop.set()
        runner.join(30)
    result["raw"] = raw_engine(pipeline.backbone)
    return result


def wait_all_sampling(daemon: Any, runner: threading.Thread, cameras: int, ceiling: float = 240) -> str:
    """The metrics URL once every camera has sampled a frame."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < ceiling and runner.is_alive():
        url = daemon.summary.metrics_url
        if url:
            with contextlib.suppress(OSError):
                sampled = per_camera(scrape(url), "har_monitor_frames_sampled_total")
                if sum(v > 0 for v in sampled.values()) >= cameras:
                    log(f"all {cameras} cameras sampling after {time.monotonic() - t0:.1f} s")
                    return str(url)
        time.sleep(0.5)
    raise RuntimeError(f"not every camera delivered a frame within {ceiling:g} s")


def measure(cfg: dict, daemon: Any, latencies: list[tuple[float, float]], runner: threading.Thread) -> dict:
    n, seconds, server_pid = cfg["cameras"], cfg["seconds"], cfg["server_pid"]
    url = wait_all_sampling(daemon, runner, n)
    s_start = scrape(url)
    time.sleep(cfg["warmup"])
    s0, c0, p0, b0, srv0 = scrape(url), thread_cpu(), time.process_time(), machine_busy(), proc_cpu(server_pid)
    t0 = time.monotonic()
    prev_emb, prev_t, first_drop, aborted = 0.0, t0, None, False
    while time.monotonic() - t0 < seconds - 1e-6:
        time.sleep(min(TICK, seconds - (time.monotonic() - t0)))
        s, now = scrape(url), time.monotonic()
        emb = total(s, "har_monitor_embeddings_total") - total(s0, "har_monitor_embeddings_total")
        dropped = total(s, "har_monitor_frames_dropped_total") - total(s0, "har_monitor_frames_dropped_total")
        log(f"N={n}: {now - t0:5.0f} s  {(emb - prev_emb) / (now - prev_t):5.1f} embeddings/s  dropped {dropped:.0f}")
        prev_emb, prev_t = emb, now
        if dropped and first_drop is None:
            first_drop = now
        if first_drop is not None and cfg["fail_fast"] and now - first_drop >= cfg["fail_fast"]:
            aborted = True
            break
        if not runner.is_alive() or not daemon.health()["live"]:
            dead = [name for name, ok in daemon.health()["threads"].items() if not ok]
            raise RuntimeError(f"the daemon stopped or a stage's thread died: {', '.join(dead) or 'the daemon'}")
    s1, c1, p1, b1, srv1 = scrape(url), thread_cpu(), time.process_time(), machine_busy(), proc_cpu(server_pid)
    t1 = time.monotonic()
    elapsed = t1 - t0
    delta = lambda name: {c: v - per_camera(s0, name).get(c, 0.0) for c, v in per_camera(s1, name).items()}
    build = next((dict(labels) for (name, labels), _ in s1.items() if name == "har_monitor_build_info"), {})
    return {
        "cameras": n, "elapsed": elapsed, "aborted": aborted,
        "sampled": delta("har_monitor_frames_sampled_total"),
        "dropped": delta("har_monitor_frames_dropped_total"),
        "embeddings": delta("har_monitor_embeddings_total"),
        "reused": delta("har_monitor_frames_reused_total"),  # motion gating (absent before it existed)
        "decoded": delta("har_monitor_frames_decoded_total"),
        "reconnects": delta("har_monitor_camera_reconnects_total"),
        "dropped_warmup": total(s0, "har_monitor_frames_dropped_total") - total(s_start, "har_monitor_frames_dropped_total"),
        "latencies": [v for when, v in latencies if t0 <= when <= t1],
        "cpu": cpu_by_group(c0, c1, p1 - p0),
        "process_cpu": p1 - p0,
        "server_cpu": srv1 - srv0,
        "others_pct": max(0.0, 100 * ((b1 - b0) - (p1 - p0) - (srv1 - srv0)) / elapsed),
        "build": build,
    }


def raw_engine(backbone: Any, min_seconds: float = 3.0) -> dict[int, float]:
    """Frames/s of the daemon's own backbone.embed on uint8 batches, no pipeline (run after it stopped)."""
    import numpy as np

    out = {}
    h, w = backbone.input_size
    rng = np.random.default_rng(0)
    for batch in (8, 16, 32):
        x = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        backbone.embed(x)
        calls, t0 = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - t0 < min_seconds:
            backbone.embed(x)
            calls += 1
        out[batch] = batch * calls / (time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------------
# The parent: clips, server, site, runs, search, report (it never imports TensorFlow)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schema:
    """What this version's site schema offers (has_*: the key exists) and its defaults."""

    has_engine: bool
    engine_default: str | None
    has_precision: bool
    precision_default: str | None
    motion_default: bool | None  # None: no motion gating in this version

    @staticmethod
    def read() -> Schema:
        from monitor.site import config

        inference = config.InferenceConfig.model_fields
        motion = None
        if "motion" in config.CameraConfig.model_fields:
            site_motion = config.SiteConfig.model_fields.get("motion")
            default = site_motion.default if site_motion is not None else config.CameraConfig.model_fields["motion"].default
            motion = bool(getattr(default, "enabled", True))
        engine, precision = inference.get("engine"), inference.get("precision")
        return Schema(engine is not None, engine.default if engine else None,
                      precision is not None, precision.default if precision else None, motion)

    def inference(self, combo: Combo) -> dict[str, str]:
        """The inference keys to write: only those that differ from the defaults."""
        out = {}
        if self.has_engine and combo.engine != self.engine_default:
            out["engine"] = combo.engine
        if (self.has_precision and combo.engine != "tensorflow" and combo.precision != "default"
                and combo.precision != self.precision_default):
            out["precision"] = combo.precision
        return out

    def motion(self, combo: Combo) -> dict[str, bool] | None:
        """A camera's motion key, if it must be written."""
        if self.motion_default is None or (combo.motion == "on") == self.motion_default:
            return None
        return {"enabled": combo.motion == "on"}


@dataclass(frozen=True)
class Combo:
    engine: str
    precision: str
    motion: str  # on | off

    def __str__(self) -> str:
        return f"{self.engine}/{self.precision}/motion {self.motion}"


def combos(args: argparse.Namespace, schema: Schema) -> list[Combo]:
    out = []
    for engine, precision in itertools.product(args.engine.split(","), args.precision.split(",")):
        if engine == "tensorflow":
            precision = "fp32"  # the reference runs fp32 whatever --precision lists for the other engines
        if not schema.has_engine and engine != "tensorflow":
            log(f"skipping {engine}: this version's site.yaml has no inference.engine")
            continue
        combo = Combo(engine, precision, args.motion if schema.motion_default is not None else "n/a")
        if combo not in out:
            out.append(combo)
    if not out:
        raise SystemExit("no engine/precision to run")
    return out


def camera_clip(work: Path, seconds: float) -> Path:
    """The 1280x720 25 fps camera-like H.264 clip every camera plays (transcoded once, then cached)."""
    bp = bench_pipeline()
    path = work / f"camera_{SIZE[0]}x{SIZE[1]}_{bp.camera_kbps(SIZE)}k_{seconds:g}s.mp4"
    if not path.is_file():
        log(f"transcoding the shared clip to {path.name} (once; about a second per clip second)")
        work.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.mp4")
        bp.make_clip(tmp, SIZE, seconds, start=0.0, seed=0)
        tmp.rename(path)
    return path


PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("filesrc", "qtdemux", "h264parse", "appsink", "appsrc", "rtph264pay") if not Gst.ElementFactory.find(e)]
print(" ".join(missing))
"""


def rtsp_unavailable() -> str:
    """Why bench/rtsp_streams.py cannot run here ('' if it can)."""
    try:
        proc = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False)  # nosec B603
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON}: {exc}"
    if proc.returncode:
        return (f"{SYSTEM_PYTHON} has no GStreamer RTSP server (Debian: python3-gi gir1.2-gst-rtsp-server-1.0 "
                f"gstreamer1.0-plugins-good gstreamer1.0-plugins-bad): {proc.stderr.strip().splitlines()[-1:]}")
    return f"missing GStreamer elements: {proc.stdout.strip()}" if proc.stdout.strip() else ""


class Streams:
    """bench/rtsp_streams.py in a child process: N pass-through RTSP cameras."""

    def __init__(self, count: int, clip: Path, offset: float):
        self.proc = subprocess.Popen(  # nosec B603  # our own script, fixed arguments
            [SYSTEM_PYTHON, "-u", str(BENCH / "rtsp_streams.py"), "--count", str(count), "--offset", str(offset), str(clip)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"RTSP server did not start (exit {self.proc.poll()}): {line!r}")
        self.base = line.split()[1]

    def url(self, i: int) -> str:
        return f"{self.base}/cam{i}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_site(run_dir: Path, streams: Streams, n: int, bundle: dict, combo: Combo, schema: Schema,
               args: argparse.Namespace) -> Path:
    """site.yaml for one run: engine, precision and motion only where they differ from the schema's defaults."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    rule = {"id": "bench-often", "title": "fires often (median of calibration windows)", "severity": "minor",
            "kind": "forbidden", "action": bundle["label"], "min_confidence": round(bundle["threshold"], 6),
            "for_windows": 1, "cooldown": f"{args.cooldown:g}s"}
    (run_dir / "rules.yaml").write_text(yaml.safe_dump({"rules": [rule]}, sort_keys=False))
    cameras = []
    for i in range(n):
        cam: dict[str, Any] = {"id": f"cam{i}", "url": streams.url(i), "zone": "floor", "sample_fps": SAMPLE_FPS}
        motion = schema.motion(combo)
        if motion is not None:
            cam["motion"] = motion
        if args.skip_loop_filter:
            cam["skip_loop_filter"] = True
        cameras.append(cam)
    inference: dict[str, Any] = schema.inference(combo)
    if args.max_batch:
        inference["max_batch"] = args.max_batch
    site: dict[str, Any] = {"site": "bench-cameras", "model": bundle["bundle"], "rules": ["rules.yaml"],
                            "storage": {"url": "sqlite:///violations.db", "evidence_dir": "evidence"},
                            "metrics": {"host": "127.0.0.1", "port": 0}, "cameras": cameras}
    if inference:
        site["inference"] = inference
    if not args.evidence:
        site["evidence"] = {"enabled": False}
    path = run_dir / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def run_child(mode: str, cfg: dict) -> dict:
    """Run this script in a child process (a fresh engine and memory per run); its JSON result."""
    with tempfile.TemporaryDirectory(prefix="har-bench-cameras-") as tmp:
        cfg_path, out = Path(tmp) / "cfg.json", Path(tmp) / "out.json"
        cfg_path.write_text(json.dumps(cfg))
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), f"--child-{mode}", str(cfg_path), str(out)],  # nosec B603
                              cwd=REPO, check=False)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"child {mode} failed (exit {proc.returncode})")
        return dict(json.loads(out.read_text()))


@dataclass
class Run:
    combo: Combo
    n: int
    result: dict = field(default_factory=dict)
    error: str = ""

    def summed(self, key: str) -> float:
        """A per-camera figure summed over the cameras."""
        return float(sum(self.result.get(key, {}).values()))

    @property
    def elapsed(self) -> float:
        return float(self.result.get("elapsed", 0.0)) or 1e-9

    @property
    def emb_per_s(self) -> float:
        return self.summed("embeddings") / self.elapsed

    @property
    def dropped(self) -> float:
        return self.summed("dropped")

    @property
    def reuse_pct(self) -> str:
        """Sampled frames that reused an embedding (motion gating), or '-' in a version without it."""
        if not self.result.get("reused"):
            return "-"
        return f"{100 * self.summed('reused') / max(1.0, self.summed('sampled')):.0f}"

    @property
    def min_camera_fps(self) -> float:
        sampled = self.result.get("sampled", {})
        return min(sampled.values(), default=0.0) / self.elapsed

    def latency(self, q: float) -> float:
        values = sorted(self.result.get("latencies", []))
        if not values:
            return float("nan")
        return float(values[min(len(values) - 1, math.ceil(q * len(values)) - 1)])  # nearest rank

    def cpu_pct(self, group: str) -> float:
        return 100 * float(self.result.get("cpu", {}).get(group, 0.0)) / self.elapsed

    @property
    def engine_in_force(self) -> str:
        """The engine the daemon reported (build info) where it differs from the one asked for (auto)."""
        actual = self.result.get("build", {}).get("engine", self.combo.engine)
        return self.combo.engine if actual == self.combo.engine else f"{self.combo.engine}>{actual}"

    @property
    def precision_in_force(self) -> str:
        asked = "fp32" if self.combo.engine == "tensorflow" and self.combo.precision == "default" else self.combo.precision
        return str(self.result.get("build", {}).get("precision", asked))

    @property
    def raw_best(self) -> float:
        return max(self.result.get("raw", {}).values(), default=0.0)

    def failures(self, limit: float) -> list[str]:
        if self.error:
            return [self.error]
        why = []
        if self.dropped:
            why.append(f"{self.dropped:.0f} frames dropped")
        if self.min_camera_fps < 0.9 * SAMPLE_FPS:
            why.append(f"a camera sampled only {self.min_camera_fps:.2f} fps")
        if not self.result.get("latencies"):
            why.append("no violation to time")
        elif self.latency(0.99) > limit:
            why.append(f"p99 latency {self.latency(0.99):.2f} s > {limit:g} s")
        return why


def one_run(combo: Combo, n: int, clip: Path, bundle: dict, schema: Schema, args: argparse.Namespace, work: Path) -> Run:
    log(f"--- {combo}: N={n}")
    run = Run(combo, n)
    streams = Streams(n, clip, args.offset)
    try:
        site = write_site(work / "runs" / f"{combo.engine}-{combo.precision}-motion-{combo.motion}-n{n}", streams, n,
                          bundle, combo, schema, args)
        run.result = run_child("run", {"site": str(site), "cameras": n, "seconds": args.seconds, "warmup": args.warmup,
                                       "server_pid": streams.proc.pid, "fail_fast": 0 if args.full else args.fail_fast})
        run.error = str(run.result.pop("error", ""))
    except RuntimeError as exc:
        run.error = str(exc)
    finally:
        streams.stop()
    return run


def search(run_n: Any, start: int, max_n: int, limit: float) -> tuple[int, list[Run]]:
    """The largest passing N: doubling from `start`, then bisection. run_n(n) -> Run."""
    runs: dict[int, Run] = {}

    def ok(n: int) -> bool:
        runs[n] = run_n(n)
        why = runs[n].failures(limit)
        log(f"N={n}: {'PASS' if not why else 'FAIL: ' + '; '.join(why)}")
        return not why

    lo, hi, n = 0, None, start
    while n <= max_n:
        if ok(n):
            lo, n = n, n * 2
        else:
            hi = n
            break
    if hi is None:
        log(f"passed at the largest N tried ({lo}); raise --max-n to go further")
        return lo, sorted(runs.values(), key=lambda r: r.n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo, sorted(runs.values(), key=lambda r: r.n)


def calibration_clips(work: Path) -> Path:
    """Two clips of the same floor that the cameras do not play (bench/pipeline.py makes them: its
    calibration_clips): `models optimize` calibrates int8 on one and checks agreement on the other."""
    return bench_pipeline().calibration_clips(work)


def prepare(combo: Combo, bundle: dict, work: Path, force: bool) -> None:
    """Convert the bundle's backbone for an engine other than TensorFlow (`har-monitor models optimize`)."""
    cmd = [sys.executable, "-m", "monitor", "models", "optimize", bundle["bundle"], "--engine", combo.engine,
           *(["--precision", combo.precision] if combo.precision != "default" else []),
           "--calibration", str(calibration_clips(work)), *(["--force"] if force else [])]
    log(f"preparing {combo.engine}/{combo.precision}: {' '.join(cmd[1:])}")
    subprocess.run(cmd, cwd=REPO, check=True)  # nosec B603


def top1_agreement(bundle_dir: Path, engine: str, precision: str) -> str:
    """The conversion's recorded top-1 agreement (from the accuracy-check record beside the bundle,
    e.g. engines/openvino-int8-<source>.yaml: check.top1_agreement)."""
    if engine == "tensorflow":
        return "reference"
    import yaml

    for path in sorted(bundle_dir.rglob("*")):
        if path.suffix not in (".json", ".yaml", ".yml") or path.name == "model.yaml":
            continue
        text = path.read_text(errors="replace")
        if engine not in (str(path) + text) or (precision != "default" and precision not in (str(path) + text)):
            continue
        with contextlib.suppress(Exception):
            found = find_key(yaml.safe_load(text), re.compile(r"top.?1"))
            if found is not None:
                return f"{100 * found:.1f}%" if found <= 1 else f"{found:.1f}%"
    return "no record"


def find_key(data: Any, pattern: re.Pattern) -> float | None:
    if isinstance(data, dict):
        for k, v in data.items():
            if pattern.search(str(k).lower()) and isinstance(v, int | float):
                return float(v)
            found = find_key(v, pattern)
            if found is not None:
                return found
    elif isinstance(data, list):
        for v in data:
            found = find_key(v, pattern)
            if found is not None:
                return found
    return None


def print_report(runs: list[Run], best: dict[Combo, int], agreement: dict[Combo, str], limit: float,
                 args: argparse.Namespace) -> None:
    print()
    print("=" * 118)
    print(f"har-monitor cameras per box: InceptionV3 299x299 (weights none), {SIZE[0]}x{SIZE[1]} H.264 25 fps over RTSP, "
          f"{SAMPLE_FPS:g} fps sampled per camera, {args.seconds:g} s per run after {args.warmup:g} s warm-up, "
          f"{os.cpu_count()} CPUs")
    print(f"pass: 0 frames dropped, every camera >= {0.9 * SAMPLE_FPS:g} sampled fps, p99 frame-to-violation <= {limit:g} s")
    print("=" * 118)
    head = (f"{'engine':<11}{'prec':<6}{'motion':<7}{'N':>3} {'emb/s':>6} {'raw':>6} {'decode%':>8} {'infer%':>7} "
            f"{'other%':>7} {'reuse%':>7} {'p50 s':>6} {'p99 s':>6} {'viol':>5} {'drop':>6} {'server%':>8} {'others%':>8} {'top-1':>10}  result")
    print(head)
    for r in runs:
        why = r.failures(limit)
        other = sum(r.cpu_pct(g) for g in ("analysis", "evidence", "other", "exited"))
        print(f"{r.engine_in_force:<11}{r.precision_in_force:<6}{r.combo.motion:<7}{r.n:>3} {r.emb_per_s:6.1f} {r.raw_best:6.1f} "
              f"{r.cpu_pct('decode'):8.0f} {r.cpu_pct('inference'):7.0f} {other:7.0f} {r.reuse_pct:>7} {r.latency(0.5):6.2f} "
              f"{r.latency(0.99):6.2f} {len(r.result.get('latencies', [])):5d} {r.dropped:6.0f} "
              f"{100 * r.result.get('server_cpu', float('nan')) / r.elapsed:8.1f} {r.result.get('others_pct', float('nan')):8.0f} {agreement[r.combo]:>10}  "
              + ("pass" if not why else "FAIL: " + "; ".join(why)) + (" (stopped early)" if r.result.get("aborted") else ""))
    print("(CPU % of one core over the run: decode = the cameras' reader threads; infer = the embedder and the engine's "
          "compute pools; other = analysis, evidence, store, threads that ended; reuse% = sampled frames that reused an "
          "embedding (motion gating); server% = the RTSP server (pass-through); others% = other processes on the box)")
    busy = max((r.result.get("others_pct", 0.0) for r in runs), default=0.0)
    if busy > 15:
        print(f"NOISY: other processes took up to {busy:.0f}% of a core during a run; every figure here (raw engine "
              f"included) is that busy box's, not a quiet one's")
    print("summary per engine (raw = the daemon's own backbone.embed on batches of 8/16/32 without the pipeline, best):")
    for combo, n in best.items():
        mine = [r for r in runs if r.combo == combo and not r.error]
        raw = max((r.raw_best for r in mine), default=0.0)
        at_n = next((r for r in mine if r.n == n), None)
        cpu_emb = ""
        if at_n and at_n.emb_per_s:
            cpu_emb = (f"; CPU per embedding at N={n}: decode {10 * at_n.cpu_pct('decode') / at_n.emb_per_s:.0f} ms, "
                       f"inference {10 * at_n.cpu_pct('inference') / at_n.emb_per_s:.0f} ms")
        used = (at_n.emb_per_s if at_n else 0.0) / raw if raw else 0.0
        print(f"  {combo}: cameras {n}; raw engine {raw:.1f} frames/s; at N={n} the daemon embeds "
              f"{at_n.emb_per_s if at_n else 0:.1f}/s = {used:.2f} of raw; top-1 agreement {agreement[combo]}{cpu_emb}")
        # the daemon's ceiling shows only in a run it could not keep up with (frames dropped)
        overloaded = [r for r in mine if r.dropped and r.raw_best]
        if overloaded:
            top = max(overloaded, key=lambda r: r.emb_per_s)
            print(f"    overloaded at N={top.n}: the daemon sustained {top.emb_per_s:.1f} embeddings/s against the raw engine's "
                  f"{top.raw_best:.1f} measured right after it in the same process: ratio pipeline/raw "
                  f"{top.emb_per_s / top.raw_best:.2f} (target >= 0.85)")
        else:
            print("    ratio pipeline/raw: no run was overloaded (search, or --n above capacity, to measure it)")


def accepted(value: str) -> bool:
    if value == "reference":
        return True
    with contextlib.suppress(ValueError):
        return float(value.rstrip("%")) >= 99.0
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300, help="measured seconds per run (after --warmup)")
    ap.add_argument("--warmup", type=float, default=20)
    ap.add_argument("--n", default="", help="run these N (comma-separated; no search)")
    ap.add_argument("--start", type=int, default=2, help="the search's first N (then doubling, then bisection)")
    ap.add_argument("--max-n", type=int, default=64)
    ap.add_argument("--engine", default="tensorflow", help="comma-separated: tensorflow, openvino, auto")
    ap.add_argument("--precision", default="default",
                    help="comma-separated: fp32, bf16, int8, default (the site's default: not written)")
    ap.add_argument("--motion", choices=("on", "off"), default="on", help="motion gating (where the version has it)")
    ap.add_argument("--prepare", action="store_true", help="convert the bundle (models optimize) for non-TF engines first")
    ap.add_argument("--force", action="store_true", help="`models optimize --force`: the bench's head is untrained, so "
                    "its top-1 agreement is near a coin toss between close classes; the conversion is kept and its "
                    "agreement printed (the `cameras:` line then falls back to the best engine)")
    ap.add_argument("--cooldown", type=float, default=10, help="the bench rule's cooldown (s): episodes per camera")
    ap.add_argument("--no-evidence", dest="evidence", action="store_false", help="evidence.enabled false")
    ap.add_argument("--skip-loop-filter", action="store_true", help="cameras' skip_loop_filter: true (decode without deblocking)")
    ap.add_argument("--max-batch", type=int, default=0, help="inference.max_batch (0: the daemon's default)")
    ap.add_argument("--fail-fast", type=float, default=20, help="stop a run this long after its first drop")
    ap.add_argument("--full", action="store_true", help="run every N for --seconds even once it dropped frames")
    ap.add_argument("--offset", type=float, default=7, help="seconds between the cameras' start points in the clip")
    ap.add_argument("--clip-seconds", type=float, default=60)
    ap.add_argument("--input", type=int, default=299, help="backbone input side")
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "har-bench-cameras"),
                    help="the transcoded clip (kept) and each run's site")
    ap.add_argument("--child-run", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-bundle", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    for mode, fn in (("child_run", child_run), ("child_bundle", lambda c: child_bundle(Path(c["work"]), Path(c["clip"]), c["input"]))):
        if getattr(args, mode):
            cfg_path, out = getattr(args, mode)
            try:
                result = fn(json.loads(Path(cfg_path).read_text()))
            except Exception as exc:  # the parent reports it with the run and goes on
                logging.exception("child failed")
                result = {"error": f"{type(exc).__name__}: {exc}"}
            Path(out).write_text(json.dumps(result))
            return 0

    reason = rtsp_unavailable()
    if reason:
        print(f"cannot serve RTSP here: {reason}")
        return 2
    work = Path(args.work_dir)
    clip = camera_clip(work, args.clip_seconds)
    schema = Schema.read()
    todo = combos(args, schema)
    limit = bench_pipeline().WINDOW_STRIDE / SAMPLE_FPS + 2.0  # the bundle's window stride in seconds + 2 s
    with tempfile.TemporaryDirectory(prefix="har-bench-cameras-") as tmp:
        root = Path(tmp)
        bundle = run_child("bundle", {"work": str(root), "clip": str(clip), "input": args.input})
        if "error" in bundle:
            raise SystemExit(f"cannot build the bundle: {bundle['error']}")
        log(f"bundle {bundle['bundle']}; rule: {bundle['label']} >= {bundle['threshold']:.4f}")
        agreement, best, runs = {}, {}, []
        for combo in todo:
            if args.prepare and combo.engine not in ("tensorflow", "auto"):
                try:
                    prepare(combo, bundle, work, args.force)
                except subprocess.CalledProcessError as exc:
                    log(f"{combo}: models optimize failed ({exc}); skipped")
                    continue
            run_n = lambda n, combo=combo: one_run(combo, n, clip, bundle, schema, args, root)
            if args.n:
                found = [run_n(int(n)) for n in args.n.split(",")]
                best[combo] = max((r.n for r in found if not r.failures(limit)), default=0)
            else:
                best[combo], found = search(run_n, args.start, args.max_n, limit)
            runs += found
            told = next((r for r in found if r.result.get("build")), found[0])
            engine = told.result.get("build", {}).get("engine", combo.engine)
            agreement[combo] = top1_agreement(Path(bundle["bundle"]), engine, told.precision_in_force)
    results = work / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"
    results.write_text(json.dumps([{"engine": r.combo.engine, "precision": r.combo.precision, "motion": r.combo.motion,
                                    "n": r.n, "error": r.error, **r.result} for r in runs], indent=1))
    log(f"every run's figures: {results}")
    if not best:
        print("cameras: 0")
        return 1
    print_report(runs, best, agreement, limit, args)
    eligible = {c: n for c, n in best.items() if accepted(agreement[c])} or best
    winner = max(eligible, key=lambda c: eligible[c])
    print(f"best: {winner}")
    print(f"cameras: {eligible[winner]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
