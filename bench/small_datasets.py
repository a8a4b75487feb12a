"""Small labelled datasets for measuring how training holds up on a plant's amount of data (not a test).

`real`: 4 actions cut from the real clips in ../shared/assets/videos into 1.5 s segments, train and
test from different sources (a source = a video, or a person in the Intel one-by-one clip):

| action | train sources | test sources |
|---|---|---|
| wave   | HMDB51 SchoolRules, TrumanShow | HMDB51 RATRACE |
| juggle | UCF101 SoccerJuggling g23 | g24 |
| stand  | one-by-one persons 1-4 standing at the table | persons 5-6 |
| walk   | store-aisle; persons 1-4 walking in and out | worker-zone (hard hat, hi-vis); persons 5-6 walking in and out |

`synthetic`: the demo's stick figure (idle, walk, fall, get_up: fall and get_up are the same frames in
opposite order), test clips drawn with "looks" (backdrop, colours, scale) never seen in training.

    python bench/small_datasets.py real OUT        # OUT/train, OUT/test
    python bench/small_datasets.py synthetic OUT

The assets are read from ../shared/assets and never copied into the repository: write OUT elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np

from monitor.demo import synthetic

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "videos"
SEGMENT = 1.5  # seconds: the shortest sources (HMDB51 wave, a person walking in) last 1.5-2.5 s

# The Intel one-by-one clip (139 s, 10 fps): six people in turn walk in, stand at the table, walk out.
# (walk in from, stand from, stand until, walked out by) in seconds, read off the frames.
PEOPLE = {1: (6.5, 8.5, 18.5, 20.0), 2: (22.5, 24.5, 43.5, 45.0), 3: (50.5, 52.5, 68.5, 70.0),
          4: (74.5, 77.0, 85.5, 87.0), 5: (92.5, 94.5, 118.5, 120.0), 6: (123.5, 125.5, 134.5, 136.0)}
STANDING_PER_PERSON = 3
TRAIN_PEOPLE, TEST_PEOPLE = (1, 2, 3, 4), (5, 6)


def decode(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """RGB frames, their times (s) and the frame rate of one asset clip."""
    with av.open(str(ASSETS / name)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames, times = [], []
        for i, frame in enumerate(container.decode(stream)):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(frame.time if frame.time is not None else i / fps)
    return np.stack(frames), np.array(times) - times[0], fps


def starts(begin: float, end: float, count: int | None = None, hop: float = SEGMENT) -> list[float]:
    """Segment starts in [begin, end - SEGMENT]: every `hop`, or `count` spread evenly."""
    last = end - SEGMENT
    if last < begin - 1e-6:
        return []
    if count is not None:
        return list(np.linspace(begin, last, count)) if count > 1 else [begin]
    return list(np.arange(begin, last + 1e-6, hop))


def cut(name: str, segments: list[tuple[float, Path]]) -> None:
    frames, times, fps = decode(name)
    for start, out in segments:
        keep = (times >= start - 1e-6) & (times < start + SEGMENT - 1e-6)
        synthetic.write_video(out, frames[keep], fps)


def real(out: Path) -> None:
    def clips(split: str, action: str, source: str, begins: list[float]) -> list[tuple[float, Path]]:
        # the name less its trailing _N is the clip's group (monitor.training.dataset.group_of)
        return [(t, out / split / action / f"{source}_{k}.mp4") for k, t in enumerate(begins)]

    # Waves are short: overlapping segments (of one source, so never on both sides of a split).
    cut("hmdb51_SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi", clips("train", "wave", "schoolrules", starts(0, 2.5, hop=0.5)))
    cut("hmdb51_TrumanShow_wave_f_nm_np1_fr_med_26.avi", clips("train", "wave", "trumanshow", starts(0, 1.66)))
    cut("hmdb51_RATRACE_wave_f_nm_np1_fr_goo_37.avi", clips("test", "wave", "ratrace", starts(0, 2.46, hop=0.5)))
    cut("ucf101_v_SoccerJuggling_g23_c01.avi", clips("train", "juggle", "ucf-g23", starts(0, 8.0)))
    cut("ucf101_v_SoccerJuggling_g24_c01.avi", clips("test", "juggle", "ucf-g24", starts(0, 8.3)))
    cut("intel_store-aisle-detection.mp4", clips("train", "walk", "store-aisle", starts(0, 4.4, hop=1.0)))
    cut("intel_worker-zone-detection.mp4", clips("test", "walk", "worker-zone", starts(0, 4.7, hop=1.0)))
    segments = []
    for person, (_walk_in, stand, leave, _gone) in PEOPLE.items():
        split = "train" if person in TRAIN_PEOPLE else "test"
        # a 1.5 s segment around each walk (in, out), and a few of the standing still
        segments += clips(split, "walk", f"person{person}", [stand - SEGMENT - 0.2, leave - 0.3])
        segments += clips(split, "stand", f"person{person}", starts(stand + 0.5, leave - 0.5, STANDING_PER_PERSON))
    cut("intel_one-by-one-person-detection.mp4", segments)


SYNTHETIC_ACTIONS = ("idle", "walk", "fall", "get_up")


def synthetic_set(out: Path, per_class: int = 12, test_per_class: int = 6, frames: int = 25, size=(120, 160)) -> None:
    """Train looks 1000-1002, test looks 2000-2005; two clips per session (group); get_up = fall reversed."""
    for split, count, looks, base in (("train", per_class, 3, 1000), ("test", test_per_class, test_per_class, 2000)):
        for action in SYNTHETIC_ACTIONS:
            for k in range(count):
                motion = 10 * k + base * 1000 + synthetic.ACTIONS.index("fall" if action == "get_up" else action) * 100_000
                clip = synthetic.render_clip(action, frames, size, motion, fps=12.0, look_seed=base + k % looks)
                synthetic.write_video(out / split / action / f"{action}_g{k // 2:02d}_c{k % 2:02d}.mp4", clip, 12.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("real", "synthetic"))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.kind == "real" and not ASSETS.is_dir():
        sys.exit(f"{ASSETS} is absent (../shared/assets holds the real clips)")
    (real if args.kind == "real" else synthetic_set)(args.out)
    for split in ("train", "test"):
        counts = {p.name: len(list(p.glob("*.mp4"))) for p in sorted((args.out / split).iterdir())}
        print(split, counts)


if __name__ == "__main__":
    main()
