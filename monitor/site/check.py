"""Validate a whole site before running it: config, model bundle, rules, cameras, storage.

Every problem is collected, so a user fixes them all in one round instead of one per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from monitor.errors import UserError
from monitor.model.bundle import Bundle, load_bundle
from monitor.model.engines import EngineChoice, choose_engine
from monitor.model.frames import probe
from monitor.model.persons import PersonDetector
from monitor.ops.logs import redact
from monitor.record.db import normalize_url
from monitor.rules import RuleSet, load_rules
from monitor.site.config import Site, load_site


@dataclass(frozen=True)
class CheckedSite:
    site: Site
    bundle: Bundle
    rules: RuleSet
    engine: EngineChoice  # what runs the backbone (site.yaml's inference: and the bundle's stored conversions)
    shadow: Bundle | None = None  # shadow_model: a candidate whose head runs on the live model's embeddings
    shadow_rules: RuleSet | None = None  # the same rule files, checked against the shadow model's labels


def shadow_mismatches(live: Bundle, shadow: Bundle) -> list[str]:
    """How the two bundles' embeddings or windows differ (none: the shadow head can share the live backbone)."""
    a, b = live.manifest, shadow.manifest
    pairs = {"backbone.name": (a.backbone.name, b.backbone.name),
             "backbone.weights": (_weights_identity(live), _weights_identity(shadow)),
             "backbone.input_size": (a.backbone.input_size, b.backbone.input_size),
             "window.frames": (a.window.frames, b.window.frames),
             "window.stride": (a.window.stride, b.window.stride),
             "window.sample_fps": (a.window.sample_fps, b.window.sample_fps)}
    if a.backbone.weights == "none":  # random weights: the seed makes the network
        pairs["backbone.seed"] = (a.backbone.seed, b.backbone.seed)
    return [f"{key} is {theirs} (the model's is {ours})" for key, (ours, theirs) in pairs.items() if ours != theirs]


def _weights_identity(bundle: Bundle) -> str:
    """imagenet | none | the weights file's recorded SHA-256 (else its resolved path)."""
    spec = bundle.manifest.backbone
    if spec.weights in ("imagenet", "none"):
        return spec.weights
    return spec.sha256 or str(Path(bundle.weights_location()).resolve())


def shadow_problems(site: Site, live: Bundle | None) -> tuple[Bundle | None, RuleSet | None, list[str]]:
    """The shadow bundle and its rules, or the problems that keep it from running beside `live`."""
    shadow_dir = site.shadow_model_dir
    if shadow_dir is None or live is None:
        return None, None, []
    where = f"{site.path}: shadow_model"
    try:
        shadow = load_bundle(shadow_dir)
    except UserError as err:
        return None, None, [f"{where}: {p}" for p in err.problems]
    mismatches = shadow_mismatches(live, shadow)
    if mismatches:
        return None, None, [f"{where}: {shadow_dir}: cannot share the model's embeddings: {m}" for m in mismatches]
    try:
        rules = load_rules(site.rule_files, shadow.labels, shadow.manifest.groups, site.notify_targets)
    except UserError as err:
        return None, None, [f"{where}: {shadow_dir}: the rules do not fit its labels: {p}" for p in err.problems]
    return shadow, rules, []


def camera_problems(site: Site, probe_network: bool) -> list[str]:
    """File cameras must exist and decode; network cameras are opened only when asked."""
    problems = []
    for i, cam in enumerate(site.config.cameras):
        where = f"{site.path}: cameras[{i}].url"
        location = site.camera_location(cam)
        if not cam.is_network and not Path(location).is_file():
            problems.append(f"{where}: file not found: {location}")
            continue
        if cam.is_network and not probe_network:
            continue
        error = probe(location, cam.open_timeout_seconds)
        if error:
            problems.append(f"{where}: {redact(error)}")
    return problems


def file_problems(site: Site) -> list[str]:
    """The person detector's model and the MQTT TLS files must exist (and the detector be a MoveNet model); the
    record's anchor key must be given when anchoring is on."""
    cfg, problems = site.config, []
    if cfg.person_detector is not None:
        try:
            PersonDetector(site.resolve(cfg.person_detector.model), where=f"{site.path}: person_detector")
        except UserError as err:
            problems += err.problems
    mqtt = cfg.notify.mqtt if cfg.notify else None
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(mqtt, name, None)
        if value is not None and not site.resolve(value).is_file():
            problems.append(f"{site.path}: notify.mqtt.{name}: file not found: {site.resolve(value)}")
    try:
        site.anchor_log(need_key=True)  # the daemon signs the record's anchors: it refuses to start without the key
    except UserError as err:
        problems += err.problems
    return problems


def check_site(path: str | Path, probe_network: bool = False) -> CheckedSite:
    """Raise UserError listing every problem found; return the loaded pieces when all is well."""
    site = load_site(path)
    problems: list[str] = []
    bundle = rules = None
    try:
        bundle = load_bundle(site.model_dir)
    except UserError as err:
        problems += [f"{site.path}: model: {p}" for p in err.problems]
    engine = None
    if bundle is not None:
        try:
            inference = site.config.inference
            engine = choose_engine(bundle, inference.engine, inference.precision, f"{site.path}: inference")
        except UserError as err:
            problems += err.problems
        try:
            rules = load_rules(site.rule_files, bundle.labels, bundle.manifest.groups, site.notify_targets)
        except UserError as err:
            problems += err.problems
    shadow, shadow_rules, found = shadow_problems(site, bundle)
    problems += found
    try:
        normalize_url(site.database_url)
    except UserError as err:
        problems += [f"{site.path}: {p}" for p in err.problems]
    problems += camera_problems(site, probe_network)
    problems += file_problems(site)
    if problems:
        raise UserError(problems)
    assert bundle is not None and rules is not None and engine is not None  # else a problem was reported
    return CheckedSite(site, bundle, rules, engine, shadow, shadow_rules)
