"""Train TopK sparse autoencoders and TopK transcoders on a model's activations (Gao et al. 2024).

Per token, x ∈ R^{d_in} is the input and y ∈ R^{d_out} the target: y = x for an SAE; for
a transcoder x is ``mlp_in`` and y ``mlp_out`` of the same layer and token. Row vectors::

    SAE:         pre = (x − b_dec) W_enc + b_enc
    transcoder:  pre = x W_enc + b_enc
    f  = TopK_k(ReLU(pre))        the k largest of ReLU(pre) kept, the rest 0
    ŷ  = f W_dec + b_dec

which is :class:`~compgraph.dictionaries.base.Dictionary` with activation ``topk`` (and
``subtract_b_dec`` for the SAE), so a trained coder is read back as one.

Loss per batch B: ``FVU + auxk_alpha · AuxK`` with

- ``FVU = Σ_B ‖y − ŷ‖² / Σ_B ‖y − ȳ_B‖²`` (ȳ_B the batch mean of y);
- ``AuxK`` (Gao et al. §A.2, as sparsify computes it): with D the dead features (below)
  and e = y − ŷ (no gradient), ê = TopK_{k_aux}(pre restricted to D) W_dec, the k_aux
  largest pre-activations among the dead features as they are (no ReLU, no bias),
  ``AuxK = min(|D| / k_aux, 1) · Σ_B ‖e − ê‖² / Σ_B ‖y − ȳ_B‖²`` with
  k_aux = min(⌊d_out / 2⌋, |D|); 0 when no feature is dead. It gives dead features a
  gradient towards the error the live ones leave.

Initialisation: decoder rows random unit vectors, ``W_enc = W_decᵀ`` (tied start),
``b_enc = 0``, ``b_dec`` = the mean of y over the first chunk of training data.
Gradients are exact but computed sparsely: the encoder's from the n·k selected
pre-activations, the decoder's from the n·k active rows (sparse-dense products and sampled
dot products instead of dense [n, width] matmuls; :mod:`compgraph.dictionaries.coder`).
Optimiser: Adam (fused; β 0.9, 0.999; ε 6.25e-10); learning rate ``lr`` or, by default, Gao's
``2e-4 / sqrt(width / 2^14)``. Each step first projects the decoder's gradient onto each
row's orthogonal complement, then steps, then renormalises every decoder row to unit norm
(so the rows stay unit vectors and the feature scale lives in the encoder).

- **dead feature**: a feature with no activation (f_j ≠ 0) in the last ``dead_tokens``
  training tokens, counted per batch (a feature active anywhere in a batch has 0 tokens
  since its last activation at the end of it; one without adds the batch's tokens).
- **FVE** (fraction of variance explained) over a set of tokens S:
  ``1 − Σ_S ‖y − ŷ‖² / Σ_S ‖y − ȳ_S‖²``, ȳ_S the mean of y over S. The progress shows it
  over the batches since the last report; the result over held-out tokens (never trained on).

Data (:func:`activation_chunks`): the corpus as rows of ``seq_len`` tokens, run through
the model up to the layer, activations at every position except special tokens (BOS,
EOS, padding: the residual stream's huge norm at BOS would dominate the loss), gathered
in chunks of ``chunk_tokens``; each chunk is shuffled before it is cut into batches. The
first ``eval_tokens`` activations are held out for the final FVE.

The result is saved in SAELens's layout (``cfg.json`` + ``sae_weights.safetensors``,
:func:`compgraph.dictionaries.saelens.save_saelens`), which
:func:`compgraph.dictionaries.readers.read_dictionary` reads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch

from compgraph.dictionaries.coder import TopKCoder
from compgraph.errors import ConfigError
from compgraph.models.forward import forward_until
from compgraph.models.hooks import capture
from compgraph.options import Options, option

KINDS = ("topk-sae", "transcoder")
ADAM_EPS = 6.25e-10


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Options):
    """How a coder is trained (what it is trained on is the caller's)."""

    kind: str = option("topk-sae", "topk-sae or transcoder.", choices=KINDS)
    """``topk-sae`` (reconstruct x) or ``transcoder`` (predict y from x)."""
    width: int = option(4096, "Number of features.", minimum=1)
    """Number of features."""
    k: int = option(32, "Active features per token.", minimum=1)
    """Active features per token."""
    lr: float | None = option(None, "Adam learning rate [default: 2e-4 / sqrt(width / 2^14)].", positive=True,
                              show_default=False)
    """Adam learning rate; None: ``2e-4 / sqrt(width / 2**14)`` (Gao et al.)."""
    batch_tokens: int = option(1024, "Tokens per optimiser step.", minimum=1)
    """Tokens per optimiser step."""
    dead_tokens: int = option(100_000, "A feature silent for this many training tokens is dead.", minimum=1)
    """A feature with no activation in this many training tokens is dead."""
    auxk_alpha: float = 1 / 32
    """Weight of the AuxK loss."""
    seed: int = option(0, "Seeds the initialisation and the shuffling.")
    """Seeds the initialisation and the shuffling."""
    log_every: int = 20
    """Steps between progress reports."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k > self.width:
            raise ConfigError(f"--k {self.k} exceeds --width {self.width}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be at least 1, not {self.log_every}")
        if self.auxk_alpha < 0:
            raise ConfigError(f"auxk_alpha must be >= 0, not {self.auxk_alpha}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.width / 2 ** 14)


class DeadTracker:
    """Tokens since each feature last fired, counted per batch (module docstring)."""

    def __init__(self, width: int, window: int):
        self.since = torch.zeros(width, dtype=torch.long)
        self.window = window

    def update(self, fired: torch.Tensor, n_tokens: int) -> None:
        """``fired`` [width] bool: active on some token of a batch of ``n_tokens``."""
        self.since += n_tokens
        self.since[fired.cpu()] = 0

    @property
    def dead(self) -> torch.Tensor:
        return self.since >= self.window

    @property
    def count(self) -> int:
        return int(self.dead.sum())


class FVE:
    """Running 1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖² over the tokens added (float64 sums)."""

    def __init__(self):
        self.sse = self.sum_sq = 0.0
        self.total: torch.Tensor | float = 0.0
        self.n = 0

    def add(self, y: torch.Tensor, y_hat: torch.Tensor) -> None:
        y64 = y.detach().double()
        self.sse += float((y64 - y_hat.detach().double()).pow(2).sum())
        self.sum_sq += float(y64.pow(2).sum())
        self.total = self.total + y64.sum(0)
        self.n += y.shape[0]

    @property
    def value(self) -> float:
        if self.n == 0:
            return math.nan
        sst = self.sum_sq - float((torch.as_tensor(self.total) ** 2).sum()) / self.n
        return 1.0 - self.sse / sst if sst > 0 else math.nan


# ---- one step, the loop ------------------------------------------------------------------------

def loss_terms(coder: TopKCoder, x: torch.Tensor, y: torch.Tensor, dead: torch.Tensor | None):
    """(FVU, AuxK, ŷ, indices of active features) of one batch (module docstring)."""
    with torch.no_grad():
        pre = coder.pre(x)
    values, indices = coder.selected(x, pre, coder.k)
    values = torch.relu(values)
    y_hat = coder.decode(values, indices)
    variance = (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
    fvu = (y - y_hat).pow(2).sum() / variance
    auxk = y.new_zeros(())
    n_dead = 0 if dead is None else int(dead.sum())
    if n_dead:
        k_aux = min(y.shape[1] // 2, n_dead)
        aux_values, aux_indices = coder.selected(x, pre, k_aux, among=dead)
        e_hat = coder.decode(aux_values, aux_indices, bias=False)
        error = (y - y_hat).detach()
        auxk = min(n_dead / max(y.shape[1] // 2, 1), 1.0) * (error - e_hat).pow(2).sum() / variance
    return fvu, auxk, y_hat, indices[values.detach() > 0]


@dataclass
class TrainResult:
    coder: TopKCoder
    tokens: int = 0
    steps: int = 0
    fve: float = math.nan
    """On the held-out tokens (NaN without any)."""
    train_fve: float = math.nan
    """Over the batches since the last report."""
    dead: int = 0
    seconds: float = 0.0
    eval_tokens: int = 0
    history: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"tokens": self.tokens, "steps": self.steps, "fve": self.fve, "train_fve": self.train_fve,
                "dead": self.dead, "seconds": round(self.seconds, 1), "eval_tokens": self.eval_tokens}


Progress = Callable[[dict], None]
"""Called every ``log_every`` steps with ``{tokens, steps, loss, fve, dead}``."""


def train(chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], config: TrainConfig, *,
          eval_data: tuple[torch.Tensor, torch.Tensor] | None = None, progress: Progress | None = None,
          device: str | torch.device = "cpu") -> TrainResult:
    """Train a coder on ``chunks`` of (x [n, d_in], y [n, d_out]) activations, one pass."""
    generator = torch.Generator().manual_seed(config.seed)
    coder = optimizer = tracker = None
    result: TrainResult | None = None
    window, started = FVE(), time.perf_counter()
    for x_chunk, y_chunk in chunks:
        if coder is None:
            coder = TopKCoder(x_chunk.shape[1], y_chunk.shape[1], config.width, config.k,
                              subtract_b_dec=config.kind == "topk-sae", generator=generator).to(device)
            with torch.no_grad():
                coder.b_dec.copy_(y_chunk.double().mean(0).float())
            optimizer = torch.optim.Adam(coder.parameters(), lr=config.learning_rate, betas=(0.9, 0.999), eps=ADAM_EPS,
                                         fused=True)
            tracker = DeadTracker(config.width, config.dead_tokens)
            result = TrainResult(coder)
        order = torch.randperm(x_chunk.shape[0], generator=generator)
        for start in range(0, len(order), config.batch_tokens):
            rows = order[start:start + config.batch_tokens]
            x, y = x_chunk[rows].to(device).float(), y_chunk[rows].to(device).float()
            dead = tracker.dead
            fvu, auxk, y_hat, active = loss_terms(coder, x, y, dead if bool(dead.any()) else None)
            loss = fvu + config.auxk_alpha * auxk
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            coder.project_decoder_grad()
            optimizer.step()
            coder.normalize_decoder()
            fired = torch.zeros(config.width, dtype=torch.bool)
            fired[active.cpu()] = True
            tracker.update(fired, len(rows))
            window.add(y, y_hat)
            result.tokens += len(rows)
            result.steps += 1
            if result.steps % config.log_every == 0:
                result.train_fve = window.value
                state = {"tokens": result.tokens, "steps": result.steps, "loss": float(loss.detach()), "fve": window.value,
                         "dead": tracker.count}
                result.history.append(state)
                if progress is not None:
                    progress(state)
                window = FVE()
    if result is None:
        raise ConfigError("no training data: the corpus gave no activations")
    if window.n:
        result.train_fve = window.value
    result.dead = tracker.count
    if eval_data is not None and eval_data[0].shape[0]:
        result.fve, result.eval_tokens = evaluate(coder, *eval_data, device=device), eval_data[0].shape[0]
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def evaluate(coder: TopKCoder, x: torch.Tensor, y: torch.Tensor, *, batch: int = 4096, device="cpu") -> float:
    """FVE of the coder on (x, y)."""
    fve = FVE()
    for start in range(0, x.shape[0], batch):
        xs, ys = x[start:start + batch].to(device).float(), y[start:start + batch].to(device).float()
        fve.add(ys, coder(xs))
    return fve.value


# ---- activations from a model -----------------------------------------------------------------

@torch.no_grad()
def activation_chunks(model, adapter, stream, sites: tuple[tuple[str, int], tuple[str, int]], *, batch_size: int,
                      special_ids: set[int], chunk_tokens: int, max_tokens: int | None = None,
                      progress: Callable[[int], None] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) chunks of about ``chunk_tokens`` activations at the two sites (the same site
    twice for an SAE), special tokens left out, at most ``max_tokens`` in all, on the CPU."""
    in_site, out_site = sites
    wanted = list(dict.fromkeys(sites))
    last = max(layer for _, layer in wanted)
    special = torch.tensor(sorted(special_ids), dtype=torch.long)
    xs, ys, held, total = [], [], 0, 0
    for batch in stream.batches(batch_size):
        keep = ~torch.isin(batch.reshape(-1), special)
        with capture(model, adapter, wanted) as got:
            forward_until(model, adapter, batch, last)
        x = got[in_site][0].reshape(-1, got[in_site][0].shape[-1])[keep.to(got[in_site][0].device)]
        y = got[out_site][0].reshape(-1, got[out_site][0].shape[-1])[keep.to(got[out_site][0].device)]
        if max_tokens is not None:
            x, y = x[: max_tokens - total], y[: max_tokens - total]
        xs.append(x.float().cpu())
        ys.append(y.float().cpu() if out_site != in_site else xs[-1])
        held += x.shape[0]
        total += x.shape[0]
        if progress is not None:
            progress(x.shape[0])
        if held >= chunk_tokens or (max_tokens is not None and total >= max_tokens):
            yield torch.cat(xs), torch.cat(ys)
            xs, ys, held = [], [], 0
        if max_tokens is not None and total >= max_tokens:
            return
    if xs:
        yield torch.cat(xs), torch.cat(ys)


def split_eval(chunks: Iterator[tuple[torch.Tensor, torch.Tensor]], eval_tokens: int):
    """(held-out (x, y) of the first ``eval_tokens`` activations, the remaining chunks)."""
    held_x, held_y, got = [], [], 0
    rest: list = []
    for x, y in chunks:
        take = min(eval_tokens - got, x.shape[0])
        held_x.append(x[:take])
        held_y.append(y[:take])
        got += take
        if take < x.shape[0]:
            rest.append((x[take:], y[take:]))
            break
        if got >= eval_tokens:
            break

    def remaining():
        yield from rest
        yield from chunks

    return (torch.cat(held_x), torch.cat(held_y)), remaining()
