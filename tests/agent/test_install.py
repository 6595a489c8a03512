"""`pip install gradwatch[agent]` leaves the user's torch alone: into a fresh venv that holds a
torch of another version it installs no torch, and `import gradwatch.agent` then says, in one
line, what to do. Offline: pip reads only local wheels (--no-index)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OTHER_TORCH = "2.0.0"
"""Older than the agent's floor (2.1): a pip told "torch>=2.1" would have to replace it."""


def _wheel(out: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal, valid pure-Python wheel of ``name`` holding ``files``."""
    info = f"{name}-{version}.dist-info"
    entries = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    path = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for arc, text in entries.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{arc},sha256={digest.decode()},{len(data)}")
            z.writestr(arc, data)
        z.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _share_installed(venv_python: Path, names: tuple[str, ...], into: Path) -> None:
    """Make this interpreter's installed ``names`` (packages and their dist-info) visible to the
    venv through a .pth file, so pip there finds the real pyzmq and msgpack without an index."""
    into.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.lower().startswith(names):
            (into / entry.name).symlink_to(entry)
    out = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    (Path(out.stdout.strip()) / "shared.pth").write_text(f"{into}\n")


@pytest.mark.slow
def test_install_agent_extra_keeps_another_torch(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # gradwatch's wheel, built from a copy of the tree (no build/ in the checkout).
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "gradwatch", src / "gradwatch", ignore=shutil.ignore_patterns("__pycache__")
    )
    py = Path(sys.executable)
    built = _pip(py, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
                 str(src))  # fmt: skip
    if built.returncode != 0 and "setuptools" in built.stderr:
        pytest.skip(f"this environment cannot build the wheel offline: {built.stderr[-300:]}")
    assert built.returncode == 0, built.stdout + built.stderr

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    vpy = venv / "bin" / "python"
    _share_installed(vpy, ("zmq", "pyzmq", "msgpack"), tmp_path / "shared")
    torch = _wheel(tmp_path, "torch", OTHER_TORCH,
                   {"torch/__init__.py": f"__version__ = '{OTHER_TORCH}'\n"})  # fmt: skip
    assert _pip(vpy, "install", "--no-index", str(torch)).returncode == 0

    report = tmp_path / "report.json"
    got = _pip(vpy, "install", "--no-index", "--find-links", str(wheels), "--report",
               str(report), "gradwatch[agent]")  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    installed = {i["metadata"]["name"] for i in json.loads(report.read_text())["install"]}
    assert installed == {"gradwatch"}  # pyzmq and msgpack were there; torch is not asked for
    show = _pip(vpy, "show", "torch")
    assert f"Version: {OTHER_TORCH}" in show.stdout, show.stdout + show.stderr

    # The control: the requirement the extra used to carry cannot be met without replacing it.
    old = _pip(vpy, "install", "--no-index", "--find-links", str(wheels), "--dry-run",
               "torch>=2.1")  # fmt: skip
    assert old.returncode != 0 and "torch" in old.stderr

    agent = subprocess.run([str(vpy), "-c", "import gradwatch.agent"], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert agent.returncode != 0
    last = agent.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"ImportError: gradwatch.agent needs PyTorch >= 2.1, found {OTHER_TORCH}"
    )
    wire = subprocess.run([str(vpy), "-c", "import gradwatch.wire"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert wire.returncode == 0, wire.stderr  # the installed package itself works
