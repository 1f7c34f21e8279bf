"""Tasks as data: clean/corrupt prompt pairs with a one-token answer, and their metrics.

A task is a JSONL file, one example per line, each a JSON object with at least four
string fields (other fields are kept in :attr:`Example.extra`)::

    {"clean": "The capital of France is", "corrupt": "The capital of Poland is",
     "answer": " Paris", "wrong": " Warsaw"}

- ``answer`` and ``wrong`` are each exactly one token (leading space included), counted
  with ``tokenizer(text, add_special_tokens=False)``: they are continuations, so a BOS
  the tokenizer would put in front of a prompt is not counted.
- ``clean`` and ``corrupt`` are prompts, tokenized with the tokenizer's own defaults
  (``tokenizer(text)``): nothing is added beyond what the tokenizer adds itself. They
  must have the same number of tokens, so positions line up for patching.
  SmolLM2's tokenizer adds no BOS (its ``bos_token`` ``<|im_start|>`` is never
  inserted), so a SmolLM2 prompt starts with its first word, which also serves as the
  attention sink. (The ingest extractors do prepend BOS to corpus chunks; tasks do not.)

Beside ``<name>.jsonl`` an optional ``<name>.json`` holds the metadata: ``description``,
``source``, ``licence``, ``citation`` (strings), ``metric`` (a key of :data:`METRICS`,
default ``logit_diff``) and ``n_examples`` (checked against the file when present).
Shipped tasks live in ``ingest/tasks/`` and are loaded by name; any other ``.jsonl``
path loads the same way, with or without metadata.

Examples of one task may differ in length: :func:`encode_task` pads them on the left,
so the last prompt token of every example sits at position ``T - 1`` (read logits at
``[:, -1]``), and returns the attention mask and position ids that make each padded row
compute exactly what the unpadded prompt would.

Every problem with a file raises :class:`~compgraph.errors.ConfigError` with one line
naming the file, the line number and the problem; the whole file is checked before
anything is returned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch

from compgraph.errors import ConfigError
from compgraph.data.shipped import data_dir

FIELDS = ("clean", "corrupt", "answer", "wrong")
DEFAULT_METRIC = "logit_diff"
_META_STRINGS = ("description", "source", "licence", "citation")


# --------------------------------------------------------------------------- metrics


def _last(logits: torch.Tensor, position: int | torch.Tensor) -> torch.Tensor:
    """Logits [batch, vocab] at ``position`` (an int, or one index per example)."""
    if logits.dim() != 3:
        raise ConfigError(f"logits must be [batch, seq, vocab], got shape {tuple(logits.shape)}")
    if isinstance(position, int):
        return logits[:, position, :].float()
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, position.to(logits.device), :].float()


def logit_diff(logits: torch.Tensor, answer_ids: torch.Tensor, wrong_ids: torch.Tensor,
               *, position: int | torch.Tensor = -1) -> torch.Tensor:
    """Per-example ``logit[answer] - logit[wrong]`` at ``position`` (default: the last).

    ``logits`` [batch, seq, vocab]; ``answer_ids``, ``wrong_ids`` [batch] token ids;
    ``position`` an int or a [batch] tensor of positions. Returns float32 [batch].
    The task's score is the mean over examples.
    """
    last = _last(logits, position)
    answer = last.gather(1, answer_ids.to(last.device).view(-1, 1)).squeeze(1)
    wrong = last.gather(1, wrong_ids.to(last.device).view(-1, 1)).squeeze(1)
    return answer - wrong


def prob(logits: torch.Tensor, answer_ids: torch.Tensor, wrong_ids: torch.Tensor | None = None,
         *, position: int | torch.Tensor = -1) -> torch.Tensor:
    """Per-example ``softmax(logits)[answer]`` over the whole vocabulary at ``position``.

    Same arguments as :func:`logit_diff`; ``wrong_ids`` is accepted and ignored so both
    metrics share one signature. Returns float32 [batch] in [0, 1].
    """
    last = _last(logits, position)
    return last.softmax(-1).gather(1, answer_ids.to(last.device).view(-1, 1)).squeeze(1)


METRICS = {"logit_diff": logit_diff, "prob": prob}


def compute_metric(name: str, logits: torch.Tensor, answer_ids: torch.Tensor,
                   wrong_ids: torch.Tensor, *, position: int | torch.Tensor = -1) -> torch.Tensor:
    """The metric called ``name`` (a key of :data:`METRICS`), per example."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name](logits, answer_ids, wrong_ids, position=position)


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True, kw_only=True)
class Example:
    clean: str
    """The prompt whose answer is ``answer``."""
    corrupt: str
    """A prompt of the same token length with the information behind ``answer`` removed."""
    answer: str
    """The correct next token after ``clean`` (one token, leading space included)."""
    wrong: str
    """A contrasting incorrect next token (one token)."""
    line: int
    """1-based line number in the task file."""
    extra: Mapping[str, object] = field(default_factory=dict)
    """Every other field of the line (kept for analysis, never interpreted)."""


