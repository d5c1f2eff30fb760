"""The same seed gives the same numbers twice on CPU: the core sequential trainer, TriGRec
stage 1, cross-domain source training and the universal two-tower model, each run twice in
this process into separate folders (tiny configs). Every validation/test number and every
saved weight must be equal; a different seed must change them (so the comparison can fail)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.data.synthetic import SyntheticSpec, prepare_synthetic
from conftest import write_tiny_universal

REPO = Path(__file__).resolve().parent.parent
QUIET = lambda *a, **k: None  # noqa: E731


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("det_data")
    prepare_synthetic(root / "syn", SyntheticSpec(n_users=80, n_items_per_domain=40, n_clusters=2))
    write_tiny_universal(root / "uni.json", n_users=30, n_items=20, per_user=6, n_jobs=3, n_genres=4, with_year=True)
    return root


def _seqrec(home, d, seed):
    from core.seqrec import SeqRecConfig, train_and_evaluate

    res = train_and_evaluate(load_config(SeqRecConfig, overrides=(
        f"device=cpu,seed={seed},home={home},data.data_root={d},data.dataset=syn-a,model.hidden_units=16,"
        "model.maxlen=12,training.batch_size=16,training.epochs=2,training.patience=0,eval.sampled=[100]")), log=QUIET)
    return res, Path(res["run_dir"])


def _trigrec_stage1(home, d, seed):
    from user_representation_module.config import RepConfig
    from user_representation_module.train import train_representations

    res = train_representations(load_config(RepConfig, REPO / "configs/trigrec/rep/synthetic.yaml", (
        f"device=cpu,seed={seed},home={home},data.data_root={d},data.dataset=syn,hidden_units=16,maxlen=12,"
        "num_epochs=2,max_steps_per_epoch=3,save_every=1,eval_every=1,eval.valid_max_users=100")), log=QUIET)
    return res, Path(res["rep_dir"])


def _cross_domain(home, d, seed):
    from cross_domain.config import CrossDomainConfig
    from cross_domain.transfer import train_source

    res = train_source(load_config(CrossDomainConfig, REPO / "configs/cross_domain/synthetic.yaml", (
        f"device=cpu,seed={seed},home={home},data.data_root={d},data.dataset=syn,hidden_units=16,maxlen=12,"
        "num_epochs=2,eval_every=1,patience=0")), log=QUIET)
    return res, Path(res["run_dir"])


def _universal(home, d, seed):
    from universal.config import UniversalConfig
    from universal.pipeline import Pipeline

    cfg = load_config(UniversalConfig, REPO / "configs/universal/synthetic.yaml",
                      f"device=cpu,seed={seed},home={home},embedding_dim=16,batch_size=16,num_epochs=2,print_every=1")
    res = Pipeline(cfg, log=QUIET).fit(d / "uni.json")
    return res, Path(res["run_dir"])


def _numbers(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not any(s in str(k) for s in ("sec", "time", "per_s", "dir", "path", "checkpoint")):
                yield from _numbers(v, f"{prefix}{k}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix.rstrip("."), obj


def _weights(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / ("best.pt" if (run_dir / "best.pt").is_file() else "cross_ep2.pt"), weights_only=True)
    return ckpt["model_state"]


@pytest.mark.parametrize("train", [_seqrec, _trigrec_stage1, _cross_domain, _universal],
                         ids=["core seqrec", "trigrec stage 1", "cross_domain source", "universal"])
def test_same_seed_same_numbers(train, data, tmp_path):
    (a, dir_a), (b, dir_b), (c, dir_c) = (train(tmp_path / name, data, seed) for name, seed in
                                          (("a", 7), ("b", 7), ("c", 8)))
    na, nb, nc = (dict(_numbers(r)) for r in (a, b, c))
    assert len(na) > 3 and na == nb  # exactly equal, not approximately
    wa, wb, wc = (_weights(d) for d in (dir_a, dir_b, dir_c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)  # the seed matters: the check can fail
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (dir_a, dir_b)]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]
