"""Profile distillation: the loss algebra, pooling, stage switch, profile hygiene, configs, bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import load_config
from core.errors import ConfigError, DataError
from distillation.config import DistillConfig
from distillation.method import DistillLoss, ProfileDistiller, combine, exp_pool, mean_pool, weighted_pool
from distillation.profiles import load_profile_json, profile_tensors, write_profile_texts

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- loss algebra
def test_beta_is_detached():
    rec = torch.tensor(6.0, requires_grad=True)
    distil = torch.tensor(0.5, requires_grad=True)
    alpha = 0.4
    total = combine(rec, distil, alpha, dynamic=True)
    total.backward()
    assert math.isclose(total.item(), alpha * 6.0 + (1 - alpha) * 6.0, rel_tol=1e-6)  # beta * distil == rec
    # beta = rec / distil is a constant: d/d rec = 1 - alpha, d/d distil = alpha * beta
    assert math.isclose(rec.grad.item(), 1 - alpha, rel_tol=1e-6)
    assert math.isclose(distil.grad.item(), alpha * 6.0 / 0.5, rel_tol=1e-5)
    rec.grad = distil.grad = None
    combine(rec, distil, alpha, dynamic=False).backward()
    assert math.isclose(distil.grad.item(), alpha, rel_tol=1e-6) and math.isclose(rec.grad.item(), 1 - alpha, rel_tol=1e-6)


# --------------------------------------------------------------------------- pooling
def _states():
    # one user, left padding at position 0, real positions hold 1, 2, 4 (as [B=1, L=4, D=1])
    states = torch.tensor([[[100.0], [1.0], [2.0], [4.0]]])
    real = torch.tensor([[False, True, True, True]])
    return states, real


def test_mean_pool_ignores_padding():
    states, real = _states()
    assert math.isclose(mean_pool(states, real).item(), 7 / 3, rel_tol=1e-6)


def test_exp_pool_weights_recent_items():
    states, real = _states()
    g = math.log(2.0)  # weights proportional to 2^t, t = 1, 2, 3 -> 2, 4, 8
    expected = (2 * 1 + 4 * 2 + 8 * 4) / 14
    assert math.isclose(exp_pool(states, real, g).item(), expected, rel_tol=1e-6)
    assert math.isclose(exp_pool(states, real, 0.0).item(), 7 / 3, rel_tol=1e-6)  # gamma 0 = mean


def test_attention_pool_uses_softmax_of_scores():
    states, real = _states()
    scores = torch.tensor([[50.0, 0.0, math.log(3.0), 0.0]])  # padding score must not matter
    expected = (1 * 1 + 3 * 2 + 1 * 4) / 5
    assert math.isclose(weighted_pool(states, real, scores).item(), expected, rel_tol=1e-6)
    distiller = ProfileDistiller(hidden=1, profile_dim=1, pooling="attention", direction="none")
    with torch.no_grad():
        distiller.attn.weight.fill_(0.0)
        distiller.attn.bias.fill_(0.0)
    assert math.isclose(distiller.pool(states, real).item(), 7 / 3, rel_tol=1e-6)


def test_distiller_loss_directions_and_missing_profiles():
    states = torch.randn(3, 5, 8)
    real = torch.ones(3, 5, dtype=torch.bool)
    profiles = torch.randn(3, 1, 4)
    present = torch.tensor([[True], [False], [True]])
    for direction in ("down", "up"):
        d = ProfileDistiller(8, 4, direction=direction)
        loss = d(states, real, profiles, present)
        assert loss.ndim == 0 and loss.item() > 0
        loss.backward()
        assert d.transform.weight.grad is not None
    # nobody has a profile: zero loss, still differentiable
    zero = ProfileDistiller(8, 4)(states, real, profiles, torch.zeros(3, 1, dtype=torch.bool))
    assert zero.item() == 0.0
    cos = ProfileDistiller(4, 4, direction="none", loss="cosine")
    same = cos(profiles.expand(3, 5, 4).clone(), real, profiles, torch.ones(3, 1, dtype=torch.bool))
    assert same.item() < 1e-5  # reconstructing the profile exactly costs nothing
    with pytest.raises(ValueError):
        ProfileDistiller(8, 4, direction="none")


def test_multi_profile_mean_aggregation():
    d = ProfileDistiller(2, 2, direction="none")
    profiles = torch.tensor([[[1.0, 0.0], [3.0, 2.0]]])
    assert torch.allclose(d.aggregate_profiles(profiles, torch.tensor([[True, True]])), torch.tensor([[2.0, 1.0]]))
    assert torch.allclose(d.aggregate_profiles(profiles, torch.tensor([[True, False]])), torch.tensor([[1.0, 0.0]]))


def test_fine_tune_switch_stops_distillation_at_that_epoch():
    loss = DistillLoss(ProfileDistiller(4, 4, direction="none"), torch.zeros(3, 1, 4), torch.ones(3, 1, dtype=torch.bool),
                       alpha=0.5, dynamic_scaling=True, layer=-1, fine_tune_epoch=3)
    on = []
    for epoch in range(1, 6):
        loss.set_epoch(epoch)
        on.append(loss.distilling)
    assert on == [True, True, False, False, False]
    loss.fine_tune_epoch = 0
    loss.set_epoch(50)
    assert loss.distilling


# --------------------------------------------------------------------------- end to end on the synthetic default
def _profiles_for(data_root: Path, out: Path) -> Path:
    """Profiles carrying each user's majority cluster of training items (one-hot)."""
    from collections import Counter

    from core.data.splits import leave_one_out
    from core.seqrec import DataConfig, load_dataset

    data, folder = load_dataset(DataConfig(dataset="synthetic-a", data_root=str(data_root)))
    side = data.item_side(folder)
    split = leave_one_out(data)
    table = {}
    for u, raw in enumerate(data.user_ids, start=1):
        start = int(data.offsets[u - 1])
        hist = data.items[start:start + int(split.train_len[u - 1])]
        cluster = Counter(side[str(data.item_ids[i - 1])]["category"] for i in hist).most_common(1)[0][0]
        table[str(raw)] = np.eye(12)[int(cluster.split()[-1])].tolist()
    out.write_text(json.dumps(table))
    return out


