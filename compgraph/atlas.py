"""The atlas: several models in one store, each ingested alike, every pair of them matched.

A recipe is a TOML file (``ingest/atlas.toml`` is the shipped one)::

    [ingest]                          # every model's ingest job: any option of `compgraph ingest`,
    extract = ["neurons", "heads", "connections"]   # by its Python name (lists for comma lists)
    tasks = ["induction", "ioi"]
    corpus = "packaged:pile"

    [match]                           # every pair's match job: any option of `compgraph match`
    match_components = ["neuron", "head"]
    corpus = "packaged:pile"

    [[models]]
    name = "smollm2-135m"
    source = "packaged:smollm2"
    ingest = { batch_size = 4 }       # this model's own options, over [ingest] (optional)

:func:`jobs` turns a recipe into its jobs, in order: each model's ingest, then for every
pair (names in sorted order, the run belonging to the first) its match. :func:`build`
plans every one of them before running any — a bad option or a missing model file is
refused before the store changes — then runs them in order (what only a job's start can
check, such as a corpus too short for a match, is refused when that job starts).
Each job is a job of the engine: what is complete is not recomputed, so building again
after an interruption resumes where it stopped, and building again after the recipe
changed recomputes only the runs whose configuration changed. Execution settings
(``device``, ``dtype``, ``batch_size``, ``memory_gb``) may be given in either table, or for
all jobs by the caller.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from compgraph.engine.context import Progress, no_progress
from compgraph.errors import ConfigError
from compgraph.ingest import IngestConfig, JobPlan, JobReport, ingest, plan

_TABLES = {"ingest", "match", "models"}
_MODEL_KEYS = {"name", "source", "ingest"}
_MATCH_OWNED = {"match_with", "match_source", "name", "extract"}
"""Keys of a pair's job that the atlas sets itself."""
_INGEST_OWNED = {"name", "match_with", "match_source"}
"""Keys of a model's job that the atlas sets itself (its name) or leaves to [match]."""


@dataclass(frozen=True)
class AtlasModel:
    name: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    path: str
    models: tuple[AtlasModel, ...]
    ingest: dict[str, Any]
    match: dict[str, Any] | None
    """The pairs' options; None: the models are not matched."""


def load_recipe(path: str | Path) -> Recipe:
    """The recipe at ``path``; a one-line :class:`ConfigError` naming the file and the problem."""
    where = Path(path)
    try:
        data = tomllib.loads(where.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such recipe file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: not TOML: {error}") from None
    unknown = sorted(set(data) - _TABLES)
    if unknown:
        raise ConfigError(f"{where}: unknown table(s) {', '.join(unknown)}; a recipe has {', '.join(sorted(_TABLES))}")
    for table in ("ingest", "match"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{where}: [{table}] must be a table of options")
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{where}: no [[models]]; the atlas needs at least one model")
    out = []
    for i, entry in enumerate(models, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: model {i} is not a table")
        bad = sorted(set(entry) - _MODEL_KEYS)
        if bad:
            raise ConfigError(f"{where}: model {i} has unknown key(s) {', '.join(bad)}; "
                              f"known: {', '.join(sorted(_MODEL_KEYS))}")
        for key in ("name", "source"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{where}: model {i} needs a {key} (a non-empty string)")
        if not isinstance(entry.get("ingest", {}), dict):
            raise ConfigError(f"{where}: model {entry['name']}: ingest must be a table of options")
        out.append(AtlasModel(entry["name"], entry["source"], dict(entry.get("ingest", {}))))
    names = [m.name for m in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: model name(s) given twice: {', '.join(twice)}")
    for table, keys in [("[ingest]", data.get("ingest", {}))] + [(f"model {m.name}", m.options) for m in out]:
        owned = sorted(_INGEST_OWNED & set(keys))
        if owned:
            raise ConfigError(f"{where}: {table} sets {', '.join(owned)}, which the atlas sets itself "
                              "(a model's name is its [[models]] name; pairs are matched under [match])")
    match = data.get("match")
    owned = sorted(_MATCH_OWNED & set(match or {}))
    if owned:
        raise ConfigError(f"{where}: [match] sets {', '.join(owned)}, which the atlas sets for each pair")
    return Recipe(str(where), tuple(out), dict(data.get("ingest", {})), None if match is None else dict(match))


def jobs(recipe: Recipe, **settings: Any) -> list[tuple[str, IngestConfig]]:
    """(label, job) for each model's ingest, then each pair's match; ``settings`` (execution
    settings, ``force``) apply to every job."""
    out = []
    for model in recipe.models:
        options = {**recipe.ingest, **model.options, **settings, "name": model.name}
        out.append((f"ingest {model.name}", _config(recipe, model.source, options, f"model {model.name}")))
    if recipe.match is not None:
        for first, second in itertools.combinations(sorted(recipe.models, key=lambda m: m.name), 2):
            options = {**recipe.match, **settings, "name": first.name, "extract": ("match",),
                       "match_with": second.name, "match_source": second.source}
            out.append((f"match {first.name} {second.name}",
                        _config(recipe, first.source, options, f"match {first.name} {second.name}")))
    return out


def _config(recipe: Recipe, source: str, options: dict, what: str) -> IngestConfig:
    try:
        return IngestConfig.of(source, **options)
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{recipe.path}: {what}: {error}") from None


def plan_all(recipe: Recipe, **settings: Any) -> list[tuple[str, JobPlan]]:
    """Every job planned (all checks that need neither weights nor the store), none run."""
    planned = []
    for label, config in jobs(recipe, **settings):
        try:
            planned.append((label, plan(config)))
        except ConfigError as error:
            raise ConfigError(f"{recipe.path}: {label}: {error}") from None
    return planned


def build(store, recipe: Recipe, *, progress: Progress | None = None, planned: Iterable | None = None,
          **settings: Any) -> list[tuple[str, JobReport]]:
    """Plan every job, then run them in order; (label, report) for each."""
    planned = list(planned) if planned is not None else plan_all(recipe, **settings)
    return [(label, ingest(store, job, progress=progress or no_progress)) for label, job in planned]
