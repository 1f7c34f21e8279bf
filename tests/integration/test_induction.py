"""A 2-layer attention-only model trained here forms a real induction circuit; the head
scores must find it, and ablation must confirm it (an independent, causal check)."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from compgraph.extract.heads import HeadData, head_frame
from compgraph.models.adapters.registry import adapter_for
from compgraph.models.hooks import overwrite

VOCAB, SEQ, HEADS, D = 128, 64, 4, 128
pytestmark = pytest.mark.slow


class NoMLP(torch.nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def batch_of_repeats(n: int, gen: torch.Generator) -> torch.Tensor:
    """BOS, random prefix, R, R, random suffix; |R| uniform in 2..24.

    Lengths from 2 matter: with 6..24 a RoPE model found a shortcut (layer-0 heads
    looking back a fixed 12 positions) that copies every repeat longer than 12 and
    never forms a canonical induction head; only a previous-token head (offset 1)
    serves every length."""
    rows = torch.randint(1, VOCAB, (n, SEQ), generator=gen)
    rows[:, 0] = 0
    for row in rows:
        length = int(torch.randint(2, 25, (1,), generator=gen))
        start = int(torch.randint(1, SEQ - 2 * length + 1, (1,), generator=gen))
        row[start + length:start + 2 * length] = row[start:start + length]
    return rows


@pytest.fixture(scope="session")
def induction_model():
    torch.manual_seed(0)
    config = T.LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=8, num_hidden_layers=2,
                           num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=SEQ,
                           tie_word_embeddings=False)
    config._attn_implementation = "eager"
    model = T.LlamaForCausalLM(config)
    for layer in model.model.layers:
        layer.mlp = NoMLP()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2250):
        ids = batch_of_repeats(32, gen)
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def head_data(gen: torch.Generator) -> HeadData:
    L = 16
    rand = torch.randint(1, VOCAB, (16, L), generator=gen)
    repeated = torch.cat([torch.zeros(16, 1, dtype=torch.long), rand, rand], dim=1)
    hay = torch.randint(1, VOCAB, (4, 20), generator=gen)
    needle = torch.randint(1, VOCAB, (4, 8), generator=gen)
    haystack = torch.cat([torch.zeros(4, 1, dtype=torch.long), hay[:, :10], needle, hay[:, 10:], needle], dim=1)
    return HeadData(text=[torch.cat([torch.zeros(8, 1, dtype=torch.long),
                                     torch.randint(1, VOCAB, (8, SEQ - 1), generator=gen)], dim=1)],
                    repeated=repeated, repeat_len=L, haystack=haystack, needle_first=11, needle_second=29,
                    needle_len=8)


def second_repeat_loss(model, repeated: torch.Tensor, L: int) -> float:
    logits = model(repeated).logits[:, L + 1:2 * L]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), repeated[:, L + 2:2 * L + 1].reshape(-1)).item()


def test_scores_find_the_induction_circuit_and_ablation_confirms_it(induction_model):
    adapter = adapter_for("llama")
    data = head_data(torch.Generator().manual_seed(2))
    heads = head_frame(induction_model, adapter, model_name="toy", data=data)
    top_induction = heads.sort("induction_score", descending=True).row(0, named=True)
    top_prev = heads.sort("prev_token_score", descending=True).row(0, named=True)
    assert top_induction["layer"] == 1 and top_induction["induction_score"] > 0.3, heads
    assert top_prev["layer"] == 0 and top_prev["prev_token_score"] > 0.3, heads
    assert top_induction["copy_score"] > 0  # an induction head copies what it attends to

    d_head = D // HEADS
    with torch.no_grad():
        base = second_repeat_loss(induction_model, data.repeated, data.repeat_len)

        def ablated(layer: int, head: int) -> float:
            def zero_head(z):
                z = z.clone()
                z[..., head * d_head:(head + 1) * d_head] = 0
                return z

            with overwrite(induction_model, adapter, ("attn_z", layer), zero_head):
                return second_repeat_loss(induction_model, data.repeated, data.repeat_len)

        layer1 = heads.filter(heads["layer"] == 1).sort("induction_score")
        weakest = layer1.row(0, named=True)["head"]
        hurt_top = ablated(1, top_induction["head"]) - base
        hurt_weakest = ablated(1, weakest) - base
        hurt_prev = ablated(0, top_prev["head"]) - base
    assert base < 1.5  # the model really predicts the repeat
    assert hurt_top > 1.0 and hurt_top > 5 * max(hurt_weakest, 0.01)
    assert hurt_prev > 0.5  # the previous-token head feeds the induction head (K-composition)
