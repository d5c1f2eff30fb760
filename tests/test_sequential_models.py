"""SASRec / BERT4Rec through the distillation entry points: masks, quality, DDP, real data."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.models.bert4rec import BERT4Rec
from core.seqrec import SeqRecConfig, train_and_evaluate

REPO = Path(__file__).resolve().parent.parent
QUIET = lambda *a, **k: None  # noqa: E731


def test_bert4rec_attends_both_ways_and_ignores_padding():
    torch.manual_seed(0)
    model = BERT4Rec(n_items=30, maxlen=8, hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0).eval()
    seq = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8]])
    changed_late = seq.clone()
    changed_late[0, -1] = 9
    h, h_late = model(seq), model(changed_late)
    # bidirectional: a later item changes the earlier positions' states
    assert not torch.allclose(h[0, 3], h_late[0, 3])
    # padding: two more pad columns on the left leave real positions unchanged
    longer = BERT4Rec(n_items=30, maxlen=10, hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0).eval()
    longer.load_state_dict({k: (v if k != "pos_emb.weight" else torch.cat([v[:2], v])) for k, v in model.state_dict().items()})
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), seq], dim=1)
    assert torch.allclose(longer(padded)[0, -5:], h[0, -5:], atol=1e-5)
    # scoring appends the mask token after the history
    assert model.full_scores(seq).shape == (1, 31)


def _cfg(tmp_path, config, extra):
    return load_config(SeqRecConfig, config, f"device=cpu,home={tmp_path},data.data_root={tmp_path / 'data'},{extra}")


@pytest.mark.parametrize("config, extra", [
    ("configs/distillation/sasrec.yaml", "training.epochs=6,training.eval_every=2,eval.sampled=[]"),
    ("configs/distillation/bert4rec.yaml", "training.epochs=30,training.eval_every=10,eval.sampled=[]"),
])
def test_both_models_beat_popularity_on_synthetic(tmp_path, config, extra):
    res = train_and_evaluate(_cfg(tmp_path, REPO / config, extra), log=QUIET)
    model, pop = res["test"]["NDCG@10"], res["popularity_test"]["NDCG@10"]
    assert model > 2.0 * pop, (config, model, pop)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_match_single_process(tmp_path):
    common = (f"device=cpu,data.data_root={tmp_path / 'data'},training.epochs=6,training.eval_every=2,"
              "training.patience=0,eval.sampled=[]")
    single = train_and_evaluate(_cfg(tmp_path / "single", REPO / "configs/distillation/sasrec.yaml",
                                     common + ",training.batch_size=128"), log=QUIET)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
         f"--rdzv_endpoint=127.0.0.1:{_free_port()}", "-m", "distillation.training",
         "--config", "configs/distillation/sasrec.yaml",
         "--override", f"{common},home={tmp_path / 'ddp'},training.batch_size=64"],  # 2 x 64 = 128 per step
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Test (") == 1  # only rank 0 reports
    run_dir = tmp_path / "ddp" / "distillation" / "synthetic-a" / "sasrec"
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 7))  # rank 0 wrote each epoch once
    ddp = json.loads((run_dir / "results.json").read_text())
    assert ddp["test"]["NDCG@10"] == pytest.approx(single["test"]["NDCG@10"], abs=0.05)
    assert ddp["test"]["NDCG@10"] > 2.0 * ddp["popularity_test"]["NDCG@10"]


def test_training_and_evaluation_cli(tmp_path):
    env = {**os.environ, "RECSYS_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    over = f"device=cpu,data.data_root={tmp_path / 'data'},training.epochs=2,run_name=cli"
    proc = subprocess.run([sys.executable, "-m", "distillation.training", "--override", over],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = tmp_path / "distillation" / "synthetic-a" / "cli" / "best.pt"
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "distillation.evaluation", "--model-path", str(ckpt),
                           "--config", "configs/distillation/sasrec.yaml", "--override", over, "--output", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads(out.read_text())
    trained = json.loads((ckpt.parent / "results.json").read_text())
    assert evaluated["test"]["NDCG@10"] == pytest.approx(trained["test"]["NDCG@10"], abs=1e-6)
    assert "sampled-100/NDCG@10" in evaluated["test"]
    # a checkpoint from another model kind is refused with one clear line
    bad = tmp_path / "not_a_ckpt.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    proc = subprocess.run([sys.executable, "-m", "distillation.evaluation", "--model-path", str(bad),
                           "--override", over], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "not_a_ckpt.pt" in proc.stderr


def test_beauty_subset_validation_improves(shared_data, tmp_path):
    from core.data.prepare.seq_lines import run as prepare_run  # noqa: F401  (module must import)
    from core.data.prepare.__main__ import main as prepare_main

    prepare_main(["seq-lines", "--path", str(shared_data / "amazon-seq" / "Beauty.txt"), "--out", str(tmp_path / "data" / "beauty")])
    res = train_and_evaluate(_cfg(tmp_path, REPO / "configs/distillation/sasrec/beauty.yaml",
                                  "training.epochs=3,training.eval_every=1,training.max_steps_per_epoch=60,"
                                  "eval.valid_max_users=3000,eval.sampled=[],training.patience=0"), log=QUIET)
    rows = [json.loads(l) for l in (Path(res["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    ndcg = [r["valid"]["NDCG@10"] for r in rows]
    assert ndcg[-1] > ndcg[0] and ndcg[-1] > 0.01, ndcg


def test_positions_from_the_oldest_item_do_not_move_when_an_item_is_appended():
    """``position_from=oldest`` (BERT4Rec's / RecBole's left-aligned convention): a causal model's
    states of a history are the same with a newer item appended and with leading padding trimmed;
    counted from the newest (the default) every position moves by one."""
    from core.models.sasrec import SASRec

    torch.manual_seed(0)
    history, longer = torch.tensor([[0, 0, 3, 4, 5, 6]]), torch.tensor([[0, 3, 4, 5, 6, 7]])
    for position_from, same in (("oldest", True), ("newest", False)):
        model = SASRec(20, maxlen=6, hidden_units=8, num_heads=2, position_from=position_from).eval()
        with torch.no_grad():
            before, after = model(history)[:, 2:], model(longer)[:, 1:5]
            trimmed = model(history[:, 2:])
        assert torch.allclose(before, after, atol=1e-5) is same
        assert torch.allclose(before, trimmed, atol=1e-6)  # trimming leading padding changes nothing either way
    assert SASRec(20, maxlen=6, position_from="oldest").model_args["position_from"] == "oldest"
    assert "position_from" not in SASRec(20, maxlen=6).model_args  # old checkpoints keep their args
    with pytest.raises(ValueError, match="position_from"):
        SASRec(20, maxlen=6, position_from="middle")
