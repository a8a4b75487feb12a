"""Zone geometry, crops and masks; zones in site.yaml (checked with file:line); `har-monitor zones preview`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from monitor.cli.main import main
from monitor.cli.zones import grab_frame
from monitor.errors import UserError
from monitor.model.zones import MAX_ZONES, Zone, draw_zones, polygon_area, self_intersection
from monitor.site.config import load_site
from support.assets import asset


def test_a_rect_zone_is_its_part_of_the_frame_resized_once():
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:, 320:] = (200, 10, 10)  # the right half is red
    right = Zone.from_rect("right", (0.5, 0.0, 1.0, 1.0))
    crop = right.crop(frame, (75, 100))
    assert crop.shape == (75, 100, 3)
    assert np.all(crop == (200, 10, 10)), "nothing of the left half leaks in"


def test_outside_a_polygon_is_black_and_inside_is_the_frame():
    frame = np.full((400, 400, 3), 180, np.uint8)
    triangle = Zone("tri", ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    crop = triangle.crop(frame, (100, 100))
    assert crop[5, 5].tolist() == [180, 180, 180], "near the right-angle corner: inside"
    assert crop[95, 95].tolist() == [0, 0, 0], "beyond the hypotenuse: masked"
    assert abs((crop[:, :, 0] > 0).mean() - 0.5) < 0.03, "half the box is the triangle"


def test_polygon_area_and_self_intersection():
    square = [(0.1, 0.1), (0.5, 0.1), (0.5, 0.5), (0.1, 0.5)]
    bow_tie = [(0.1, 0.1), (0.5, 0.5), (0.5, 0.1), (0.1, 0.5)]
    assert polygon_area(square) == pytest.approx(0.16)
    assert self_intersection(square) is None
    assert self_intersection(bow_tie) == (0, 2)


def test_outlines_are_drawn_on_a_copy_with_the_episodes_zone_in_red():
    frame = np.zeros((270, 480, 3), np.uint8)
    zones = [Zone.from_rect("a", (0.0, 0.0, 0.5, 1.0)), Zone.from_rect("b", (0.5, 0.0, 1.0, 1.0))]
    drawn = draw_zones(frame, zones, highlight="b")
    assert not frame.any(), "the ring buffer's frame is untouched"
    right_edge = drawn[135, 470:]
    assert (right_edge[:, 0] > 200).any() and (right_edge[:, 1] < 100).all(), "zone b's edge is red"
    assert (drawn[135, :10, 1] > 150).any(), "zone a's edge is amber"


def write(tmp_path, cameras: list[dict], **extra) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"site": "s", "model": "m", "cameras": cameras, **extra}, sort_keys=False))
    return path


@pytest.mark.parametrize("zones, problem", [
    ([{"name": "a", "rect": [0.5, 0, 0.2, 1]}], "x0 < x1"),
    ([{"name": "a", "rect": [0, 0, 1.2, 1]}], "less than or equal to 1"),
    ([{"name": "a", "polygon": [[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]]}], "crosses itself"),
    ([{"name": "a", "polygon": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]}], "less than 0.1%"),
    ([{"name": "a", "rect": [0, 0, 1, 1]}, {"name": "a", "rect": [0, 0, 1, 1]}], "zone name 'a' used twice"),
    ([{"name": "a"}], "either `rect` or `polygon`"),
    ([{"name": f"z{i}", "rect": [0, 0, 1, 1]} for i in range(MAX_ZONES + 1)], f"at most {MAX_ZONES} items"),
    ([{"name": "a", "rect": [0, 0, 1, 1], "person_gate": True}], "need `person_detector"),
])
def test_bad_zones_are_refused_with_file_and_line(tmp_path, zones, problem):
    path = write(tmp_path, [{"id": "cam", "url": "x.mp4"}, {"id": "cam2", "url": "y.mp4", "zones": zones}])
    with pytest.raises(UserError) as err:
        load_site(path)
    assert any(problem in p for p in err.value.problems), err.value.problems
    if "person_detector" not in problem:
        assert any(p.startswith(f"{path}:") and "cameras[1].zones" in p for p in err.value.problems), err.value.problems


def test_check_exits_2_on_a_bad_zone(tmp_path, capsys):
    path = write(tmp_path, [{"id": "cam", "url": "x.mp4", "zone": "gmp", "zones": [{"name": "a", "rect": [0, 0, 1, 1]}]}])
    assert main(["check", "--cameras", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}:4: cameras[0]:" in err and "`zone` names the whole frame's zone" in err


def test_zones_preview_writes_the_frame_with_zones_and_a_grid(tmp_path, capsys):
    clip = asset("videos", "intel_worker-zone-detection.mp4")
    zones = [{"name": "door", "rect": [0.0, 0.0, 0.5, 1.0]},
             {"name": "bench", "polygon": [[0.5, 0.2], [0.95, 0.2], [0.95, 0.9]]}]
    path = write(tmp_path, [{"id": "floor", "url": str(clip), "zones": zones}])
    out = tmp_path / "floor.jpg"
    assert main(["zones", "preview", "floor", "--cameras", str(path), "--out", str(out)]) == 0
    assert "2 zones (door, bench)" in capsys.readouterr().out
    picture = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert picture.shape == (270, 480, 3), "at the camera's own resolution"
    amber = lambda rgb: int(((rgb[:, :, 0] > 200) & (rgb[:, :, 1] > 150) & (rgb[:, :, 2] < 80)).sum())
    raw = grab_frame(str(clip), 10)
    assert amber(picture) > amber(raw) + 300, "the zones' outlines"
    assert picture[20:, 48].mean() > raw[20:, 48].mean() + 20, "a white grid line at x = 0.1"
    assert main(["zones", "preview", "nope", "--cameras", str(path)]) == 2
    assert "no camera 'nope' (cameras: floor)" in capsys.readouterr().err
