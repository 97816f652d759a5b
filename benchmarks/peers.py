"""The peer environments of ``benchmarks/encode.py``: sentence-transformers' ONNX and OpenVINO backends,
each in a virtual environment of its own, built from pinned requirement files in ``benchmarks/peers/``.

    python benchmarks/peers.py setup                 # build every peer that is missing or out of date
    python benchmarks/peers.py setup st5-onnx        # one of them
    python benchmarks/peers.py lock st6-openvino     # re-resolve NAME.in into the pinned NAME.txt
    python benchmarks/peers.py python st5-onnx       # print the peer's interpreter

Why separate environments: sentence-transformers' ONNX backend needs optimum-onnx, which pins
transformers<4.58 (so sentence-transformers 5.x), and optimum-intel pulls packages this project's own
environment does not want. The environments live in a cache folder (``$SPARSEBRIDGE_PEERS``, default
``~/.cache/sparsebridge/peers``), never in the repository, and ``encode.py`` looks for them there.

Each environment gets the CPU build of torch first (``torch==2.13.0``: a looser pin pulls several GB of
CUDA), then the pinned file with ``--no-deps``, so what is installed is exactly the file. ``lock``
resolves the ``.in`` file freshly and freezes the result; commit the new ``.txt`` when the move is meant.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "peers"
TORCH = "torch==2.13.0"
# Packages a resolve may pull that must not stay: PyPI's torchvision does not import beside the CPU
# torch build (its operators are missing), and no peer variant needs it.
DROPPED = ("torchvision",)
STAMP = ".sparsebridge-peer"


def cache_dir() -> Path:
    """Where the peer environments live (``$SPARSEBRIDGE_PEERS`` or ``~/.cache/sparsebridge/peers``)."""
    return Path(os.environ.get("SPARSEBRIDGE_PEERS") or Path.home() / ".cache" / "sparsebridge" / "peers")


def peer_python(name: str) -> Path:
    """The interpreter of peer ``name`` (it may not exist yet: ``setup`` builds it)."""
    return cache_dir() / name / "bin" / "python"


def names() -> list[str]:
    """Every peer this folder defines (one ``NAME.in`` each)."""
    return sorted(p.stem for p in HERE.glob("*.in"))


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _venv(folder: Path) -> Path:
    _run([sys.executable, "-m", "venv", "--clear", str(folder)])
    python = folder / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    _run([str(python), "-m", "pip", "install", "-q", TORCH])
    return python


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def setup(name: str) -> Path:
    """Build peer ``name`` from its pinned file, unless the cache already holds that exact build."""
    pinned = HERE / f"{name}.txt"
    if not pinned.is_file():
        raise SystemExit(f"Error: no pinned file {pinned}; run `python benchmarks/peers.py lock {name}` first")
    folder = cache_dir() / name
    stamp = folder / STAMP
    if stamp.is_file() and stamp.read_text().strip() == _digest(pinned) and peer_python(name).is_file():
        print(f"{name}: up to date at {folder}")
        return peer_python(name)
    python = _venv(folder)
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(pinned)])
    _run(
        [
            str(python),
            "-c",
            "import sentence_transformers, torch; print(sentence_transformers.__version__, torch.__version__)",
        ]
    )
    stamp.write_text(_digest(pinned) + "\n")
    print(f"{name}: ready at {folder}")
    return python


def lock(name: str) -> Path:
    """Resolve ``NAME.in`` in a scratch environment and write every installed version to ``NAME.txt``."""
    source = HERE / f"{name}.in"
    with tempfile.TemporaryDirectory(prefix=f"peer-{name}-") as scratch:
        python = _venv(Path(scratch) / "venv")
        _run([str(python), "-m", "pip", "install", "-q", "-r", str(source), TORCH])
        for package in DROPPED:
            subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", package], check=False)
        frozen = subprocess.run(
            [str(python), "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
    # torch's local label (+cpu) names the build, which the install step already chose.
    pins = sorted((line.split("+")[0] if line.lower().startswith("torch==") else line) for line in frozen if line)
    header = [
        f"# Pinned from {source.name} by `python benchmarks/peers.py lock {name}`; do not edit by hand.",
        f"# Installed with --no-deps after {TORCH} (the CPU build).",
    ]
    target = HERE / f"{name}.txt"
    target.write_text("\n".join(header + pins) + "\n")
    print(f"{name}: wrote {len(pins)} pins to {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("setup", "lock", "python", "remove"))
    parser.add_argument("names", nargs="*", help=f"peers (default: all of {', '.join(names())})")
    args = parser.parse_args()
    chosen = args.names or names()
    unknown = sorted(set(chosen) - set(names()))
    if unknown:
        raise SystemExit(f"Error: unknown peer {unknown[0]!r}; known: {', '.join(names())}")
    for name in chosen:
        if args.command == "setup":
            setup(name)
        elif args.command == "lock":
            lock(name)
        elif args.command == "remove":
            shutil.rmtree(cache_dir() / name, ignore_errors=True)
        else:
            print(peer_python(name))


if __name__ == "__main__":
    main()
