"""Untrusted files: pickles, checkpoints and arrays that would run code when loaded are refused
(and the code never runs), the sources hold no unsafe loader or eval/exec, and no name from a
config can move outputs out of the configured root."""
from __future__ import annotations

import ast
import importlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import run
from conftest import write_synthetic_tree

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", ".git", "__pycache__", "state_dict", "data", "node_modules"}


# --------------------------------------------------------------------------- source scan
def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Calls that load untrusted bytes unsafely or evaluate text: ``torch.load`` without
    ``weights_only=True``, ``pickle.load(s)``/``pickle.Unpickler`` (the restricted unpickler in
    core/data/safe_pickle.py is the one allowed subclass), ``np.load(..., allow_pickle=True)``,
    ``yaml.load``/``yaml.unsafe_load``/``yaml.full_load``, ``pandas.read_pickle``, ``eval``, ``exec``.
    A line marked ``unsafe-ok: <why>`` is skipped."""
    found = []
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call) or "unsafe-ok" in lines[node.lineno - 1]:
            continue  # a line marked "unsafe-ok: <why>" is a deliberate exception (a test's control)
        f = node.func
        name = f.id if isinstance(f, ast.Name) else None
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
        attr = f.attr if isinstance(f, ast.Attribute) else None
        kw = {k.arg: k.value for k in node.keywords}
        where = f"{filename}:{node.lineno}"
        if name in ("eval", "exec"):
            found.append(f"{where}: {name}()")
        elif owner == "torch" and attr == "load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        elif owner in ("pickle", "cPickle", "dill", "joblib") and attr in ("load", "loads", "Unpickler"):
            found.append(f"{where}: {owner}.{attr} bypasses core.data.safe_pickle")
        elif owner in ("np", "numpy") and attr == "load":
            ap = kw.get("allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where}: np.load with allow_pickle")
        elif owner == "yaml" and attr in ("load", "unsafe_load", "full_load", "load_all", "unsafe_load_all"):
            found.append(f"{where}: yaml.{attr} (use yaml.safe_load)")
        elif owner in ("pd", "pandas") and attr == "read_pickle":
            found.append(f"{where}: pandas.read_pickle")
    return found


def _sources() -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return out


def test_the_scanner_catches_each_unsafe_form():
    bad = """
import torch, pickle, yaml, numpy as np
torch.load(p)
torch.load(p, weights_only=False)
pickle.load(fh)
pickle.loads(b)
np.load(p, allow_pickle=True)
yaml.load(text)
eval("1")
exec("x = 1")
"""
    assert len(unsafe_calls(bad)) == 8
    good = """
torch.load(p, map_location="cpu", weights_only=True)
np.load(p, allow_pickle=False)
np.load(p)
yaml.safe_load(text)
model.eval()
"""
    assert unsafe_calls(good) == []


def test_sources_hold_no_unsafe_loader_or_eval():
    files = _sources()
    assert len(files) > 50 and REPO / "core" / "store.py" in files
    problems = []
    for f in files:
        problems += unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(REPO)))
    assert problems == [], "\n".join(problems)


def test_pickle_readers_go_through_the_restricted_unpickler():
    """Only core/data/safe_pickle.py may subclass the unpickler; every module that reads a pickle
    imports it from there."""
    for f in _sources():
        text = f.read_text(encoding="utf-8")
        rel = str(f.relative_to(REPO))
        if rel.startswith("tests/") or rel == "core/data/safe_pickle.py":
            continue
        assert "Unpickler" not in text, rel
        if ".pkl" in text and "pickle.dumps" not in text and "load" in text:
            assert "safe_pickle" in text or "read_any" in text, f"{rel} mentions .pkl files but not the safe loader"


# --------------------------------------------------------------------------- malicious files
class Payload:
    """Unpickling this runs ``os.system(touch MARKER)`` with the stock unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _cli(module: str, argv: list[str], capsys) -> tuple[int, str]:
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as exc:
        run(mod.main, argv)
    return exc.value.code, capsys.readouterr().err


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    # the payload really runs when loaded the unsafe way: the tests below would see it
    pickle.loads(pickle.dumps(Payload(m)))  # unsafe-ok: the control, stock unpickler on our own payload
    assert m.exists()
    m.unlink()
    return m


