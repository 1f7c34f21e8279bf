"""Every error compgraph raises on purpose.

The CLI turns any :class:`CompgraphError` into a one-line message and exit code 1;
anything else is a bug and keeps its traceback.

    CompgraphError
    ├── ConfigError               bad option values, unreadable parameter files
    ├── StoreError                anything between compgraph and a graph store
    │   ├── StoreUnavailable      server unreachable, directory locked or unreadable
    │   ├── StoreAuthError        wrong user or password (never echoes them)
    │   ├── QueryError            syntax error, missing parameter, failed statement
    │   ├── ReadOnlyViolation     a write attempted without ``write=True``
    │   ├── MissingEndpointError  edge rows naming nodes that do not exist
    │   └── SchemaVersionError    store written by a newer compgraph schema
    └── ModelError                anything between compgraph and a model
        ├── ModelNotFound         no such repo id, directory or file
        ├── ModelLoadError        the files exist but cannot be read (truncated GGUF, ...)
        └── UnsupportedArchitecture   no adapter for this architecture
"""

from __future__ import annotations


class CompgraphError(Exception):
    """Base of every error compgraph raises on purpose."""


class ConfigError(CompgraphError, ValueError):
    """An option or configuration value is invalid."""


class StoreError(CompgraphError):
    """A graph store operation failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or opened."""


class StoreAuthError(StoreError):
    """The store refused the credentials."""


class QueryError(StoreError):
    """A Cypher statement failed: syntax, missing parameter, runtime error."""


class ReadOnlyViolation(StoreError):
    """A statement that writes was run without ``write=True``."""


class MissingEndpointError(StoreError):
    """Edge rows name source or target nodes that are not in the store.

    ``missing`` holds up to ten of the uids that were not found; ``count`` is the
    number of edge rows affected. Nothing of the call was written.
    """

    def __init__(self, message: str, *, missing: list[str], count: int):
        super().__init__(message)
        self.missing = missing
        self.count = count


class SchemaVersionError(StoreError):
    """The store was written by a newer schema version than this code knows."""


class ModelError(CompgraphError):
    """A model cannot be loaded or adapted."""


class ModelNotFound(ModelError):
    """No model at the given repo id, directory or file."""


class ModelLoadError(ModelError):
    """The model's files exist but cannot be read."""


class UnsupportedArchitecture(ModelError):
    """No architecture adapter is registered for this model."""
