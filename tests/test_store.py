"""core.store: atomic writes, checkpoints (weights_only), safe names, output tree, embeddings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core import store
from core.errors import CheckpointError, DataError, UserError
from core.store import (
    append_jsonl,
    atomic_path,
    atomic_save_npy,
    atomic_save_npz,
    atomic_write_json,
    atomic_write_text,
    check_name,
    embeddings_dir,
    fingerprint_arrays,
    load_checkpoint,
    load_embeddings,
    run_dir,
    save_checkpoint,
    save_embeddings,
    state_root,
)


class Evil:
    """An arbitrary object: a weights_only load must refuse it."""

    def __init__(self) -> None:
        self.payload = "not a tensor"


# --------------------------------------------------------------------------- atomic writes
def test_atomic_write_survives_crash(tmp_path):
    p = tmp_path / "file.txt"
    p.write_text("old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(p) as tmp:
            assert tmp.parent == tmp_path and tmp != p
            tmp.write_text("new partial cont")
            raise RuntimeError("boom")
    assert p.read_text() == "old content"
    assert [x.name for x in tmp_path.iterdir()] == ["file.txt"]  # no temp file left behind


def test_atomic_write_crash_without_previous_file(tmp_path):
    p = tmp_path / "new" / "file.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert not p.exists()
    assert list(p.parent.iterdir()) == []


def test_atomic_path_success_replaces(tmp_path):
    p = tmp_path / "a" / "b" / "x.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["x.txt"]


def test_atomic_write_json_and_np(tmp_path):
    obj = {"a": [1, 2.5, None], "ü": "ok"}
    atomic_write_json(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == obj
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npy(tmp_path / "x.npy", arr)
    back = np.load(tmp_path / "x.npy", allow_pickle=False)
    assert back.dtype == np.float32 and np.array_equal(back, arr)
    atomic_save_npz(tmp_path / "x.npz", a=arr, b=np.array([1, 2], dtype=np.int64))
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert np.array_equal(z["a"], arr) and z["b"].tolist() == [1, 2]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.json", "x.npy", "x.npz"]


def test_append_jsonl(tmp_path):
    p = tmp_path / "m" / "metrics.jsonl"
    append_jsonl(p, {"epoch": 1, "loss": 0.5})
    append_jsonl(p, {"epoch": 2})
    assert [json.loads(line) for line in p.read_text().splitlines()] == [{"epoch": 1, "loss": 0.5}, {"epoch": 2}]


def test_fingerprint_arrays():
    a = np.array([1, 2, 3], dtype=np.int32)
    assert fingerprint_arrays(a) == fingerprint_arrays(a.copy())
    assert len(fingerprint_arrays(a)) == 16
    assert fingerprint_arrays(a) != fingerprint_arrays(a.astype(np.int64))  # dtype matters
    assert fingerprint_arrays(a) != fingerprint_arrays(np.array([1, 2, 4], dtype=np.int32))
    assert fingerprint_arrays(a.reshape(3, 1)) != fingerprint_arrays(a)  # shape matters


# --------------------------------------------------------------------------- checkpoints
def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_checkpoint_round_trip(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    args = {"n_items": 10, "hidden_units": 4, "loss": "ce", "ks": [1, 2]}
    cfg = {"model": {"maxlen": 5}, "seed": 3, "name": None}
    p = tmp_path / "run" / "best.pt"
    save_checkpoint(p, kind="sasrec", model_state=model.state_dict(), model_args=args, config=cfg,
                    data_fingerprint="abcd1234", epoch=4, optimizer=opt.state_dict())
    ck = load_checkpoint(p, kind="sasrec", data_fingerprint="abcd1234")
    assert ck["kind"] == "sasrec" and ck["format"] == store.CHECKPOINT_FORMAT
    assert ck["model_args"] == args and ck["config"] == cfg
    assert ck["data_fingerprint"] == "abcd1234" and ck["epoch"] == 4
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model_state"][k], v)
    fresh = _model()
    with torch.no_grad():
        for prm in fresh.parameters():
            prm.zero_()
    fresh.load_state_dict(ck["model_state"])
    x = torch.randn(5, 3)
    assert torch.equal(fresh(x), model(x))
    opt2 = torch.optim.Adam(fresh.parameters())
    opt2.load_state_dict(ck["optimizer"])
    # kind as a tuple, no fingerprint check requested
    assert load_checkpoint(p, kind=("bert4rec", "sasrec"))["epoch"] == 4
    assert [x.name for x in p.parent.iterdir()] == ["best.pt"]


def test_checkpoint_wrong_kind(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, kind="sasrec", model_state={}, model_args={}, config={})
    with pytest.raises(CheckpointError, match="bert4rec"):
        load_checkpoint(p, kind="bert4rec")
    with pytest.raises(CheckpointError):
        load_checkpoint(p, kind=("a", "b"))


def test_checkpoint_wrong_fingerprint(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, kind="sasrec", model_state={}, model_args={}, config={}, data_fingerprint="aaaa")
    with pytest.raises(CheckpointError, match="different data"):
        load_checkpoint(p, kind="sasrec", data_fingerprint="bbbb")
    assert load_checkpoint(p, data_fingerprint="aaaa")["kind"] == "sasrec"


def test_checkpoint_missing_and_corrupt(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00\x01 this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    # a truncated real checkpoint
    good = tmp_path / "good.pt"
    save_checkpoint(good, kind="sasrec", model_state=_model().state_dict(), model_args={}, config={})
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(trunc)


def test_checkpoint_not_ours(tmp_path):
    p = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="not a recsys-pipelines checkpoint"):
        load_checkpoint(p)
    p2 = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), p2)
    with pytest.raises(CheckpointError):
        load_checkpoint(p2)


def test_checkpoint_with_arbitrary_object_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": store.CHECKPOINT_FORMAT, "kind": "sasrec", "model_state": {}, "model_args": {},
                "config": {}, "data_fingerprint": None, "extra": Evil()}, p)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(p, kind="sasrec")


# --------------------------------------------------------------------------- names and the tree
@pytest.mark.parametrize("bad", ["..", "a/b", ".hidden", "", "a..b", "a\\b", "a b", "-x", "/abs", "~"])
def test_check_name_refuses(bad):
    with pytest.raises(UserError):
        check_name(bad)


def test_check_name_refuses_non_str():
    with pytest.raises(UserError):
        check_name(None)


@pytest.mark.parametrize("good", ["run-1_a.b", "x", "A9", "lr=0.1+wd"])
def test_check_name_accepts(good):
    assert check_name(good) == good


def test_run_dir_honours_env_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "envhome"))
    assert state_root() == tmp_path / "envhome"
    assert run_dir("seqrec", "ml-1m", "run-1") == tmp_path / "envhome" / "seqrec" / "ml-1m" / "run-1"
    # an explicit home beats the environment
    assert run_dir("seqrec", "ml-1m", "r", home=str(tmp_path / "h")) == tmp_path / "h" / "seqrec" / "ml-1m" / "r"
    assert embeddings_dir("p", "d") == tmp_path / "envhome" / "embeddings" / "p" / "d"
    monkeypatch.delenv("RECSYS_HOME")
    assert state_root() == store.REPO_ROOT / "state_dict"
    assert run_dir("a", "b", "c") == store.REPO_ROOT / "state_dict" / "a" / "b" / "c"
    with pytest.raises(UserError):
        run_dir("seqrec", "..", "r")
    with pytest.raises(UserError):
        run_dir("seqrec", "d", "../../etc")


# --------------------------------------------------------------------------- embeddings
def test_embeddings_round_trip(tmp_path):
    vecs = np.arange(6, dtype=np.float64).reshape(3, 2) / 7
    ids = ["u1", "u2", 3]
    path = save_embeddings(tmp_path / "emb", "users.v1", vecs, ids)
    assert path == tmp_path / "emb" / "users.v1.npy"
    assert (tmp_path / "emb" / "users.v1.ids.json").is_file()
    back, back_ids = load_embeddings(path)
    assert back.dtype == np.float32
    assert np.allclose(back, vecs.astype(np.float32)) and back_ids == ids


def test_embeddings_mismatch(tmp_path):
    with pytest.raises(ValueError):
        save_embeddings(tmp_path, "e", np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(ValueError):
        save_embeddings(tmp_path, "e", np.zeros(3), ["a", "b", "c"])
    with pytest.raises(UserError):
        save_embeddings(tmp_path, "../e", np.zeros((1, 2)), ["a"])
    path = save_embeddings(tmp_path, "e", np.zeros((3, 2)), ["a", "b", "c"])
    (tmp_path / "e.ids.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(DataError, match="do not match"):
        load_embeddings(path)
    (tmp_path / "e.ids.json").unlink()
    with pytest.raises(DataError, match="not found"):
        load_embeddings(path)
    with pytest.raises(DataError, match="not found"):
        load_embeddings(tmp_path / "missing.npy")


def test_load_embeddings_refuses_pickled_arrays(tmp_path):
    p = tmp_path / "obj.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    Path(tmp_path / "obj.ids.json").write_text(json.dumps(["x", "y"]))
    with pytest.raises(DataError):
        load_embeddings(p)
