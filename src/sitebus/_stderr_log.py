"""The command line's standard error: log lines held back until the start is over.

``sitebus serve`` writes its log with the ``Logs`` plugin on the root logger,
in the one text format every sitebus log uses (``sitebus._logformat``): the
bus's lines, the engine's and the app's alike. This is the handler it gives
the plugin, a stream handler with one addition: while the start is under way
it keeps records back, so that a start that fails prints one line (its
error) rather than the rollback's log. A record logged with
``extra={UNHELD: True}`` is written at once all the same: the line that says
what a slow start is starting.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["UNHELD", "HeldStderr"]

UNHELD = "sitebus_unheld"  # a record attribute: write this one even while holding


class HeldStderr(logging.StreamHandler[TextIO]):
    """Writes records to ``stream`` (standard error), holding them back while ``hold`` is true.

    ``finish(show=...)`` ends the hold: it writes what was held, or drops it.
    """

    def __init__(self, *, hold: bool, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._held: list[logging.LogRecord] | None = [] if hold else None

    def emit(self, record: logging.LogRecord) -> None:
        # handle() calls this under the handler's lock.
        if self._held is not None and not getattr(record, UNHELD, False):
            self._held.append(record)
        else:
            super().emit(record)

    def finish(self, *, show: bool) -> None:
        """Stop holding; write what was held if ``show``, else drop it."""
        with self.lock:  # type: ignore[union-attr]  # createLock() ran in __init__
            held, self._held = self._held or [], None
            if show:
                for record in held:
                    super().emit(record)
