"""Tiny models built from configs: every supported family with randomised norms, a
2-layer Llama with SmolLM2's real tokenizer and a padded embedding, and a small Llama
with a 320-token BPE vocabulary trained here (no hub, no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

from compgraph.models.adapters import registry

V, D, F, L, H = 97, 32, 48, 2, 4

CONFIGS = {
    "llama": lambda: T.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=2),
    "qwen2": lambda: T.Qwen2Config(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=2),
    "gpt2": lambda: T.GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=H, n_inner=F,
                                 bos_token_id=0, eos_token_id=0),
    "gpt_neox": lambda: T.GPTNeoXConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                        num_attention_heads=H),
    "gemma3_text": lambda: T.Gemma3TextConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                              num_attention_heads=H, num_key_value_heads=2, head_dim=8),
    "mixtral": lambda: T.MixtralConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                       num_attention_heads=H, num_key_value_heads=2, num_local_experts=4,
                                       num_experts_per_tok=2),
    "olmoe": lambda: T.OlmoeConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=2, num_experts=4,
                                   num_experts_per_tok=2, pad_token_id=0, eos_token_id=1),
    "bert": lambda: T.BertConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                 num_attention_heads=H),
}


def random_model(name: str):
    """A family's tiny model in eval mode, its 1-D parameters (norm gains, biases) randomised."""
    return randomised(CONFIGS[name]())


def randomised(config):
    """The tiny model of a config in eval mode (eager attention), seeded, with its 1-D
    parameters (norm gains, biases) randomised so gains, offsets and centring matter."""
    torch.manual_seed(0)
    config._attn_implementation = "eager"
    adapter = registry.adapter_for(config.model_type)
    cls = T.AutoModelForCausalLM if adapter.causal else T.AutoModel
    model = cls.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return model, adapter


HOOK_CASES = {
    **CONFIGS,  # gpt_neox there has use_parallel_residual=True (the default)
    "gpt_neox_seq": lambda: T.GPTNeoXConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                            num_attention_heads=H, use_parallel_residual=False),
    # n_heads * d_head = 48 != d_model: widths must come from the config
    "gemma3_wide": lambda: T.Gemma3TextConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                              num_attention_heads=H, num_key_value_heads=2, head_dim=12),
}


def hook_model(case: str, attn: str = "eager"):
    """A model of :data:`HOOK_CASES` (the families and two layout variants), norms and biases randomised."""
    torch.manual_seed(0)
    config = HOOK_CASES[case]()
    config._attn_implementation = attn
    adapter = registry.adapter_for(config.model_type)
    cls = T.AutoModelForCausalLM if adapter.causal else T.AutoModel
    model = cls.from_config(config).eval()
    with torch.no_grad():  # randomise norms and biases so gains, offsets and biases matter
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return model, adapter


TINY = {"layers": 2, "d_mlp": 48, "heads": 4, "kv_heads": 2, "pad": 13}


def build_tiny_llama(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama with SmolLM2's real tokenizer and an embedding matrix padded by
    ``TINY['pad']`` rows beyond the tokenizer's ids (as Pythia and Qwen2 pad theirs)."""
    from compgraph.models import loading

    source = loading.resolve("packaged:smollm2")
    tok = T.AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    torch.manual_seed(seed)
    config = T.LlamaConfig(vocab_size=len(tok) + TINY["pad"], hidden_size=32, intermediate_size=TINY["d_mlp"],
                           num_hidden_layers=TINY["layers"], num_attention_heads=TINY["heads"],
                           num_key_value_heads=TINY["kv_heads"], bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = T.LlamaForCausalLM(config)
    with torch.no_grad():  # make the padding rows win every decoding if they were decoded
        model.get_input_embeddings().weight[len(tok):] = 100.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path




SMALL_SEED = 7
SMALL_LAYERS, SMALL_D_MLP = 3, 128
SMALL_TEXT = ["The quick brown fox jumps over the lazy dog. " * 3,
              "A graph of model components: neurons, attention heads and the tokens they write."] * 20


def build_small_llama(path: Path) -> Path:
    """A randomly initialised Llama with a BPE tokenizer of 320 tokens, saved as a model directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SMALL_TEXT, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(SMALL_SEED)
    config = T.LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=SMALL_D_MLP,
                           num_hidden_layers=SMALL_LAYERS, num_attention_heads=4, num_key_value_heads=2, bos_token_id=fast.bos_token_id,
                           eos_token_id=fast.eos_token_id, tie_word_embeddings=True, max_position_embeddings=512)
    T.LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path
