"""The site configuration (site.yaml): one pydantic schema validated up front.

Each field's `description` is the one explanation of its key: README's configuration reference and
`har-monitor config schema site` are generated from them. Relative paths are resolved against the
directory of site.yaml. Secrets come from the environment through `${VAR}` and are never logged:
see `monitor.ops.logs.redact_url`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator

from monitor.durations import PositiveDuration
from monitor.errors import UserError
from monitor.model.zones import MAX_ZONES, MIN_AREA, Zone, polygon_area, self_intersection
from monitor.site.notify import NotifyConfig
from monitor.yamlfile import StrictModel, load_model

if TYPE_CHECKING:
    from monitor.record.anchor import AnchorLog

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
MAX_RETENTION_DAYS = 36525  # 100 years: GMP records are kept long, but a timedelta must stay in range
CameraId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Unit = Annotated[float, Field(ge=0, le=1)]


class ZoneConfig(StrictModel):
    """A named part of a camera's frame, classified as a stream of its own (its own windows, predictions,
    metrics and rule scope). Coordinates are fractions of the frame: x from the left, y from the top, 0..1
    (`har-monitor zones preview` draws them on a snapshot with a grid)."""

    name: CameraId = Field(description="Unique on its camera: the zone rules select with `applies_to.zones`, "
                                       "and the `zone` label of the per-zone metrics.")
    rect: tuple[Unit, Unit, Unit, Unit] | None = Field(default=None, description="A rectangle [x0, y0, x1, y1] "
                                                       "(top left, bottom right).")
    polygon: list[tuple[Unit, Unit]] | None = Field(default=None, min_length=3, max_length=32, description=(
        "A polygon [[x, y], ...] (3 to 32 corners, not crossing itself): its bounding box is classified, with "
        "what lies outside the polygon blacked out."))
    person_gate: bool = Field(default=False, description="Classify the zone only while a person is in it "
                              "(`person_detector`); meanwhile its windows are predicted as the action `nobody`.")

    @field_validator("rect")
    @classmethod
    def _rect_shape(cls, rect: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if rect is not None:
            x0, y0, x1, y1 = rect
            if not (x0 < x1 and y0 < y1):
                raise ValueError("a rectangle is [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
            if (x1 - x0) * (y1 - y0) < MIN_AREA:
                raise ValueError(f"the zone covers less than {MIN_AREA:.1%} of the frame")
        return rect

    @field_validator("polygon")
    @classmethod
    def _polygon_shape(cls, polygon: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if polygon is not None:
            crossing = self_intersection(polygon)
            if crossing is not None:
                i, j = crossing
                raise ValueError(f"the polygon crosses itself (the edge from corner {i} and the edge from corner {j})")
            if polygon_area(polygon) < MIN_AREA:
                raise ValueError(f"the polygon covers less than {MIN_AREA:.1%} of the frame")
        return polygon

    @model_validator(mode="after")
    def _one_shape(self) -> ZoneConfig:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("a zone has either `rect` or `polygon`")
        return self

    def geometry(self) -> Zone:
        if self.rect is not None:
            return Zone.from_rect(self.name, self.rect, self.person_gate)
        return Zone(self.name, tuple(self.polygon or ()), self.person_gate)


class PersonDetectorConfig(StrictModel):
    """The person detector of zones with `person_gate: true`: MoveNet Lightning (single pose, TFLite), run on the
    CPU at a low rate per zone."""

    model: str = Field(description="The MoveNet single-pose Lightning .tflite file (relative to site.yaml).")
    min_score: float = Field(default=0.3, gt=0, lt=1, description="A person is present when the mean keypoint score "
                             "reaches this (measured: 0.36-0.65 with a person, below 0.2 without).")
    check_hz: float = Field(default=2.0, gt=0, le=10, description="Checks per second per zone (each 6-14 ms of "
                            "one core).")
    hold_seconds: float = Field(default=3.0, ge=0, le=600, description="A zone stays open this long after the last "
                                "check that saw a person (a missed detection does not cut a window short).")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _host(url: str) -> str:
    """The host of scheme://[user[:password]@]host[:port][/path], found without a URL parser: the
    credentials end at the LAST "@" (a password may hold "@", "/", "[" or "#", which confuse urlsplit)."""
    authority = url.split("://", 1)[1]
    authority = authority[authority.rfind("@") + 1:]
    for end in "/?#":
        authority = authority.split(end, 1)[0]
    if authority.startswith("["):  # [IPv6]:port
        return authority[1:authority.find("]")] if "]" in authority else ""
    return authority.rsplit(":", 1)[0]


class MotionConfig(StrictModel):
    """Motion gating: an unchanged frame (on a small grey copy) reuses its stream's last embedding."""

    enabled: bool = Field(default=True, description="Reuse the last embedding for unchanged frames "
                          "(`har_monitor_frames_reused_total`). `false`: embed every sampled frame.")
    pixel_threshold: int = Field(default=10, ge=1, le=255, description="Grey levels (0-255) a pixel of the "
                                 "48x48 grey copy must change by to count as changed: above the camera's noise.")
    min_changed: float = Field(default=0.003, gt=0, le=1, description="Fraction of the grey copy's pixels that must "
                               "change for the scene to count as changed (0.003: 7 of 2304 pixels, a person's "
                               "arm at a few metres).")
    refresh_seconds: float = Field(default=10.0, gt=0, le=3600, description="Embed a frame at least this often "
                                   "even when nothing changed.")


