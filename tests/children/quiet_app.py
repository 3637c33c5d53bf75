"""A WSGI app that loads no ``logging`` until a request to ``/log`` asks it to log.

``/log`` answers whether ``logging`` was loaded before that request, then logs
a warning through it; ``/gc`` answers the collector's thresholds and whether
the start froze the objects its imports built.
"""

import gc
import sys


def app(environ, start_response):  # no annotations: this module imports nothing it need not
    body = b"hello"
    if environ["PATH_INFO"] == "/log":
        body = b"logging loaded before: %s" % str("logging" in sys.modules).encode()
        import logging

        logging.getLogger("quiet_app").warning("first logged after the start")
    if environ["PATH_INFO"] == "/gc":
        body = b"%r %r" % (gc.get_threshold(), gc.get_freeze_count() > 0)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
