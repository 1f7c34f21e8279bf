"""What every command shares: errors as one line, signals, store options, output, and the
click options derived from option declarations (:mod:`compgraph.options`).

Any :class:`~compgraph.errors.CompgraphError` becomes a one-line message on stderr
and exit code 1 (``--debug`` shows the traceback). SIGINT, SIGTERM and SIGHUP raise
:class:`~compgraph.errors.Interrupted` wherever the command is: the open write
transaction rolls back, the store closes, one line says how to resume, and the exit
code is 128 + the signal (130, 143, 129); a second signal ends the process at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterable

import click

from compgraph import options as opts
from compgraph.errors import CompgraphError, ConfigError, Interrupted

# ---- errors and signals ----------------------------------------------------------------------

def _fail(message: str) -> None:
    if (stop := received_stop()) is not None:  # the signal's error, wrapped by the code it stopped
        stopped(stop)
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def handle_errors(fn):
    """Turn compgraph's own errors into one line and exit 1; a reader that went away
    (``| head``) ends the command quietly."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except CompgraphError as err:
            if ctx.find_root().params.get("debug"):
                raise
            _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except KeyboardInterrupt:  # no handler of ours (not the main thread)
            stopped(Interrupted(signal.SIGINT))
        except BrokenPipeError:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
            sys.exit(128 + 13)  # as if killed by SIGPIPE

    return wrapper


RESUME = "run the same command again to resume"
STOP_GRACE_S = 5.0
"""How long a signal waits for Python to get control back (a statement running inside
the JVM holds it) before the process ends without cleaning up."""


def stopped(stop: Interrupted) -> None:
    with contextlib.suppress(OSError, ValueError):  # a hung-up terminal may take stderr with it
        click.echo(f"error: {stop}; {RESUME}", err=True)
    sys.exit(stop.exit_code)


_received: list[Interrupted] = []
"""The stop signal this command received, if any (see :func:`received_stop`)."""


def received_stop() -> Interrupted | None:
    """The Interrupted a signal raised during this command, or None. Code the signal
    interrupted may wrap it in an error of its own (a C extension being imported turns it
    into ``ImportError: initialization failed``): an error seen after a stop signal is
    reported as that stop."""
    return _received[-1] if _received else None


def _stop_at_once(signum, frame) -> None:
    os._exit(128 + signum)


def catch_signals(ctx: click.Context) -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise Interrupted for the rest of the command
    (a signal ignored on entry, as under nohup, stays ignored); restored afterwards.

    Python runs a signal handler only between bytecodes, so one statement running inside
    the JVM would hold the stop back until it ends (minutes, for a large write). A watcher
    thread sees the signal at once (through the wakeup fd); if the handler has not run
    within STOP_GRACE_S, it ends the process without cleaning up: the open transaction
    was never committed, so the store keeps none of it, as after ``kill -9``, and the
    same command resumes."""
    if threading.current_thread() is not threading.main_thread():
        return
    _received.clear()
    previous: dict[int, Any] = {}
    handled = threading.Event()

    def stop(signum, frame):
        handled.set()
        for sig in previous:  # stopping now: a second signal ends the process at once
            signal.signal(sig, _stop_at_once)
        _received.append(Interrupted(signum))
        raise _received[-1]

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None or signal.getsignal(sig) == signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, stop)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)

    def watch():
        while True:
            for signum in os.read(wake_read, 64):
                if signum == 0:  # the command is over
                    return
                if signum in previous and not handled.wait(STOP_GRACE_S):
                    with contextlib.suppress(OSError, ValueError):
                        click.echo(f"error: {Interrupted(signum)} (the engine was busy for {STOP_GRACE_S:g} s, "
                                   f"nothing uncommitted is kept); {RESUME}", err=True)
                    os._exit(128 + signum)

    watcher = threading.Thread(target=watch, name="compgraph-signals", daemon=True)
    watcher.start()

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.write(wake_write, b"\0")
        watcher.join(timeout=STOP_GRACE_S + 1)
        os.close(wake_write)
        if not watcher.is_alive():
            os.close(wake_read)

    ctx.call_on_close(restore)


# ---- options every store command takes, output ---------------------------------------------------

def store_options(fn):
    fn = click.option("--database", default=None, metavar="NAME",
                      help="Database on a Bolt server (default: the server's default).")(fn)
    fn = click.option("--store", "store", default=None, metavar="URI",
                      help="Directory of an embedded store, or a bolt:// / neo4j:// URI "
                           "[env COMPGRAPH_STORE; default ./compgraph-kb].")(fn)
    return fn


def emit(rows, fmt: str, title: str | None = None, *, limit: int | None = None) -> None:
    """Print Records or a polars frame as a table, csv or json (see compgraph.render)."""
    from compgraph import render

    render.emit(rows, fmt, title=title, limit=limit, out=sys.stdout)


def split(text: str | None) -> tuple[str, ...]:
    """A comma list as a tuple (empty entries dropped)."""
    return tuple(e.strip() for e in (text or "").split(",") if e.strip())


def require_model(graph, name: str) -> None:
    """Refuse a model the store does not hold, naming the ones it does."""
    from compgraph import schema

    if graph.nodes(schema.MODEL, uids=[schema.model_uid(name)]).height:
        return
    models = graph.nodes(schema.MODEL)
    held = sorted(str(uid) for uid in models["uid"].to_list()) if "uid" in models.columns else []
    listed = ", ".join(held[:20]) + (f", ... ({len(held)} in all)" if len(held) > 20 else "")
    raise ConfigError(f"no model {name!r} in the store at {graph.location}; "
                      + (f"it holds: {listed}" if held else "it holds no models"))


@contextlib.contextmanager
def progress_bars():
    """A ``progress(label, total)`` callable drawing one rich bar per label."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        def tick(stage: str, total: int):
            task = bar.add_task(stage, total=total)
            return lambda: bar.advance(task)

        yield tick


