"""Every error compgraph raises on purpose.

The CLI turns any :class:`CompgraphError` into a one-line message and exit code 1;
anything else is a bug and keeps its traceback. :class:`Interrupted` is no error:
the CLI raises it from its signal handlers, so it derives from ``BaseException``
(no ``except Exception`` swallows it) and ends the command with ``128 + signal``.

    CompgraphError
    ├── ConfigError               bad option values, unreadable parameter files, bad input data
    │   └── RegistryError         a stage or an adapter registered twice or without its name
    ├── StoreError                anything between compgraph and a graph store
    │   ├── StoreUnavailable      server unreachable, directory locked, unreadable or read-only
    │   │   ├── StoreNotFound     no store at the path (reading never creates one)
    │   │   └── StoreInUse        an embedded store another process has open
    │   ├── StoreAuthError        wrong user or password (never echoes them)
    │   ├── DiskWriteError        the file system refused a write: no space, read-only, quota
    │   ├── QueryError            syntax error, missing parameter, failed statement
    │   ├── ReadOnlyViolation     a write attempted without ``write=True``
    │   ├── MissingEndpointError  edge rows naming nodes that do not exist
    │   ├── CypherUnsupported     raw Cypher asked of the in-memory store
    │   └── SchemaVersionError    store written by a newer compgraph schema, or damaged version
    └── ModelError                anything between compgraph and a model
        ├── ModelNotFound         no such repo id, directory or file
        ├── ModelLoadError        the files exist but cannot be read (truncated GGUF, ...)
        ├── UnsupportedArchitecture   no adapter for this architecture
        └── HookError             a site the family lacks, a value of the wrong shape, a module
                                  that runs otherwise than its adapter says

    BaseException
    └── Interrupted               SIGINT, SIGTERM or SIGHUP: roll back, close, exit 128 + signal
"""

from __future__ import annotations


class CompgraphError(Exception):
    """Base of every error compgraph raises on purpose."""


class ConfigError(CompgraphError, ValueError):
    """An option or configuration value is invalid."""


class RegistryError(ConfigError):
    """A stage or an architecture adapter cannot be registered (a duplicate name, no name)."""


class StoreError(CompgraphError):
    """A graph store operation failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or opened."""


class StoreNotFound(StoreUnavailable):
    """No store at the given path; commands that only read never create one."""


class StoreInUse(StoreUnavailable):
    """An embedded store another process has open (the message names it when it can)."""


class StoreAuthError(StoreError):
    """The store refused the credentials."""


class DiskWriteError(StoreError):
    """The file system refused a write of the store (no space left, read-only, a quota);
    the message names the cause and the store and says how to resume."""


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


class CypherUnsupported(StoreError):
    """The store answers typed reads only (the in-memory store), not raw Cypher."""


class SchemaVersionError(StoreError):
    """The store was written by a newer schema version than this code knows, or the
    version it records is not an integer."""


class ModelError(CompgraphError):
    """A model cannot be loaded or adapted."""


class ModelNotFound(ModelError):
    """No model at the given repo id, directory or file."""


class ModelLoadError(ModelError):
    """The model's files exist but cannot be read."""


class UnsupportedArchitecture(ModelError):
    """No architecture adapter is registered for this model."""


class HookError(ModelError, ValueError):
    """A hook cannot read or write a site: the family has no such site, an overwrite returned
    the wrong shape, gradients were asked for without autograd, or the model's modules ran
    otherwise than its adapter describes."""


class Interrupted(BaseException):
    """A signal asked the command to stop (raised by the CLI's signal handlers).

    A ``BaseException``, like ``KeyboardInterrupt``: ``finally`` blocks and context
    managers run (the open write transaction rolls back, the store closes) while
    ``except Exception`` handlers let it pass. ``exit_code`` is ``128 + signum``.
    """

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        try:
            self.signame = signal.Signals(self.signum).name
        except ValueError:
            self.signame = f"signal {self.signum}"
        super().__init__(f"stopped by {self.signame}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
