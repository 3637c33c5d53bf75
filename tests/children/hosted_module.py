"""The module a host loads: the site file named by SITEBUS_TEST_SITE as WSGI and ASGI callables."""

from __future__ import annotations

import os

from sitebus.hosted import asgi_app, wsgi_app

SITE = os.environ["SITEBUS_TEST_SITE"]

if os.environ.get("SITEBUS_TEST_PROTOCOL") == "asgi":
    app = asgi_app(SITE)
else:
    application = wsgi_app(SITE)
