"""gradwatch agent: attach to an optimizer, reduce statistics on the device, send frames.

Only the standard library, torch, zmq and msgpack are imported here; integrations live in
``gradwatch.agent.integrations`` and import their frameworks themselves.
"""

from gradwatch.agent.attach import watch
from gradwatch.agent.config import AgentConfig
from gradwatch.agent.monitor import Monitor

__all__ = ["AgentConfig", "Monitor", "watch"]