class CameraConfig(StrictModel):
    """One camera: a network stream or a video file."""

    id: CameraId = Field(description="Unique name of the camera (letters, digits, `.`, `_`, `-`; up to 64): "
                                     "the `camera` label of every metric and the camera of every violation.")
    url: str = Field(min_length=1, description="`rtsp://`, `rtsps://`, `http(s)://` URL or a video file path "
                                               "(relative to site.yaml). Put credentials in `${VAR}`s.")
    zone: str | None = Field(default=None, description="The area the whole frame watches (without `zones`); rules select cameras by zone.")
    enabled: bool = Field(default=True, description="`false` keeps the camera in the file but does not watch it.")
    loop: bool = Field(default=False, description="Files only: start again at the end.")
    realtime: bool = Field(default=True, description="Files only: play at the native frame rate, like a live "
                                                     "camera (`false`: as fast as possible).")
    sample_fps: float | None = Field(default=None, gt=0, le=60, description="Frames per second sampled for the "
                                     "model, from the frames' timestamps (default: the model bundle's).")
    queue_size: int = Field(default=16, ge=1, le=1024, description="Sampled frames waiting for inference; when it "
                            "is full the oldest are dropped and counted.")
    stall_seconds: float = Field(default=10.0, gt=0, le=3600, description="No frame for this long: the camera is "
                                 "marked down and reconnected.")
    open_timeout_seconds: float = Field(default=10.0, gt=0, le=600, description="How long opening the stream may take.")
    decode_threads: int | None = Field(default=None, ge=0, le=16, description=(
        "FFmpeg decoder threads. Default: 1 for live cameras and paced files (the least CPU per frame, leaving the "
        "cores to inference); FFmpeg's choice for files read with `realtime: false`. 0 = FFmpeg's choice, for "
        "streams one core cannot decode in real time (4K H.265)."))
    skip_frames: Literal["none", "nonref", "nonkey"] = Field(default="none", description=(
        "Frames the decoder may leave out (FFmpeg's `skip_frame`), used only where it costs no sampled frame: "
        "`nonref` leaves out B-frames, `nonkey` decodes keyframes only (a camera set to a keyframe at least every "
        "1 / `sample_fps` seconds: a fraction of the decode). Each connection first decodes every frame for 3 s "
        "and skips only if the frames left would still come once a sample period (`skip_frames_on`, else "
        "`skip_frames_off` in the log); a later longer gap turns skipping off. Evidence clips show only the "
        "frames decoded."))
    skip_loop_filter: bool = Field(default=False, description=(
        "`true`: decode H.264/H.265 without the deblocking filter (FFmpeg's `skip_loop_filter`): about a fifth "
        "less decode CPU, for boxes that decode many main streams. The frames then carry faint block edges that "
        "add up until the next keyframe (on 720p, 0.4-0.5 grey levels on average at the model's input; "
        "embeddings' cosine 0.996 to the filtered frames'), in evidence clips too; a sub-stream saves more."))
    zones: list[ZoneConfig] = Field(default_factory=list, max_length=MAX_ZONES, description=(
        f"Parts of the frame classified as streams of their own (at most {MAX_ZONES}; each costs one embedding "
        "per sampled frame, the frame is decoded once). Without zones the whole frame is one stream, in `zone`."))
    motion: MotionConfig | None = Field(default=None, description="This camera's motion gating (default: the "
                                        "site's `motion`).")

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[ZoneConfig]) -> list[ZoneConfig]:
        names = [z.name for z in zones]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"zone name {', '.join(map(repr, twice))} used twice")
        return zones

    @model_validator(mode="after")
    def _zone_or_zones(self) -> CameraConfig:
        if self.zone is not None and self.zones:
            raise ValueError("`zone` names the whole frame's zone: with `zones` each zone has its own name")
        return self

    @field_validator("url")
    @classmethod
    def _url_form(cls, url: str) -> str:
        scheme = _scheme(url)
        if "://" in url and scheme not in NETWORK_SCHEMES and scheme != "file":
            raise ValueError(f"unsupported scheme '{scheme}://' (expected one of {', '.join(NETWORK_SCHEMES)} or a file path)")
        if scheme in NETWORK_SCHEMES and not _host(url):
            raise ValueError("URL has no host")
        return url

    @property
    def is_network(self) -> bool:
        return _scheme(self.url) in NETWORK_SCHEMES

    @property
    def decoder_threads(self) -> int:
        """`decode_threads`, or its default: 1 for live cameras and paced files, 0 for bulk reads."""
        if self.decode_threads is not None:
            return self.decode_threads
        return 1 if self.realtime or self.is_network else 0


