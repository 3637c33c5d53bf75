"""argparse types for the command line's numbers: one range check, one way to say it.

A value out of range is a usage error that quotes what was typed and says
what was expected (``'0' is not a whole number from 1 to 65535``), which
argparse prints after the usage with exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

__all__ = ["ranged"]

N = TypeVar("N", int, float)


def ranged(convert: Callable[[str], N], low: N, high: N | None, what: str) -> Callable[[str], N]:
    """An argparse type: ``convert(text)`` from ``low`` to ``high`` (None: no bound), else
    ``"'TEXT' is not WHAT"``. NaN is out of every range."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (low <= value and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse
