"""Texts that stop a multiprocessing worker at a known point, for tests that kill a busy worker.

A ``GatedText`` is a ``str`` that, when a worker process unpickles it off the task queue, writes a
file named after the worker's pid into ``folder`` and then blocks until ``folder/go`` exists (once
per process). The worker has then taken its chunk off the queue and holds it: the state a test
needs before a SIGKILL, reached by an event (the file), not by waiting some seconds or CPU ticks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_GATED_PIDS: set[int] = set()
POLL_S = 0.01  # how often a held worker looks for the go file; paces the wait, decides nothing


def _arrive(folder: str, value: str) -> str:
    """Unpickling hook, run in the worker: say "holding" once, wait for the go file, go on."""
    pid = os.getpid()
    if pid not in _GATED_PIDS:
        _GATED_PIDS.add(pid)
        (Path(folder) / f"holding-{pid}").touch()
        while not (Path(folder) / "go").exists():
            time.sleep(POLL_S)
    return value


class GatedText(str):
    """A text that holds the worker unpickling it (see the module docstring)."""

    folder: str

    def __new__(cls, value: str, folder: str | os.PathLike[str]) -> GatedText:
        text = super().__new__(cls, value)
        text.folder = str(folder)
        return text

    def __reduce__(self) -> tuple:
        return _arrive, (self.folder, str(self))
