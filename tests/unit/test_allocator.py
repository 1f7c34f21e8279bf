"""The allocator setting: freed blocks reused without page faults, and the ways to leave it off."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from compgraph import allocator

_PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, resource, sys
    from compgraph.allocator import keep_freed_memory
    setting = keep_freed_memory({} if sys.argv[1] == "tuned" else {"COMPGRAPH_MALLOC": "system"})
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 20  # above glibc's largest mmap threshold (32 MiB)
    def touch():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        touch()
    print(setting, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True).stdout
    setting, faults = out.split()
    return setting, int(faults)


@pytest.mark.skipif(allocator.platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_a_freed_block_is_reused_without_faulting_its_pages_again():
    """Five 64 MiB blocks, each written and freed: from fresh mappings every page faults again
    (64 MiB / 4 KiB = 16,384 a block, fewer with huge pages); kept in the heap, none does."""
    system, tuned = _faults("system"), _faults("tuned")
    assert system[0] == "False" and tuned[0] == "True"
    assert system[1] >= 5 * (64 << 20) // (2 << 20)  # at least one fault per 2 MiB page touched
    assert tuned[1] == 0


def test_left_as_it_is_when_asked_or_without_glibc(monkeypatch):
    assert allocator.keep_freed_memory({"COMPGRAPH_MALLOC": " System "}) is False
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory({}) is False


def test_the_commands_that_compute_set_it_and_the_others_do_not(monkeypatch):
    from click.testing import CliRunner

    from compgraph.cli import main as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    assert cli.COMPUTING <= set(cli.main.commands)  # every name is a command
    for command, sets in (("analyse", True), ("ingest", True), ("queries", False), ("serve", False)):
        calls.clear()
        result = CliRunner().invoke(cli.main, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert calls == ([True] if sets else []), command