def test_cli_distillation_logs_both_losses_until_fine_tune(tmp_path):
    data_root = tmp_path / "data"
    prof = _profiles_for(data_root, tmp_path / "prof.json")
    over = (f"home={tmp_path / 'home'},data.data_root={data_root},profile_embeddings_path={prof},device=cpu,"
            "epochs=4,fine_tune_epoch=3,max_steps_per_epoch=3,eval_every=2,hidden_units=16,eval.sampled=[],"
            "run_name=ft")
    proc = subprocess.run([sys.executable, "-m", "distillation.training", "--config",
                           "configs/distillation/sasrec_llm/synthetic-a.yaml", "--override", over],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sasrec+distill" in proc.stdout
    run = tmp_path / "home" / "distillation" / "synthetic-a" / "ft"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert ["distill_loss" in r for r in rows] == [True, True, False, False]
    res = json.loads((run / "results.json").read_text())
    assert res["distill"] and res["train_users_with_profile"] == res["train_users"]
    assert (run / "test_ranks.npz").is_file()
    assert not (run / "last.pt").exists()  # save_checkpoints: false in the seed-style config
    # the saved model is a plain SASRec: the evaluation entry point reads it
    proc = subprocess.run([sys.executable, "-m", "distillation.evaluation", "--model-path", str(run / "best.pt"),
                           "--config", "configs/distillation/sasrec_llm/synthetic-a.yaml", "--override", over],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "NDCG@10" in proc.stdout, proc.stderr[-2000:]


def test_distilled_beats_plain_when_profiles_carry_the_planted_cluster(tmp_path):
    """On synthetic users whose next items depend mostly on a planted taste cluster, profiles
    that state that cluster make a short SASRec run clearly better; the same profiles shuffled
    across users (the control) must not help. Dynamic scaling is off: with a cosine loss
    near zero, beta = L_rec / L_distil inflates the distillation gradient (measured: it
    halves NDCG here), see benchmarks/README.md."""
    from core.data.synthetic import SyntheticSpec, prepare_synthetic, user_tastes
    from distillation.pipeline import run_distillation

    spec = SyntheticSpec(n_users=300, n_clusters=20, p_successor=0.3, p_taste=0.5)
    prepare_synthetic(tmp_path / "data" / "taste", spec)
    onehot = np.eye(spec.n_clusters)[user_tastes(spec)]
    prof = tmp_path / "taste.json"
    prof.write_text(json.dumps({f"u{u:05d}": row.tolist() for u, row in enumerate(onehot)}))
    ndcg = {}
    for arm, over in {"plain": "use_distillation=false", "distilled": "use_distillation=true",
                      "shuffled": "use_distillation=true,distill.shuffle_profiles=true"}.items():
        for seed in (1, 2):
            cfg = load_config(DistillConfig, REPO / "configs/distillation/sasrec_llm/synthetic-a.yaml",
                              f"{over},seed={seed},home={tmp_path / 'home'},data.data_root={tmp_path / 'data'},"
                              f"data.dataset=taste-a,profile_embeddings_path={prof},device=cpu,eval.sampled=[],"
                              "epochs=20,fine_tune_epoch=14,hidden_units=32,alpha=0.6,use_dynamic_scaling=false,"
                              f"run_name={arm}{seed}")
            ndcg.setdefault(arm, []).append(run_distillation(cfg, log=lambda *a: None)["test"]["NDCG@10"])
    mean = {arm: float(np.mean(v)) for arm, v in ndcg.items()}
    assert mean["distilled"] > 1.08 * mean["plain"], ndcg
    assert mean["shuffled"] < mean["plain"] * 1.02, ndcg


def test_profile_texts_use_training_items_only(tmp_path):
    from core.data.splits import leave_one_out
    from core.seqrec import DataConfig, load_dataset

    data, folder = load_dataset(DataConfig(dataset="synthetic-a", data_root=str(tmp_path)))
    texts = write_profile_texts(data, folder)
    split = leave_one_out(data)
    side = data.item_side(folder)
    title = lambda i: side[str(data.item_ids[i - 1])]["title"]  # noqa: E731
    checked = 0
    for u in split.valid.users[:300]:
        text = texts[str(data.user_ids[u - 1])]
        listed = set(text.split("Recently: ", 1)[1].rstrip(".").split("; "))
        seq = data.sequence(int(u))
        n = int(split.train_len[u - 1])
        assert listed <= {title(i) for i in seq[:n]}
        assert title(int(seq[n])) not in listed and title(int(seq[n + 1])) not in listed  # valid, test items
        checked += 1
    assert checked == 300


# --------------------------------------------------------------------------- configs and bad input
SEED_YAML = """
seed: 42
model:
  model_name: BERT4RecLLM
  item_num: 0
  user_num: 0
  maxlen: 50
  hidden_units: 128
  num_blocks: 4
  num_heads: 2
  dropout_rate: 0.3
  add_head: true
  reconstruction_layer: -1
  weighting_scheme: exp_weight
  weight_scale: 0.1
  use_down_scale: True
  use_upscale: False
  multi_profile: False
  multi_profile_aggr_scheme: mean
training:
  batch_size: 256
  epochs: 25
  learning_rate: 0.0005
  reconstruct_loss: MSE
  eval_every: 1
  model_dir: models/
  alpha: 0.4
  fine_tune_epoch: 12
  scale_guide_loss: true
  save_checkpoints: false
data:
  profile_train_sequences: p/train_sequences.pkl
  finetune_train_sequences: p/train_sequences.pkl
  valid_sequences: p/valid_sequences.pkl
  test_sequences: p/test_sequences.pkl
  mappings: p/mappings.pkl
  counts: p/counts.pkl
  user_profile_embeddings_files: p/profiles.json
experiment_name: "BERT4Rec-LLM_Beauty"
"""


def test_seed_yaml_and_readme_names_map_to_one_config(tmp_path):
    path = tmp_path / "seed.yaml"
    path.write_text(SEED_YAML)
    cfg = load_config(DistillConfig, path)
    assert cfg.model.model_type == "bert4rec" and cfg.distill.enabled and cfg.distill.pooling == "exp"
    assert (cfg.distill.alpha, cfg.distill.fine_tune_epoch, cfg.distill.gamma, cfg.distill.loss) == (0.4, 12, 0.1, "mse")
    assert cfg.distill.profiles == ["p/profiles.json"] and cfg.home == "models/" and cfg.run_name == "BERT4Rec-LLM_Beauty"
    assert cfg.training.save_checkpoints is False
    readme = load_config(DistillConfig, None, "use_distillation=true,distillation_alpha=0.4,use_dynamic_scaling=true,"
                         "aggregation_method=exp_weight,distillation_layer=-1,profile_embeddings_path=p/profiles.json,"
                         "embedding_dim=128,num_layers=4,num_heads=2,model_type=bert4rec,fine_tune_epoch=12,"
                         "weight_scale=0.1,maxlen=50,dropout_rate=0.3")
    assert readme.distill == cfg.distill
    assert (readme.model.hidden_units, readme.model.num_blocks) == (128, 4)
    with pytest.raises(ConfigError, match="unknown config key 'distilation_alpha'"):
        load_config(DistillConfig, None, "distilation_alpha=0.3")
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED_YAML.replace("  alpha: 0.4", "  alpha: 0.4\n  not_a_key: 1"))
    with pytest.raises(ConfigError, match="not_a_key"):
        load_config(DistillConfig, bad)
    with pytest.raises(ConfigError, match="model.add_head"):
        load_config(DistillConfig, None, "model.add_head=false")
    with pytest.raises(ConfigError, match="no profile"):
        load_config(DistillConfig, None, "use_distillation=true")


@pytest.mark.parametrize("content, message", [
    ('{"1": [0.1, 0.2], "2": [0.3]}', "dimensions"),
    ('{"1": [0.1, NaN], "2": [0.3, 0.1]}', "NaN"),
    ('{"1": [0.1, "x"], "2": [0.3, 0.1]}', "list of numbers"),
    ('[1, 2]', "expected a non-empty object"),
    ('{"1": [0.1', "invalid JSON"),
])
def test_bad_profile_json_is_rejected(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_profile_json(path)


def test_missing_profiles_policy(tmp_path):
    from core.data.sequences import SequenceData

    data = SequenceData.from_lists([[1, 2, 3], [2, 3, 1], [3, 1, 2]], 3, ["a", "b", "c"], ["x", "y", "z"])
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"a": [1.0, 0.0], "c": [0.0, 1.0]}))
    train_users = np.array([1, 2, 3])
    with pytest.raises(DataError, match="1 training users have no profile.*'b'"):
        profile_tensors([str(path)], data, train_users)
    values, present = profile_tensors([str(path)], data, train_users, missing="skip")
    assert present[:, 0].tolist() == [False, True, False, True]
    values, present = profile_tensors([str(path)], data, train_users, missing="zero")
    assert present[1:, 0].all() and values[2].abs().sum() == 0
    shuffled, _ = profile_tensors([str(path)], data, train_users, missing="skip", shuffle_seed=1)
    assert sorted(map(tuple, shuffled[[1, 3], 0].tolist())) == sorted(map(tuple, values[[1, 3], 0].tolist()))
    with pytest.raises(ConfigError, match="multi_profile"):
        profile_tensors([str(path), str(path)], data, train_users)


