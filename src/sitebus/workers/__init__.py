"""Worker processes under the bus: one site served by many processes.

``Workers`` is the master's plugin; ``python -m sitebus.workers.worker`` is
what each worker runs. See ``docs/workers.md``.
"""

from .master import Workers, WorkersOptions

__all__ = ["Workers", "WorkersOptions"]
