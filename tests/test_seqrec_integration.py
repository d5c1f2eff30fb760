"""The demo's path end to end on the generated default: quality, resume, CLI behaviour."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from core.seqrec import SeqRecConfig, train_and_evaluate

REPO = Path(__file__).resolve().parent.parent

QUICK = ("device=cpu,model.hidden_units=32,model.maxlen=30,training.batch_size=128,training.learning_rate=0.003,"
         "training.patience=0,eval.sampled=[],training.eval_every=1")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _cfg(home, data_root, extra=""):
    return load_config(SeqRecConfig, overrides=f"{QUICK},home={home},data.data_root={data_root},{extra}")


def test_sasrec_beats_popularity_clearly(tmp_path, data_root):
    res = train_and_evaluate(_cfg(tmp_path, data_root, "training.epochs=6"), log=lambda s: None)
    model, pop = res["test"]["NDCG@10"], res["popularity_test"]["NDCG@10"]
    # the planted successor structure is invisible to popularity
    assert model > 2.0 * pop and model - pop > 0.15, (model, pop)
    assert res["best_epoch"] >= 1
    run_dir = Path(res["run_dir"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    assert (run_dir / "best.pt").is_file() and (run_dir / "config.yaml").is_file()


def test_resume_matches_uninterrupted_run(tmp_path, data_root):
    full = train_and_evaluate(_cfg(tmp_path / "a", data_root, "training.epochs=4"), log=lambda s: None)
    # "stopped" after epoch 2, then resumed to 4 in the same run folder
    train_and_evaluate(_cfg(tmp_path / "b", data_root, "training.epochs=2"), log=lambda s: None)
    resumed = train_and_evaluate(_cfg(tmp_path / "b", data_root, "training.epochs=4,training.resume=true"),
                                 log=lambda s: None)
    assert resumed["best_epoch"] == full["best_epoch"]
    for key in ("NDCG@10", "HR@10", "MRR"):
        assert resumed["test"][key] == pytest.approx(full["test"][key], abs=1e-6)
    rows = (Path(resumed["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]


def _run_cli(args, tmp_path):
    env = {**os.environ, "RECSYS_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_demo_cli_prints_table_and_writes_results(tmp_path, data_root):
    proc = _run_cli(["core.demo", "--override", f"{QUICK},training.epochs=3,data.data_root={data_root}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Popularity" in proc.stdout and "SASREC" in proc.stdout
    results = json.loads((tmp_path / "home" / "demo" / "synthetic-a" / "demo" / "results.json").read_text())
    assert results["test"]["NDCG@10"] > results["popularity_test"]["NDCG@10"]


@pytest.mark.parametrize("override, needle", [
    ("model.hiden_units=8", "hidden_units"),          # unknown key -> suggestion
    ("training.epochs=many", "training.epochs"),      # wrong type
    ("data.dataset=no-such-dataset", "no-such-dataset"),  # missing data
    ("run_name=../escape", "run name"),               # path escape
])
def test_demo_cli_bad_input_is_one_clear_line(tmp_path, override, needle):
    proc = _run_cli(["core.demo", "--override", f"device=cpu,data.data_root={tmp_path / 'data'},{override}"], tmp_path)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "home" / "demo").exists()  # nothing half-written


def test_staged_loss_switches_to_the_full_softmax_at_ce_from_epoch(tmp_path, data_root, monkeypatch):
    from core.models.base import SequentialRecommender

    seen = []
    original = SequentialRecommender.set_epoch

    def spy(self, epoch):
        original(self, epoch)
        seen.append((epoch, self.loss_name))

    monkeypatch.setattr(SequentialRecommender, "set_epoch", spy)
    res = train_and_evaluate(_cfg(tmp_path, data_root, "training.epochs=3,model.loss=sampled_softmax,"
                                  "model.num_negatives=64,model.ce_from_epoch=3"), log=lambda s: None)
    assert seen == [(1, "sampled_softmax"), (2, "sampled_softmax"), (3, "ce")]
    assert res["test"]["NDCG@10"] > 2.0 * res["popularity_test"]["NDCG@10"]
    with pytest.raises(Exception, match="model.ce_from_epoch"):
        _cfg(tmp_path, data_root, "model.loss=ce,model.ce_from_epoch=3")
