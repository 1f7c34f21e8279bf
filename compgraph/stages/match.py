"""The ``match`` stage: MATCHES edges between the units of this model (A) and another (B).

Units: MLP neurons and/or query heads (``match_components``). Methods (``match_methods``):

- ``activation`` (neurons and heads): both models read the same corpus text, aligned
  token by token when they share a tokenizer and on word ends otherwise
  (:mod:`compgraph.extract.aligned`); a neuron's activations at the aligned positions, or
  a head's attention between them, are correlated with every unit of the other model:
  ``score`` is the Pearson correlation, ``excess`` the score minus the unit's best
  correlation with the other model's units after a random rotation, over all its layers
  (Gurnee et al. 2024).
- ``decoding`` (neurons): the overlap of the two neurons' top-k decoded tokens, with
  ``same_top`` (:mod:`compgraph.extract.decodings`).

Each unit keeps its ``match_top_k`` best in the other model, in both directions::

    (a)-[:MATCHES {method, score, excess, rank, mutual, run}]->(b)   (+ same_top: decoding)

``rank`` 0 is the best match, ``mutual`` says whether the two are each other's rank-0
match. Definitions: :mod:`compgraph.extract.matching`.

Runs: one per other model, kind of unit and method (:meth:`MatchStage.instances`).
Shards: ``nodes`` (both models' units, identity only, so edges never miss an endpoint),
then ``a:L{l}`` for each of A's layers (the edges leaving A's layer l) and ``b:L{l}`` for
each of B's (the edges leaving B's layer l), so the edges leaving one unit come from one
shard. Every layer shard reads one all-layer-pairs matching, computed once per job from
the two models' activations (memory: both models' standardized activations and their
rotations, ``4 · N · (L_A · d_A + L_B · d_B)`` bytes in bfloat16 for neurons, besides both
models' weights and a few float32 matrices of one layer pair); a resumed job computes it
again. The pair's runs belong to the model whose name sorts first (``compgraph match``
orders them; ``ingest --match-with`` in the other order is refused), so no two runs write
the same edges. A document's first position is kept (Qwen adds no BOS token):
attention-sink activations there count like any other position.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import polars as pl
import torch

from compgraph import schema
from compgraph.data.corpus import resolve_corpus
from compgraph.data.digests import files_digest
from compgraph.engine.registry import register
from compgraph.engine.stage import CorpusConfig, Frames, Stage, check_top_k
from compgraph.errors import ConfigError
from compgraph.extract import aligned, decodings, matching
from compgraph.models import loading
from compgraph.models.adapters.registry import adapter_for
from compgraph.models.info import ModelInfo, model_info, n_tokens
from compgraph.options import option
from compgraph.schema import ComponentKind as K
from compgraph.stages import rows
from compgraph.stages.shared import TopKConfig

P = schema.Prop


@dataclass(frozen=True, kw_only=True)
class MatchConfig(TopKConfig, CorpusConfig):
    """The corpus (activation), ``top_k`` (decoding: the top-k decoded tokens compared, the
    neurons stage's ``--top-k``) and the options below."""

    match_with: str | None = option(None, "The other model's name in the store (stage match).", metavar="NAME",
                                    show_default=False)
    """The other model's :Model name: the run's scope and the MATCHES edges' other end."""
    match_source: str | None = option(None, "Where the other model's weights are (its MODEL spec).", metavar="SPEC",
                                      show_default=False)
    """The other model's MODEL spec (its :Model node's ``source``)."""
    match_top_k: int = option(5, "Matches kept per unit in the other model (stage match).", minimum=1)
    """Each unit's best matches kept, in the other model."""
    match_positions: int = option(4096, "Aligned corpus positions the match correlations run over.", minimum=16)
    """N, the aligned positions (tokens, or word ends across tokenizers)."""
    match_seed: int = option(0, "Seed of the random rotation (activation) and relabelling (decoding) of the "
                             "excess baselines, and of the decoding method's tie-breaking.")
    """The seed of each model's rotation (activation), of the vocabulary's relabelling and of
    the tie-breaking noise (decoding)."""
    match_methods: tuple[str, ...] = option(
        (schema.MatchMethod.ACTIVATION.value,), "Comma list of match methods: activation, decoding.",
        choices=tuple(m.value for m in schema.MatchMethod))
    """The methods computed, one run each (scope ``{other}`` for activation, ``{other}/{method}`` else)."""
    match_components: tuple[str, ...] = option(
        (K.NEURON.value,), "Comma list of the units matched: neuron (activation, decoding), head (activation).",
        choices=(K.NEURON.value, K.HEAD.value))
    """MLP neurons and/or query heads (heads: attention between aligned positions)."""
    match_via: str | None = option("out", "Decoding method: the neuron direction decoded (out, in or gate).",
                            choices=("out", "in", "gate"))
    """Decoding: which direction's top ``top_k`` tokens are compared (``DECODES_TO.via``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.match_with and not self.match_source:
            raise ConfigError("--match-with needs --match-source (the other model's MODEL spec)")


_DEFAULTS = {f.name: f.default for f in fields(MatchConfig)}
M = schema.MatchMethod
METHODS_OF = {K.NEURON: (M.ACTIVATION, M.DECODING), K.HEAD: (M.ACTIVATION,)}
"""The methods that match each kind of unit."""


class MatchStage(Stage):
    name = "match"
    version = 1
    Config = MatchConfig
    trigger = "match_with"
    inputs = ("weights",)  # and the corpus, for activation runs (digests)
    description = ("MATCHES between this model's neurons or heads and another model's (activation correlation, "
                   "decoded tokens).")

    def instances(self, config: MatchConfig) -> list[tuple[str, MatchConfig]]:
        """One run per kind of unit and method that matches it (:data:`METHODS_OF`): scope
        ``{other}`` for neurons by activation, ``{other}/{method}`` for neurons by another
        method, ``{other}/heads`` for heads; so that each one's MATCHES stay until it is
        recomputed. A run's config holds only what it reads; the neuron-activation run's
        holds none of the options added with the other runs (empty values are left out of
        a run's identity), so the runs made before them keep their identity."""
        if not config.match_with:
            return []
        out = []
        for kind in dict.fromkeys(config.match_components):
            for method in dict.fromkeys(config.match_methods):
                if method not in METHODS_OF[kind]:
                    continue
                one = replace(config, match_components=() if kind == K.NEURON else (kind,),
                              match_methods=() if method == M.ACTIVATION else (method,), max_tokens=None)
                if method == M.ACTIVATION:
                    one = replace(one, match_via=None, top_k=None)
                else:
                    one = replace(one, match_positions=_DEFAULTS["match_positions"], seq_len=_DEFAULTS["seq_len"],
                                  corpus=None)
                scope = config.match_with + ("/heads" if kind == K.HEAD else "") + (
                    f"/{method}" if method != M.ACTIVATION else "")
                out.append((scope, one))
        if not out:
            raise ConfigError(f"match: no method of --match-methods {','.join(config.match_methods)} matches "
                              f"{', '.join(config.match_components)} (heads match by activation only)")
        return out

    def digests(self, config: MatchConfig) -> dict[str, str]:
        """The other model's weights; and the corpus, for the runs that read it (activation)."""
        out = {"other_weights": files_digest(loading.model_files(loading.resolve(config.match_source)))}
        if _method(config) == M.ACTIVATION:
            out["corpus"] = resolve_corpus(config.corpus).digest()
        return out

    def _other(self, config: MatchConfig) -> ModelInfo:
        source, model_config, adapter = loading.inspect(config.match_source)
        return model_info(config.match_with, config.match_source, model_config, adapter)

    def edge_models(self, info: ModelInfo, config: MatchConfig) -> tuple[str, ...]:
        return (info.name, config.match_with)

    def validate(self, info: ModelInfo, config: MatchConfig) -> None:
        if config.match_with == info.name:
            raise ConfigError(f"cannot match {info.name} with itself")
        if "/" in config.match_with or ":" in config.match_with:
            raise ConfigError(f"--match-with must name a model (no '/' or ':'): {config.match_with!r}")
        if config.match_with < info.name:  # one run per pair, so no two runs write the same edges
            raise ConfigError(f"the run matching {info.name} and {config.match_with} belongs to "
                              f"{config.match_with} (the name that sorts first): use `compgraph match`")
        other = self._other(config)
        for model in (info, other):
            if model.is_moe and _kind(config) == K.NEURON:
                raise ConfigError(f"match: {model.name} is a MoE model; only dense MLP neurons are matched")
            if not model.causal and _method(config) == M.ACTIVATION:
                raise ConfigError(f"match: {model.name} is not a causal LM (sequences are right-padded "
                                  "without an attention mask)")
            if _method(config) == M.DECODING:
                check_top_k(model, config.top_k)
                if config.match_via == "gate" and not adapter_for(model.model_type).gated:
                    raise ConfigError(f"match: {model.name} has no gated MLP: --match-via gate decodes nothing")

    def check_inputs(self, ctx, config: MatchConfig) -> None:
        if _method(config) == M.ACTIVATION:
            self._alignment(ctx, config)  # before the job writes anything: a corpus too short is refused here

    def _alignment(self, ctx, config: MatchConfig) -> aligned.Aligned:
        def compute() -> aligned.Aligned:
            a, b = ctx.model(), ctx.other_model(config.match_source)
            texts = resolve_corpus(ctx.corpus_spec).documents()
            where = aligned.align(a.tokenizer, b.tokenizer, texts, same_tokenizer=self._same_tokenizer(ctx, b),
                                  seq_len=config.seq_len,
                                  max_positions=config.match_positions)
            if where.n < config.match_positions:
                raise ConfigError(f"match: the corpus gives {where.n} aligned positions, fewer than "
                                  f"--match-positions {config.match_positions}")
            return where

        return ctx.memo(("align", config.match_source, config.seq_len, config.match_positions), compute)

    def shards(self, info: ModelInfo, config: MatchConfig, execution) -> list[str]:
        other = self._other(config)
        return (["nodes"] + [f"a:L{layer}" for layer in range(info.n_layers)]
                + [f"b:L{layer}" for layer in range(other.n_layers)])

    def _matches(self, ctx, config: MatchConfig) -> matching.LayerMatches:
        compute = self._by_activation if _method(config) == M.ACTIVATION else self._by_decoding
        return ctx.memo(("match", config), lambda: compute(ctx, config))

    def _by_activation(self, ctx, config: MatchConfig) -> matching.LayerMatches:
        a, b = ctx.model(), ctx.other_model(config.match_source)
        where = self._alignment(ctx, config)
        batch = ctx.execution.batch_size
        sides = []
        heads = _kind(config) == K.HEAD
        for loaded, ids, pos in ((a, where.ids_a, where.pos_a), (b, where.ids_b, where.pos_b)):
            n_layers = loaded.model.config.num_hidden_layers
            what = "attention" if heads else "activations"
            advance = ctx.progress(f"match: {loaded.source.spec} {what}", -(-len(ids) // batch))
            if heads:
                sides.append(aligned.head_patterns(loaded.model, n_layers, ids, pos, batch_size=batch,
                                                   seed=config.match_seed, advance=advance))
            else:
                sides.append(aligned.neuron_activations(loaded.model, loaded.adapter, n_layers, ids, pos,
                                                        batch_size=batch, seed=config.match_seed, advance=advance))
        pairs = len(sides[0].z) * len(sides[1].z)
        return aligned.match_neurons(*sides, config.match_top_k, bf16_matmul=loading.native_bf16("cpu"),
                                     advance=ctx.progress("match: layer pairs", pairs))

    def _by_decoding(self, ctx, config: MatchConfig) -> matching.LayerMatches:
        a, b = ctx.model(), ctx.other_model(config.match_source)
        info, other = ctx.info, self._other_info(ctx, config)
        n_a, n_b = ctx.n_tokens, n_tokens(b.tokenizer, other)
        tops = []
        for loaded, model, n in ((a, info, n_a), (b, other, n_b)):
            tops.append(decodings.top_ids(loaded, model.n_layers, config.top_k, n, config.match_via,
                                          advance=ctx.progress(f"match: {loaded.source.spec} decodings",
                                                               model.n_layers)))
        both = decodings.comparable(*tops, same_tokenizer=self._same_tokenizer(ctx, b), tokenizer_a=a.tokenizer, tokenizer_b=b.tokenizer,
                                    n_a=n_a, n_b=n_b)
        return matching.match_decodings(both.a, both.b, config.match_top_k, both.n, seed=config.match_seed,
                                        advance=ctx.progress("match: layer pairs", info.n_layers * other.n_layers))

    @staticmethod
    def _same_tokenizer(ctx, other) -> bool:
        return ctx.tokenizer_id == schema.tokenizer_uid("vocab", other.tokenizer.get_vocab())

    def _other_info(self, ctx, config: MatchConfig) -> ModelInfo:
        # resolving the other model reads its GGUF's index: once per job, not once per shard
        return ctx.memo(("other_info", config.match_source), lambda: self._other(config))

    def run(self, ctx, config: MatchConfig, shard: str) -> Frames:
        info, other = ctx.info, self._other_info(ctx, config)
        heads = _kind(config) == K.HEAD
        if shard == "nodes":
            if heads:
                return Frames.of(nodes=[(schema.HEAD, rows.head_identity(m)) for m in (info, other)])
            return Frames.of(nodes=[(schema.NEURON, rows.neuron_identity(m.name, layer, m.d_mlp))
                                    for m in (info, other) for layer in range(m.n_layers)])
        side_name, layer = shard.split(":L")
        layer = int(layer)
        matches = self._matches(ctx, config)
        if side_name == "a":
            side, mutual, src_model, dst_model = matches.a[layer], matches.mutual_a(layer), info.name, other.name
        else:
            side, mutual, src_model, dst_model = matches.b[layer], matches.mutual_b(layer), other.name, info.name
        return Frames.of(edges=[(schema.MATCHES, match_rows(side, mutual, src_model, layer, dst_model,
                                                            _method(config),
                                                            schema.head_uid if heads else schema.neuron_uid))])


def _method(config: MatchConfig) -> str:
    """One run's method (activation when its config names none)."""
    return config.match_methods[0] if config.match_methods else M.ACTIVATION


def _kind(config: MatchConfig) -> str:
    """One run's kind of unit (neuron when its config names none)."""
    return config.match_components[0] if config.match_components else K.NEURON


def match_rows(side: matching.Side, mutual, src_model: str, layer: int, dst_model: str,
               method: str = M.ACTIVATION.value, uid=schema.neuron_uid) -> pl.DataFrame:
    """MATCHES rows of one layer's units: one per (unit, rank) that has a match; ``same_top``
    where the side has it (decoding). ``uid(model, layer, index)`` names the units."""
    units, k = side.index.shape
    columns = {
        "unit": torch.arange(units).repeat_interleave(k).numpy(), P.RANK: torch.arange(k).repeat(units).numpy(),
        "dst_layer": side.layer.flatten().numpy(), "dst_index": side.index.flatten().numpy(),
        P.SCORE: side.score.flatten().numpy(), P.EXCESS: side.excess.flatten().numpy(),
        "best_mutual": mutual.repeat_interleave(k).numpy(),
    }
    extra = []
    if side.same_top is not None:
        columns[P.SAME_TOP] = side.same_top.flatten().numpy()
        extra = [P.SAME_TOP]
    frame = pl.DataFrame(columns).filter(pl.col("dst_index") >= 0)
    return frame.select(
        pl.Series("src", [uid(src_model, layer, u) for u in frame["unit"].to_list()]),
        pl.Series("dst", [uid(dst_model, lb, j)
                          for lb, j in zip(frame["dst_layer"].to_list(), frame["dst_index"].to_list())]),
        pl.lit(str(method)).alias(P.METHOD), P.SCORE, P.EXCESS,
        pl.col(P.RANK).cast(pl.Int64), (pl.col("best_mutual") & (pl.col(P.RANK) == 0)).alias(P.MUTUAL), *extra)


STAGE = register(MatchStage())
