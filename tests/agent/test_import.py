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

    assert set(ga.__all__) == {"AgentConfig", "Monitor", "NullMonitor", "watch"}


def test_import_agent_sends_stats_without_numpy(tmp_path: object) -> None:
    # torch does not require numpy, so neither may the agent (a `.numpy()` call would raise).
    code = (
        "import sys\n"
        "sys.modules['numpy'] = None  # import numpy now raises ImportError\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "import torch, zmq\n"
        "import gradwatch.agent as ga\n"
        "from gradwatch import wire\n"
        "ctx = zmq.Context(); pull = ctx.socket(zmq.ROUTER)\n"
        "port = pull.bind_to_random_port('tcp://127.0.0.1')\n"
        "m = torch.nn.Linear(4, 2); opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "mon = ga.watch(m, opt, run='t', endpoint=f'tcp://127.0.0.1:{port}', full_every=2)\n"
        "for _ in range(2):\n"
        "    loss = m(torch.randn(3, 4)).sum(); loss.backward(); opt.step(); mon.log(loss=loss)\n"
        "    opt.zero_grad()\n"
        "mon.close()\n"
        "kinds = []\n"
        "while pull.poll(2000):\n"
        "    f = wire.decode(pull.recv_multipart()[-1]); kinds.append(type(f).__name__)\n"
        "    if kinds[-1] == 'Bye': break\n"
        "print('numpy' in sys.modules and sys.modules['numpy'] is not None, mon.errors, kinds)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False 0 ['Hello', 'Stats', 'Stats', 'Bye']"
