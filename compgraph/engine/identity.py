"""Run identity: what makes two computations of a stage the same computation.

A run is keyed on (model name, stage, stage version, the stage's own configuration,
the digests of its inputs). Input digests are content digests
(:mod:`compgraph.data.digests`):

- ``weights``: every file of the model (:func:`compgraph.models.loading.model_files`);
- ``corpus``: the corpus content (see :mod:`compgraph.data.corpus`);
- stages add their own (task files, dictionaries) through ``Stage.digests``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def identity_hash(*, model: str, stage: str, version: int, config: Any, inputs: dict[str, str]) -> str:
    """The hash a run uid is built from; independent of option order and of execution
    settings (device, batch size), which are not part of a stage's configuration.

    Config fields whose value is empty (None, [], {}) are left out: an optional field
    added to a stage's config later, at its empty default, means "not used", so the
    runs made before it existed keep their identity and are not recomputed."""
    payload = {
        "model": model, "stage": stage, "version": version,
        "config": {k: v for k, v in config_dict(config).items() if v not in (None, [], {})},
        "inputs": dict(sorted(inputs.items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def config_dict(config: Any) -> dict[str, Any]:
    """A stage config as a plain dict (tuples as lists), for hashing and for the :Run node."""
    if config is None:
        return {}
    return json.loads(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str))
