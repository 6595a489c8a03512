"""Import hygiene: the agent loads none of the collector's server dependencies."""

from __future__ import annotations

import subprocess
import sys


def test_import_agent_loads_no_server_packages() -> None:
    code = (
        "import sys, gradwatch.agent\n"
        "bad = [m for m in ('fastapi', 'uvicorn', 'prometheus_client', 'transformers',"
        " 'lightning', 'gradwatch.collector') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_import_agent_exports_public_names() -> None:
    import gradwatch.agent as ga

    assert set(ga.__all__) == {"AgentConfig", "Monitor", "watch"}
