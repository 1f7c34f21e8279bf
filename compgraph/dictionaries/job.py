"""``compgraph train-dictionary``: train a TopK SAE or transcoder on a model's activations
over a corpus (:mod:`compgraph.dictionaries.training`) and save it in SAELens's layout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from compgraph.data.corpus import resolve_corpus
from compgraph.data.tokens import TokenStream
from compgraph.dictionaries.saelens import save_saelens
from compgraph.dictionaries.training import Progress, TrainConfig, TrainResult, activation_chunks, split_eval, train
from compgraph.errors import ConfigError
from compgraph.models import loading
from compgraph.options import Options, option

SITE_ALIASES = {"resid": "resid_post"}
"""``--site`` shorthands."""
SAE_SITES = ("resid_pre", "resid_mid", "resid_post", "mlp_in", "mlp_out", "attn_out")
TRANSCODER_SITES = ("mlp_in", "mlp_out")
"""A transcoder reads ``mlp_in`` and predicts ``mlp_out`` of the same layer."""


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
class TrainJob(Options):
    """``compgraph train-dictionary``: what to train on and where to save it."""

    model: str
    layer: int = option(help="Block index the dictionary reads.")
    site: str | None = option(None, "SAE: resid (= resid_post), resid_pre, resid_mid, mlp_in, mlp_out, attn_out "
                                    "[resid]; transcoder: mlp_in (predicts mlp_out).", show_default=False)
    out: str | None = option(None, "Folder to write (SAELens layout) [default: derived].", metavar="DIR",
                             show_default=False)
    corpus: str | None = option("packaged:pile", "Corpus spec.", metavar="SPEC")
    tokens: int = option(1_000_000, "Training tokens (activations).", minimum=1)
    """Training tokens (activations), held-out ones not counted."""
    eval_tokens: int = option(16_384, "Held-out tokens for the final FVE.", minimum=0)
    seq_len: int = option(128, "Tokens per corpus sequence.", minimum=8)
    batch_size: int = option(32, "Sequences per forward pass.", minimum=1)
    """Corpus rows per forward pass of the model."""
    chunk_tokens: int = option(65_536, "Activations gathered (and shuffled) per chunk.", minimum=1)
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    dtype: str = option("auto", "The model's forward pass: auto (bfloat16 where the hardware has it natively), "
                                "float32, bfloat16 or float16; the dictionary trains in float32.",
                        choices=("auto", "float32", "bfloat16", "float16"))
    """The model's forward pass that produces the activations: ``auto`` is bfloat16 where
    the hardware computes it natively (:func:`~compgraph.models.loading.native_bf16`),
    float32 elsewhere. The coder itself always trains in float32."""
    train: TrainConfig = field(default_factory=TrainConfig)

    def default_out(self, model_name: str) -> str:
        site = self.site or ("mlp_in" if self.train.kind == "transcoder" else "resid")
        return f"{model_name}-L{self.layer}-{site}-{self.train.kind}-w{self.train.width}-k{self.train.k}"


def forward_dtype(dtype: str, device: str) -> str:
    """The dtype name the activations' forward pass runs in (``TrainJob.dtype``)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if loading.auto_bfloat16(device) else "float32"


def train_dictionary(job: TrainJob, *, progress: Progress | None = None,
                     read_progress: Callable[[int], None] | None = None) -> tuple[Path, TrainResult]:
    """Load the model, stream its activations from the corpus, train, save (SAELens); returns
    (the folder written, the result)."""
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
