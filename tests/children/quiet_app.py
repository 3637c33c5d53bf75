"""A WSGI app that loads no ``logging`` until a request to ``/log`` asks it to log.

``/log`` answers whether ``logging`` was loaded before that request, then logs
a warning through it.
"""

import sys


def app(environ, start_response):  # no annotations: this module imports nothing it need not
    body = b"hello"
    if environ["PATH_INFO"] == "/log":
        body = b"logging loaded before: %s" % str("logging" in sys.modules).encode()
        import logging

        logging.getLogger("quiet_app").warning("first logged after the start")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
