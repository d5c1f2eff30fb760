"""Kill and resume, for real: each trainer runs as a subprocess that SIGKILLs itself in the middle
of epoch 2 (``$RECSYS_TEST_SIGKILL_AFTER_STEPS``, see ``core.train.kill_hook``), and a second
process with ``training.resume=true`` finishes the run. Its results must equal those of an
uninterrupted run (CPU, fixed seed), and after the kill only complete files may be visible:
every checkpoint loads, no results of the killed run exist, and temporary files are hidden
(``.<name>.*.tmp``) until they are renamed into place.

The uninterrupted run calls the same ``main(argv)`` in this process (one thread, like the
subprocesses), which saves an interpreter start per trainer.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import run
from conftest import write_synthetic_tree
from core.store import atomic_write_json, load_checkpoint
from core.train import KILL_ENV

REPO = Path(__file__).resolve().parent.parent
STEPS = 3  # batches per epoch; the kill comes after STEPS + 2, i.e. inside epoch 2
SEQ = ("device=cpu,model.hidden_units=16,model.maxlen=12,training.batch_size=8,training.epochs=3,"
       f"training.max_steps_per_epoch={STEPS},training.patience=0,training.eval_every=1,eval.sampled=[]")
TRI = ("device=cpu,hidden_units=16,maxlen=12,batch_size=8,num_epochs=3,"
       f"max_steps_per_epoch={STEPS},patience=0,eval_every=1")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_synthetic_tree(tmp_path_factory.mktemp("resume_data"), 60, vectors=("spe", "cross", "source"))
    uni = {"user_data": [{"user_id": f"u{u}", "categorical": {"job": f"j{u % 3}"}} for u in range(30)],
           "item_data": [{"item_id": i, "categorical": {"genre": f"g{i % 4}"}, "continuous": {"year": 1990 + i}}
                         for i in range(20)],
           "interactions": [{"user_id": f"u{u}", "item_id": (3 * u + k * (1 + u % 3)) % 20, "timestamp": 100 * k + u}
                            for u in range(30) for k in range(6)]}
    atomic_write_json(root / "uni.json", uni)
    return root


# trainer -> (module, argv for a home folder and the data root)
TRAINERS = {
    "seqrec (distillation / core.demo)": ("distillation.training", lambda h, d: [
        "--override", f"{SEQ},home={h},data.data_root={d},data.dataset=syn-a"]),
    "trigrec stage 1": ("user_representation_module.train", lambda h, d: [
        "--config", str(REPO / "configs/trigrec/rep/synthetic.yaml"),
        "--override", f"{TRI},save_every=1,home={h},data.data_root={d},data.dataset=syn,eval.valid_max_users=100"]),
    "trigrec stage 2": ("recommendation_model.train_eval", lambda h, d: [
        "--config", str(REPO / "configs/trigrec/rec/synthetic.yaml"),
        "--override", f"{TRI},home={h},data.data_root={d},data.dataset=syn,eval.sampled=[],"
                      f"spe_emb_path={d / 'emb/spe.npy'},cross_emb_path={d / 'emb/cross.npy'}"]),
    "cross_domain source": ("cross_domain.__main__", lambda h, d: [
        "train-source", "--override", f"{TRI},home={h},data.data_root={d},data.dataset=syn,eval.sampled=[]"]),
    "cross_domain transfer": ("cross_domain.__main__", lambda h, d: [
        "train-target-transfer", "--override",
        f"{TRI},home={h},data.data_root={d},data.dataset=syn,eval.sampled=[],transfer.source_vectors={d / 'emb/source.npy'}"]),
    "universal": ("universal.train", lambda h, d: [
        "--data", str(d / "uni.json"), "--override",
        f"home={h},device=cpu,embedding_dim=16,batch_size=16,num_epochs=3,training.max_steps_per_epoch={STEPS},"
        "training.patience=0,print_every=1"]),
}
VOLATILE = re.compile(r"sec|time|per_s|_dir$|path|checkpoint|run_dir|^data$|source$")


def _numbers(obj, prefix=""):
    """Flatten the numeric leaves of a results.json, leaving out timings and paths."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not VOLATILE.search(str(k)):
                yield from _numbers(v, f"{prefix}{k}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix.rstrip("."), float(obj)


def _results(home: Path) -> dict:
    found = [p for p in home.rglob("results.json")]
    assert len(found) == 1, found
    return dict(_numbers(json.loads(found[0].read_text())))


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(trainer, data, tmp_path, monkeypatch, capsys):
    module, argv = TRAINERS[trainer]
    # the uninterrupted run, in this process on one thread like the subprocesses
    monkeypatch.chdir(REPO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exc:
            run(importlib.import_module(module).main, argv(tmp_path / "full", data))
    finally:
        torch.set_num_threads(threads)
    assert exc.value.code == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()
    full = _results(tmp_path / "full")

    cut = tmp_path / "cut"
    cli = [sys.executable, "-m", module.removesuffix(".__main__")]
    killed = subprocess.run(cli + argv(cut, data), cwd=REPO, env=_env(**{KILL_ENV: str(STEPS + 2)}),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL, not a clean exit
    assert not list(cut.rglob("results.json"))
    lasts = list(cut.rglob("last.pt"))
    assert len(lasts) == 1
    assert load_checkpoint(lasts[0])["loop"]["epoch"] == 1  # killed inside epoch 2
    for p in cut.rglob("*"):  # whatever is visible under its final name is complete
        if p.is_file() and not p.name.startswith("."):
            if p.suffix == ".pt":
                load_checkpoint(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".jsonl":
                [json.loads(line) for line in p.read_text().splitlines()]

    # what a kill at a worse moment leaves: epoch 2's row written but not its last.pt, a row cut
    # short, a checkpoint's temp file; the resumed run must drop all three
    with open(next(cut.rglob("metrics.jsonl")), "a") as fh:
        fh.write('{"epoch": 2, "train_loss": 9.9}\n{"epoch": 3, "tra')
    (lasts[0].parent / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    resumed = subprocess.run(cli + argv(cut, data) + ["--override", "training.resume=true"], cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    again = _results(cut)
    assert set(again) == set(full) and full
    for key, value in full.items():
        assert math.isclose(again[key], value, rel_tol=1e-6, abs_tol=1e-6), (key, again[key], value)
    assert not [p for p in cut.rglob("*.tmp")]
    rows = [json.loads(line) for line in next(cut.rglob("metrics.jsonl")).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # epoch 2 once, though it ran twice
    # time per epoch counts the epochs of the killed process too (not its seconds over all epochs)
    res = json.loads(next(cut.rglob("results.json")).read_text())
    if "sec_per_epoch" in res:
        assert res["sec_per_epoch"] == pytest.approx(np.mean([r["epoch_seconds"] for r in rows]), abs=1e-3)


def test_persona_encoder_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """The persona encoder trains in core.train.fit's step mode (sentence-transformers); it
    checkpoints the trained layers, optimizer and RNG every ``save_every`` steps into last.pt."""
    from persona_training import train_encoder
    from persona_training.synthetic import generate

    files = generate(tmp_path / "p", n_users=40)
    over = "device=cpu,max_steps=6,batch_size=4,train_layers=1,max_seq_length=32,log_every=1,save_every=2"

    def argv(out):
        cfg = tmp_path / f"{out}.yaml"
        cfg.write_text("".join(f"{k}: {v}\n" for k, v in files.items() if k in ("selected", "persona", "loo_history"))
                       + f"out_root: {tmp_path / out}\n")
        return ["--data_cfg", str(cfg), "--override", over]

    monkeypatch.chdir(REPO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exc:
            run(train_encoder.main, argv("full"))
    finally:
        torch.set_num_threads(threads)
    assert exc.value.code == 0, capsys.readouterr().err[-2000:]
    cli = [sys.executable, "-m", "persona_training.train_encoder"]
    killed = subprocess.run(cli + argv("cut"), cwd=REPO, env=_env(**{KILL_ENV: "5"}), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    train = tmp_path / "cut" / "train"
    assert load_checkpoint(train / "last.pt")["loop"]["step"] == 4 and not (train / "summary.json").exists()
    assert not (train / "model").exists()  # the model folder appears complete or not at all
    resumed = subprocess.run(cli + argv("cut") + ["--override", "resume=true"], cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-2000:]
    full = tmp_path / "full" / "train"
    rows = [[json.loads(r)["loss"] for r in (d / "metrics.jsonl").read_text().splitlines()] for d in (full, train)]
    assert len(rows[0]) == 6 and rows[0] == pytest.approx(rows[1], abs=1e-6)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, train))
    assert b["steps"] == a["steps"] == 6 and b["last_loss"] == pytest.approx(a["last_loss"], abs=1e-6)
    from safetensors.torch import load_file

    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (full, train))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
