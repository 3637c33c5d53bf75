"""The built-in process plugins, one service per module.

Import the one you need from its module, e.g. ``sitebus.plugins.signals``;
nothing here is imported with ``sitebus`` itself.
"""