class AnchorConfig(StrictModel):
    """Signed checkpoints of the record's hash chains (HMAC-SHA256), kept outside the database."""

    log: str = Field(default="anchors.jsonl", description="The append-only anchor log, on the daemon's disk.")
    key_env: str = Field(default="HAR_ANCHOR_KEY", description="The environment variable holding the key "
                         "(at least 32 bytes, e.g. `openssl rand -hex 32`).")
    key_file: str | None = Field(default=None, description="Or a file holding the key: best one the database's "
                                 "users cannot read.")
    every: PositiveDuration = Field(default=300.0, description="How often the daemon anchors (and at "
                                    "start and stop).")
    ship_to: str | None = Field(default=None, description="A copy of every anchor elsewhere: a WORM mount, another "
                                "host's share.")


class StorageConfig(StrictModel):
    """Where the violation record and its evidence go."""

    url: str = Field(default="sqlite:///violations.db", description="The record's database: `sqlite:///PATH` "
                     "(relative to site.yaml) or `postgresql://user@host/db` (password in `${VAR}`).")
    evidence_dir: str = Field(default="evidence", description="Folder for evidence clips and snapshots.")
    spool: str = Field(default="spool/events.jsonl", description="Where every record waits, durably (fsync'd), "
                       "until the database has it; written in order, also after a restart.")
    anchor: AnchorConfig | None = Field(default=None, description="Signed checkpoints of the record's hash chains "
                                        "(HMAC-SHA256), kept outside the database. Off unless set.")


class QAConfig(StrictModel):
    """The QA commands and console."""

    lockout_after: int = Field(default=5, ge=1, le=100, description="Wrong passwords in a row that lock an account "
                               "until an admin unlocks it.")


class EvidenceConfig(StrictModel):
    """An H.264 clip and a JPEG snapshot per violation, from a per-camera ring buffer of reduced frames."""

    enabled: bool = Field(default=True, description="Write evidence for every violation.")
    pre_roll_seconds: float = Field(default=5.0, ge=0, le=60, description="Clip start, before the episode opened.")
    post_roll_seconds: float = Field(default=5.0, ge=0, le=60, description="Clip end, after the episode opened.")
    fps: float = Field(default=5.0, gt=0, le=30, description="Frames per second kept for clips.")
    width: int = Field(default=480, ge=64, le=1920, description="Stored frames are reduced to this width (px).")
    blur_faces: bool = Field(default=False, description="Privacy (EU plants, works councils): blur faces before "
                             "anything is written (OpenCV's frontal face cascade, best effort).")
    retention_days: float | None = Field(default=None, gt=0, le=MAX_RETENTION_DAYS, description=(
        "Delete evidence files older than this (each deletion is an audit event); records are never deleted. "
        "Default: keep forever."))


