"""Option declarations: types from annotations, checks named by the declared flag."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from compgraph.errors import ConfigError
from compgraph.options import Options, declaration, declared, option, value_type


@dataclass(frozen=True, kw_only=True)
class Example(Options):
    size: int = option(4, "How many.", minimum=1)
    rate: float | None = option(None, "How fast.", positive=True, flags=("--lr",))
    kinds: tuple[str, ...] = option(("a",), "Which.", choices=("a", "b"))
    plain: int = 0


def test_declared_fields_in_order_and_plain_fields_left_out():
    assert [f.name for f, _ in declared(Example)] == ["size", "rate", "kinds"]
    plain = next(f for f in dataclasses.fields(Example) if f.name == "plain")
    assert declaration(plain) is None


def test_value_types_come_from_annotations():
    assert value_type(Example, "size") == (int, False)
    assert value_type(Example, "rate") == (float, False)
    assert value_type(Example, "kinds") == (str, True)


def test_flags_default_to_the_field_name_and_errors_name_the_declared_flag():
    assert declared(Example)[0][1].flag("size") == "--size"
    with pytest.raises(ConfigError, match=r"^--lr must be positive, not -1"):
        Example(rate=-1.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": 0}, "--size must be at least 1, not 0"),
    ({"size": 2.5}, "--size must be a whole number, not 2.5"),
    ({"size": True}, "--size must be a number, not True"),
    ({"rate": float("inf")}, "--lr must be positive, not inf"),
    ({"kinds": ("a", "c")}, "--kinds must be one of a, b, not 'c'"),
    ({"kinds": "a"}, "--kinds takes a list, not 'a'"),
])
def test_each_check_refuses_with_one_line(kwargs, message):
    with pytest.raises(ConfigError) as err:
        Example(**kwargs)
    assert str(err.value) == message


def test_allowed_values_pass_and_none_is_never_checked():
    assert Example(size=1, rate=None, kinds=("b", "a")).kinds == ("b", "a")
    assert Example(size=3.0).size == 3.0