def test_processed_layout_round_trip_and_seed_pickles(tmp_path):
    import pickle

    from core.data.processed import read_processed, write_processed
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out

    data = SequenceData.from_lists([[1, 2, 3, 4], [2, 3, 1], [3, 1, 2, 4, 1]], 4, ["a", "b", "c"], ["w", "x", "y", "z"])
    out = write_processed(data, leave_one_out(data), tmp_path / "processed")
    back = read_processed(*(out / f"{n}.json" for n in ("train_sequences", "valid_sequences", "test_sequences", "mappings", "counts")))
    assert back.fingerprint() == data.fingerprint() and back.user_ids == ["a", "b", "c"]
    # the seed's pickles: held-out items as bare ids, tuples for maps and counts
    files = {"train": {1: [1, 2], 2: [2], 3: [3, 1, 2]}, "valid": {1: 3, 2: 3, 3: 4}, "test": {1: 4, 2: 1, 3: 1},
             "mappings": ({"a": 1, "b": 2, "c": 3}, {"w": 1, "x": 2, "y": 3, "z": 4}), "counts": (3, 4)}
    for name, obj in files.items():
        (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps(obj))
    seed = read_processed(*(tmp_path / f"{n}.pkl" for n in ("train", "valid", "test", "mappings", "counts")))
    assert seed.fingerprint() == data.fingerprint()
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(DataError):
        read_processed(tmp_path / "evil.pkl", tmp_path / "valid.pkl", tmp_path / "test.pkl")


