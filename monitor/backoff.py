"""The one retry policy: exponential backoff with jitter, for cameras, the store and anything that retries.

>>> b = Backoff(1.0, 60.0, jitter=0.0)
>>> [b.next() for _ in range(8)]
[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
>>> b.reset(); b.next()
1.0
"""

from __future__ import annotations

import random


class Backoff:
    """Delays of `initial`, doubling up to `maximum` seconds, each jittered down by up to `jitter` (a fraction)
    so that many clients do not retry in lockstep. `reset()` after a success starts again at `initial`."""

    def __init__(self, initial: float, maximum: float, jitter: float = 0.25, rng: random.Random | None = None):
        if not 0 < initial <= maximum or not 0 <= jitter < 1:
            raise ValueError(f"backoff: need 0 < initial ({initial}) <= maximum ({maximum}) and 0 <= jitter < 1")
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self._rng = rng or random.Random()  # nosec B311  # jitter spreads retries out, it guards nothing
        self._delay = initial

    def next(self) -> float:
        delay = self._delay * self._rng.uniform(1.0 - self.jitter, 1.0)
        self._delay = min(self.maximum, self._delay * 2)  # min() first would not help: 2x a finite float can overflow
        return delay

    def reset(self) -> None:
        self._delay = self.initial