@dataclass(frozen=True, kw_only=True)
class Task:
    name: str
    """The file's stem; the graph node is ``schema.task_uid(name)``."""
    path: Path
    """The ``.jsonl`` file."""
    description: str
    """What the task measures (metadata; empty when there is none)."""
    source: str
    """Where the data comes from (metadata)."""
    metric: str
    """A key of :data:`METRICS` (metadata; default ``logit_diff``)."""
    examples: tuple[Example, ...]
    """The examples in file order."""
    licence: str = ""
    """The data's licence (metadata)."""
    citation: str = ""
    """What to cite (metadata)."""

    def __len__(self) -> int:
        return len(self.examples)

    def head(self, n: int | None) -> "Task":
        """The task with its first ``n`` examples (all of them when ``n`` is None or 0)."""
        return replace(self, examples=self.examples[:n]) if n else self


class Inputs(NamedTuple):
    """One side of a task (clean or corrupt) as the model receives it: ``ids`` [n, T] and,
    for left-padded prompts, the ``attention_mask`` (0 on padding) and ``position_ids``
    (0 at each prompt's first token) that make each padded row compute exactly what the
    unpadded prompt would."""

    ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> "Inputs":
        return Inputs(*(None if t is None else t[index] for t in self))

    def repeat(self, c: int) -> "Inputs":
        """The batch tiled c times: row j·n + i is example i."""
        return Inputs(*(None if t is None else t.repeat(c, *([1] * (t.dim() - 1))) for t in self))

    @property
    def mask(self) -> torch.Tensor:
        """[n, T] float: 1 on prompt tokens, 0 on padding."""
        return torch.ones(self.ids.shape) if self.attention_mask is None else self.attention_mask.float()


class TaskBatch(NamedTuple):
    """A task's examples as tensors: the one input of every effect function.

    ``clean`` and ``corrupt`` share their padding (position ``t`` is the same token slot in
    both), so a model run on either reads its logits at position ``-1``: for every example
    that is the last prompt token. Built by :func:`encode_task` from a task file, or by
    :meth:`of` from tensors.
    """

    clean: Inputs
    corrupt: Inputs
    answer_ids: torch.Tensor
    """[n] long: the token whose logit the metric rewards."""
    wrong_ids: torch.Tensor
    """[n] long: the contrasting token."""

    @classmethod
    def of(cls, clean_ids: torch.Tensor, corrupt_ids: torch.Tensor, answer_ids: torch.Tensor,
           wrong_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
           position_ids: torch.Tensor | None = None) -> "TaskBatch":
        """A batch from tensors ([n, T] ids, [n] answers), the shapes checked (ConfigError)."""
        if clean_ids.shape != corrupt_ids.shape or clean_ids.dim() != 2:
            raise ConfigError(f"clean_ids {tuple(clean_ids.shape)} and corrupt_ids {tuple(corrupt_ids.shape)} "
                              f"must be the same [n, T] shape")
        n = clean_ids.shape[0]
        if answer_ids.shape != (n,) or wrong_ids.shape != (n,):
            raise ConfigError(f"answer_ids {tuple(answer_ids.shape)} and wrong_ids {tuple(wrong_ids.shape)} "
                              f"must be [{n}]")
        for name, t in (("attention_mask", attention_mask), ("position_ids", position_ids)):
            if t is not None and t.shape != clean_ids.shape:
                raise ConfigError(f"{name} {tuple(t.shape)} must match clean_ids {tuple(clean_ids.shape)}")
        return cls(Inputs(clean_ids, attention_mask, position_ids), Inputs(corrupt_ids, attention_mask, position_ids),
                   answer_ids, wrong_ids)

    def __len__(self) -> int:
        return int(self.clean.ids.shape[0])

    @property
    def n(self) -> int:
        """Examples."""
        return len(self)

    @property
    def width(self) -> int:
        """Tokens per (padded) prompt, T."""
        return int(self.clean.ids.shape[1])

    def rows(self, index: torch.Tensor) -> "TaskBatch":
        """The examples at ``index``."""
        return TaskBatch(self.clean.rows(index), self.corrupt.rows(index), self.answer_ids[index],
                         self.wrong_ids[index])


