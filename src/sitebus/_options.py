"""Frozen, keyword-only records, without the dataclasses module.

Every plugin takes a small immutable options object, and a few plain records
(a parsed address, a listener's timing) are the same kind of thing.
``dataclasses`` would write these for us, but importing it (it pulls in
``inspect``, ``ast`` and ``dis``) and building each class (it compiles every
generated method from source) cost about 11 ms of a process start on the
reference machine: more than the whole bus, 15% of a bare engine's start, and
paid again at every in-place restart. The few behaviours options need fit in
this base class: keyword-only construction with defaults, a ``__post_init__``
validation hook, immutability, equality, hashing, a readable repr and
``replace``. ``dataclass_transform`` tells type checkers that a subclass's
annotated attributes make its ``__init__``, as for a frozen keyword-only
dataclass.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: see bus.py
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self, dataclass_transform
else:

    def dataclass_transform(**_: object) -> object:
        """Only type checkers read this marker."""
        return lambda cls: cls


__all__ = ["Options"]

_REQUIRED: Any = object()  # the default of a field that has none


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Options:
    """Base of every options class: annotate fields, give defaults, done.

    Fields are the annotated class attributes, in order, inherited ones
    first; a field without a value is required. Defaults must be immutable
    (a tuple, not a list), since every instance shares them. ``__post_init__``
    runs after the fields are set and may check or normalise them with
    ``object.__setattr__``; ``replace()`` runs it again on the new copy.
    """

    _fields: ClassVar[dict[str, Any]] = {}

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
        for name, default in fields.items():
            value = values.get(name, default)
            if value is _REQUIRED:
                raise TypeError(f"{type(self).__name__}() missing keyword argument {name!r}")
            object.__setattr__(self, name, value)
        self.__post_init__()

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