class MetricsConfig(StrictModel):
    """The HTTP port with /metrics, /healthz and /readyz."""

    host: str = Field(default="127.0.0.1", description="Address to listen on. Unauthenticated: loopback unless the site "
                      "says otherwise (0.0.0.0 where Prometheus scrapes the pod or container from outside, as "
                      "deploy/k8s and deploy/compose set it).")
    port: int = Field(default=9108, ge=0, le=65535, description="Port to listen on (0: any free port).")


class InferenceConfig(StrictModel):
    """Batching across cameras on the one inference thread."""

    max_batch: int = Field(default=32, ge=1, le=256, description="Frames per backbone call at most.")
    max_wait_ms: float = Field(default=50.0, ge=0, le=5000, description="How long a batch waits to fill up.")
    over_capacity_seconds: float = Field(default=60.0, gt=0, le=86400, description="While a camera dropped a "
                                         "sampled frame (its queue full: inference does not keep up) within this "
                                         "many seconds, the box is over capacity: `/readyz` answers 503 with "
                                         "`over_capacity` and `har_monitor_over_capacity` is 1.")
    engine: Literal["auto", "tensorflow", "openvino", "onnxruntime"] = Field(
        default="auto", description="What runs the backbone: `auto` (the fastest conversion of this bundle's "
        "backbone that passed its accuracy check, from `har-monitor models optimize`, else TensorFlow), `tensorflow` "
        "(the reference; a GPU when present), `openvino` (a stored conversion; a forced one is recorded as forced). "
        "`onnxruntime` is not built yet.")
    precision: Literal["fp32", "bf16", "int8"] | None = Field(
        default=None, description="The conversion's precision (default: the fastest that passed). TensorFlow runs fp32.")

    @model_validator(mode="after")
    def _engine_built(self) -> InferenceConfig:
        if self.engine == "onnxruntime":
            raise ValueError("engine: onnxruntime is not built in this version (use openvino, tensorflow or auto)")
        if self.engine == "tensorflow" and self.precision not in (None, "fp32"):
            raise ValueError(f"precision: tensorflow runs fp32 only; {self.precision} needs engine: openvino "
                             "(after `har-monitor models optimize`)")
        return self


class ReconnectConfig(StrictModel):
    """Jittered exponential backoff between a camera's connection attempts, forever."""

    initial_seconds: float = Field(default=1.0, gt=0, le=3600, description="The first delay.")
    max_seconds: float = Field(default=60.0, gt=0, le=86400, description="Delays double up to this.")

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.initial_seconds > self.max_seconds:
            raise ValueError(f"initial_seconds ({self.initial_seconds:g}) must not exceed max_seconds ({self.max_seconds:g})")
        return self


