"""Options, each declared once: on the config field that takes it.

A stage's ``Config`` (and the job's own :class:`~compgraph.engine.job.IngestConfig`,
and :class:`~compgraph.engine.context.Execution`) is a frozen, kw-only dataclass whose
fields are declared with :func:`option`: the default, the help text, the command-line
flag(s) and the checks of one value. Everything else derives from the declarations:

- the CLI's flags (:mod:`compgraph.cli.common`), with the declared help and defaults;
- the job's table of known options (:func:`compgraph.engine.registry.options`): every
  stage option by field name, the first stage declaring a name owning it; a second
  stage may take the same option only through the same declaration (a shared base class);
- the checks: :class:`Options` checks every declared field when a config is built, and
  a config's own ``__post_init__`` adds the checks that relate fields.

A field's value type comes from its annotation (``int | None`` takes an int or None; a
``tuple[str, ...]`` is a comma list, or a repeated flag with ``repeat=True``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from compgraph.errors import ConfigError

_KEY = "compgraph.option"


@dataclass(frozen=True)
class Option:
    """How one config field is given on the command line and checked."""

    help: str
    flags: tuple[str, ...] = ()
    """The flags (default ``--field-name``); ``"--x/--no-x"`` for a boolean pair."""
    minimum: float | None = None
    """The smallest value allowed (inclusive)."""
    positive: bool = False
    """The value must be > 0."""
    choices: tuple[str, ...] = ()
    """The values allowed (a tuple option: for each element)."""
    repeat: bool = False
    """A tuple given by repeating the flag rather than as a comma list."""
    metavar: str | None = None
    show_default: bool = True

    def flag(self, name: str) -> str:
        """The flag errors name: the first declared, else ``--name-with-dashes``."""
        return (self.flags[0].split("/")[0] if self.flags else "--" + name.replace("_", "-"))


def option(default: Any = dataclasses.MISSING, help: str = "", **declared) -> Any:  # noqa: A002 - click's word
    """A config field carrying its :class:`Option` declaration (see the module docstring)."""
    return dataclasses.field(default=default, metadata={_KEY: Option(help=help, **declared)})


def declaration(field: dataclasses.Field) -> Option | None:
    """The :class:`Option` of a field declared with :func:`option` (None for other fields)."""
    return field.metadata.get(_KEY)


def declared(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    """The option fields of a config class, in field order."""
    return [(f, declaration(f)) for f in dataclasses.fields(cls) if declaration(f) is not None]


def value_type(cls: type, name: str) -> tuple[type, bool]:
    """(element type, is a tuple) of a field from its annotation: ``int | None`` -> (int,
    False); ``tuple[str, ...]`` -> (str, True)."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def check(cls: type, field: dataclasses.Field, value: Any) -> None:
    """Refuse a value its declaration does not allow (one-line ConfigError naming the flag)."""
    opt = declaration(field)
    if opt is None or value is None:
        return
    flag = opt.flag(field.name)
    kind, many = value_type(cls, field.name)
    values = value if many else (value,)
    if many and not isinstance(value, tuple):
        raise ConfigError(f"{flag} takes a list, not {value!r}")
    for item in values:
        if kind in (int, float) and (isinstance(item, bool) or not isinstance(item, (int, float))):
            raise ConfigError(f"{flag} must be a number, not {item!r}")
        if kind is int and isinstance(item, float) and not item.is_integer():
            raise ConfigError(f"{flag} must be a whole number, not {item!r}")
        if opt.minimum is not None and item < opt.minimum:
            shown = int(opt.minimum) if float(opt.minimum).is_integer() else opt.minimum
            raise ConfigError(f"{flag} must be at least {shown}, not {item}")
        if opt.positive and not (item > 0 and math.isfinite(item)):
            raise ConfigError(f"{flag} must be positive, not {item}")
        if opt.choices and item not in opt.choices:
            raise ConfigError(f"{flag} must be one of {', '.join(opt.choices)}, not {item!r}")


@dataclass(frozen=True, kw_only=True)
class Options:
    """Base of every config declared with :func:`option`: checks each declared field."""

    def __post_init__(self) -> None:
        for field, _ in declared(type(self)):
            check(type(self), field, getattr(self, field.name))
