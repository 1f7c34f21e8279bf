"""Runs over a task: the task summary recomputed with plain forward passes."""

from __future__ import annotations

import pytest
import torch

from compgraph.data.tasks import TaskBatch
from compgraph.effects.runs import task_summary
from tests.helpers.effects import effects_model, metric, one_thread, task  # noqa: F401 (one_thread: autouse)


def _expected(model, t: dict) -> dict:
    with torch.no_grad():
        clean = model(input_ids=t["clean_ids"]).logits
        corrupt = model(input_ids=t["corrupt_ids"]).logits
    answer, wrong = t["answer_ids"], t["wrong_ids"]
    last = clean[:, -1]
    right = (last.gather(1, answer[:, None]) > last.gather(1, wrong[:, None])).float()
    return {"accuracy": float(right.mean()), "metric_clean": float(metric(clean, answer, wrong).mean()),
            "metric_corrupt": float(metric(corrupt, answer, wrong).mean())}


def test_task_summary_without_masks_in_chunks_equals_plain_forward_passes():
    model, _ = effects_model("llama")
    t = task()
    batch = TaskBatch.of(clean_ids=t["clean_ids"], corrupt_ids=t["corrupt_ids"], answer_ids=t["answer_ids"],
                         wrong_ids=t["wrong_ids"])
    got = task_summary(model, batch, metric, chunk=3)
    want = _expected(model, t)
    assert got["accuracy"] == want["accuracy"]
    assert got["metric_clean"] == pytest.approx(want["metric_clean"], rel=1e-6)  # the summary reads logits in float32
    assert got["metric_corrupt"] == pytest.approx(want["metric_corrupt"], rel=1e-6)  # the summary reads logits in float32


@pytest.mark.gpu
def test_task_summary_on_cuda_equals_cpu():
    model, _ = effects_model("llama")
    t = task()
    batch = TaskBatch.of(**t)
    cpu = task_summary(model, batch, metric)
    gpu = task_summary(model.cuda(), batch, metric)
    assert gpu["accuracy"] == cpu["accuracy"]
    assert gpu["metric_clean"] == pytest.approx(cpu["metric_clean"], rel=1e-9)
