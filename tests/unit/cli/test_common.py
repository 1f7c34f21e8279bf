"""Options derived from declarations: every stage option is an ``ingest`` flag, with its help;
a declared check refuses bad input before any work with a one-line error."""

from __future__ import annotations

from click.testing import CliRunner

from compgraph.cli.main import main as cli
from compgraph.engine import registry
from compgraph.engine.context import Execution
from compgraph.engine.job import IngestConfig
from compgraph.options import declared


def _flags(option) -> list[str]:
    return [f.split("/")[0] for f in (option.option.flags or ("--" + option.field.name.replace("_", "-"),))]


def test_ingest_help_lists_every_registry_option_and_its_help():
    result = CliRunner().invoke(cli, ["ingest", "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name, stage_option in registry.options().items():
        for flag in _flags(stage_option):
            assert flag in text, (name, flag)
        assert " ".join(stage_option.option.help.split())[:40] in text, name
    for cls in (IngestConfig, Execution):
        for field, opt in declared(cls):
            assert (opt.flags[0].split("/")[0] if opt.flags else "--" + field.name.replace("_", "-")) in text


def test_effects_command_takes_the_effects_stage_options():
    result = CliRunner().invoke(cli, ["effects", "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    for field, opt in declared(registry.get("effects").Config):
        assert (opt.flags[0].split("/")[0] if opt.flags else "--" + field.name.replace("_", "-")) in result.output


def test_a_declared_check_refuses_before_any_work(tmp_path):
    store = tmp_path / "kb"
    result = CliRunner().invoke(cli, ["ingest", "no-such-model", "--top-k", "0", "--store", str(store)])
    assert result.exit_code != 0
    last = result.output.strip().splitlines()[-1]
    assert last == "error: --top-k must be at least 1, not 0", result.output
    assert not store.exists()


def test_a_stop_signal_wrapped_in_another_error_still_ends_as_the_stop():
    """A signal that lands inside a C extension's import surfaces as ImportError: the command
    still ends with the stop's one line and 128 + signum."""
    import os
    import signal
    import time

    import click

    from compgraph.cli.common import catch_signals
    from compgraph.cli.main import _Main

    @click.group(cls=_Main)
    @click.pass_context
    def group(ctx):
        catch_signals(ctx)

    @group.command()
    def work():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises here
        except BaseException as err:  # what pybind11 does to an error raised in a module's init
            raise ImportError("initialization failed") from err

    got = CliRunner().invoke(group, ["work"])
    assert got.exit_code == 128 + signal.SIGTERM
    assert got.output.strip().splitlines()[-1] == "error: stopped by SIGTERM; run the same command again to resume"
