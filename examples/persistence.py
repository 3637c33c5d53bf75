"""The demo site of ``examples/site/``, its bus built in Python instead of from ``site.toml``.

``sitebus run examples/site/site.toml`` (``make demo``) assembles this for
you. Written out, the same site is a ``Bus`` with five plugins: the signals,
the ``Persistence`` database of ``examples/site/visits/db.py`` (it opens at
``StartOrder.PIDFILE``, as on CherryPy's bus page), the sockets, and uvicorn
serving the four apps side by side. Ctrl-C or SIGTERM stops the site: the
server stops first (it started last, at ``StartOrder.SERVERS``), then the
database closes, because teardown runs in the reverse order of start::

    python examples/persistence.py --bind 127.0.0.1:8080 --database visits.sqlite3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "site"))  # the demo's package, visits

from visits import bottle_app, flask_app, index, starlette_app
from visits.db import Persistence

from sitebus import Bus, StartError
from sitebus.plugins.signals import Signals
from sitebus.servers import ServerOptions, Sockets, SocketsOptions, load_engine
from sitebus.site.mount import ASGIDispatcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8080")
    parser.add_argument("--database", type=Path, default=Path("visits.sqlite3"))
    args = parser.parse_args(argv)

    site = ASGIDispatcher(
        {"/starlette": starlette_app.app},
        wsgi={"/": index.app, "/flask": flask_app.app, "/bottle": bottle_app.app},
    )
    bus = Bus()
    Signals(bus).subscribe()  # Ctrl-C and SIGTERM exit; SIGHUP restarts in place
    Persistence(bus, args.database).subscribe()
    sockets = Sockets(bus, SocketsOptions(binds=(args.bind,)))
    sockets.subscribe()
    load_engine("uvicorn")(bus, site, sockets, ServerOptions()).subscribe()
    try:
        bus.start()
    except StartError:  # already logged in one line, and rolled back
        return 1
    return bus.block()


if __name__ == "__main__":
    sys.exit(main())