def test_fine_tune_stage_trains_on_its_own_sequence_file(tmp_path):
    from core.data.batches import CausalDataset
    from core.data.processed import training_split_from
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out
    from distillation.pipeline import StagedTrainData

    data = SequenceData.from_lists([[1, 2, 3, 4], [2, 3, 1], [3, 1, 2, 4, 1]], 4, ["a", "b", "c"], ["w", "x", "y", "z"])
    first = CausalDataset(leave_one_out(data), maxlen=5)
    path = tmp_path / "ft.json"
    path.write_text(json.dumps({"a": [4, 3, 2, 1], "c": [1, 2]}))  # raw user ids; "b" does not fine-tune
    second = CausalDataset(training_split_from(data, path), maxlen=5)
    staged = StagedTrainData(first, second, switch_epoch=3)
    seen = []
    for epoch in (1, 2, 3, 4):
        staged.set_epoch(epoch)
        seen.append(len(staged))
    assert seen == [len(first), len(first), 2, 2]
    batch = staged.get_batch(torch.tensor([0]))
    assert batch["users"].tolist() == [1] and batch["input"][0, -3:].tolist() == [4, 3, 2]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"zz": [1, 2]}))
    with pytest.raises(DataError, match="not in the dataset"):
        training_split_from(data, bad)


