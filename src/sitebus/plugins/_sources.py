"""Which files the autoreload plugin watches: the user's modules, globs, ignore patterns.

The user's code is every imported module whose file lies outside the standard
library and the installed-package directories. An editable install of the
user's own package imports from the project's source tree, so it counts as the
user's code without any special case.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import importlib.util
import os
import re
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from functools import cache
from types import ModuleType

__all__ = ["Pattern", "installed_roots", "is_ignored", "module_files", "stdlib_roots"]


def _real_dirs(paths: Iterable[str | None]) -> tuple[str, ...]:
    found = {os.path.realpath(p) for p in paths if p}
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in found))


@cache
def stdlib_roots() -> tuple[str, ...]:
    """Directories of the standard library (the base installation's, in a venv)."""
    paths = sysconfig.get_paths()
    return _real_dirs([paths.get("stdlib"), paths.get("platstdlib")])


@cache
def installed_roots() -> tuple[str, ...]:
    """Directories where installed third-party packages live."""
    paths = sysconfig.get_paths()
    dirs = [paths.get("purelib"), paths.get("platlib"), *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return _real_dirs(dirs)


def module_file(module: ModuleType) -> str | None:
    """The absolute source path of ``module``, or None for built-in and frozen ones."""
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str) or not filename:
        return None
    if filename.endswith(".pyc"):  # a sourceless or legacy import: watch its source if any
        with contextlib.suppress(ValueError):
            filename = importlib.util.source_from_cache(filename)
    return os.path.abspath(filename)


def module_files(modules: Mapping[str, ModuleType], *, include_third_party: bool) -> set[str]:
    """The files of ``modules`` that belong to the site: not stdlib, not installed packages."""
    stdlib, installed = stdlib_roots(), installed_roots()
    files: set[str] = set()
    for module in list(modules.values()):
        path = module_file(module) if isinstance(module, ModuleType) else None
        if path is None:
            continue
        real = os.path.realpath(path)
        if real.startswith(installed):
            # Checked first: site-packages sits inside the stdlib tree on some systems.
            if include_third_party:
                files.add(path)
        elif not real.startswith(stdlib):
            files.add(path)
    return files


def is_ignored(path: str, patterns: Iterable[str]) -> bool:
    """True if any component of ``path`` matches one of the shell ``patterns``."""
    parts = path.split(os.sep)
    return any(fnmatch.fnmatchcase(part, p) for p in patterns for part in parts if part)


class Pattern:
    """A path or glob to watch, made absolute against the working directory now.

    ``*`` and ``?`` stay within one path component; ``**/`` spans any number
    of directories.
    """

    def __init__(self, spec: str | os.PathLike[str]) -> None:
        text = os.path.abspath(os.path.expanduser(os.fspath(spec)))
        self.text = text
        self.is_glob = glob.has_magic(text)
        self.recursive = "**" in text
        self._regex = re.compile(_translate(text)) if self.is_glob else None

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def matches(self, path: str) -> bool:
        if self._regex is None:
            return path == self.text
        return self._regex.fullmatch(path) is not None

    def base(self) -> str:
        """The deepest directory of the pattern with no wildcard in it."""
        if not self.is_glob:
            return os.path.dirname(self.text)
        parts = self.text.split(os.sep)
        fixed = []
        for part in parts[:-1]:
            if glob.has_magic(part):
                break
            fixed.append(part)
        return os.sep.join(fixed) or os.sep

    def existing_files(self) -> list[str]:
        if not self.is_glob:
            return [self.text] if os.path.isfile(self.text) else []
        return [p for p in glob.glob(self.text, recursive=True) if os.path.isfile(p)]

    def directories(self) -> list[str]:
        """Directories to watch so that every (future) match is seen."""
        base = self.base()
        if not self.is_glob:
            return [base]
        found = {os.path.dirname(p) for p in glob.glob(self.text, recursive=True)}
        found.add(base)
        if self.recursive:
            for root, dirs, _files in os.walk(base):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.add(root)
        return sorted(found)


def _translate(pattern: str) -> str:
    """A regex for a glob whose ``*`` does not cross ``/`` and whose ``**/`` does."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**" + os.sep, i):
            out.append(f"(?:.*{re.escape(os.sep)})?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(f"[^{re.escape(os.sep)}]*")
        elif c == "?":
            out.append(f"[^{re.escape(os.sep)}]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def nearest_existing_dir(path: str) -> str:
    """``path`` itself if it is a directory, else its nearest existing ancestor."""
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def current_modules() -> dict[str, ModuleType]:
    """A snapshot of ``sys.modules`` (one C-level copy: safe while others import)."""
    return sys.modules.copy()
