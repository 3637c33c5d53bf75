"""A WSGI app that imports ``logging`` only when a request to ``/log`` asks it to log.

``/log`` logs a warning; ``/gc`` answers the collector's thresholds and
whether the start froze the objects its imports built.
"""

import gc


def app(environ, start_response):  # no annotations: this module imports nothing it need not
    body = b"hello"
    if environ["PATH_INFO"] == "/log":
        import logging

        logging.getLogger("quiet_app").warning("first logged after the start")
    if environ["PATH_INFO"] == "/gc":
        body = b"%r %r" % (gc.get_threshold(), gc.get_freeze_count() > 0)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
