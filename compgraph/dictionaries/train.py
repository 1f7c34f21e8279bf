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
dot products instead of dense [n, width] matmuls; ``test_sparse_gradients_equal_dense_autograd``).
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
:func:`save_saelens`), which :func:`compgraph.dictionaries.readers.read_dictionary` reads.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from compgraph.dictionaries.base import Dictionary
from compgraph.errors import ConfigError

KINDS = ("topk-sae", "transcoder")
SITE_ALIASES = {"resid": "resid_post"}
"""``--site`` shorthands."""
SAE_SITES = ("resid_pre", "resid_mid", "resid_post", "mlp_in", "mlp_out", "attn_out")
TRANSCODER_SITES = ("mlp_in", "mlp_out")
"""A transcoder reads ``mlp_in`` and predicts ``mlp_out`` of the same layer."""
ADAM_EPS = 6.25e-10


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How a coder is trained (what it is trained on is the caller's)."""

    kind: str = "topk-sae"
    """``topk-sae`` (reconstruct x) or ``transcoder`` (predict y from x)."""
    width: int = 4096
    """Number of features."""
    k: int = 32
    """Active features per token."""
    lr: float | None = None
    """Adam learning rate; None: ``2e-4 / sqrt(width / 2**14)`` (Gao et al.)."""
    batch_tokens: int = 1024
    """Tokens per optimiser step."""
    dead_tokens: int = 100_000
    """A feature with no activation in this many training tokens is dead."""
    auxk_alpha: float = 1 / 32
    """Weight of the AuxK loss."""
    seed: int = 0
    """Seeds the initialisation and the shuffling."""
    log_every: int = 20
    """Steps between progress reports."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        for name, low in (("width", 1), ("k", 1), ("batch_tokens", 1), ("dead_tokens", 1), ("log_every", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {low}, not {getattr(self, name)}")
        if self.k > self.width:
            raise ConfigError(f"--k {self.k} exceeds --width {self.width}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, not {self.lr}")
        if self.auxk_alpha < 0:
            raise ConfigError(f"auxk_alpha must be >= 0, not {self.auxk_alpha}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.width / 2 ** 14)


# ---- the coder ------------------------------------------------------------------------------

class _Selected(torch.autograd.Function):
    """``pre[n, indices[n, j]]`` given its values (computed without autograd), with the
    encoder's gradients computed from those n·k entries only: for
    ``pre = x_c W_enc + b_enc`` (x_c = x − b_dec for an SAE, x for a transcoder)
    ∂/∂W_enc = x_cᵀ G, ∂/∂b_enc = Σ_n G, ∂/∂b_dec = −W_enc Σ_n G, with G the sparse
    [n, width] gradient at the selected entries (a sparse-dense product, not a dense one)."""

    @staticmethod
    def forward(ctx, values, x_c, W_enc, b_enc, b_dec, indices):
        ctx.save_for_backward(x_c, W_enc, indices)
        ctx.has_b_dec = b_dec is not None
        return values.clone()

    @staticmethod
    def backward(ctx, grad):
        x_c, W_enc, indices = ctx.saved_tensors
        n, k = indices.shape
        width = W_enc.shape[1]
        flat = indices.reshape(-1)
        per_feature = torch.zeros(width, dtype=grad.dtype, device=grad.device).index_add_(0, flat, grad.reshape(-1))
        rows = torch.arange(n, device=grad.device).repeat_interleave(k)
        sparse = torch.sparse_coo_tensor(torch.stack([flat, rows]), grad.reshape(-1), (width, n), check_invariants=False)
        grad_W_enc = (sparse @ x_c).T
        grad_b_dec = -(W_enc @ per_feature) if ctx.has_b_dec else None
        return None, None, grad_W_enc, per_feature, grad_b_dec, None


class _Decode(torch.autograd.Function):
    """``Σ_j values[n, j] · W_dec[indices[n, j]]`` (indices sorted within each row), with
    ∂/∂values from the n·k sampled dot products and ∂/∂W_dec as a sparse-dense product."""

    @staticmethod
    def forward(ctx, values, indices, W_dec):
        ctx.save_for_backward(values, indices, W_dec)
        return torch.nn.functional.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx, grad):
        values, indices, W_dec = ctx.saved_tensors
        n, k = indices.shape
        width = W_dec.shape[0]
        flat = indices.reshape(-1)
        crow = torch.arange(0, n * k + 1, k, device=grad.device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            mask = torch.sparse_csr_tensor(crow, flat, torch.zeros(n * k, dtype=grad.dtype, device=grad.device),
                                           (n, width), check_invariants=False)
            grad_values = torch.sparse.sampled_addmm(mask, grad, W_dec.T, beta=0.0).values().view(n, k)
        rows = torch.arange(n, device=grad.device).repeat_interleave(k)
        sparse = torch.sparse_coo_tensor(torch.stack([flat, rows]), values.reshape(-1), (width, n),
                                         check_invariants=False)
        return grad_values, None, sparse @ grad


def _top(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest entries per row, indices ascending within a row."""
    top = torch.topk(pre, k, dim=-1, sorted=False)
    indices, order = top.indices.sort(dim=-1)
    return top.values.gather(-1, order), indices


class TopKCoder(torch.nn.Module):
    """A TopK SAE or transcoder (module docstring); encoder gradients and the decoder are
    computed sparsely (:class:`_Selected`, :class:`_Decode`)."""

    def __init__(self, d_in: int, d_out: int, width: int, k: int, *, subtract_b_dec: bool,
                 generator: torch.Generator | None = None):
        super().__init__()
        if subtract_b_dec and d_in != d_out:
            raise ValueError("an SAE subtracts b_dec from its input: d_in must equal d_out")
        W_dec = torch.randn(width, d_out, generator=generator)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W_dec)
        self.W_enc = torch.nn.Parameter(W_dec.T.clone() if d_in == d_out else
                                        torch.randn(d_in, width, generator=generator) / math.sqrt(d_in))
        self.b_enc = torch.nn.Parameter(torch.zeros(width))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_out))
        self.k, self.subtract_b_dec = k, subtract_b_dec

    @property
    def width(self) -> int:
        return self.W_dec.shape[0]

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.b_dec if self.subtract_b_dec else x

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.centred(x) @ self.W_enc + self.b_enc

    def selected(self, x: torch.Tensor, pre: torch.Tensor, k: int, among: torch.Tensor | None = None):
        """(values with encoder gradients, indices) of the k largest of ``pre`` [n, width] (of
        the features in ``among`` when given), ``pre`` computed without autograd from ``x``."""
        source = pre if among is None else pre.masked_fill(~among.to(pre.device), -math.inf)
        values, indices = _top(source, k)
        x_c = self.centred(x).detach()
        b_dec = self.b_dec if self.subtract_b_dec else None
        return _Selected.apply(values, x_c, self.W_enc, self.b_enc, b_dec, indices), indices

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices) [n, k] of TopK(ReLU(pre))."""
        values, indices = _top(pre, self.k)
        return torch.relu(values), indices

    def decode(self, values: torch.Tensor, indices: torch.Tensor, *, bias: bool = True) -> torch.Tensor:
        """Σ_k values · W_dec[indices] (+ b_dec): the decoder on k rows per token (indices
        ascending within a row)."""
        out = _Decode.apply(values, indices, self.W_dec)
        return out + self.b_dec if bias else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.select(self.pre(x)))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove from each decoder row's gradient its component along the row."""
        if self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g.addcmul_(w, torch.linalg.vecdot(g, w).unsqueeze(1), value=-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12)

    def to_dictionary(self, *, kind: str, site: str, layer: int | None, output_site: str | None = None,
                      output_layer: int | None = None, hook: str = "", source: str = "") -> Dictionary:
        t = {n: getattr(self, n).detach().cpu().float().clone() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
        return Dictionary(kind=kind, site=site, layer=layer, activation="topk", k=self.k,
                          subtract_b_dec=self.subtract_b_dec, output_site=output_site if kind == "transcoder" else site,
                          output_layer=output_layer if kind == "transcoder" else layer, hook=hook, source=source,
                          format="saelens", **t)


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
    from compgraph.models.forward import forward_until
    from compgraph.models.hooks import capture

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


# ---- saving -------------------------------------------------------------------------------------

def tl_hook(site: str, layer: int) -> str:
    """The TransformerLens hook name of a compgraph site (the first of
    :data:`compgraph.dictionaries.readers.TL_HOOK_SITES` naming it)."""
    from compgraph.dictionaries.readers import TL_HOOK_SITES

    for hook, name in TL_HOOK_SITES.items():
        if name == site:
            return f"blocks.{layer}.{hook}"
    raise ConfigError(f"no TransformerLens hook name for site {site!r}")


def save_saelens(d: Dictionary, out: str | Path, *, model_name: str = "", context_size: int | None = None,
                 extra: dict | None = None) -> Path:
    """Write ``d`` (activation ``topk``) as SAELens 6 does: ``cfg.json`` (architecture
    ``topk`` for an SAE; ``transcoder`` with ``activation_fn`` ``topk`` for a transcoder,
    plus ``d_out`` and ``hook_name_out``) and ``sae_weights.safetensors`` (W_enc [d_in,
    d_sae], b_enc, W_dec [d_sae, d_out], b_dec). ``extra`` goes under ``compgraph``."""
    from safetensors.torch import save_file

    if d.activation != "topk" or d.layer is None:
        raise ConfigError("save_saelens writes TopK dictionaries of a layer only")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    transcoder = d.kind == "transcoder"
    cfg = {
        "architecture": "transcoder" if transcoder else "topk", "d_in": d.d_in, "d_sae": d.width, "k": d.k,
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": d.subtract_b_dec,
        "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"model_name": model_name, "hook_name": tl_hook(d.site, d.layer), "hook_head_index": None,
                     "prepend_bos": True, "context_size": context_size, "sae_lens_training_version": None},
    }
    if transcoder:
        cfg.update({"activation_fn": "topk", "d_out": d.d_out,
                    "hook_name_out": tl_hook(d.output_site, d.output_layer)})
    if extra:
        cfg["compgraph"] = extra
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2, default=str))
    save_file({n: getattr(d, n).detach().cpu().float().contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")},
              str(out / "sae_weights.safetensors"))
    return out


# ---- the command ----------------------------------------------------------------------------------

def resolve_sites(kind: str, site: str | None, layer: int) -> tuple[tuple[str, int], tuple[str, int]]:
    """((input site, layer), (target site, layer)) for ``--kind`` and ``--site``."""
    if kind == "transcoder":
        if site not in (None, "mlp_in"):
            raise ConfigError(f"a transcoder reads mlp_in and predicts mlp_out: --site must be mlp_in, not {site!r}")
        return ("mlp_in", layer), ("mlp_out", layer)
    name = SITE_ALIASES.get(site or "resid", site or "resid")
    if name not in SAE_SITES:
        raise ConfigError(f"--site must be one of resid, {', '.join(SAE_SITES)}; not {site!r}")
    return (name, layer), (name, layer)


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    """``compgraph train-dictionary``: what to train on and where to save it."""

    model: str
    layer: int
    site: str | None = None
    out: str | None = None
    corpus: str | None = "packaged:pile"
    tokens: int = 1_000_000
    """Training tokens (activations), held-out ones not counted."""
    eval_tokens: int = 16_384
    seq_len: int = 128
    batch_size: int = 32
    """Corpus rows per forward pass of the model."""
    chunk_tokens: int = 65_536
    device: str = "auto"
    dtype: str = "auto"
    """The model's forward pass that produces the activations: ``auto`` is bfloat16 where
    the hardware computes it natively (:func:`~compgraph.models.loading.native_bf16`),
    float32 elsewhere. The coder itself always trains in float32."""
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.eval_tokens < 0 or self.chunk_tokens < 1 or self.batch_size < 1:
            raise ConfigError("--tokens, --chunk-tokens and --batch-size must be positive, --eval-tokens >= 0")
        if self.seq_len < 8:
            raise ConfigError(f"--seq-len must be at least 8, not {self.seq_len}")

    def default_out(self, model_name: str) -> str:
        site = self.site or ("mlp_in" if self.train.kind == "transcoder" else "resid")
        return f"{model_name}-L{self.layer}-{site}-{self.train.kind}-w{self.train.width}-k{self.train.k}"


def forward_dtype(dtype: str, device: str) -> str:
    """The dtype name the activations' forward pass runs in (``TrainJob.dtype``)."""
    from compgraph.models import loading

    if dtype != "auto":
        return dtype
    return "bfloat16" if loading.native_bf16(loading.pick_device(device)) else "float32"


def train_dictionary(job: TrainJob, *, progress: Progress | None = None,
                     read_progress: Callable[[int], None] | None = None) -> tuple[Path, TrainResult]:
    """Load the model, stream its activations from the corpus, train, save (SAELens); returns
    (the folder written, the result)."""
    from compgraph.corpus import resolve_corpus
    from compgraph.extract.data import TokenStream
    from compgraph.models import loading

    in_site, out_site = resolve_sites(job.train.kind, job.site, job.layer)
    source, config, adapter = loading.inspect(job.model)
    n_layers = config.get_text_config().num_hidden_layers
    if not 0 <= job.layer < n_layers:
        raise ConfigError(f"--layer {job.layer} is out of range: {job.model} has {n_layers} layers (0..{n_layers - 1})")
    for site, _ in (in_site, out_site):
        if site not in adapter.sites:
            raise ConfigError(f"site {site!r} does not exist in a {adapter.name} model")
    corpus = resolve_corpus(job.corpus)
    loaded = loading.load(job.model, device=job.device, dtype=forward_dtype(job.dtype, job.device))
    wanted = job.tokens + job.eval_tokens
    stream = TokenStream(loaded.tokenizer, corpus.documents(), seq_len=job.seq_len,
                         max_tokens=int(wanted * 1.1) + 16 * job.seq_len)
    try:
        chunks = activation_chunks(loaded.model, loaded.adapter, stream, (in_site, out_site),
                                   batch_size=job.batch_size, special_ids=set(loaded.tokenizer.all_special_ids),
                                   chunk_tokens=job.chunk_tokens, max_tokens=wanted, progress=read_progress)
        held, rest = split_eval(chunks, job.eval_tokens) if job.eval_tokens else (None, chunks)
        result = train(rest, job.train, eval_data=held, progress=progress, device=loaded.device)
    finally:
        stream.close()
    name = source.default_name
    out = Path(job.out or job.default_out(name))
    kind = "transcoder" if job.train.kind == "transcoder" else "sae"
    d = result.coder.to_dictionary(kind=kind, site=in_site[0], layer=job.layer, output_site=out_site[0],
                                   output_layer=job.layer, source=str(out))
    extra = {"corpus": corpus.spec, "corpus_digest": corpus.digest(), "model": job.model, **result.summary(),
             "activation_dtype": loaded.dtype,
             "train": asdict(job.train), "learning_rate": job.train.learning_rate, "seq_len": job.seq_len}
    save_saelens(d, out, model_name=name, context_size=job.seq_len, extra=extra)
    return out, result