# ---- options derived from declarations ------------------------------------------------------------

_CLICK_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING, bool: click.BOOL}


def declared_option(cls: type, field: dataclasses.Field, *, required: bool = False) -> click.Option:
    """The click option of one declared config field: its flags, help and default; a tuple
    field is a comma list (or a repeated flag), parsed into a tuple."""
    opt = opts.declaration(field)
    kind, many = opts.value_type(cls, field.name)
    flags = list(opt.flags or ("--" + field.name.replace("_", "-"),))
    missing = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    default = None if field.default is dataclasses.MISSING else field.default
    kwargs: dict[str, Any] = {"help": opt.help, "metavar": opt.metavar, "required": required or missing}
    if kind is bool:
        kwargs.update(default=default, show_default=opt.show_default)
        if not any("/" in f for f in flags):
            kwargs["is_flag"] = True
    elif many and opt.repeat:
        kwargs.update(multiple=True, default=default or (), type=_CLICK_TYPES[kind], show_default=False)
    elif many:
        kwargs.update(default=",".join(default) if default else None, type=click.STRING,
                      show_default=opt.show_default and bool(default),
                      callback=lambda ctx, param, value: split(value))
    else:
        kwargs.update(default=default, type=_CLICK_TYPES[kind], show_default=opt.show_default and default is not None)
    return click.Option([*flags, field.name], **kwargs)


def declared_options(classes: Iterable[type], *, skip: Iterable[str] = (), required: Iterable[str] = ()):
    """The click options of every declared field of ``classes`` (a name once, the first class
    declaring it), ``skip`` left out."""
    seen, out = set(skip), []
    for cls in classes:
        for field, _ in opts.declared(cls):
            if field.name not in seen:
                seen.add(field.name)
                out.append(declared_option(cls, field, required=field.name in set(required)))
    return out


class DeclaredCommand(click.Command):
    """A command whose options derive from declarations known only at run time (the stage
    registry): ``options()`` is called when the command parses its arguments or shows its
    help, never when the command group merely lists it."""

    def __init__(self, *args, options: Callable[[], list[click.Option]], **kwargs):
        super().__init__(*args, **kwargs)
        self._declared = options
        self._added = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._added:  # before the store options, which close every command's help
            self._added = True
            at = next((i for i, p in enumerate(self.params) if p.name in ("store", "database")), len(self.params))
            self.params[at:at] = self._declared()
        return super().get_params(ctx)
