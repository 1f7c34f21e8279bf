"""Planning a job: the options it was given, the stages they ask for, each stage's config
and run identity — everything checkable without weights or a store.

:class:`IngestConfig` is a job's options: the model, its name, the stages (``extract``,
``force``), the execution settings and the stage options by name. Stage options are the
fields of the registered stages' configs (:func:`compgraph.engine.registry.options`):
each is checked against its declaration when the job is built, and a stage's config is
built from the job's values (or the declared defaults) when it is planned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from compgraph import schema
from compgraph.data.corpus import resolve_corpus
from compgraph.data.digests import files_digest
from compgraph.engine import identity, registry
from compgraph.engine.context import Execution
from compgraph.options import Options, check, declaration, option
from compgraph.engine.stage import Stage
from compgraph.errors import ConfigError, RegistryError
from compgraph.models import loading
from compgraph.models.info import ModelInfo, model_info

DEFAULT_STAGES = ("neurons", "heads", "experts")


@dataclass(frozen=True, kw_only=True)
class IngestConfig(Options):
    """What ``compgraph ingest`` was asked for (build one with :meth:`of`)."""

    model: str
    """What to load: a .gguf path, a model directory, an org/name hub id, or packaged:NAME."""
    name: str | None = option(None, "The :Model node's name [default: derived from MODEL].", show_default=False)
    """The :Model node's name; default derived from ``model``."""
    extract: tuple[str, ...] = option(DEFAULT_STAGES, "Comma list of stages (see `compgraph stages`); required "
                                                      "stages are added.")
    """Which stages run (their requirements are added, and every stage whose ``trigger``
    option is given); stages that do not apply to the model (``experts`` on a dense model,
    ``neurons`` on an all-MoE one) are skipped."""
    force: tuple[str, ...] = option((), "Comma list of stages to recompute even if complete.", metavar="STAGES",
                                    show_default=False)
    """Stages to recompute even when their run is complete."""
    execution: Execution = field(default_factory=Execution)
    """How fast it runs (device, dtype, batch size, memory budget), never what it writes."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The stage options given, by field name; the others take their declared defaults."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ConfigError("MODEL must not be empty")
        if not self.extract:
            raise ConfigError("--extract needs at least one stage")
        if self.name is not None and (not self.name or "/" in self.name or ":" in self.name):
            raise ConfigError(f"--name must be non-empty and contain no '/' or ':': {self.name!r}")
        table = registry.options()
        settings = {f.name for cls in (type(self), Execution) for f in dataclasses.fields(cls)}
        shadowed = sorted(set(table) & settings)
        if shadowed:  # it would be routed to the job or its execution and never reach the stage
            raise RegistryError(f"stage option(s) {', '.join(shadowed)} take the name of a job or execution setting; "
                                "rename them in the stage's Config")
        unknown = sorted(set(self.options) - set(table))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(table))}")
        for name, value in self.options.items():
            check(table[name].owner, table[name].field, value)

    @classmethod
    def of(cls, model: str, **given: Any) -> "IngestConfig":
        """A job from keyword options: the job's own fields, the execution settings, and any
        stage option (lists are taken as tuples)."""
        return cls(model=model).with_options(**given)

    def with_options(self, **given: Any) -> "IngestConfig":
        """This job with the given options (job fields, execution settings, stage options) changed."""
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
        own = {f.name for f in dataclasses.fields(self)} - {"model", "execution", "options"}
        runs = {f.name for f in dataclasses.fields(Execution)}
        return dataclasses.replace(
            self, **{k: v for k, v in given.items() if k in own},
            execution=dataclasses.replace(self.execution, **{k: v for k, v in given.items() if k in runs}),
            options={**self.options, **{k: v for k, v in given.items() if k not in own | runs}})

    def option(self, name: str, default: Any = dataclasses.MISSING) -> Any:
        """A stage option's value: as given, else its declared default (else ``default``)."""
        if name in self.options:
            return self.options[name]
        known = registry.options().get(name)
        if known is not None:
            return known.default
        if default is dataclasses.MISSING:
            raise ConfigError(f"no option {name!r}")
        return default


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    config: Any
    run: str
    inputs: dict[str, str]
    skip: str | None = None
    scope: str = ""

    @property
    def label(self) -> str:
        return f"{self.stage.name}/{self.scope}" if self.scope else self.stage.name


@dataclass(frozen=True)
class JobPlan:
    options: IngestConfig
    info: ModelInfo
    stages: list[StagePlan]
    weights_digest: str

    @property
    def execution(self) -> Execution:
        return self.options.execution


def stage_config(stage: Stage, job: IngestConfig) -> Any:
    """The stage's Config with each option field taken from the job (as given, else declared)."""
    values = {}
    for f in dataclasses.fields(stage.Config):
        if declaration(f) is not None:
            values[f.name] = job.option(f.name, f.default)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"stage {stage.name!r} wants option {f.name!r}, which is declared nowhere "
                              f"(declare its fields with compgraph.options.option)")
    return stage.Config(**values)


def stage_names(job: IngestConfig) -> list[str]:
    """The stages asked for: ``extract``, then every stage whose trigger option is given."""
    names = list(job.extract)
    for stage in registry.stages().values():
        if stage.trigger and job.option(stage.trigger, None) and stage.name not in names:
            names.append(stage.name)
    return names


def plan_job(options: IngestConfig, *, loaded=None) -> JobPlan:
    """Everything checkable without weights or a store: the model's files and config,
    the stages and their configs, input digests and run identities."""
    if loaded is not None:
        source, config, adapter = loaded.source, loaded.model.config, loaded.adapter
    else:
        source, config, adapter = loading.inspect(options.model)
        loading.pick_device(options.execution.device)
    name = options.name or source.default_name
    info = model_info(name, options.model, config, adapter)
    stages = registry.plan(stage_names(options))
    unknown = [f for f in options.force if f not in {s.name for s in stages}]
    if unknown:
        raise ConfigError(f"--force names stage(s) not in this job: {', '.join(unknown)}")
    digests = {"weights": files_digest(loading.model_files(source))}
    if any("corpus" in s.inputs for s in stages):
        digests["corpus"] = resolve_corpus(options.option("corpus")).digest()
    planned = []
    for stage in stages:
        reason = stage.skip_reason(info)
        for scope, config in stage.instances(stage_config(stage, options)):
            if reason is None:
                stage.validate(info, config)
            inputs = {**{k: digests[k] for k in stage.inputs if k in digests}, **stage.digests(config)}
            label = f"{stage.name}/{scope}" if scope else stage.name
            uid = schema.run_uid(name, label, identity.identity_hash(
                model=name, stage=stage.name, version=stage.version, config=config, inputs=inputs))
            planned.append(StagePlan(stage, config, uid, inputs, reason, scope))
    return JobPlan(options, info, planned, digests["weights"])

