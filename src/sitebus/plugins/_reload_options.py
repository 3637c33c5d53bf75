"""The options of the autoreload plugin, checked when they are made."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .._options import Options
from ..errors import ConfigError

__all__ = ["DEFAULT_IGNORE", "AutoreloadOptions"]

DEFAULT_IGNORE = (
    "__pycache__",
    "*.pyc",
    "*.pyo",
    ".git",
    ".hg",
    ".svn",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",  # vim's probe file when it checks that a directory is writable
    ".DS_Store",
)
_BACKENDS = ("auto", "inotify", "watchfiles", "poll")


class AutoreloadOptions(Options):
    """How the autoreload plugin watches.

    ``paths`` are extra files or globs (``templates/**/*.html``), relative to
    the working directory when the plugin is made. ``ignore`` patterns match any component of
    a path. ``debounce`` is the quiet period, in seconds, that ends a burst of
    changes. ``backend`` is "auto" (inotify on Linux, else watchfiles),
    "inotify", "watchfiles" or "poll"; ``poll_interval`` is the period of the
    polling fallback. ``AutoreloadOptions(**table)`` takes a TOML table as is.
    """

    enabled: bool = True
    paths: tuple[str, ...] = ()
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    include_third_party: bool = False
    debounce: float = 0.05
    config_file: str | None = None
    backend: str = "auto"
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.backend not in _BACKENDS:
            raise ConfigError(
                f"autoreload backend {self.backend!r} is unknown; expected one of {_BACKENDS}"
            )
        if not self.debounce >= 0:
            raise ConfigError(f"debounce {self.debounce!r} must be a number of seconds >= 0")
        if not self.poll_interval > 0:
            raise ConfigError(
                f"poll_interval {self.poll_interval!r} must be a number of seconds > 0"
            )
        for name in ("paths", "ignore"):
            value: object = getattr(self, name)
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise ConfigError(f"{name} {value!r} must be a sequence of strings, not one string")
            items = tuple(os.fspath(i) if isinstance(i, os.PathLike) else i for i in value)
            if not all(isinstance(item, str) for item in items):
                raise ConfigError(f"{name} {value!r} must be a sequence of strings")
            # Lists from a TOML table become tuples: the options stay immutable.
            object.__setattr__(self, name, items)
