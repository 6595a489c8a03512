"""The type checker sees across modules: an error that crosses two agent modules must fail it.

``gradwatch/agent`` (and collector, trainer) link the top-level folders, so mypy resolves
``gradwatch.agent.*`` imports to the real files. Were it blind again (say a blanket
``ignore_missing_imports`` and a mapping it cannot follow), ``AgentConfig`` would be ``Any`` in
``monitor.py`` and the injected error below would pass unseen.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = '\n_probe = AgentConfig(run="typing-probe", every="1")  # a str where an int belongs\n'

pytestmark = pytest.mark.slow


def _copy_tree(dest: Path) -> None:
    for name in ("gradwatch", "agent", "collector", "trainer"):
        shutil.copytree(ROOT / name, dest / name, symlinks=True)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    cache = ROOT / ".mypy_cache"
    if cache.is_dir():  # torch's analysis is reused; only our modules are checked again
        shutil.copytree(cache, dest / ".mypy_cache")


def test_typing_mypy_fails_on_an_error_that_crosses_two_agent_modules(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    monitor = tmp_path / "agent" / "monitor.py"
    monitor.write_text(monitor.read_text() + PROBE)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gradwatch/agent/monitor.py" in proc.stdout, proc.stdout
    assert 'Argument "every" to "AgentConfig" has incompatible type "str"' in proc.stdout, (
        proc.stdout
    )
