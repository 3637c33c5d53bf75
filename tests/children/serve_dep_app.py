"""A WSGI app whose module imports a dependency that is not installed.

The missing name, ``serve_dep``, is a prefix of this module's own name: the
error must still name the dependency, not call this module missing.
"""

import serve_dep  # noqa: F401  # missing on purpose


def app(environ, start_response):  # pragma: no cover  # never imported successfully
    start_response("200 OK", [])
    return [b""]
