"""Two models reading the same text: aligned positions, each model's neuron activations there,
and every neuron of one matched against every neuron of the other.

*Alignment* (:func:`align`). Each corpus document is tokenized by both tokenizers (special
tokens added as each tokenizer adds them) and cut to ``seq_len`` tokens.

- **Same tokenizer** (same vocabulary): every position that is not a special token; both
  models read the same ids, so position t of A is position t of B.
- **Different tokenizers**: one position per whitespace-delimited word — the token holding
  the word's last character in each tokenization (:func:`compgraph.extract.matching.word_ends`);
  words either cut sequence does not reach, and words whose last token is the previous
  word's in either model, are left out.

Documents are read until ``max_positions`` aligned positions are collected.

*Activations* (:func:`neuron_activations`): ``mlp_hidden`` (the out projection's input)
at the aligned positions of every layer, kept standardized per neuron (zero mean, unit
variance over the N positions) in ``dtype`` (bfloat16 by default: relative rounding up to
2⁻⁸, see :func:`match_neurons`), together with the same standardized for the layer's
standardized units times a random rotation (:func:`compgraph.extract.matching.random_rotation`, seed
``seed``: one Haar-random matrix per model, drawn once and applied to every layer, the
product in float32).

*Heads* (:func:`head_patterns`): a head's units of activation are its attention weights
between aligned positions: for queries at aligned positions p_i and keys j ≤ i, the
attention mass on the tokens of segment j — after p_{j-1} up to p_j, the same stretch of
text in both models (:func:`segment_attention`). They are standardized, rotated and
matched as neurons are; the rotation mixes a layer's heads.

*Matching* (:func:`match_neurons`): for every layer pair, r = Zaᵀ Zb / N (the Pearson
correlation); each unit's baseline is its best correlation with the rotated units of every
layer of the other model (Gurnee et al.'s baseline over the whole model), and its top-k
over all of the other model's layers carry ``excess`` = score − that baseline; ties go to
the lower layer, then the lower index. Memory beyond the activations: a few n_a × n_b
float32 matrices of one layer pair at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

import torch

from compgraph.extract import matching
from compgraph.models.adapters.base import Adapter
from compgraph.models.hooks import capture


class Aligned(NamedTuple):
    """Per document: A's ids, A's aligned positions, B's ids, B's aligned positions."""

    ids_a: list[list[int]]
    pos_a: list[list[int]]
    ids_b: list[list[int]]
    pos_b: list[list[int]]

    @property
    def n(self) -> int:
        return sum(len(p) for p in self.pos_a)


def _encode(tokenizer, text: str, seq_len: int) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    return enc["input_ids"][:seq_len], [tuple(o) for o in enc["offset_mapping"][:seq_len]]


def align(tok_a, tok_b, texts: Iterable[str], *, same_tokenizer: bool, seq_len: int,
          max_positions: int) -> Aligned:
    """Aligned positions over ``texts`` (module docstring), at most ``max_positions``."""
    out = Aligned([], [], [], [])
    special_a = set(tok_a.all_special_ids)
    special_b = set(tok_b.all_special_ids)
    for text in texts:
        if out.n >= max_positions:
            break
        left = max_positions - out.n
        ids_a, offsets_a = _encode(tok_a, text, seq_len)
        if same_tokenizer:
            pos = [t for t, i in enumerate(ids_a) if i not in special_a][:left]
            ids_b, pos_a, pos_b = ids_a, pos, pos
        else:
            ids_b, offsets_b = _encode(tok_b, text, seq_len)
            ends_a = matching.word_ends(text, [o if i not in special_a else (0, 0)
                                               for i, o in zip(ids_a, offsets_a)])
            ends_b = matching.word_ends(text, [o if i not in special_b else (0, 0)
                                               for i, o in zip(ids_b, offsets_b)])
            pos_a, pos_b, previous = [], [], (None, None)
            for a, b in zip(ends_a, ends_b):
                shared = a == previous[0] or b == previous[1]  # one token ends this word and the one before
                previous = (a, b)
                if a is None or b is None or shared:
                    continue
                pos_a.append(a)
                pos_b.append(b)
            pos_a, pos_b = pos_a[:left], pos_b[:left]
        if pos_a:
            out.ids_a.append(ids_a)
            out.pos_a.append(pos_a)
            out.ids_b.append(ids_b)
            out.pos_b.append(pos_b)
    return out


@dataclass
class Standardized:
    """One model's neurons at the aligned positions, per layer: ``z[l]`` [N, d_mlp] and
    ``rotated[l]`` (the layer's units times a random rotation), each column standardized;
    ``constant[l]``: the neurons that do not vary over the N positions (no correlation)."""

    z: list[torch.Tensor]
    rotated: list[torch.Tensor]
    constant: list[torch.Tensor]

    @property
    def n(self) -> int:
        return self.z[0].shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.z + self.rotated)


def standardize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x − mean) / std per column in float64 (population std), constant columns set to 0."""
    x = x.double()
    centred = x - x.mean(0)
    var = (centred * centred).mean(0)
    constant = var <= 1e-12 * (x * x).mean(0).clamp_min(1e-300)
    return torch.where(constant, 0.0, centred * var.clamp_min(1e-300).rsqrt()), constant


@torch.no_grad()
def neuron_activations(model, adapter: Adapter, n_layers: int, ids: list[list[int]], positions: list[list[int]],
                       *, batch_size: int = 8, seed: int = 0, dtype=torch.bfloat16,
                       advance: Callable[[], None] = lambda: None) -> Standardized:
    """Every layer's ``mlp_hidden`` at ``positions`` (module docstring). Sequences of one batch
    are right-padded (a causal model's earlier positions do not see the padding)."""
    device = next(model.parameters()).device
    sites = [("mlp_hidden", layer) for layer in range(n_layers)]
    rows: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    for batch, where in _batches(ids, positions, batch_size):
        select_b = torch.tensor([b for b, pos in enumerate(where) for _ in pos])
        select_t = torch.tensor([t for pos in where for t in pos])
        with capture(model, adapter, sites) as acts:
            model(batch.to(device))
        for layer, site in enumerate(sites):
            rows[layer].append(acts[site][0][select_b, select_t].float().cpu())
        advance()
    return _standardized(rows, seed, dtype)


def _batches(ids: list[list[int]], positions: list[list[int]], batch_size: int):
    """(right-padded ids [B, T], their positions) per batch of ``batch_size`` sequences."""
    for start in range(0, len(ids), batch_size):
        batch, where = ids[start:start + batch_size], positions[start:start + batch_size]
        tensor = torch.zeros(len(batch), max(len(s) for s in batch), dtype=torch.long)
        for b, seq in enumerate(batch):
            tensor[b, :len(seq)] = torch.tensor(seq)
        yield tensor, where


def _standardized(rows: list[list[torch.Tensor]], seed: int, dtype) -> Standardized:
    """Each layer's rows stacked [N, units], standardized, with the rotated copy (module docstring)."""
    z, rotated, constant = [], [], []
    rotation = None
    for layer in range(len(rows)):
        x = torch.cat(rows[layer])
        rows[layer] = []
        standard, still = standardize(x)
        if rotation is None or rotation.shape[0] != x.shape[1]:
            rotation = matching.random_rotation(x.shape[1], seed, dtype=torch.float32)
        turned, _ = standardize(standard.float() @ rotation)  # rotate the standardized units: no outlier dominates
        z.append(standard.to(dtype))
        rotated.append(turned.to(dtype))
        constant.append(still)
    return Standardized(z, rotated, constant)


def segment_attention(pattern: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """[H, n(n+1)/2]: a sequence's attention between its n aligned positions, flattened.

    ``pattern`` [H, T, T] (query, key). Entry (i, j), j <= i, in row-major order of the
    lower triangle: the attention of the query at aligned position p_i to the tokens of
    segment j, the tokens after p_{j-1} up to p_j (from the first token for j = 0). Two
    tokenizations cut the same text at the aligned positions, so segment j covers the
    same text in both models; with one tokenizer and consecutive positions segment j is
    one token and the entry is A(p_i, p_j).
    """
    where = torch.tensor(positions)
    mass = pattern[:, where, :].double().cumsum(-1)[:, :, where]  # [H, n, n]: mass up to p_j
    mass = torch.cat([mass[:, :, :1], mass[:, :, 1:] - mass[:, :, :-1]], dim=2)
    i, j = torch.tril_indices(len(positions), len(positions))
    return mass[:, i, j].float()


@torch.no_grad()
def head_patterns(model, n_layers: int, ids: list[list[int]], positions: list[list[int]], *, batch_size: int = 8,
                  seed: int = 0, dtype=torch.bfloat16, advance: Callable[[], None] = lambda: None) -> Standardized:
    """Every layer's query heads as units: each head's :func:`segment_attention` entries over
    every sequence, standardized per head (``z[l]`` [entries, heads]; module docstring).
    The model must return its attention weights (eager attention)."""
    device = next(model.parameters()).device
    rows: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    for batch, where in _batches(ids, positions, batch_size):
        patterns = model(batch.to(device), output_attentions=True).attentions
        for layer in range(n_layers):
            pattern = patterns[layer].float().cpu()
            rows[layer] += [segment_attention(pattern[b], pos).T for b, pos in enumerate(where)]
        advance()
    return _standardized(rows, seed, dtype)


@torch.no_grad()
def match_neurons(a: Standardized, b: Standardized, k: int, *, bf16_matmul: bool = False,
                  advance: Callable[[], None] = lambda: None) -> matching.LayerMatches:
    """Every neuron's top-``k`` in the other model, over every layer pair (module docstring).

    Scores are products of the stored standardized activations. bfloat16 keeps 8
    significant bits, so each factor is rounded by at most 2⁻⁸ relative and each product
    term by about 2⁻⁷; a score is within about 2⁻⁷ · (mean |za zb|) ≤ 2⁻⁷ of the float64
    correlation (Cauchy-Schwarz). With ``bf16_matmul`` (a CPU with AMX / AVX-512 BF16:
    four times float32's speed here) the products run in bfloat16 with float32
    accumulation and the result is rounded to bfloat16 once more: within about 2⁻⁷ + 2⁻⁸
    in all. Rounding errors of N terms mostly cancel, so the error seen is far smaller;
    the bound is of the order of the correlation's own sampling error (1/√N = 0.016 at
    N = 4096). Without ``bf16_matmul`` the products run in float32. Everything runs on
    the CPU.
    """
    if a.n != b.n:
        raise ValueError(f"unaligned activations: {a.n} positions of A, {b.n} of B")
    n = a.n
    compute = a.z[0].dtype if a.z[0].dtype != torch.bfloat16 or bf16_matmul else torch.float32

    def product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # float32: one layer pair at a time
        return (x.T @ y).float() / n

    held: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # A's layer in the compute dtype, once per row of pairs

    def pair(la: int, lb: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if la not in held:
            held.clear()
            held[la] = a.z[la].to(compute), a.rotated[la].to(compute)
        (za, za_rot), zb = held[la], b.z[lb].to(compute)
        r = product(za, zb).clamp(-1.0, 1.0)  # rounding may reach past ±1
        r[a.constant[la]] = torch.nan
        r[:, b.constant[lb]] = torch.nan
        base_a = matching.baseline(product(za, b.rotated[lb].to(compute)))
        base_b = matching.baseline(product(zb, za_rot))
        return r, base_a, base_b

    return matching.match_layer_pairs([z.shape[1] for z in a.z], [z.shape[1] for z in b.z], pair, k,
                                      advance=advance)
