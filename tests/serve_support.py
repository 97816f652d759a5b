"""A real ``sparsebridge serve`` process on an ephemeral loopback port, for the serve tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

READY = re.compile(r"sparsebridge serve: listening on (http://\S+)")
START_TIMEOUT = 180  # model loads on a shared 2-core machine; a hang, not slowness, should fail


class ServerProcess:
    """``python -m sparsebridge.cli serve --port 0 [--config FILE]`` in ``cwd``; ``url`` once it listens.

    stderr is collected (``output``) so a test can check what the server printed.
    """

    def __init__(self, cwd: Path, config: Path | None = None) -> None:
        self.cwd, self.config = cwd, config
        self.lines: list[str] = []
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None
        self._ready = threading.Event()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if k != "SPARSEBRIDGE_CONFIG"}
        env["HF_HUB_OFFLINE"] = "1"
        cmd = [sys.executable, "-m", "sparsebridge.cli", "serve", "--port", "0"]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"serve did not start (exit {self.proc.returncode}):\n{self.output}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = READY.search(line)
            if m:
                self.url = m.group(1)
                self._ready.set()

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()
