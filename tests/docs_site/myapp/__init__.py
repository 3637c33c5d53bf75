"""``myapp:app``, the WSGI app of the README's ``sitebus serve`` example."""

from __future__ import annotations

from myapp.web import app

__all__ = ["app"]
