"""`make demo` (python -m demo): every pipeline chained on small generated data in tmp folders.

One run with --quick (a few steps per stage, ~30 s on one CPU thread); the checks read what
the stages left in the tree, so a stage that stops writing (or reading) its hand-off fails here.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.data.synthetic import SyntheticSpec, prepare_synthetic
from core.store import atomic_write_json, load_embeddings

REPO = Path(__file__).resolve().parent.parent
PIPELINES = ("sequential", "candidates", "trigrec", "cross_domain", "persona", "distillation", "universal")


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "demo", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from universal.synthetic import UniversalSpec, generate

    root = tmp_path_factory.mktemp("demo")
    data = root / "data"
    prepare_synthetic(data / "synthetic", SyntheticSpec(n_users=200, n_items_per_domain=60, n_clusters=5))
    atomic_write_json(data / "universal-synthetic" / "data.json", generate(UniversalSpec(n_users=120, n_items=40)))
    proc = _cli("--home", str(root / "home"), "--data-root", str(data), "--device", "cpu", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "home", data, proc.stdout


def test_demo_table_has_every_pipeline_with_numbers(demo_run):
    home, _data, out = demo_run
    table = out[out.index("======== summary"):]
    for name in PIPELINES:
        assert name in table, f"{name} missing from the final table:\n{table}"
    assert "wall time:" in table and "total" in table
    summary = json.loads((home / "demo_summary.json").read_text())
    assert [r["pipeline"].split()[0] for r in summary["rows"]] == list(PIPELINES)
    for r in summary["rows"]:
        assert math.isfinite(r["model value"]) and math.isfinite(r["baseline value"]), r
        assert 0 <= r["model value"] <= 1 and 0 <= r["baseline value"] <= 1, r
    assert set(summary["seconds"]) == {"sequential", "trigrec", "cross_domain", "persona", "distillation",
                                       "universal", "total"}


def test_hand_offs_exist_in_the_tree(demo_run):
    home, data, _ = demo_run
    seq = home / "distillation" / "synthetic-a" / "sasrec"
    for f in ("best.pt", "results.json", "sasrec.jsonl", "popularity.jsonl", "gt.jsonl"):
        assert (seq / f).is_file(), f
    # stage 1 -> stage 2: exported vectors (and the leak-free holdout ones), read by the recommender
    emb = home / "embeddings" / "user_representation_module" / "synthetic-A"
    spe = sorted(emb.glob("spe_emb_ep*_A.npy"))
    assert spe and sorted(emb.glob("cross_emb_ep*_A.holdout1.npy"))
    rec = json.loads((home / "rec" / "synthetic-A" / "demo" / "results.json").read_text())
    assert Path(rec["spe_emb_path"]) == spe[-1] and rec["vector_holdout"] == 1
    plain = json.loads((home / "rec" / "synthetic-A" / "demo-bert4rec" / "results.json").read_text())
    assert plain["spe_emb_path"] == "" and plain["cross_emb_path"] == ""
    # cross_domain: the source export feeds the transfer model
    cd = home / "cross_domain" / "synthetic" / "demo"
    transfer = json.loads((cd / "transfer-B-A" / "results.json").read_text())
    assert Path(transfer["source_vectors"]).is_file()
    assert (cd / "compare-B-A" / "compare.json").is_file()
    # persona: SASRec's lists are the candidates it reranks; its user vectors become profiles
    persona = data / "synthetic-a-persona"
    assert (persona / "candidate.jsonl").read_text().splitlines()[0] in (seq / "sasrec.jsonl").read_text()
    assert (home / "persona_training" / "synthetic-a" / "rerank" / "metrics.json").is_file()
    vectors, ids = load_embeddings(home / "embeddings" / "persona_training" / "synthetic-a" / "users.npy")
    assert vectors.shape[0] == len(ids) == 200 and np.isfinite(vectors).all()
    profiles = json.loads((home / "embeddings" / "distillation" / "synthetic-a" / "profiles.json").read_text())
    assert set(profiles) == set(ids) and np.allclose(profiles[ids[7]], vectors[7], atol=1e-5)
    distill = json.loads((home / "distillation" / "synthetic-a" / "sasrec-distill" / "results.json").read_text())
    assert distill["distill"] is True and distill["train_users_with_profile"] == distill["train_users"]
    assert (home / "universal" / "universal-synthetic" / "demo" / "results.json").is_file()


def test_candidate_lists_rank_as_the_model_does(demo_run):
    """The shared evaluator on the written top-20 lists reproduces the full-ranking HR@20 of the
    model and of popularity: the lists exclude the history and keep the model's order."""
    home, _data, _ = demo_run
    res = json.loads((home / "distillation" / "synthetic-a" / "sasrec" / "results.json").read_text())
    rows = {r["pipeline"].split()[0]: r for r in json.loads((home / "demo_summary.json").read_text())["rows"]}
    assert rows["candidates"]["model value"] == pytest.approx(res["test"]["HR@20"], abs=1e-6)
    assert rows["candidates"]["baseline value"] == pytest.approx(res["popularity_test"]["HR@20"], abs=1e-6)
    assert rows["sequential"]["model value"] == pytest.approx(res["test"]["NDCG@10"])


def test_bad_device_is_one_line():
    proc = _cli("--device", "tpu", timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "tpu" in proc.stderr, proc.stderr