def test_food_kitchen_preparer_refuses_a_code_running_pickle(tmp_path, marker, capsys, monkeypatch):
    from core.data.prepare.food_kitchen import STEMS

    folder = tmp_path / "fk"
    folder.mkdir()
    for stem in STEMS:
        (folder / f"{stem}.pkl").write_bytes(pickle.dumps({1: [1, 2, 3]}))
    (folder / f"{STEMS[2]}.pkl").write_bytes(pickle.dumps({1: Payload(marker)}))
    code, err = _cli("core.data.prepare.__main__", ["food-kitchen", "--path", str(folder), "--out", str(tmp_path / "o")],
                     capsys)
    assert code == 2 and f"{STEMS[2]}.pkl" in err and "refused global" in err and "system" in err, err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_distillation_refuses_a_code_running_seed_pickle(tmp_path, marker, capsys, monkeypatch):
    """The seed's processed layout (.pkl sequence/mapping files) through distillation.training."""
    evil = tmp_path / "train_sequences.pkl"
    evil.write_bytes(pickle.dumps({"1": [1, 2, Payload(marker)]}))
    monkeypatch.chdir(REPO)
    over = (f"device=cpu,home={tmp_path / 'home'},data.profile_train_sequences={evil},data.valid_sequences={evil},"
            f"data.test_sequences={evil}")
    code, err = _cli("distillation.training", ["--override", over], capsys)
    assert code == 2 and "train_sequences.pkl" in err and "refused global" in err, err
    assert not marker.exists() and not (tmp_path / "home").exists()


def test_checkpoints_that_would_run_code_are_refused(tmp_path, marker, capsys, monkeypatch):
    """torch.save pickles: a checkpoint holding an object with __reduce__ must not load (weights_only)."""
    ckpt = tmp_path / "best.pt"
    torch.save({"format": 1, "kind": "sasrec", "model_state": {}, "x": Payload(marker)}, ckpt)
    monkeypatch.chdir(REPO)
    code, err = _cli("distillation.evaluation", ["--model-path", str(ckpt), "--override", "device=cpu"], capsys)
    assert code == 2 and "best.pt: not a readable checkpoint" in err, err
    code, err = _cli("universal.inference", ["--model_path", str(ckpt), "--data", str(tmp_path / "x.json")], capsys)
    assert code == 2 and "best.pt" in err, err
    assert not marker.exists()


def test_object_arrays_are_refused_as_embeddings(tmp_path, marker, capsys, monkeypatch):
    """Embedding .npy files are numbers: an object array (pickled inside the .npy) is refused."""
    from core.store import load_embeddings

    arr = np.empty((2, 1), dtype=object)
    arr[0, 0] = Payload(marker)
    np.save(tmp_path / "v.npy", arr, allow_pickle=True)
    (tmp_path / "v.ids.json").write_text('["a", "b"]')
    from core.errors import DataError

    with pytest.raises(DataError, match="v.npy: not a plain .npy array"):
        load_embeddings(tmp_path / "v.npy")
    monkeypatch.chdir(REPO)
    code, err = _cli("cross_domain.__main__", ["train-target-transfer", "--override",
                                               f"device=cpu,home={tmp_path / 'home'},"
                                               f"transfer.source_vectors={tmp_path / 'v.npy'}"], capsys)
    assert code == 2 and "v.npy" in err, err
    assert not marker.exists()


# --------------------------------------------------------------------------- outputs stay under the root
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_synthetic_tree(tmp_path_factory.mktemp("sec_data"), 40, universal=(6, 8, 4))


@pytest.mark.parametrize("module, argv, needle", [
    ("distillation.training", ["--override", "run_name=../../../escape"], "invalid run name '../../../escape'"),
    ("distillation.training", ["--override", "run_name=..,data.dataset=syn-a"], "invalid run name '..'"),
    ("cross_domain.__main__", ["train-source", "--override", "run_name='{tmp}/abs'"], "/abs'"),
    ("recommendation_model.train_eval", ["--override", "run_name='{tmp}/abs',data.dataset=syn"], "invalid run name"),
    ("universal.train", ["--override", "run_name=../escape"], "invalid run name '../escape'"),
])
def test_no_name_moves_outputs_out_of_the_root(module, argv, needle, tmp_path, tiny_data, capsys, monkeypatch):
    home = tmp_path / "a" / "b" / "home"
    home.mkdir(parents=True)
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{data}", str(tiny_data)) for a in argv]
    argv[-1] += f",home={home},device=cpu" + (f",data.data_root={tiny_data}" if "data.dataset" in argv[-1] else "")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("RECSYS_HOME", str(home))
    if module == "universal.train":
        argv = ["--data", str(tiny_data / "uni.json"), *argv]
    code, err = _cli(module, argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written anywhere
