"""Install the dependencies of gradwatch extras from ./pyproject.toml, without gradwatch itself.

The Dockerfiles run this before copying the source, so the layer holding the dependencies is
rebuilt only when pyproject.toml changes, not on every code edit:

    python pip-deps.py collector          # pip install <dependencies + [collector] extra>
    python pip-deps.py --list agent       # print them, one per line
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """``project.dependencies`` plus each extra's, in order, without duplicates."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"pip-deps: unknown extra(s) {unknown}; known: {sorted(optional)}")
    out: list[str] = []
    for req in [*project.get("dependencies", []), *(r for e in extras for r in optional[e])]:
        if req not in out:
            out.append(req)
    return out


def main(argv: list[str]) -> int:
    listing = argv[:1] == ["--list"]
    extras = argv[1:] if listing else argv
    reqs = requirements(Path("pyproject.toml"), extras)
    if listing:
        print("\n".join(reqs))
        return 0
    return subprocess.call([sys.executable, "-m", "pip", "install", *reqs])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
