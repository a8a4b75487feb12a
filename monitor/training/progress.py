"""Progress bars on stderr (rich), quiet when stderr is not a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from monitor.ops.logs import kv

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)


@contextmanager
def progress_bar(what: str, total: int) -> Iterator[Callable[[], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  disable=not sys.stderr.isatty(), transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda: progress.advance(task)


class EpochBar:
    """One bar over every epoch of every fit (folds, then members); each epoch is also a debug log line."""

    def __init__(self, progress: Progress, task: TaskID):
        self._progress, self._task, self._total = progress, task, 0

    def add(self, epochs: int) -> None:
        self._total += epochs
        self._progress.update(self._task, total=self._total)

    def epoch_reporter(self, what: str, epochs: int) -> Callable[[int, dict[str, float]], None]:
        def report(epoch: int, logs: dict[str, float]) -> None:
            scores = {k: round(float(v), 4) for k, v in logs.items() if k.endswith(("loss", "accuracy"))}
            log.debug(kv(event="epoch", fit=what, epoch=f"{epoch}/{epochs}", **scores))
            shown = "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
            self._progress.update(self._task, advance=1, description=f"{what} epoch {epoch}/{epochs}  {shown}")
        return report


@contextmanager
def epoch_bar() -> Iterator[EpochBar]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=True) as progress:
        yield EpochBar(progress, progress.add_task("training", total=0))
