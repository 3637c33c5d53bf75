"""The site runner: the site file, the mounting of several apps, the assembled bus.

``config.load`` reads and validates a site file; ``config.check_imports``
imports what it names; ``mount`` has the WSGI and ASGI dispatchers that put
apps of several frameworks side by side, each at its own path prefix;
``assemble`` makes the servers and plugins the file asks for on one bus; and
``run`` is what ``sitebus run`` and ``sitebus check`` do. The core never
imports this package.
"""
