"""Job-engine test helpers: a progress callback that interrupts a job at a chosen stage step."""

from __future__ import annotations


def kill_at(prefix: str):
    """A progress callback that raises KeyboardInterrupt when a progress bar whose label
    starts with ``prefix`` begins (a job killed there, its earlier shards recorded)."""
    def progress(label, total):
        if label.startswith(prefix):
            raise KeyboardInterrupt
        return lambda: None
    return progress
