"""Run the oracle-parity tests against the newest sentence-transformers, outside the lock.

    python tools/parity_latest.py            # newest release on the package index
    python tools/parity_latest.py 6.4.0      # a given version

Builds a scratch virtual environment from ``requirements/lock.txt``, upgrades sentence-transformers
(and whatever it needs) past the lock, and runs every test file that uses sentence-transformers as the
oracle. Green means the lock may move (``python tools/relock.py``); red lists what a newer oracle
changed. CI never runs this: an upstream release cannot turn CI red, moving forward is a decision.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"


def oracle_test_files() -> list[str]:
    """The test files that import sentence-transformers (the oracle) somewhere."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if "sentence_transformers" in path.read_text(encoding="utf-8")
    )


def main() -> None:
    version = sys.argv[1] if len(sys.argv) > 1 else None
    requirement = f"sentence-transformers=={version}" if version else "sentence-transformers"
    with tempfile.TemporaryDirectory(prefix="sparsebridge-parity-") as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        pip = [python, "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-c", str(LOCK), "pip"], check=True)
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "-c", str(LOCK), "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
        subprocess.run([*pip, "--upgrade", requirement], check=True)
        installed = subprocess.run(
            [python, "-c", "import sentence_transformers as st; print(st.__version__)"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"oracle: sentence-transformers {installed}", flush=True)
        result = subprocess.run([python, "-m", "pytest", "-q", *oracle_test_files()], cwd=ROOT, check=False)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
