"""The verified method's activation patching on the real SmolLM2: passes that start at the
lowest layer they patch, from one set of base runs for every round, against the same
method with each round making its own runs and every pass computing the layers below.

    python benchmarks/verified_patching.py [--tasks ioi,colored_objects] [--examples 64]

Per task, the effects stage's call (:func:`~compgraph.effects.verified.verified_patching`
of SmolLM2's 270 heads and 60 blocks, circuit size 20, margin 1/4) is timed twice in one
process: **today**, and the **baseline**, the passes as they were before the change —
the plans in the order given (not by lowest layer), :func:`~compgraph.effects.patch.fan_out`
given no saved layer input (it runs the layers below the lowest patched layer once per
pass, on the base rows) and each round of steps 2–4 preparing its own base and target
runs. It prints the components measured, the two times, their ratio, whether the same
components were measured and the largest difference between their effects (the
same quantity: float noise). Timings include the attribution pass both runs make.
"""

from __future__ import annotations

import contextlib
from unittest import mock

from compgraph.effects import activation, verified
from smollm2_tasks import batches, print_load, start, timed

KINDS = ("head", "mlp", "attn")
CIRCUIT = ("head", "mlp")


def run(model, adapter, batch, metric):
    return verified.verified_patching(model, adapter, batch, metric, kinds=KINDS, n=20, circuit_kinds=CIRCUIT)


@contextlib.contextmanager
def baseline():
    """Plans in the given order, fan_out without the saved input, no shared prepare."""
    fan_out = activation.fan_out

    def unsaved(model, adapter, first_layer, c, n, start=None):
        return fan_out(model, adapter, first_layer, c, n)

    with mock.patch.object(activation, "fan_out", unsaved), \
            mock.patch.object(activation, "_order", lambda plans: list(range(len(plans)))), \
            mock.patch.object(verified, "prepare", lambda *a, **k: None):
        yield


def main() -> None:
    args, loaded = start(__doc__, "ioi,colored_objects")
    model, adapter = loaded.model, loaded.adapter
    for name, batch, metric in batches(loaded, args.tasks, args.examples):
        t_new, new = timed(lambda: run(model, adapter, batch, metric))
        with baseline():
            t_old, old = timed(lambda: run(model, adapter, batch, metric))
        same = new.measured.select("component", "layer", "index").equals(old.measured.select("component", "layer",
                                                                                              "index"))
        diff = (new.measured["effect"] - old.measured["effect"]).abs().max() if same else float("nan")
        print(f"{name:16s} width {batch.width}  measured {new.measured.height}  baseline {t_old:6.1f} s  "
              f"today {t_new:6.1f} s  speed-up {t_old / t_new:4.2f}x  same components {same}  "
              f"max |effect difference| {diff:.1e}", flush=True)
    print_load("after")


if __name__ == "__main__":
    main()
