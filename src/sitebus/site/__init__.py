"""The site runner's parts: the site file, and the mounting of several apps in one site.

``config.load`` reads and validates a site file; ``config.check_imports``
imports what it names; ``mount`` has the WSGI and ASGI dispatchers that put
apps of several frameworks side by side, each at its own path prefix. The core
never imports this package.
"""
