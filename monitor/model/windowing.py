"""Sliding windows of embeddings, the one rule for training and the daemon.

A window is the last T embeddings: the first ends at embedding T, then one every S new ones
(`monitor.pipeline.windows` applies the same rule live, per camera).
"""

from __future__ import annotations

import numpy as np


def window_ends(n: int, frames: int, stride: int) -> range:
    """Indices (exclusive ends) of the windows over n embeddings."""
    return range(frames, n + 1, stride)


def sliding_windows(features: np.ndarray, frames: int, stride: int) -> np.ndarray:
    """[N, D] -> [K, T, D] with the windowing the daemon uses live."""
    ends = window_ends(len(features), frames, stride)
    if not len(ends):
        return np.empty((0, frames, features.shape[1]), features.dtype)
    return np.stack([features[e - frames:e] for e in ends])


def clip_windows(features: np.ndarray, frames: int, stride: int) -> np.ndarray:
    """[N, D] -> [K, T, D]: the daemon's windows; a clip shorter than T is padded by repeating its last frame."""
    if len(features) < frames:
        pad = np.repeat(features[-1:], frames - len(features), axis=0)
        features = np.concatenate([features, pad])
    return sliding_windows(features, frames, stride)
