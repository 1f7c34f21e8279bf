"""The ingest job: model -> extractors -> store, in resumable shards.

The job is a list of shards (tokens, one per layer of neuron decoding, activation
statistics per layer, heads, experts per layer). A :Run node keyed on the model name
and the config hash records which shards are written; a killed job re-run with the
same config skips them, and a completed one writes nothing at all. Every write is a
merge on uid, so even a shard written twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import polars as pl

from compgraph import __version__, schema
from compgraph.config import IngestConfig
from compgraph.store.base import GraphStore

_RUN_STATE = "MATCH (r:Run {uid: $uid}) RETURN r.status AS status, r.done AS done"


@dataclass
class IngestReport:
    model: str
    run: str
    status: str  # "complete" | "already complete"
    shards_written: list[str] = field(default_factory=list)
    shards_skipped: int = 0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _with_run(edges: pl.DataFrame, run: str) -> pl.DataFrame:
    return edges.with_columns(pl.lit(run).alias(schema.Prop.RUN))


class _Job:
    """Shard bookkeeping on the :Run node."""

    def __init__(self, store: GraphStore, run: str, done: set[str]):
        self.store, self.run, self.done = store, run, done
        self.written: list[str] = []

    def pending(self, shard: str) -> bool:
        return shard not in self.done

    def finish_shard(self, shard: str) -> None:
        self.done.add(shard)
        self.written.append(shard)
        self.update(done=sorted(self.done))

    def update(self, **props) -> None:
        self.store.merge_nodes(schema.RUN, pl.DataFrame([{"uid": self.run, **props}]))

    def write(self, shard: str, nodes: list[tuple[schema.NodeKind, pl.DataFrame]],
              edges: list[tuple[schema.RelKind, pl.DataFrame]] = ()) -> None:
        for kind, frame in nodes:
            self.store.merge_nodes(kind, frame)
        for rel, frame in edges:
            if frame.height:
                self.store.merge_edges(rel, _with_run(frame, self.run))
        self.finish_shard(shard)


def ingest(store: GraphStore, cfg: IngestConfig, *, progress: Callable[[str, int], Callable[[], None]] | None = None,
           loaded=None) -> IngestReport:
    """Run the job. ``progress(stage, total)`` returns a callable to advance that stage.

    ``loaded`` is a LoadedModel already in memory (tests, notebooks); else ``cfg.model``
    is loaded here.
    """
    from compgraph.extract import data as data_mod
    from compgraph.models import loading, weights

    texts = data_mod.load_corpus(cfg.corpus)
    digest = data_mod.corpus_hash(texts)
    source = loaded.source if loaded is not None else loading.resolve(cfg.model)
    name = cfg.name or source.default_name
    config_hash = cfg.hash(digest)
    run = schema.run_uid(name, config_hash)
    found = store.query(_RUN_STATE, {"uid": run})
    state = found.row(0, named=True) if found.height else None
    if state and state["status"] == "complete":
        return IngestReport(name, run, "already complete", [], len(state["done"] or []))
    if loaded is None:
        loaded = loading.load(cfg.model, device=cfg.device, dtype=cfg.dtype)
    model, tok, adapter = loaded.model, loaded.tokenizer, loaded.adapter
    tick = progress or (lambda stage, total: (lambda: None))

    done = set(state["done"] or []) if state else set()
    if not state:
        store.merge_nodes(schema.RUN, pl.DataFrame([{
            "uid": run, "model": name, "started_at": _now(), "status": "running",
            "code_version": __version__, "schema_version": schema.SCHEMA_VERSION,
            "config_hash": config_hash, "config": json.dumps({**asdict(cfg), "corpus_sha": digest}),
            "done": [],
        }]))
    job = _Job(store, run, done)
    token_prefix = schema.tokenizer_uid("vocab", tok.get_vocab())
    config = model.config
    n_heads, n_kv, _ = weights.head_dims(config)
    n_layers = weights.n_layers(model, adapter)
    store.merge_nodes(schema.MODEL, pl.DataFrame([{
        "uid": schema.model_uid(name), "name": name, "source": loaded.source.spec,
        "architecture": adapter.name, "model_type": config.model_type, "n_layers": n_layers,
        "d_model": config.hidden_size, "n_heads": n_heads, "n_kv_heads": n_kv,
        "d_mlp": getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.hidden_size,
        "n_experts": getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None) or 0,
        "vocab_size": config.vocab_size, "tokenizer": token_prefix,
    }]))
    if job.pending("tokens"):
        vocab = len(tok)
        job.write("tokens", [(schema.TOKEN, pl.DataFrame({
            "uid": [schema.token_uid(token_prefix, i) for i in range(vocab)], "id": list(range(vocab)),
            "text": tok.batch_decode([[i] for i in range(vocab)]),
            "piece": tok.convert_ids_to_tokens(list(range(vocab))),
            "tokenizer": token_prefix,
        }))])
    special = set(tok.all_special_ids)
    batches = data_mod.text_batches(tok, texts, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                                    max_tokens=cfg.max_tokens)
    ids = dict(model_name=name, tokenizer_id=token_prefix, top_k=cfg.top_k)

    if "neurons" in cfg.extract and not adapter.is_moe:
        _neurons(job, model, adapter, n_layers, batches, special, ids, tick)
    if "heads" in cfg.extract and job.pending("heads"):
        from compgraph.extract.heads import head_frame

        head_data = data_mod.head_data(tok, texts, batches, seed=cfg.seed)
        advance = tick("heads", len(head_data.text))
        job.write("heads", [(schema.HEAD, head_frame(model, adapter, model_name=name, data=head_data,
                                                      progress=advance))])
    if "experts" in cfg.extract and adapter.is_moe:
        _experts(job, model, adapter, n_layers, batches, special, ids, tick)
    job.update(status="complete", finished_at=_now())
    return IngestReport(name, run, "complete", job.written, len(done - set(job.written)))


def _neurons(job: _Job, model, adapter, n_layers, batches, special, ids, tick) -> None:
    from compgraph.extract.neurons import activation_stats, decode_layer

    advance = tick("neurons: decode", n_layers)
    for layer in range(n_layers):
        shard = f"neurons.decode.L{layer}"
        if job.pending(shard):
            frames = decode_layer(model, adapter, layer, **ids)
            job.write(shard, [(schema.NEURON, frames.nodes)], [(schema.DECODES_TO, frames.edges)])
        advance()
    stats = [f"neurons.stats.L{layer}" for layer in range(n_layers)]
    if any(job.pending(s) for s in stats):
        advance = tick("neurons: activations", len(batches))
        for layer, frames in activation_stats(model, adapter, batches, special_ids=special,
                                              progress=advance, **ids):
            if job.pending(stats[layer]):
                job.write(stats[layer], [(schema.NEURON, frames.nodes)], [(schema.ACTIVATES_ON, frames.edges)])


def _experts(job: _Job, model, adapter, n_layers, batches, special, ids, tick) -> None:
    from compgraph.extract.experts import expert_frames

    shards = [f"experts.L{layer}" for layer in range(n_layers)]
    if not any(job.pending(s) for s in shards):
        return
    advance = tick("experts", n_layers)
    for layer, frames, activates in expert_frames(model, adapter, batches, special_ids=special, **ids):
        if job.pending(shards[layer]):
            job.write(shards[layer], [(schema.EXPERT, frames.nodes)],
                      [(schema.DECODES_TO, frames.edges), (schema.ACTIVATES_ON, activates)])
        advance()
