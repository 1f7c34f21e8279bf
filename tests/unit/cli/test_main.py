"""The command group itself (compgraph/cli/main.py): importing it stays light."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "jpype", "neo4j", "ray")


def test_importing_the_cli_loads_no_heavy_library():
    """Heavy imports happen inside the commands (the module's docstring), so that
    ``compgraph --help`` and the quick commands do not pay for them."""
    code = ("import sys, compgraph.cli.main; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
