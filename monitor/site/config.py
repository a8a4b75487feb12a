"""The site configuration (site.yaml): one pydantic schema validated up front.

Relative paths are resolved against the directory of site.yaml. Secrets come from the
environment through `${VAR}` and are never logged: see `monitor.ops.logs.redact_url`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from monitor.durations import PositiveDuration
from monitor.errors import UserError
from monitor.model.zones import MAX_ZONES, MIN_AREA, Zone, polygon_area, self_intersection
from monitor.site.notify import NotifyConfig
from monitor.yamlfile import StrictModel, load_model

if TYPE_CHECKING:
    from monitor.record.anchor import AnchorLog

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
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


class CameraConfig(StrictModel):
    id: CameraId
    url: str = Field(min_length=1)
    zone: str | None = None
    enabled: bool = True
    loop: bool = False  # files only: start again at the end
    realtime: bool = True  # files only: play at the native frame rate, like a live camera
    sample_fps: float | None = Field(default=None, gt=0, le=60)  # default: the model bundle's
    queue_size: int = Field(default=16, ge=1, le=1024)
    stall_seconds: float = Field(default=10.0, gt=0)  # no frame for this long = stalled
    open_timeout_seconds: float = Field(default=10.0, gt=0)
    # FFmpeg decoder threads. Default: 1 for live cameras and paced files (the least CPU per frame,
    # and the cores are inference's), FFmpeg's choice for files read as fast as possible.
    # 0 = FFmpeg's choice: for streams one core cannot decode in real time (4K H.265).
    decode_threads: int | None = Field(default=None, ge=0, le=16)
    zones: list[ZoneConfig] = Field(default_factory=list, max_length=MAX_ZONES, description=(
        f"Parts of the frame classified as streams of their own (at most {MAX_ZONES}; each costs one embedding "
        "per sampled frame, the frame is decoded once). Without zones the whole frame is one stream, in `zone`."))

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
        scheme = urlsplit(url).scheme.lower()
        if "://" in url and scheme not in NETWORK_SCHEMES and scheme != "file":
            raise ValueError(f"unsupported scheme '{scheme}://' (expected one of {', '.join(NETWORK_SCHEMES)} or a file path)")
        if scheme in NETWORK_SCHEMES and not urlsplit(url).hostname:
            raise ValueError("URL has no host")
        return url

    @property
    def is_network(self) -> bool:
        return urlsplit(self.url).scheme.lower() in NETWORK_SCHEMES

    @property
    def decoder_threads(self) -> int:
        """`decode_threads`, or its default: 1 for live cameras and paced files, 0 for bulk reads."""
        if self.decode_threads is not None:
            return self.decode_threads
        return 1 if self.realtime or self.is_network else 0


class AnchorConfig(StrictModel):
    """Signed checkpoints of the record's hash chains, kept outside the database (monitor.record.anchor)."""

    log: str = "anchors.jsonl"  # append-only, on the daemon's disk
    key_env: str = "HAR_ANCHOR_KEY"  # the environment variable holding the HMAC key
    key_file: str | None = None  # or a file holding it (preferred: one the database's users cannot read)
    every: PositiveDuration = Field(default=300.0, le=86400)
    ship_to: str | None = None  # a copy of every anchor elsewhere: a WORM mount, another host's share


class StorageConfig(StrictModel):
    url: str = "sqlite:///violations.db"
    evidence_dir: str = "evidence"
    spool: str = "spool/events.jsonl"  # every record waits here, durably, until the database has it
    anchor: AnchorConfig | None = None  # off unless set


class QAConfig(StrictModel):
    lockout_after: int = Field(default=5, ge=1, le=100)  # wrong passwords in a row that lock an account


class EvidenceConfig(StrictModel):
    enabled: bool = True
    pre_roll_seconds: float = Field(default=5.0, ge=0, le=60)
    post_roll_seconds: float = Field(default=5.0, ge=0, le=60)
    fps: float = Field(default=5.0, gt=0, le=30)
    width: int = Field(default=480, ge=64, le=1920)  # stored frames are reduced to this width
    blur_faces: bool = False  # privacy: blur faces in stored evidence (EU plants, works councils)
    retention_days: float | None = Field(default=None, gt=0)  # evidence files only; records are never deleted


class MetricsConfig(StrictModel):
    # Unauthenticated: loopback unless the site says otherwise (0.0.0.0 where Prometheus scrapes the pod or
    # container from outside, e.g. deploy/k8s and deploy/compose set it).
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)  # 0: any free port (tests)


class InferenceConfig(StrictModel):
    max_batch: int = Field(default=32, ge=1, le=256)
    max_wait_ms: float = Field(default=50.0, ge=0, le=5000)


class ReconnectConfig(StrictModel):
    initial_seconds: float = Field(default=1.0, gt=0)
    max_seconds: float = Field(default=60.0, gt=0)


class SiteConfig(StrictModel):
    site: str = Field(min_length=1, max_length=128)
    model: str
    rules: list[str] = Field(default_factory=list)
    storage: StorageConfig = StorageConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    metrics: MetricsConfig = MetricsConfig()
    inference: InferenceConfig = InferenceConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    qa: QAConfig = QAConfig()
    cameras: list[CameraConfig] = Field(min_length=1)
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
