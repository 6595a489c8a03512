"""gradwatch: a training-health monitor for PyTorch runs.

The in-trainer agent is ``gradwatch.agent``, the out-of-process service ``gradwatch.collector``,
the demo training program ``gradwatch.trainer``; ``gradwatch.wire`` is the protocol between them.
"""

__version__ = "0.1.0"
