"""TOML tables into options objects, with one-line errors naming the file and key path.

Every section of the site file becomes an ``Options`` object: the site's own
sections and the existing plugins' options classes alike. ``build`` checks what
the options class cannot know (unknown keys, with a close-match suggestion, and
where in the file a value came from) and lets the class check the rest, so a
plugin's own validation runs and its message is reported with the key path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from .._options import _REQUIRED, Options, _conforms, _tuples_for_lists, _type_name
from ..errors import ConfigError

__all__ = ["FieldError", "Where", "build", "did_you_mean", "field_named", "toml_type"]

OptionsT = TypeVar("OptionsT", bound=Options)


class FieldError(ConfigError):
    """A ``__post_init__`` check of a site section that knows which field is wrong.

    ``field`` is empty when the section as a whole is (two keys that exclude
    each other).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Where:
    """The file being read, and which key paths ``--set`` overrides gave."""

    def __init__(self, file: str, overridden: Mapping[str, str] | None = None) -> None:
        self.file = file
        self.overridden = dict(overridden or {})

    def error(self, keypath: str, message: str) -> ConfigError:
        """``file: keypath: message``, naming the ``--set`` that gave the value, if one did."""
        origins = [
            text
            for path, text in self.overridden.items()
            if keypath and (path == keypath or path.startswith((f"{keypath}.", f"{keypath}[")))
        ]
        suffix = f" (from --set {origins[0]})" if origins else ""
        where = f"{self.file}: {keypath}: " if keypath else f"{self.file}: "
        return ConfigError(f"{where}{message}{suffix}")


def did_you_mean(key: str, known: Collection[str]) -> str:
    """`` did you mean "bind"?`` for a close match of ``key``, else an empty string."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f'; did you mean "{close[0]}"?' if close else ""


def toml_type(value: object) -> str:
    """What a TOML reader calls the type of ``value``."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string"}
    names |= {list: "array", tuple: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


def build(
    cls: type[OptionsT],
    table: object,
    where: Where,
    keypath: str,
    *,
    exclude: Collection[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> OptionsT:
    """``cls(**table)``, every problem raised as one line naming ``keypath.key``.

    ``exclude`` lists fields that cannot come from a file (a clock, a handler
    object); ``extra`` adds values the loader supplies itself.
    """
    if not isinstance(table, dict):
        raise where.error(keypath, f"expected a table, got {toml_type(table)} {table!r}")
    fields = {name: default for name, default in cls._fields.items() if name not in exclude}
    for key in table:
        if key not in fields:
            raise where.error(
                _join(keypath, key),
                f"unknown key{did_you_mean(key, fields)} (expected one of: {', '.join(fields)})",
            )
    missing = [name for name, default in fields.items() if default is _REQUIRED]
    for name in missing:
        if name not in table:
            raise where.error(_join(keypath, name), "missing; a value is required here")
    hints = cls._resolved_types()
    values: dict[str, Any] = {}
    for key, value in table.items():
        hint = hints.get(key)
        if hint is not None:
            value = _tuples_for_lists(value, hint)
            if not _conforms(value, hint):
                raise where.error(
                    _join(keypath, key),
                    f"expected {_type_name(hint)}, got {toml_type(value)} {value!r}",
                )
        values[key] = value
    values.update(extra or {})
    try:
        return cls(**values)
    except FieldError as exc:
        raise where.error(_join(keypath, exc.field) if exc.field else keypath, str(exc)) from exc
    except ConfigError as exc:
        # "AutoreloadOptions.debounce: -1 is out of range": the key path says the field.
        message = re.sub(rf"^{cls.__name__}\.\w+: ", "", str(exc))
        raise where.error(field_named(keypath, str(exc), table), message) from exc


def _join(keypath: str, key: str) -> str:
    return f"{keypath}.{key}" if keypath else key


def field_named(keypath: str, message: str, table: Mapping[str, Any]) -> str:
    """``section.key`` when the plugin's message names exactly one key of the table.

    The plugins' options classes name the field in their messages ("debounce
    -1 must be ..."), not as data; when one key given matches, the error points
    at it; so does a table of one key. Else the error points at the section.
    """
    named = [key for key in table if re.search(rf"\b{re.escape(key)}\b", message)]
    if len(named) != 1 and len(table) == 1:
        named = list(table)  # the defaults are valid: the one key given is at fault
    return _join(keypath, named[0]) if len(named) == 1 else keypath
