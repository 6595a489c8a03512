"""gradwatch agent: attach to an optimizer, reduce statistics on the device, send frames.

Only the standard library, torch, zmq and msgpack are imported here; integrations live in
``gradwatch.agent.integrations`` and import their frameworks themselves. torch is the user's
(``gradwatch[agent]`` does not install it): importing this package without torch >= 2.1 raises
an ImportError that says what to install.
"""

from gradwatch.agent.requirement import require_torch

require_torch()

from gradwatch.agent.attach import watch  # noqa: E402
from gradwatch.agent.config import AgentConfig  # noqa: E402
from gradwatch.agent.monitor import Monitor  # noqa: E402
from gradwatch.agent.null import NullMonitor  # noqa: E402

__all__ = ["AgentConfig", "Monitor", "NullMonitor", "watch"]
