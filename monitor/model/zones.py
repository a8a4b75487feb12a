"""Zones of a camera's frame: named polygons in normalised coordinates (x right, y down, 0..1).

A zone is handled as a stream of its own: its bounding box is cut from the frame at the decoded
resolution, resized ONCE to the model's input, and what lies outside the polygon is blacked out
(the mask is drawn once per zone at the output size, so masking costs one multiply per frame).
The same geometry draws the outlines on evidence and on `har-monitor zones preview`.

>>> z = Zone.from_rect("left", (0.0, 0.0, 0.5, 1.0))
>>> z.area, z.box(640, 360)
(0.5, (0, 0, 320, 360))
>>> z.crop(np.full((360, 640, 3), 200, np.uint8), (75, 75)).shape
(75, 75, 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

Point = tuple[float, float]

MAX_ZONES = 8  # per camera: each zone costs one embedding per sampled frame
MIN_AREA = 0.001  # of the frame: smaller zones are a few pixels wide on most cameras


@dataclass(frozen=True)
class Zone:
    name: str
    points: tuple[Point, ...]  # normalised (x, y), at least 3, in drawing order
    gated: bool = False  # classified only while a person is in it (pipeline.zones.PersonGate)
    _masks: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_rect(cls, name: str, rect: tuple[float, float, float, float], gated: bool = False) -> Zone:
        x0, y0, x1, y1 = rect
        return cls(name, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), gated)

    @property
    def is_rect(self) -> bool:
        xs, ys = {p[0] for p in self.points}, {p[1] for p in self.points}
        return len(self.points) == 4 and len(xs) == 2 and len(ys) == 2

    @property
    def area(self) -> float:
        return polygon_area(self.points)

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The bounding box in pixels of a width x height frame: (x0, y0, x1, y1), at least 1 px each way."""
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        x0, x1 = _span(min(xs), max(xs), width)
        y0, y1 = _span(min(ys), max(ys), height)
        return x0, y0, x1, y1

    def crop(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The zone cut from a full frame, resized to size (height, width), outside the polygon black."""
        height, width = rgb.shape[:2]
        x0, y0, x1, y1 = self.box(width, height)
        out_h, out_w = size
        part = rgb[y0:y1, x0:x1]
        # linear is as cheap as FFmpeg's resize of a whole frame; below half size it would alias (it samples
        # 2x2 pixels), so there AREA, which costs 3-6x more (MEASUREMENTS.md)
        halving = part.shape[0] > 2 * out_h or part.shape[1] > 2 * out_w
        out = cv2.resize(part, (out_w, out_h), interpolation=cv2.INTER_AREA if halving else cv2.INTER_LINEAR)
        if self.is_rect:
            return out
        out *= self._mask((x0 / width, y0 / height, x1 / width, y1 / height), size)  # in place: resize made it
        return out

    def _mask(self, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
        """1 inside the polygon, 0 outside, [h, w, 1] uint8 at the output size; cached per box and size."""
        key = (box, size)
        mask = self._masks.get(key)
        if mask is None:
            bx0, by0, bx1, by1 = box
            h, w = size
            pts = np.array([[(x - bx0) / (bx1 - bx0) * w, (y - by0) / (by1 - by0) * h] for x, y in self.points])
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
            mask = self._masks[key] = mask[:, :, None]
        return mask


def _span(lo: float, hi: float, n: int) -> tuple[int, int]:
    a = min(max(int(np.floor(lo * n)), 0), n - 1)
    b = max(min(int(np.ceil(hi * n)), n), a + 1)
    return a, b


def polygon_area(points: tuple[Point, ...] | list[Point]) -> float:
    """Shoelace area (of the frame, 0..1); a self-intersecting polygon's lobes partly cancel."""
    n = len(points)
    twice = sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n))
    return abs(twice) / 2.0


def self_intersection(points: tuple[Point, ...] | list[Point]) -> tuple[int, int] | None:
    """The first pair of edges (by their first point's index) that cross, or None for a simple polygon."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a corner
            if _cross(*edges[i], *edges[j]):
                return i, j
    return None


def _cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    def orient(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    d1, d2, d3, d4 = orient(c, d, a), orient(c, d, b), orient(a, b, c), orient(a, b, d)
    return ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0.0 not in (d1, d2, d3, d4)


# -- drawing: evidence and preview ----------------------------------------------------------------

OUTLINE = (255, 200, 0)  # amber: visible on grey floors and white walls
HIGHLIGHT = (255, 40, 40)  # the zone an episode belongs to


def draw_zones(rgb: np.ndarray, zones: list[Zone], highlight: str = "") -> np.ndarray:
    """A copy of the frame with each zone's outline and name; `highlight` (a zone's name) in red, thicker."""
    out = np.ascontiguousarray(rgb).copy()
    height, width = out.shape[:2]
    scale = max(width / 640, 0.5)
    for z in zones:
        color, thick = (HIGHLIGHT, 3) if z.name == highlight else (OUTLINE, 2)
        pts = np.array([[x * (width - 1), y * (height - 1)] for x, y in z.points])
        cv2.polylines(out, [np.round(pts * 16).astype(np.int32)], True, color, max(1, round(thick * scale)),
                      cv2.LINE_AA, shift=4)
        x, y = pts.min(axis=0)
        _label(out, z.name + (" (gated)" if z.gated else ""), (int(x) + 4, int(y) + int(18 * scale)), color, scale)
    return out


def draw_grid(rgb: np.ndarray, step: float = 0.1) -> np.ndarray:
    """A copy of the frame with a grid every `step` of the width and height, labelled in normalised
    coordinates, so zones can be written down without guessing."""
    out = np.ascontiguousarray(rgb).copy()
    height, width = out.shape[:2]
    scale = max(width / 640, 0.5)
    ticks = [round(i * step, 6) for i in range(1, round(1 / step))]
    for v in ticks:
        x, y = round(v * (width - 1)), round(v * (height - 1))
        for a, b in (((x, 0), (x, height - 1)), ((0, y), (width - 1, y))):
            cv2.line(out, a, b, (255, 255, 255), 1, cv2.LINE_AA)
        _label(out, f"{v:g}", (x + 3, int(14 * scale)), (255, 255, 255), scale * 0.8)
        _label(out, f"{v:g}", (3, y - 3), (255, 255, 255), scale * 0.8)
    return out


def _label(img: np.ndarray, text: str, at: tuple[int, int], color: tuple[int, int, int], scale: float) -> None:
    """Text with a dark outline: readable on any background."""
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale
    cv2.putText(img, text, at, font, size, (0, 0, 0), max(2, round(3 * scale)), cv2.LINE_AA)
    cv2.putText(img, text, at, font, size, color, max(1, round(scale)), cv2.LINE_AA)


def preview(rgb: np.ndarray, zones: list[Zone]) -> np.ndarray:
    """The picture `har-monitor zones preview` writes (and the console shows): grid, then the zones."""
    return draw_zones(draw_grid(rgb), zones)