def test_profiles_from_llm_texts_and_from_other_pipelines(tmp_path):
    from core import store
    from core.seqrec import DataConfig, load_dataset
    from distillation.profiles import main as profiles_main
    from distillation.profiles import read_texts

    good = tmp_path / "texts.jsonl"
    good.write_text('{"user_id": "u1", "profile": "likes jazz"}\n{"user_id": 2, "text": "reads sci-fi"}\n')
    assert read_texts(good) == {"u1": "likes jazz", "2": "reads sci-fi"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "u1", "profile": ""}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: needs a non-empty string field 'profile'"):
        read_texts(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"u1": 3}')
    with pytest.raises(DataError, match="expected {user_id: non-empty text}"):
        read_texts(bad_json)
    # user vectors written by another pipeline -> the seed's profile JSON, PCA-reduced
    data, folder = load_dataset(DataConfig(dataset="synthetic-a", data_root=str(tmp_path / "data")))
    users = data.user_ids[:200]
    vectors = np.random.default_rng(0).normal(size=(len(users), 24)).astype(np.float32)
    store.save_embeddings(tmp_path / "emb", "users", vectors, users)
    out = tmp_path / "out"
    assert profiles_main(["--dataset", str(folder), "--embeddings", str(tmp_path / "emb" / "users.npy"),
                          "--dim", "8", "--out", str(out)]) == 0
    table = load_profile_json(out / "profiles-8.json")
    assert set(table) == set(map(str, users)) and len(next(iter(table.values()))) == 8
    assert not (out / "profile_texts.json").exists()


def test_training_from_the_processed_layout(tmp_path):
    """The seed's five files drive a run; its folder is named after the data, not data.dataset."""
    from core.data.processed import write_processed
    from core.data.splits import leave_one_out
    from core.seqrec import DataConfig, load_dataset
    from distillation.pipeline import run_distillation

    data, _ = load_dataset(DataConfig(dataset="synthetic-a", data_root=str(tmp_path / "data")))
    proc = write_processed(data, leave_one_out(data), tmp_path / "mydata" / "processed")
    files = {n: proc / f"{n}.json" for n in ("train_sequences", "valid_sequences", "test_sequences", "mappings", "counts")}
    over = (f"home={tmp_path / 'home'},device=cpu,epochs=1,max_steps_per_epoch=2,hidden_units=16,eval.sampled=[],"
            f"profile_train_sequences={files['train_sequences']},valid_sequences={files['valid_sequences']},"
            f"test_sequences={files['test_sequences']},mappings={files['mappings']},counts={files['counts']},run_name=p")
    res = run_distillation(load_config(DistillConfig, REPO / "configs/distillation/sasrec.yaml", over), log=lambda *a: None)
    assert Path(res["run_dir"]) == tmp_path / "home" / "distillation" / "mydata" / "p"
    assert (Path(res["run_dir"]) / "results.json").is_file() and res["dataset"] == "mydata"


def test_benchmark_recipe_rows_compare_with_the_base_of_their_own_recipe():
    """``benchmarks.distillation run --recipe cos`` names rows ``sasrec-cos[+distill...]`` and puts the
    recipe's overrides in every variant; ``compare_with_base`` then pairs a variant with the base of
    its own recipe, never with the other recipe's."""
    from benchmarks.distillation import RECIPES, model_name
    from distillation.compare import compare_with_base

    assert model_name("sasrec", "base", recipe="cos") == "sasrec-cos"
    assert model_name("sasrec", "distill", "aspects", "cos") == "sasrec-cos+distill-aspects"
    assert model_name("sasrec", "distill", "aspects") == "sasrec+distill-aspects"
    assert "training.lr_schedule=cosine" in RECIPES["cos"]
    users = list(range(10))
    values = {"sasrec": 0.10, "sasrec+distill": 0.12, "sasrec-cos": 0.20, "sasrec-cos+distill": 0.21}
    groups, ranks = {}, {}
    for model, value in values.items():
        for seed in (1, 2):
            run_dir = f"runs/{model}-{seed}"
            groups.setdefault(("ml-100k", model, "full", "NDCG@10"), []).append(
                {"seeds": [seed], "value": value, "run_dir": run_dir, "device": "cpu"})
            ranks[run_dir] = {"users": users, "ranks": [0 if "distill" in model and u < 5 else 3 for u in users]}
    gains = {r["model"]: r["value"] for r in compare_with_base(groups, ranks, []) if r["metric"] == "gain_pct_NDCG@10"}
    assert gains == pytest.approx({"sasrec+distill": 20.0, "sasrec-cos+distill": 5.0})
