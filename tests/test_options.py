"""Options records: keyword-only, frozen, validated, comparable."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar

import pytest

from sitebus._options import Options
from sitebus.errors import ConfigError
from sitebus.plugins.daemon import DaemonOptions
from sitebus.plugins.pidfile import PidfileOptions
from sitebus.plugins.privileges import PrivilegesOptions
from sitebus.plugins.tasks import TasksOptions


class Pool(Options):
    size: int = 4
    name: str = "pool"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"size {self.size!r} must be at least 1")
        object.__setattr__(self, "tags", tuple(self.tags))


class NamedPool(Pool):
    label: str
    kind: ClassVar[str] = "named"


def test_fields_take_defaults_and_keywords() -> None:
    pool = Pool(size=8)
    assert (pool.size, pool.name, pool.tags) == (8, "pool", ())


def test_positional_arguments_and_unknown_names_are_refused() -> None:
    with pytest.raises(TypeError):
        Pool(8)  # type: ignore[call-arg]  # keyword-only on purpose
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*sise.*fields are size"):
        Pool(sise=8)  # type: ignore[call-arg]  # a typo on purpose


def test_a_field_without_default_is_required_and_inherited_fields_come_first() -> None:
    with pytest.raises(TypeError, match="missing keyword argument 'label'"):
        NamedPool()  # type: ignore[call-arg]  # missing on purpose
    pool = NamedPool(label="a", size=2)
    assert repr(pool) == "NamedPool(size=2, name='pool', tags=(), label='a')"
    assert "kind" not in repr(pool)


def test_instances_are_frozen() -> None:
    pool = Pool()
    with pytest.raises(AttributeError, match="frozen"):
        pool.size = 2  # type: ignore[misc]  # frozen on purpose
    with pytest.raises(AttributeError, match="frozen"):
        del pool.size


def test_post_init_validates_and_normalises() -> None:
    with pytest.raises(ConfigError, match="size 0"):
        Pool(size=0)
    assert Pool(tags=["a", "b"]).tags == ("a", "b")  # type: ignore[arg-type]  # a TOML list


def test_replace_makes_a_checked_copy() -> None:
    pool = Pool(size=2, name="db")
    assert pool.replace(size=3) == Pool(size=3, name="db")
    assert pool.size == 2
    with pytest.raises(ConfigError):
        pool.replace(size=0)


def test_equality_and_hash_follow_the_fields_and_the_class() -> None:
    assert Pool(size=2) == Pool(size=2)
    assert hash(Pool(size=2)) == hash(Pool(size=2))
    assert Pool(size=2) != Pool(size=3)
    assert NamedPool(label="x") != Pool()
    assert len({Pool(), Pool(), Pool(name="other")}) == 2


def test_options_survive_pickling() -> None:
    pool = NamedPool(label="a", tags=("x",))
    assert pickle.loads(pickle.dumps(pool)) == pool


def test_a_mutable_default_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match=r"Bad\.items: the default \[\] is mutable"):

        class Bad(Options):
            items: list[str] = []  # noqa: RUF012  # the mistake under test


def test_an_immutable_mapping_is_a_fine_default() -> None:
    class Actions(Options):
        actions: MappingProxyType[str, str] = MappingProxyType({})

    assert dict(Actions().actions) == {}


class Timeouts(Options):
    graceful: float = 30.0
    listen: float | None = None
    binds: tuple[str, ...] = ("127.0.0.1:8080",)
    pair: tuple[int, str] = (0, "")
    actions: Mapping[str, str] = MappingProxyType({})
    quiet: bool = False


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"binds": "127.0.0.1:80"}, r"Timeouts\.binds: expected tuple\[str, \.\.\.\], got str"),
        ({"binds": ("a", 1)}, r"Timeouts\.binds: expected tuple\[str, \.\.\.\]"),
        ({"graceful": "30"}, r"Timeouts\.graceful: expected float, got str '30'"),
        ({"graceful": True}, r"Timeouts\.graceful: expected float, got bool"),
        ({"listen": "soon"}, r"Timeouts\.listen: expected float \| None, got str"),
        ({"pair": (1, 2)}, r"Timeouts\.pair: expected tuple\[int, str\]"),
        ({"actions": {"SIGTERM": 1}}, r"Timeouts\.actions: expected Mapping\[str, str\]"),
        ({"quiet": "yes"}, r"Timeouts\.quiet: expected bool, got str 'yes'"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_when_made_naming_the_field(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Timeouts(**values)  # type: ignore[arg-type]  # wrong on purpose


def test_values_of_the_right_type_are_taken_and_lists_become_tuples() -> None:
    """An int is a float, None fits an optional, a TOML list fills a tuple field."""
    made = Timeouts(graceful=5, listen=None, binds=["a", "b"], actions={"SIGTERM": "exit"})  # type: ignore[arg-type]  # a TOML list
    assert made.graceful == 5 and made.binds == ("a", "b")


def test_the_plugins_options_refuse_a_string_for_a_tuple_at_construction() -> None:
    """The issue's own case: a string where a tuple of addresses is expected."""
    from sitebus.servers import SocketsOptions

    with pytest.raises(ConfigError, match=r"SocketsOptions\.binds: expected tuple"):
        SocketsOptions(binds="127.0.0.1:8080")  # type: ignore[arg-type]  # wrong on purpose


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DaemonOptions(umask=0o7777), r"DaemonOptions\.umask: 0o7777 is out of range"),
        (lambda: DaemonOptions(report_timeout=-1.0), r"DaemonOptions\.report_timeout: -1\.0"),
        (lambda: DaemonOptions(report_timeout=1e10), r"report_timeout: 10000000000\.0 is out"),
        (lambda: PidfileOptions(path="p", mode=0o4755), r"PidfileOptions\.mode: 0o4755 is out"),
        (lambda: PrivilegesOptions(umask=-1), r"PrivilegesOptions\.umask: -0o1 is out of range"),
        (lambda: PrivilegesOptions(user=-1), r"PrivilegesOptions\.user: -1 is out of range"),
        (lambda: PrivilegesOptions(group=""), r"PrivilegesOptions\.group: expected a name or"),
        (lambda: TasksOptions(join_timeout=float("nan")), r"TasksOptions\.join_timeout: nan"),
    ],
)
def test_plugin_options_refuse_values_out_of_range_when_made(
    make: Callable[[], object], message: str
) -> None:
    """A negative timeout or setuid bits fail at construction, naming the option."""
    with pytest.raises(ConfigError, match=message):
        make()
