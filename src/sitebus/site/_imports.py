"""Import strings of the site file, ``"pkg.module:attr"``, resolved with ``importlib``.

Nothing in the file is evaluated: a string names a module and an attribute
path in it, and that is all. Errors say which of the two went wrong, and when
a module exists but one of *its* imports is missing, they name that missing
dependency rather than claiming the module itself does not exist.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

from ..errors import ImportStringError

__all__ = ["check_form", "import_object", "search_first"]

FORM = '"<module>:<attribute>"'


def check_form(spec: str) -> str | None:
    """Why ``spec`` is not of the form ``module:attr``; None when it is."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        return f"{spec!r} is not an import string: expected the form {FORM}"
    if not all(part.isidentifier() for part in module_name.split(".")):
        return f"{spec!r} is not an import string: {module_name!r} is not a module name"
    if not all(part.isidentifier() for part in attr.split(".")):
        return f"{spec!r} is not an import string: {attr!r} is not an attribute path"
    return None


def search_first(directories: Iterable[str]) -> None:
    """Put ``directories`` first on ``sys.path``, in the order given, each once.

    A site is started from its own folder, as with gunicorn and uvicorn, and
    its file names modules beside it: both directories must win over an
    installed module of the same name.
    """
    for directory in reversed([os.path.abspath(d) for d in directories]):
        while directory in sys.path:
            sys.path.remove(directory)
        sys.path.insert(0, directory)


def import_object(spec: str) -> Any:
    """The object ``spec`` names; ``ImportStringError`` saying what went wrong otherwise."""
    problem = check_form(spec)
    if problem is not None:
        raise ImportStringError(problem)
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise ImportStringError(
                f"cannot import {spec!r}: there is no module named {missing!r}"
            ) from exc
        raise ImportStringError(
            f"cannot import {spec!r}: module {module_name!r} needs {missing!r}, "
            "which is not installed"
        ) from exc
    except Exception as exc:
        raise ImportStringError(
            f"cannot import {spec!r}: importing module {module_name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ImportStringError(
                f"cannot import {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return found
