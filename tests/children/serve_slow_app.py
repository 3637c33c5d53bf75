"""A WSGI app whose import waits until the test lets it go on: a slow app import.

It reports ``importing`` first, then blocks on the hold pipe.
"""

from report import hold, report

report("importing")
hold()


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
