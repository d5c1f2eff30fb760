"""torchrun with 2 gloo processes on CPU against one process, for the sequence trainers not
covered by tests/test_sequential_models.py (SASRec): BERT4Rec (distillation) and the
cross-domain source SASRec. Both ranks see half of each global batch (per-rank batch / 2), so
the steps are the same size but the rows differ: the runs are not bit-equal, and the test
asks for the same first-epoch loss within 5% and the same validation NDCG@10 within 0.06."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from core.data.synthetic import SyntheticSpec, prepare_synthetic

REPO = Path(__file__).resolve().parent.parent
LOSS_REL_TOL, NDCG_ABS_TOL = 0.05, 0.06


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_data")
    prepare_synthetic(root / "syn", SyntheticSpec(n_users=300, n_items_per_domain=40, n_clusters=4))
    return root


def _torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
         f"--rdzv_endpoint=127.0.0.1:{_free_port()}", *argv],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=600)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _compare(single: list[dict], ddp: list[dict], epochs: int) -> None:
    assert [r["epoch"] for r in ddp] == list(range(1, epochs + 1))  # rank 0 wrote each epoch once
    assert ddp[0]["train_loss"] == pytest.approx(single[0]["train_loss"], rel=LOSS_REL_TOL)
    a, b = single[-1]["valid"]["NDCG@10"], ddp[-1]["valid"]["NDCG@10"]
    assert abs(a - b) <= NDCG_ABS_TOL, (a, b)
    assert ddp[-1]["train_loss"] < ddp[0]["train_loss"]  # it trained


def test_bert4rec_two_gloo_processes_match_one(tmp_path, data_root):
    from core.seqrec import train_and_evaluate
    from distillation.config import DistillConfig

    yaml = REPO / "configs/distillation/bert4rec.yaml"
    common = (f"device=cpu,data.data_root={data_root},data.dataset=syn-a,model.hidden_units=32,model.maxlen=20,"
              "training.epochs=4,training.eval_every=2,training.patience=0,eval.sampled=[],run_name=b")
    single = train_and_evaluate(load_config(DistillConfig, yaml, f"{common},home={tmp_path / 'one'},"
                                                                  "training.batch_size=32"), log=lambda *a: None)
    proc = _torchrun(["-m", "distillation.training", "--config", str(yaml),
                      "--override", f"{common},home={tmp_path / 'two'},training.batch_size=16"])  # 2 x 16 = 32
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Test (") == 1  # only rank 0 reports
    run_dir = tmp_path / "two" / "distillation" / "syn-a" / "b"
    _compare(_rows(Path(single["run_dir"])), _rows(run_dir), 4)


def test_cross_domain_source_two_gloo_processes_match_one(tmp_path, data_root):
    from cross_domain.config import CrossDomainConfig
    from cross_domain.transfer import train_source

    yaml = REPO / "configs/cross_domain/synthetic.yaml"
    common = (f"device=cpu,data.data_root={data_root},data.dataset=syn,hidden_units=32,maxlen=20,num_epochs=4,"
              "eval_every=2,patience=0,eval.sampled=[]")
    single = train_source(load_config(CrossDomainConfig, yaml, f"{common},home={tmp_path / 'one'},batch_size=32"),
                          log=lambda *a: None)
    proc = _torchrun(["-m", "cross_domain", "train-source", "--override",
                      f"{common},home={tmp_path / 'two'},batch_size=16"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = next((tmp_path / "one").rglob("metrics.jsonl")).parent
    two = next((tmp_path / "two").rglob("metrics.jsonl")).parent
    assert one.relative_to(tmp_path / "one") == two.relative_to(tmp_path / "two")
    _compare(_rows(one), _rows(two), 4)
    assert single["best_epoch"] >= 1
