"""A Ray worker set-up hook that holds one encode actor mid-run, for the test that kills it.

``hold_first_encode_batch`` runs in every Ray worker process of the test's Ray session (its
``worker_process_setup_hook``) and wraps sparsebridge's encode actor: the first actor of the whole
run to finish encoding a batch claims the gate folder (an exclusive create, so exactly one, once),
writes its pid to ``held`` and waits there, its batch encoded but not handed back. The test kills
that pid: the kill falls mid-run, past model loading, with a batch in flight, on a quiet or a busy
machine alike. Restarted actors find the claim taken and run as usual.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FOLDER_VAR = "SB_TEST_RAY_GATE"  # the gate folder, handed to the workers through the runtime env
HOLD_S = 600  # a held actor goes on after this long, so a test that never kills it fails, not hangs
POLL_S = 0.05  # paces the file checks only; nothing is decided by it


def hold_first_encode_batch() -> None:
    """Set-up hook: wrap ``_Encode.__call__`` so that the first batch of the run is held (see above)."""
    folder = os.environ.get(FOLDER_VAR)
    if not folder:
        return
    from sparsebridge import ray as sb_ray

    real = sb_ray._Encode.__call__

    def call(self, batch):
        out = real(self, batch)
        try:
            os.close(os.open(Path(folder) / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return out
        tmp = Path(folder) / f"held.{os.getpid()}"
        tmp.write_text(str(os.getpid()), encoding="utf-8")
        os.replace(tmp, Path(folder) / "held")  # whole, or not there: the test reads a complete pid
        deadline = time.monotonic() + HOLD_S
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
        return out

    sb_ray._Encode.__call__ = call


def wait_held(folder: Path, timeout: float) -> int | None:
    """The pid of the held actor once it says so, or None if none did within ``timeout`` (a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "held").exists():
            return int((folder / "held").read_text(encoding="utf-8"))
        time.sleep(POLL_S)
    return None
