"""CherryPy compatibility: code written for ``cherrypy.engine`` running on a sitebus bus.

``wspbus`` is a bus with the interface of CherryPy 18's ``wspbus.Bus``,
implemented over a sitebus ``Bus``; ``engine`` puts one in the place of
``cherrypy.engine``, with CherryPy's own server, signal handler and
autoreloader left off; ``app`` mounts a CherryPy application in a site
(``cherrypy = "module:root"`` in an ``[[app]]`` of the site file). Only
``engine`` and ``app`` import CherryPy, and the site runner imports them only
for a site that mounts a CherryPy app. The core never imports this package.
"""
