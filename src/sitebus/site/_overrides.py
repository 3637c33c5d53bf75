"""``--set section.key=value``: values laid over the site file before it is validated.

A key path is dotted names; an entry of an array of tables is chosen by its
index, written ``server[1].bind`` (as error messages write it) or
``server.1.bind``. When the array has exactly one entry the index may be left
out (``server.bind``), and the index just past the end adds an entry. The
value is read as a TOML value (``8``, ``true``, ``["a", "b"]``, ``"text"``),
and when it is not one, taken as a plain string (``127.0.0.1:9000``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Iterable
from typing import Any

from ..errors import ConfigError

__all__ = ["apply_overrides", "parse_value"]

_STEP = re.compile(r"(?P<name>[^.\[\]]+)?(?P<index>(?:\[\d+\])*)")


def apply_overrides(
    raw: dict[str, Any], overrides: Iterable[str], file: str, arrays: Collection[str]
) -> dict[str, str]:
    """Apply each override to ``raw`` in place; return {key path: override} for error messages.

    ``arrays`` names the top-level sections that are arrays of tables.
    """
    given: dict[str, str] = {}
    for text in overrides:
        keypath, sep, value_text = text.partition("=")
        steps = _steps(keypath.strip())
        if not sep or not steps:
            raise ConfigError(
                f"{file}: --set {text!r}: expected section.key=value, "
                "as site.name=blog or server[0].bind=127.0.0.1:9000"
            )
        try:
            canonical = _assign(raw, steps, parse_value(value_text.strip()), arrays)
        except ValueError as exc:
            raise ConfigError(f"{file}: --set {text}: {exc}") from None
        given[canonical] = text
    return given


def parse_value(text: str) -> Any:
    """``text`` as a TOML value, or the string itself when it is not one."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _steps(keypath: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in keypath.split("."):
        match = _STEP.fullmatch(part)
        if not part or match is None:
            return []
        name = match["name"]
        if name is not None:
            steps.append(int(name) if name.isdigit() else name)
        steps.extend(int(index) for index in re.findall(r"\d+", match["index"]))
    return steps if isinstance(steps[0], str) else []


def _assign(
    raw: dict[str, Any], steps: list[str | int], value: Any, arrays: Collection[str]
) -> str:
    """Set ``value`` at ``steps`` in ``raw``, making missing tables; the canonical key path."""
    node: Any = raw
    keypath = ""
    for position, step in enumerate(steps):
        last = position == len(steps) - 1
        if isinstance(step, int):
            if not isinstance(node, list):
                raise ValueError(f"{keypath} is not an array of tables: it takes no index")
            if step > len(node):
                raise ValueError(
                    f"{keypath} has {len(node)} entries: expected an index up to {len(node)}"
                )
            if step == len(node):
                node.append({})
            keypath = f"{keypath}[{step}]"
            if last:
                raise ValueError(f"{keypath} is a table: expected a key inside it")
            node = node[step]
            continue
        if isinstance(node, list):
            if len(node) > 1:
                raise ValueError(
                    f"{keypath} has {len(node)} entries: name one, as {keypath}[0].{step}"
                )
            if not node:
                node.append({})
            node = node[0]
            keypath = f"{keypath}[0]"
        if not isinstance(node, dict):
            raise ValueError(f"{keypath} is not a table: expected a key path to a value")
        keypath = f"{keypath}.{step}" if keypath else step
        if last:
            node[step] = value
        else:
            node = node.setdefault(step, [] if position == 0 and step in arrays else {})
    return keypath
