"""How many intra-op threads an encode uses on CPU: the cores that are actually free.

torch's OpenMP threads synchronise at the end of every kernel. When another process keeps one of
the cores busy, the thread that lands there stalls every kernel for a scheduler time slice, and
throughput collapses far below what the remaining cores could do. So while encoding we use one
thread per free core, re-measured as the encode runs:

* at the start, the instantaneous count of runnable tasks (``/proc/loadavg``), less our own;
* then, every ``WINDOW_S`` seconds, the machine's busy CPU time (``/proc/stat``) less our own
  process's CPU time over the same window: what other processes used.

``SPARSEBRIDGE_NUM_THREADS=N`` (or ``encoder.num_threads = N``) fixes the count instead. We never
use more threads than torch had when the encode started (``torch.set_num_threads`` stays a cap),
and that count is restored afterwards. Off Linux the count is left alone.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ...errors import ConfigError

ENV_VAR = "SPARSEBRIDGE_NUM_THREADS"
# Seconds of CPU accounting between two re-measurements of the foreign load.
WINDOW_S = 0.25
# Seconds over which a count that is decided once (a backend's, fixed when its model compiles) is
# measured: long enough that a task runnable for an instant does not cost a thread for a lifetime.
SETTLE_S = 0.3
# A core counts as free when less than this share of it is used by others (0.3 + 0.7 rounding).
_SLACK = 0.3
_STAT = Path("/proc/stat")
_LOADAVG = Path("/proc/loadavg")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fixed_threads(override: int | None = None) -> int | None:
    """The thread count fixed by ``override`` or ``SPARSEBRIDGE_NUM_THREADS``; None means automatic."""
    if override is not None:
        if not isinstance(override, int) or override < 1:
            raise ConfigError(f"num_threads must be a positive integer, got {override!r}")
        return override
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw or raw.lower() == "auto":
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{ENV_VAR}={raw!r}: expected a positive integer or 'auto'")
    return int(raw)


def _busy_seconds() -> float | None:
    """Machine-wide busy CPU seconds since boot (all cores), from /proc/stat; None off Linux."""
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    # guest time is already counted in user time; drop it to avoid counting it twice.
    total = sum(values[:8])
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _own_running_threads() -> int:
    """Threads of this process running right now (ours, e.g. OpenMP workers still spinning)."""
    count = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            # The state follows the parenthesised command name, which may itself contain spaces.
            if stat.read_text().rpartition(")")[2].split()[0] == "R":
                count += 1
        except (OSError, IndexError):
            continue
    return max(count, 1)


def runnable_others() -> float:
    """Tasks of other processes runnable right now (``/proc/loadavg``'s running count less ours)."""
    try:
        running = int(_LOADAVG.read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return float(max(running - _own_running_threads(), 0))


def free_threads(foreign: float, cores: int, cap: int) -> int:
    """Threads for ``cores`` cores of which others use ``foreign``: at least 1, at most ``cap``."""
    return max(1, min(cap, int(cores - foreign + _SLACK)))


def settled_threads(window_s: float = SETTLE_S) -> int:
    """A thread count decided once: the fixed one if asked, else the cores others left free over a window.

    The window is what an instantaneous count of runnable tasks lacks: a kernel worker or a process
    that is exiting, runnable at the moment of a look, would otherwise take a core from a backend
    for the life of the process (issue 24: the first-run OpenVINO bf16 encode at 0.71x of a
    prepared one). Off Linux, the instantaneous count.
    """
    fixed = fixed_threads()
    if fixed is not None:
        return fixed
    cores = usable_cores()
    busy0, own0, start = _busy_seconds(), _own_seconds(), time.monotonic()
    if busy0 is None:
        return free_threads(runnable_others(), cores, cores)
    time.sleep(window_s)
    busy1, own1, wall = _busy_seconds(), _own_seconds(), time.monotonic() - start
    foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
    return free_threads(foreign, cores, cores)


class ThreadBudget:
    """Sets torch's intra-op thread count to the free cores, re-measured as ``tick`` is called."""

    def __init__(self, cap: int, fixed: int | None = None) -> None:
        self.cap = max(1, cap)
        self.fixed = fixed
        self.cores = usable_cores()
        self.threads = self.cap
        self.foreign = 0.0
        self._mark: tuple[float, float, float] | None = None

    def _snapshot(self) -> tuple[float, float, float] | None:
        busy = _busy_seconds()
        return None if busy is None else (time.monotonic(), busy, _own_seconds())

    def _apply(self, foreign: float) -> None:
        self.foreign = foreign
        threads = free_threads(foreign, self.cores, self.cap)
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads

    def start(self) -> None:
        """Set the thread count for the next batch (the fixed one, else the free cores)."""
        if self.fixed is not None:
            self.threads = self.fixed  # asked for explicitly: no cap
            torch.set_num_threads(self.threads)
            return
        self._mark = self._snapshot()
        if self._mark is not None:
            self._apply(runnable_others())

    def tick(self) -> None:
        """Re-measure the foreign load if a window has passed since the last measurement."""
        if self.fixed is not None or self._mark is None:
            return
        now = self._snapshot()
        if now is None or now[0] - self._mark[0] < WINDOW_S:
            return
        wall = now[0] - self._mark[0]
        foreign = max(0.0, (now[1] - self._mark[1]) - (now[2] - self._mark[2])) / wall
        self._mark = now
        self._apply(foreign)


@contextmanager
def cpu_thread_budget(device: torch.device, override: int | None = None):
    """While encoding on CPU, use one intra-op thread per free core; restore torch's count after.

    Yields the ``ThreadBudget`` (call ``tick()`` between batches), or None off CPU.
    """
    if torch.device(device).type != "cpu":
        yield None
        return
    before = torch.get_num_threads()
    budget = ThreadBudget(before, fixed_threads(override))
    budget.start()
    try:
        yield budget
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
