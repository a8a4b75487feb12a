"""`har-monitor zones preview --cameras site.yaml CAMERA [--out FILE.jpg] [--at SECONDS]`: a camera's
frame with its zones and a coordinate grid (every 0.1 of the width and height), so zones can be
written into site.yaml without guessing. Needs no model and no TensorFlow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monitor.errors import UserError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    zones = sub.add_parser("zones", help="a camera's zones").add_subparsers(dest="zones_command", required=True)
    preview = zones.add_parser("preview", help="write a snapshot of a camera with its zones and a coordinate grid")
    preview.add_argument("camera", metavar="CAMERA", help="the camera's id in site.yaml")
    preview.add_argument("--cameras", required=True, type=Path, metavar="SITE_YAML")
    preview.add_argument("--out", type=Path, metavar="FILE.jpg", help="default: CAMERA-zones.jpg here")
    preview.add_argument("--at", type=float, default=0.0, metavar="SECONDS",
                         help="files: the frame this far in (default: the first)")
    preview.set_defaults(func=cmd_preview)


def cmd_preview(args: argparse.Namespace) -> int:
    from monitor.evidence.media import encode_jpeg
    from monitor.model.zones import preview
    from monitor.site.config import load_site

    site = load_site(args.cameras)
    cam = next((c for c in site.config.cameras if c.id == args.camera), None)
    if cam is None:
        known = ", ".join(c.id for c in site.config.cameras)
        raise UserError(f"{site.path}: no camera '{args.camera}' (cameras: {known})")
    rgb = grab_frame(site.camera_location(cam), cam.open_timeout_seconds, args.at)
    out = args.out or Path(f"{cam.id}-zones.jpg")
    try:
        out.write_bytes(encode_jpeg(preview(rgb, [z.geometry() for z in cam.zones])))
    except OSError as exc:
        raise UserError(f"--out: cannot write {out}: {exc.strerror}") from None
    height, width = rgb.shape[:2]
    print(f"{out}: camera {cam.id}, {width}x{height}, {len(cam.zones)} zones"
          + (f" ({', '.join(z.name for z in cam.zones)})" if cam.zones else " (the whole frame is one stream)"))
    return 0


def grab_frame(location: str, timeout: float, at: float = 0.0):
    """One decoded frame (uint8 RGB at the camera's resolution): the first at or after `at` seconds."""
    import av

    from monitor.model.frames import open_container
    from monitor.ops.logs import redact

    try:
        with open_container(location, timeout, timeout) as container:
            for frame in container.decode(video=0):
                if frame.time is None or frame.time >= at:
                    return frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UserError(f"cannot read the camera: {redact(str(exc))}") from None
    raise UserError(f"cannot read the camera: no frame{f' at {at:g} s or later' if at else ''}")