def tasks_dir() -> Path:
    return data_dir("ingest") / "tasks"


def shipped_tasks() -> list[str]:
    """Names of the tasks shipped in ``ingest/tasks/``."""
    return sorted(p.stem for p in tasks_dir().glob("*.jsonl"))


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    as_path = Path(text).expanduser()
    if isinstance(name_or_path, Path) or text.endswith(".jsonl") or "/" in text or "\\" in text:
        if not as_path.is_file():
            raise ConfigError(f"no task file at {text}")
        return as_path
    path = tasks_dir() / f"{text}.jsonl"
    if not path.is_file():
        raise ConfigError(f"no shipped task {text!r}; shipped: {', '.join(shipped_tasks())} "
                          f"(or give the path of a .jsonl file)")
    return path


def _read_metadata(path: Path) -> dict:
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{meta_path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{meta_path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{meta_path}:1: metadata must be a JSON object, not {type(meta).__name__}")
    for key in _META_STRINGS:
        if key in meta and not isinstance(meta[key], str):
            raise ConfigError(f"{meta_path}: field {key!r} must be a string, not {type(meta[key]).__name__}")
    metric = meta.get("metric", DEFAULT_METRIC)
    if metric not in METRICS:
        raise ConfigError(f"{meta_path}: metric {metric!r} is unknown; known: {', '.join(METRICS)}")
    if "name" in meta and meta["name"] != path.stem:
        raise ConfigError(f"{meta_path}: name {meta['name']!r} differs from the file's stem {path.stem!r}")
    return meta


def _parse_line(path: Path, number: int, raw: bytes) -> Example | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}:{number}: not UTF-8 text") from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
    for key in FIELDS:
        if key not in obj:
            raise ConfigError(f"{path}:{number}: missing field {key!r} (each line needs {', '.join(FIELDS)})")
        if not isinstance(obj[key], str):
            raise ConfigError(f"{path}:{number}: field {key!r} must be a string, not {type(obj[key]).__name__}")
        if not obj[key]:
            raise ConfigError(f"{path}:{number}: field {key!r} is empty")
    extra = {k: v for k, v in obj.items() if k not in FIELDS}
    return Example(clean=obj["clean"], corrupt=obj["corrupt"], answer=obj["answer"], wrong=obj["wrong"],
                   line=number, extra=extra)


def load_task(name_or_path: str | Path) -> Task:
    """A shipped task by name (``ingest/tasks/<name>.jsonl``) or any ``.jsonl`` file by path.

    Reads and checks the whole file (JSON, the four string fields) and the metadata
    beside it; raises :class:`ConfigError` on the first problem. Token-level checks
    need a tokenizer and happen in :func:`encode_task`.
    """
    path = _resolve(name_or_path)
    meta = _read_metadata(path)
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as err:
        raise ConfigError(f"cannot read task file {path}: {err.strerror}") from err
    examples = [ex for number, raw in enumerate(raw_lines, 1) if (ex := _parse_line(path, number, raw))]
    if not examples:
        raise ConfigError(f"{path}: no examples (expected one JSON object per line)")
    expected = meta.get("n_examples")
    if expected is not None and expected != len(examples):
        raise ConfigError(f"{path.with_suffix('.json')}: n_examples is {expected!r} but "
                          f"{path.name} holds {len(examples)} examples")
    return Task(name=path.stem, path=path, description=meta.get("description", ""),
                source=meta.get("source", ""), licence=meta.get("licence", ""),
                citation=meta.get("citation", ""), metric=meta.get("metric", DEFAULT_METRIC),
                examples=tuple(examples))


def _ids(tokenizer, texts: list[str], *, special: bool) -> list[list[int]]:
    if special:
        return [list(ids) for ids in tokenizer(texts)["input_ids"]]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _pieces(tokenizer, ids: list[int]) -> str:
    return "[" + ", ".join(repr(tokenizer.decode([i])) for i in ids) + "]"


def _problems(task: Task, tokenizer) -> tuple[list[str | None], tuple[list, list, list, list]]:
    """Per example, the reason it does not fit ``tokenizer`` (file:line: problem) or None;
    and the four token-id lists (clean, corrupt, answer, wrong)."""
    examples = task.examples
    clean = _ids(tokenizer, [e.clean for e in examples], special=True)
    corrupt = _ids(tokenizer, [e.corrupt for e in examples], special=True)
    answer = _ids(tokenizer, [e.answer for e in examples], special=False)
    wrong = _ids(tokenizer, [e.wrong for e in examples], special=False)
    out: list[str | None] = []
    for i, ex in enumerate(examples):
        where = f"{task.path}:{ex.line}"
        problem = None
        for key, ids, text in (("answer", answer[i], ex.answer), ("wrong", wrong[i], ex.wrong)):
            if problem is None and len(ids) != 1:
                problem = (f"{where}: {key} {_short(text)} is {len(ids)} tokens under this tokenizer "
                           f"{_pieces(tokenizer, ids)}; it must be exactly one (leading space included)")
        if problem is None and answer[i] == wrong[i]:
            problem = f"{where}: answer {_short(ex.answer)} and wrong {_short(ex.wrong)} are the same token"
        if problem is None and len(clean[i]) != len(corrupt[i]):
            problem = (f"{where}: clean is {len(clean[i])} tokens but corrupt is {len(corrupt[i])}; "
                       f"they must have the same token length")
        if problem is None and not clean[i]:
            problem = f"{where}: clean tokenizes to no tokens"
        out.append(problem)
    return out, (clean, corrupt, answer, wrong)


def fitting(task: Task | str | Path, tokenizer) -> Task:
    """The task with only the examples that fit ``tokenizer`` (one-token answer and wrong,
    distinct; clean and corrupt of one token length, not empty), in file order: tasks
    written for one tokenizer, read by another (``--unfit-examples drop``). A one-line
    :class:`ConfigError` when none fits."""
    if not isinstance(task, Task):
        task = load_task(task)
    problems, _ = _problems(task, tokenizer)
    kept = [e for e, problem in zip(task.examples, problems) if problem is None]
    if not kept:
        raise ConfigError(f"{task.path}: no example fits this tokenizer (the first: {problems[0]})")
    return replace(task, examples=kept)


def encode_task(task: Task | str | Path, tokenizer) -> TaskBatch:
    """Tokenize every example and check it; left-pad into one batch.

    Raises :class:`ConfigError` (file, line, problem) when an answer or wrong token is
    not exactly one token, when they are the same token, or when clean and corrupt
    differ in token length; nothing is returned unless every example passes.
    """
    if not isinstance(task, Task):
        task = load_task(task)
    examples = task.examples
    problems, (clean, corrupt, answer, wrong) = _problems(task, tokenizer)
    first = next((p for p in problems if p is not None), None)
    if first is not None:
        raise ConfigError(first)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    n, width = len(examples), max(len(ids) for ids in clean)
    clean_ids = torch.full((n, width), pad_id, dtype=torch.long)
    corrupt_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i in range(n):
        length = len(clean[i])
        clean_ids[i, width - length:] = torch.tensor(clean[i])
        corrupt_ids[i, width - length:] = torch.tensor(corrupt[i])
        mask[i, width - length:] = 1
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    return TaskBatch.of(clean_ids, corrupt_ids, torch.tensor([a[0] for a in answer]),
                        torch.tensor([w[0] for w in wrong]), mask, position_ids)
