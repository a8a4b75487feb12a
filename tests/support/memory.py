"""Run the real command line in a child process and measure its peak memory (for inputs built to exhaust it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# The child caps its own address space, then becomes `python -m monitor ...`: a regression then fails the
# test with a MemoryError instead of taking the machine's memory (and other people's tests) with it.
_CAPPED = "import os, resource, sys; cap = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_AS, (cap, cap)); " \
          "os.execv(sys.executable, [sys.executable, '-m', 'monitor', *sys.argv[2:]])"


def run_capped(args: list[str], cap_bytes: int = 2 << 30) -> tuple[int, str, int]:
    """`har-monitor ARGS` in a child process: (exit status, stderr, peak resident memory in bytes)."""
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-c", _CAPPED, str(cap_bytes), *args],
                                 stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage (the exec keeps its pid)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return child.returncode, err.read().decode(errors="replace"), usage.ru_maxrss * 1024


def alias_bomb(levels: int = 9, key: str = "lol") -> str:
    """The "billion laughs": each level is nine aliases of the one before, 9**levels strings once expanded."""
    lines = [f'{key}0: &{key}0 ["{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}"]']
    lines += [f"{key}{i}: &{key}{i} [" + ", ".join([f"*{key}{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def assert_bomb_refused(command: list[str], plain: Path, bomb: Path) -> None:
    """`har-monitor COMMAND BOMB` exits 2 with one error at the line of an alias, in little more memory
    than `COMMAND PLAIN` (a harmless file with a mistake) takes."""
    _, _, baseline = run_capped([*command, str(plain)])
    code, err, peak = run_capped([*command, str(bomb)])
    assert code == 2 and "Traceback" not in err, err[-2000:]
    match = re.fullmatch(rf"error: {re.escape(str(bomb))}:(\d+):\d+: invalid YAML: aliases expand to more than "
                         r"\d+ nodes \(an alias bomb\?\)\n", err)
    assert match, err
    assert "*" in bomb.read_text().splitlines()[int(match.group(1)) - 1], "the line of an alias"
    assert peak < baseline + (100 << 20), f"peak {peak >> 20} MB against {baseline >> 20} MB for a plain file"
