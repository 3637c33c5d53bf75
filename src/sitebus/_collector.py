"""The cyclic garbage collector held back while a site's code is imported.

Shared by ``sitebus serve`` and ``sitebus run``: both import apps and
engines that build tens of thousands of long-lived objects.
"""

from __future__ import annotations

import gc

__all__ = ["pause_collector", "resume_collector"]


def pause_collector() -> tuple[int, int, int]:
    """Hold the cyclic garbage collector back while the app and the engine are imported.

    Importing them builds tens of thousands of objects that live as long as
    the process, and the collector scans the pile again and again as it
    grows: about 3% of a start (and of an in-place restart) on the reference
    machine. Returns the thresholds that ``resume_collector`` puts back.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(0)  # no automatic collection; gc.collect() still works
    return thresholds


def resume_collector(thresholds: tuple[int, int, int]) -> None:
    """Freeze what the imports built, then let the collector run again.

    Frozen objects are out of the collector's sight for good, as the gc
    module's documentation suggests for a server's start-up heap: no pause to
    scan them now, and none in any later full collection either. The price is
    that a reference cycle that became garbage during the imports is never
    freed. An app that set thresholds of its own meanwhile keeps them.
    """
    if gc.get_threshold()[0] == 0:
        gc.freeze()
        gc.set_threshold(*thresholds)