class SiteConfig(StrictModel):
    """site.yaml: one site's cameras, model, rules, storage and ports. Paths are relative to the file."""

    site: str = Field(min_length=1, max_length=128, description="The site's name (in `har_monitor_build_info`).")
    model: str = Field(min_length=1, description="The model bundle directory.")
    shadow_model: str | None = Field(default=None, min_length=1, description=(
        "A candidate model bundle run in shadow: its head classifies the live model's embeddings (same backbone, "
        "input size and window), the same rules judge its predictions, and its would-be violations go to the "
        "`shadow_events` table and `har_monitor_shadow_*` metrics, never to the record's violations, evidence or "
        "notifications (`har-monitor violations shadow-report`). Promote it by making it `model:`."))
    rules: list[str] = Field(default_factory=list, description="Rule files.")
    storage: StorageConfig = Field(default=StorageConfig(), description=StorageConfig.__doc__)
    evidence: EvidenceConfig = Field(default=EvidenceConfig(), description=EvidenceConfig.__doc__)
    metrics: MetricsConfig = Field(default=MetricsConfig(), description=MetricsConfig.__doc__)
    inference: InferenceConfig = Field(default=InferenceConfig(), description=InferenceConfig.__doc__)
    reconnect: ReconnectConfig = Field(default=ReconnectConfig(), description=ReconnectConfig.__doc__)
    qa: QAConfig = Field(default=QAConfig(), description=QAConfig.__doc__)
    motion: MotionConfig = Field(default=MotionConfig(), description=MotionConfig.__doc__)
    cameras: list[CameraConfig] = Field(min_length=1, description="The cameras.")
    person_detector: PersonDetectorConfig | None = Field(default=None, description="The detector of zones with "
                                                         "`person_gate: true`.")
    notify: NotifyConfig | None = Field(default=None, description="Push violation episodes to MQTT and webhooks.")

    @model_validator(mode="after")
    def _gates_have_a_detector(self) -> SiteConfig:
        gated = [f"{c.id}/{z.name}" for c in self.cameras for z in c.zones if z.person_gate]
        if gated and self.person_detector is None:
            raise ValueError(f"zones with person_gate ({', '.join(gated)}) need `person_detector: {{model: PATH}}`")
        if self.notify is not None and self.notify.mqtt is not None and any(c in self.site for c in "/+#"):
            raise ValueError("site: with MQTT the site name is a topic level: no '/', '+' or '#'")
        return self

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for cam in cameras:
            if cam.id in seen:
                raise ValueError(f"camera id '{cam.id}' is used twice")
            seen.add(cam.id)
        return cameras


class Site:
    """A validated site.yaml with its paths resolved and its content hash."""

    def __init__(self, path: Path, config: SiteConfig):
        self.path = path
        self.config = config
        self.base = path.parent
        self.hash = hashlib.sha256(path.read_bytes()).hexdigest()

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base / p)

    @property
    def model_dir(self) -> Path:
        return self.resolve(self.config.model)

    @property
    def shadow_model_dir(self) -> Path | None:
        return self.resolve(self.config.shadow_model) if self.config.shadow_model else None

    @property
    def rule_files(self) -> list[Path]:
        return [self.resolve(r) for r in self.config.rules]

    @property
    def cameras(self) -> list[CameraConfig]:
        return [c for c in self.config.cameras if c.enabled]

    def camera_location(self, camera: CameraConfig) -> str:
        """A file camera's absolute path; a network camera's URL unchanged."""
        if camera.is_network:
            return camera.url
        return str(self.resolve(camera.url.removeprefix("file://")))

    def anchor_log(self, need_key: bool = False) -> AnchorLog | None:
        """storage.anchor's log and key (None when anchoring is off); `need_key`: UserError without a key."""
        from monitor.record.anchor import AnchorLog, load_key

        cfg = self.config.storage.anchor
        if cfg is None:
            return None
        try:
            key = load_key(cfg.key_env, self.resolve(cfg.key_file) if cfg.key_file else None)
        except UserError as err:
            raise UserError([f"{self.path}: {problem}" for problem in err.problems]) from None
        if key is None and need_key:
            raise UserError(f"{self.path}: storage.anchor: no key: set ${cfg.key_env}, or storage.anchor.key_file")
        return AnchorLog(self.resolve(cfg.log), key, self.resolve(cfg.ship_to) if cfg.ship_to else None, cfg.every)

    @property
    def notify_targets(self) -> list[str]:
        """The names rules may give in `notify:` (none without a `notify:` section)."""
        return self.config.notify.targets if self.config.notify else []

    @property
    def database_url(self) -> str:
        """SQLite paths are relative to site.yaml, like every other path in it."""
        url = self.config.storage.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and url != "sqlite:///:memory:" and not url.startswith("sqlite:////"):
            return prefix + str(self.resolve(url[len(prefix):]))
        return url


def shard_of(camera_id: str, count: int) -> int:
    """A camera's shard: a stable hash of its id alone, so adding a camera moves no other camera."""
    return int.from_bytes(hashlib.sha256(camera_id.encode()).digest()[:8], "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: '{text}' is not INDEX/COUNT (e.g. 0/3)") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard: '{text}': the index must be in 0..COUNT-1")
    return index, count


def load_site(path: str | Path) -> Site:
    path = Path(path)
    return Site(path, load_model(SiteConfig, path, env=True))
