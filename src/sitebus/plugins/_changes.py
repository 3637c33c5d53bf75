"""What counts as a change, and what must happen to changed files before a restart.

Contents are compared by hash, so a touch is not a change; Python files must
compile before the site restarts into them; their cached bytecode goes, so the
new process cannot run a stale ``.pyc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import time
from collections.abc import Iterable

__all__ = ["compile_error", "digest", "invalidate_bytecode", "modified_since", "names"]


def names(paths: Iterable[str], shown: int = 10) -> str:
    """The paths for a log line: a checkout of hundreds of files stays one short line."""
    ordered = sorted(paths)
    text = ", ".join(ordered[:shown])
    return text + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")


def modified_since(paths: Iterable[str], since: str) -> set[str]:
    """The files modified after ``since`` (ns) and not in the future.

    The old process looked at the files at ``since`` and then re-executed;
    an edit after that may have landed after this process imported the
    file and before it hashed it, so it is treated as a change. A timestamp
    in the future (clock skew) is left out: that keeps one slow edit from
    restarting every generation in turn.
    """
    if not since.isdigit():
        return set()
    start, now = int(since), time.time_ns()
    late = set()
    for path in paths:
        try:
            modified = os.stat(path).st_mtime_ns
        except OSError:
            continue
        if start < modified <= now:
            late.add(path)
    return late


def digest(path: str) -> bytes | None:
    """A hash of the file's content; None if it is missing or unreadable."""
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, lambda: hashlib.blake2b(digest_size=16)).digest()
    except OSError:
        return None


def compile_error(path: str) -> str:
    """``file:line: message`` if the Python file ``path`` does not compile, else ""."""
    if not path.endswith(".py"):
        return ""
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError:
        return ""  # deleted: the new process reports the missing module itself
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{exc.filename or path}:{exc.lineno}: {exc.msg}"
    except ValueError as exc:  # e.g. a NUL byte in the source
        return f"{path}: {exc}"
    return ""


def invalidate_bytecode(paths: Iterable[str]) -> None:
    """Make sure the new process compiles the changed sources afresh.

    CPython trusts a cached ``.pyc`` whose recorded source mtime (whole
    seconds) and size match, so an edit of the same size within the same
    second would run stale code; unchecked hash-based ``.pyc`` files are never
    validated at all. Removing the cache files is exact and leaves the user's
    files untouched. Where a cache file cannot be removed (a read-only
    ``__pycache__``), the source's mtime is moved one second forward instead,
    which the mtime check then rejects.
    """
    for path in paths:
        for optimization in ("", 1, 2):
            try:
                cache = importlib.util.cache_from_source(path, optimization=optimization)
                os.unlink(cache)
            except (FileNotFoundError, NotImplementedError, ValueError):
                continue
            except OSError:
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
