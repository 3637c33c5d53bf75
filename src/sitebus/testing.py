"""The test kit: a site file started for a test, on a free port, and a bare bus.

``running_site(path_or_table)`` starts the site a file (or a ``dict`` of the
same shape) describes, the way ``sitebus run`` assembles it, but serving on
a free port of 127.0.0.1 and with the process left alone: no signal
handlers, no daemon, no PID file, no change of user, no autoreload. It
stops the site and closes its sockets when the ``with`` block ends, even
when the block raises.

Installed with sitebus, this module is also a pytest plugin (the ``pytest11``
entry point), giving every project three fixtures without a conftest import:

- ``sitebus_config``: override it in a test module or conftest to return the
  site file's path (or a ``dict``); the default fails, saying so;
- ``sitebus_site``: the site of ``sitebus_config``, started for the test
  (a ``RunningSite``: ``.url``, ``.bus``, ``.app``);
- ``sitebus_bus``: a fresh started ``Bus`` with nothing subscribed, for
  testing a plugin on its own; exited after the test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from .bus import Bus
from .errors import ConfigError
from .site.assemble import Site, assemble, site_bus
from .site.config import SiteConfig, check_imports, load, load_table

__all__ = ["RunningSite", "config_for_tests", "running_site"]

# Where a test's servers listen, whatever the file binds: a port the system picks.
TEST_BIND = "127.0.0.1:0"


class RunningSite:
    """A started site: ``url`` (the first server's base URL, no trailing slash),
    ``urls`` (every server's), ``bus`` (the started bus), ``app`` (the site's one
    app: the dispatcher of every ``[[app]]``, wrapped in the site middleware)
    and ``site`` (everything assembled)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.bus: Bus = site.bus
        self.app: Any = site.app
        self.config: SiteConfig = site.config
        self.urls: list[str] = site.urls()
        self.url: str = self.urls[0]

    def __repr__(self) -> str:
        return f"<RunningSite {self.url}>"


def config_for_tests(config: SiteConfig) -> SiteConfig:
    """``config`` made fit for a test: every server on a free port of 127.0.0.1,
    and signals, daemon, PID file, privileges and autoreload off."""
    servers = tuple(server.replace(bind=(TEST_BIND,), unix_mode=None) for server in config.servers)
    return config.replace(
        servers=servers, signals=None, daemon=None, pidfile=None, privileges=None, autoreload=None
    )


@contextlib.contextmanager
def running_site(
    site: str | os.PathLike[str] | Mapping[str, Any],
    *,
    directory: str | os.PathLike[str] | None = None,
) -> Iterator[RunningSite]:
    """Start the site file at ``site`` (or the ``dict`` ``site``) for the ``with`` block.

    A ``dict``'s relative paths and import strings start at ``directory``
    (the current directory when None). Each call has its own bus, so sites
    may follow one another in one process. Raises ``ConfigError`` for a bad
    file, what ``check_imports`` raises for an import that fails, and
    ``StartError`` when the site does not start (having stopped what did).
    """
    config = load_table(site, directory) if isinstance(site, Mapping) else load(site)
    config = config_for_tests(config)
    bus = site_bus(config)
    assembled = assemble(config, check_imports(config), bus)
    assembled.subscribe()
    try:
        bus.start()
        yield RunningSite(assembled)
    finally:
        try:
            bus.exit()
        finally:
            assembled.unsubscribe()


try:
    import pytest
except ModuleNotFoundError:  # running_site needs no pytest; the fixtures do
    pass
else:

    @pytest.fixture
    def sitebus_config() -> str | os.PathLike[str] | Mapping[str, Any]:
        """The site the ``sitebus_site`` fixture starts: override it to return a path or dict."""
        raise ConfigError(
            "the sitebus_site fixture needs a site: override the sitebus_config fixture "
            "in your test module or conftest.py to return the path of a site file (or a "
            "dict of the same shape), e.g. @pytest.fixture def sitebus_config(): "
            'return "site.toml"'
        )

    @pytest.fixture
    def sitebus_site(
        sitebus_config: str | os.PathLike[str] | Mapping[str, Any],
    ) -> Iterator[RunningSite]:
        """The site of ``sitebus_config``, started on a free port for the test, then stopped."""
        with running_site(sitebus_config) as site:
            yield site

    @pytest.fixture
    def sitebus_bus() -> Iterator[Bus]:
        """A fresh started bus with nothing subscribed; exited after the test."""
        bus = Bus()
        bus.start()
        try:
            yield bus
        finally:
            bus.exit()
