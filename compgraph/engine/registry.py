"""The stage registry: name -> Stage, refusing duplicates.

Built-in stages are listed in ``_BUILTIN`` (adding one is one module and one line
here). Stages of your own register themselves on import, from a module named in
``$COMPGRAPH_STAGES`` (a comma list of importable modules), which the CLI imports
before it plans a job::

    # mystage.py
    from compgraph.engine.registry import register
    from compgraph.engine.stage import Frames, Stage

    class MyStage(Stage):
        name, version = "mystage", 1
        def shards(self, info, config, execution): return [f"L{layer}" for layer in range(info.n_layers)]
        def run(self, ctx, config, shard): return Frames()

    register(MyStage())

The options of every registered stage (its ``Config`` fields) form the job's option table
(:func:`options`): ``compgraph ingest`` offers each as a flag.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import NamedTuple

from compgraph import options as opts
from compgraph.engine.stage import Stage
from compgraph.errors import ConfigError, RegistryError

ENV_STAGES = "COMPGRAPH_STAGES"

_BUILTIN = (
    "compgraph.stages.tokens",
    "compgraph.stages.neurons",
    "compgraph.stages.features",
    "compgraph.stages.heads",
    "compgraph.stages.experts",
    "compgraph.stages.connections",
    "compgraph.stages.effects",
    "compgraph.stages.match",
)
_STAGES: dict[str, Stage] = {}
_loaded = False


def register(stage: Stage) -> Stage:
    """Add a stage; a second stage with the same name is refused."""
    if not getattr(stage, "name", None) or not isinstance(getattr(stage, "version", None), int):
        raise RegistryError(f"{type(stage).__name__} needs a name and an integer version")
    if stage.name in _STAGES and _STAGES[stage.name] is not stage:
        raise RegistryError(f"a stage named {stage.name!r} is already registered")
    _STAGES[stage.name] = stage
    return stage


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN:
        importlib.import_module(module)
    for module in filter(None, (m.strip() for m in os.environ.get(ENV_STAGES, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"${ENV_STAGES} names {module!r}, which cannot be imported: {err}") from err


def stages() -> dict[str, Stage]:
    """Every registered stage by name: built-ins in the order of ``_BUILTIN`` (whatever
    order their modules were imported in), then the others in registration order."""
    _load()
    rank = {module: i for i, module in enumerate(_BUILTIN)}
    order = sorted(_STAGES.values(), key=lambda s: rank.get(type(s).__module__, len(rank)))
    return {s.name: s for s in order}


def get(name: str) -> Stage:
    known = stages()
    if name not in known:
        raise ConfigError(f"no stage {name!r}; known: {', '.join(known)}")
    return known[name]


def plan(names: list[str] | tuple[str, ...]) -> list[Stage]:
    """The stages to run for ``names``, each after the stages it requires, in
    registration order otherwise (so the order of ``--extract`` does not matter)."""
    known = stages()
    wanted: set[str] = set()

    def want(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise ConfigError(f"stages require each other in a cycle: {' -> '.join(chain + (name,))}")
        stage = get(name)
        for required in stage.requires:
            want(required, chain + (name,))
        wanted.add(name)

    for name in names:
        want(name, ())
    ordered: list[Stage] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        for required in known[name].requires:
            place(required)
        placed.add(name)
        ordered.append(known[name])

    for name in known:
        if name in wanted:
            place(name)
    return ordered


class StageOption(NamedTuple):
    """One option of the job's table: the config class declaring it, its field and declaration."""

    owner: type
    field: dataclasses.Field
    option: opts.Option

    @property
    def default(self):
        return self.field.default


def options() -> dict[str, StageOption]:
    """Every stage option by field name, in stage order: the first stage declaring a name
    owns it; another stage may take it only through the same declaration (a shared
    config base class), never with a default or help of its own."""
    table: dict[str, StageOption] = {}
    for stage in stages().values():
        for field, declared in opts.declared(stage.Config):
            known = table.get(field.name)
            if known is None:
                table[field.name] = StageOption(stage.Config, field, declared)
            elif known.field is not field and (known.option, known.default) != (declared, field.default):
                raise RegistryError(f"stage {stage.name!r} declares option {field.name!r} differently from "
                                    f"{known.owner.__name__}: share one declaration (a common config base class)")
    return table
