"""Frozen, keyword-only records, without the dataclasses module, checked when made.

Every plugin takes a small immutable options object, and a few plain records
(a parsed address, a listener's timing) are the same kind of thing.
``dataclasses`` would write these for us, but importing it (it pulls in
``inspect``, ``ast`` and ``dis``) and building each class (it compiles every
generated method from source) cost about 11 ms of a process start on the
reference machine, and a dataclass does not check its fields anyway. The few
behaviours options need fit in this base class: keyword-only construction
with defaults, a type check of every field against its annotation, a
``__post_init__`` validation hook, immutability, equality, hashing, a readable
repr and ``replace``. ``dataclass_transform`` tells type checkers that a
subclass's annotated attributes make its ``__init__``, as for a frozen
keyword-only dataclass.
"""

from __future__ import annotations

import collections.abc
import inspect
import sys
import types
import typing
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, dataclass_transform

from .errors import ConfigError

if TYPE_CHECKING:
    from typing import Self

__all__ = ["MAX_SECONDS", "Options", "check_range"]

_REQUIRED: Any = object()  # the default of a field that has none

MAX_SECONDS = 10**8
"""The longest timeout any option takes (three years): more would overflow the
operating system's timestamps when added to the clock, and no wait that long
is meant."""


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Options:
    """Base of every options class: annotate fields, give defaults, done.

    Fields are the annotated class attributes, in order, inherited ones
    first; a field without a value is required. Defaults must be immutable
    (a tuple, not a list), since every instance shares them. Each value is
    checked against its annotation when the object is made, so a string
    given where a tuple of strings is expected fails here, naming the field,
    rather than at start with a confusing message; a wrong value raises
    ``ConfigError``. ``__post_init__`` runs after the fields are set and checks
    what a type cannot say (a range, a choice); it may normalise fields with
    ``object.__setattr__``. ``replace()`` runs it again on the new copy.
    """

    _fields: ClassVar[dict[str, Any]] = {}
    _types: ClassVar[dict[str, Any] | None] = None  # resolved annotations, on first use

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = dict(cls._fields)
        for name, annotation in cls.__annotations__.items():
            if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            default = cls.__dict__.get(name, fields.get(name, _REQUIRED))
            if isinstance(default, list | dict | set):
                raise TypeError(
                    f"{cls.__name__}.{name}: the default {default!r} is mutable and would be "
                    "shared by every instance; use a tuple, frozenset or MappingProxyType"
                )
            fields[name] = default
        cls._fields = fields

    def __init__(self, **values: Any) -> None:
        fields = self._fields
        unknown = values.keys() - fields.keys()
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) "
                f"{', '.join(sorted(unknown))}; its fields are {', '.join(fields)}"
            )
        hints = self._resolved_types()
        for name, default in fields.items():
            value = values.get(name, default)
            if value is _REQUIRED:
                raise TypeError(f"{type(self).__name__}() missing keyword argument {name!r}")
            if name in values and name in hints:
                value = _tuples_for_lists(value, hints[name])
                if not _conforms(value, hints[name]):
                    raise ConfigError(
                        f"{type(self).__name__}.{name}: expected {_type_name(hints[name])}, "
                        f"got {type(value).__name__} {value!r}"
                    )
            object.__setattr__(self, name, value)
        self.__post_init__()

    @classmethod
    def _resolved_types(cls) -> dict[str, Any]:
        """The fields' annotations as objects; one that cannot be resolved is left unchecked.

        Annotations are strings (``from __future__ import annotations``), some
        naming what a module imports only for type checkers; those fields are
        simply not checked.
        """
        hints = cls.__dict__.get("_types")
        if hints is None:
            hints = {}
            for klass in reversed(cls.__mro__):
                module = sys.modules.get(klass.__module__)
                namespace = dict(vars(module)) if module is not None else {}
                for name, annotation in inspect.get_annotations(klass).items():
                    if name not in cls._fields:
                        continue
                    try:
                        # What typing.get_type_hints does, one field at a time:
                        # evaluating the annotation's own text in its module.
                        hints[name] = (
                            eval(annotation, namespace)  # an annotation, not input
                            if isinstance(annotation, str)
                            else annotation
                        )
                    except Exception:  # a name only type checkers import
                        hints.pop(name, None)
            cls._types = hints
        return hints

    def __post_init__(self) -> None:
        """Check or normalise the fields; the default accepts them as given."""

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, checked like a new instance."""
        return type(self)(**{**self._values(), **changes})

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"{type(self).__name__} is frozen: make a changed copy with replace({name}=...)"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Options) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), *self._values().values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self._values().items())
        return f"{type(self).__qualname__}({shown})"


def check_range(options: Options, name: str, low: float, high: float, expected: str) -> None:
    """Raise ``ConfigError`` naming the field unless ``low <= value <= high`` (None passes).

    For what a type cannot say: a timeout of zero seconds or more
    (``0, MAX_SECONDS, "seconds from 0 to 1e8"``), permission bits
    (``0, 0o777, "permission bits 0 to 777 (octal)"``). NaN is out of any range.
    """
    value = getattr(options, name)
    if value is not None and not low <= value <= high:
        shown = oct(value) if "octal" in expected and isinstance(value, int) else repr(value)
        raise ConfigError(f"{type(options).__name__}.{name}: {shown} is out of range: {expected}")


def _tuples_for_lists(value: object, hint: Any) -> object:
    """A list where the annotation wants a tuple becomes one: TOML and JSON have only lists."""
    if not isinstance(value, list):
        return value
    wants_tuple = any(
        typing.get_origin(arg) is tuple or arg is tuple
        for arg in (typing.get_args(hint) if _is_union(hint) else (hint,))
    )
    return tuple(value) if wants_tuple else value


def _is_union(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return origin is Union or origin is types.UnionType


def _conforms(value: object, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint``; True for what cannot be checked."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if _is_union(hint):
        return any(_conforms(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(item, args[0]) for item in value)
        return not args or (len(args) == len(value) and all(map(_conforms, value, args)))
    if origin in (frozenset, set, collections.abc.Set):
        return isinstance(value, origin) and all(_conforms(item, args[0]) for item in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, collections.abc.Mapping) and all(
            _conforms(key, args[0]) and _conforms(item, args[1]) for key, item in value.items()
        )
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return callable(value)
    if origin is not None:
        hint = origin
    if not isinstance(hint, type):
        return True
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    try:
        return isinstance(value, hint)
    except TypeError:  # a protocol that is not runtime-checkable
        return True


def _type_name(hint: Any) -> str:
    """``tuple[str, ...]``, ``float | None``: the annotation as a person would write it."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")
