"""TriGRec: gradient reversal, adversarial training, export, the gated recommender, resume,
bad input. Runs on small synthetic two-domain data generated into tmp folders."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import load_config
from core.errors import CheckpointError
from core.data.safe_pickle import load_plain_pickle
from core.data.synthetic import SyntheticSpec, prepare_synthetic
from recommendation_model.config import RecConfig
from user_representation_module.config import RepConfig
from user_representation_module.model import grad_reverse

REPO = Path(__file__).resolve().parent.parent
REP_YAML = REPO / "configs/trigrec/rep/synthetic.yaml"
REC_YAML = REPO / "configs/trigrec/rec/synthetic.yaml"
TINY = "hidden_units=16,maxlen=20,num_epochs=2,save_every=1,max_steps_per_epoch=2,eval.valid_max_users=100"


def _data(tmp_path: Path, **spec) -> Path:
    root = tmp_path / "data"
    if not (root / "syn" / "meta.json").is_file():
        prepare_synthetic(root / "syn", SyntheticSpec(**spec) if spec else SyntheticSpec(n_users=200))
    return root


def _over(tmp_path: Path, extra: str = "") -> str:
    return (f"home={tmp_path / 'home'},data.data_root={_data(tmp_path)},data.dataset=syn,device=cpu"
            + (f",{extra}" if extra else ""))


def _cli(module: str, config: Path, over: str):
    return subprocess.run([sys.executable, "-m", module, "--config", str(config), "--override", over],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_grl_flips_and_scales_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * torch.arange(3.0).expand(4, 3))


def test_export_writes_the_chosen_epoch_and_refuses_a_missing_one(tmp_path):
    from user_representation_module.inference import export
    from user_representation_module.train import train_representations

    res = train_representations(load_config(RepConfig, REP_YAML, _over(tmp_path, TINY)), log=lambda *a: None)
    rep = Path(res["rep_dir"])
    assert rep.name == "syn-A" and res["saved_epochs"] == [1, 2]
    for part in ("spe_A", "spe_B", "common", "cross", "discriminator"):
        for e in (1, 2):
            assert (rep / f"{part}_ep{e}.pt").is_file()
    ckpt = torch.load(rep / "cross_ep1.pt", weights_only=True)
    assert ckpt["kind"] == "bert4rec" and ckpt["config"]["data"]["target"] == "A" and ckpt["epoch"] == 1
    out = export(load_config(RepConfig, REP_YAML, _over(tmp_path, "EPOCH_TO_LOAD=1,SPE_DOMAIN=B")), log=lambda *a: None)
    folder = Path(out["out_dir"])
    assert folder == tmp_path / "home" / "embeddings" / "user_representation_module" / "syn-A"
    for name in ("spe_emb_ep1_B", "cross_emb_ep1_B"):
        vec = np.load(folder / f"{name}.npy")
        ids = json.loads((folder / f"{name}.ids.json").read_text())
        assert vec.shape == (200, 16) and len(ids) == 200 and np.isfinite(vec).all()
        table = load_plain_pickle(folder / f"{name}.pkl")  # the seed's readers get plain data only
        assert type(table) is dict and np.allclose(table[ids[3]], vec[3], atol=1e-6)
    # specific vectors of domain B differ from cross vectors; epoch 2 was not exported
    assert not np.allclose(np.load(folder / "spe_emb_ep1_B.npy"), np.load(folder / "cross_emb_ep1_B.npy"))
    assert not (folder / "spe_emb_ep2_B.npy").exists()
    proc = _cli("user_representation_module.inference", REP_YAML, _over(tmp_path, "EPOCH_TO_LOAD=7"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "EPOCH_TO_LOAD=7" in proc.stderr and "[1, 2]" in proc.stderr


def test_stage1_resume_matches_an_uninterrupted_run(tmp_path):
    from user_representation_module.train import train_representations

    quiet = lambda *a: None  # noqa: E731
    four = TINY + ",num_epochs=4"
    full = train_representations(load_config(RepConfig, REP_YAML, _over(tmp_path, four + f",home={tmp_path / 'full'}")),
                                 log=quiet)

    def crash_in_epoch_3(line, *a):
        if str(line).startswith("epoch   3/"):
            raise KeyboardInterrupt  # killed after epoch 3's log line, before its last.pt was written

    with pytest.raises(KeyboardInterrupt):
        train_representations(load_config(RepConfig, REP_YAML, _over(tmp_path, four + f",home={tmp_path / 'cut'}")),
                              log=crash_in_epoch_3)
    resumed = train_representations(load_config(RepConfig, REP_YAML, _over(
        tmp_path, four + f",training.resume=true,home={tmp_path / 'cut'}")), log=quiet)
    assert resumed["saved_epochs"] == [1, 2, 3, 4]
    for name in ("cross_ep4.pt", "spe_A_ep4.pt", "discriminator_ep4.pt"):
        a = torch.load(Path(full["rep_dir"]) / name, weights_only=True)["model_state"]
        b = torch.load(Path(resumed["rep_dir"]) / name, weights_only=True)["model_state"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("over, message", [
    ("SPE_DOMAIN=C", "SPE_DOMAIN='C': use A or B"),
    ("data.target=food", "data.target='food': use A or B"),
    ("EPOCH_TO_LOAD=-1", "EPOCH_TO_LOAD=-1"),
    ("num_epoch=3", "unknown config key 'num_epoch'"),
    ("export.holdout_last=-1", "export.holdout_last=-1: use 0 (off)"),
])
def test_stage1_bad_config_is_one_line(tmp_path, over, message):
    proc = _cli("user_representation_module.train", REP_YAML, _over(tmp_path, over))
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "home").exists()


def _fake_exports(folder: Path, ids: list, dim: int = 8, epoch: int = 3) -> None:
    from core.store import save_embeddings

    rng = np.random.default_rng(0)
    for kind in ("spe", "cross"):
        save_embeddings(folder, f"{kind}_emb_ep{epoch}_A", rng.normal(size=(len(ids), dim)), ids)


def test_stage2_refuses_mismatched_embeddings(tmp_path):
    from core.data.sequences import SequenceData
    from core.store import save_embeddings

    _data(tmp_path)
    ids = SequenceData.load(tmp_path / "data" / "syn").user_ids
    emb = tmp_path / "home" / "embeddings" / "user_representation_module" / "syn-A"
    save_embeddings(emb, "spe_emb_ep3_A", np.zeros((len(ids) - 5, 8)), ids[:-5])  # 5 users short
    save_embeddings(emb, "cross_emb_ep3_A", np.zeros((len(ids), 8)), ids)
    proc = _cli("recommendation_model.train_eval", REC_YAML, _over(tmp_path, "num_epochs=1"))
    assert proc.returncode == 2 and "spe vectors for 195 users but the data has 200" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    bad = np.zeros((len(ids), 8))
    bad[4, 2] = np.nan
    save_embeddings(emb, "spe_emb_ep3_A", bad, ids)
    proc = _cli("recommendation_model.train_eval", REC_YAML, _over(tmp_path, "num_epochs=1"))
    assert proc.returncode == 2 and "NaN" in proc.stderr
    proc = _cli("recommendation_model.train_eval", REC_YAML, _over(tmp_path, "num_epochs=1,EPOCH_TO_LOAD=9"))
    assert proc.returncode == 2 and "exported epochs: [3]" in proc.stderr
    # vectors of another dimension than the run being resumed was trained with
    save_embeddings(emb, "spe_emb_ep3_A", np.zeros((len(ids), 8)), ids)
    small = "hidden_units=16,maxlen=12,max_steps_per_epoch=2"
    assert _cli("recommendation_model.train_eval", REC_YAML, _over(tmp_path, f"num_epochs=1,{small}")).returncode == 0
    save_embeddings(emb, "spe_emb_ep3_A", np.zeros((len(ids), 6)), ids)
    proc = _cli("recommendation_model.train_eval", REC_YAML,
                _over(tmp_path, f"num_epochs=2,training.resume=true,{small}"))
    assert proc.returncode == 2 and "does not fit this model" in proc.stderr and proc.stderr.count("\n") == 1


def test_stage2_trains_on_exported_vectors_and_writes_the_seed_checkpoint(tmp_path):
    from core.data.sequences import SequenceData
    from recommendation_model.train_eval import train_eval

    _data(tmp_path)
    ids = SequenceData.load(tmp_path / "data" / "syn").user_ids
    _fake_exports(tmp_path / "home" / "embeddings" / "user_representation_module" / "syn-A", ids)
    res = train_eval(load_config(RecConfig, REC_YAML, _over(tmp_path, "num_epochs=2,hidden_units=16,maxlen=12")),
                     log=lambda *a: None)
    assert Path(res["checkpoint"]) == tmp_path / "home" / "rec" / "syn-A" / "maxlen12.pt"
    ckpt = torch.load(res["checkpoint"], weights_only=True)
    assert ckpt["kind"] == "trigrec-rec" and ckpt["model_args"]["spe_dim"] == 8
    assert res["spe_emb_path"].endswith("spe_emb_ep3_A.npy") and 0 <= res["test_full"]["NDCG@10"] <= 1
    leak_free = res["test_full_leak_controlled"]  # users whose test transition no training sequence holds
    assert 0 < leak_free["users"] < 200 and 0 <= leak_free["NDCG@10"] <= 1

    # eval_only: the saved checkpoint scores the same, results.json is left as training wrote it
    run_dir = Path(res["run_dir"])
    written = (run_dir / "results.json").read_text()
    again = train_eval(load_config(RecConfig, REC_YAML, _over(tmp_path, "eval_only=true,hidden_units=16,maxlen=12")),
                       log=lambda *a: None)
    assert again["test_full"] == res["test_full"] and again["best_epoch"] == res["best_epoch"]
    assert json.loads((run_dir / "eval_results.json").read_text())["test_full"] == res["test_full"]
    assert (run_dir / "results.json").read_text() == written
    with pytest.raises(CheckpointError, match="other model settings .hidden_units 16 here 8"):
        train_eval(load_config(RecConfig, REC_YAML, _over(tmp_path, "eval_only=true,hidden_units=8,maxlen=12")),
                   log=lambda *a: None)
    with pytest.raises(CheckpointError, match="no saved checkpoint to evaluate"):
        train_eval(load_config(RecConfig, REC_YAML, _over(tmp_path, "eval_only=true,hidden_units=16,maxlen=7")),
                   log=lambda *a: None)


def test_holdout_views_cut_before_the_last_target_training_items():
    """Target A; items 1-4 in A, 5-8 in B. User u: target_all [1, 2, 3, 4] (training part [1, 2]),
    cross [1, 5, 2, 6, 7, 8]; user v: only 2 target items, all training, cross [5, 1, 6, 2]; user
    w: no target item."""
    from core.data.domains import split_merged
    from core.data.sequences import SequenceData
    from user_representation_module.data import holdout_views

    dom = np.array([-1, 0, 0, 0, 0, 1, 1, 1, 1])
    merged = SequenceData.from_lists([[1, 5, 2, 6, 3, 7, 4, 8], [5, 1, 6, 2], [5, 6]], 8, ["u", "v", "w"],
                                     list("abcdefgh"), item_domain=dom)
    views = split_merged(merged, "A")
    assert views.cross.sequence(1).tolist() == [1, 5, 2, 6, 7, 8]
    seqs = lambda cut, k: [cut[k].sequence(u).tolist() for u in (1, 2, 3)]  # noqa: E731
    one = holdout_views(views, 1)
    assert seqs(one, "A") == [[1], [1], []]
    # cross: everything from the first held-out target item on goes, other-domain items included
    assert seqs(one, "cross") == [[1, 5], [5, 1, 6], [5, 6]]
    assert seqs(one, "B") == [[5], [5, 6], [5, 6]]  # B cut at the same point of the merged sequence
    two = holdout_views(views, 2)
    assert seqs(two, "A") == [[], [], []] and seqs(two, "cross") == [[], [5], [5, 6]]
    assert seqs(two, "B") == [[], [5], [5, 6]]
    # target B: its training part of u is [5, 6] (7, 8 are valid / test); A is seen in full
    views_b = split_merged(merged, "B")
    cut_b = holdout_views(views_b, 1)
    assert seqs(cut_b, "B") == [[5], [5], [5]] and seqs(cut_b, "cross") == [[1, 5, 2], [5, 1], [5]]
    assert seqs(cut_b, "A") == [[1, 2], [1], []]


def test_holdout_export_encodes_the_cut_sequences(tmp_path):
    """Export with export.holdout_last=1: the companion files of every user, each row the encoder
    applied to the user's views without the last target training item; then stage 2 trains on
    them with model.vector_holdout=1 and evaluates with the full vectors."""
    from core.data.sequences import SequenceData
    from recommendation_model.train_eval import train_eval
    from user_representation_module.data import encode_users, load_views
    from user_representation_module.inference import export, load_encoder
    from user_representation_module.train import train_representations

    quiet = lambda *a: None  # noqa: E731
    res = train_representations(load_config(RepConfig, REP_YAML, _over(tmp_path, TINY)), log=quiet)
    out = export(load_config(RepConfig, REP_YAML, _over(tmp_path, "export.holdout_last=1")), log=quiet)
    folder = Path(out["out_dir"])
    assert out["epoch"] == 2 and out["holdout_last"] == 1
    full, held = {}, {}
    for kind in ("spe", "cross"):
        name = f"{kind}_emb_ep2_A"
        full[kind], held[kind] = np.load(folder / f"{name}.npy"), np.load(folder / f"{name}.holdout1.npy")
        assert held[kind].shape == (200, 16) and np.isfinite(held[kind]).all()
        assert json.loads((folder / f"{name}.holdout1.ids.json").read_text()) == json.loads(
            (folder / f"{name}.ids.json").read_text())
        assert not (folder / f"{name}.holdout1.pkl").exists()
    views, _ = load_views(load_config(RepConfig, REP_YAML, _over(tmp_path)).data)
    dom = views.item_domain
    u = int(np.flatnonzero(views.a.lengths >= 2)[0]) + 1  # 1-based, >= 2 target training items
    own, cross = views.a.sequence(u), views.cross.sequence(u)
    last_own = np.flatnonzero(dom[cross] == 0)[-1]
    assert cross[last_own] == own[-1]

    def encode(part, seq):
        enc = load_encoder(Path(res["rep_dir"]), part, 2, "cpu")
        one = SequenceData.from_lists([seq], views.n_items, ["x"], views.cross.item_ids)
        return encode_users(enc, one, 20, "cpu")[0]

    np.testing.assert_allclose(held["spe"][u - 1], encode("spe_A", own[:-1]), atol=1e-5)
    np.testing.assert_allclose(held["cross"][u - 1], encode("cross", cross[:last_own]), atol=1e-5)
    np.testing.assert_allclose(full["spe"][u - 1], encode("spe_A", own), atol=1e-5)
    # the barely trained encoders move little with one item less, but well beyond the tolerance above
    for kind in ("spe", "cross"):
        assert np.abs(held[kind][u - 1] - full[kind][u - 1]).max() > 1e-4, kind

    rec = train_eval(load_config(RecConfig, REC_YAML, _over(
        tmp_path, "model.vector_holdout=1,num_epochs=2,hidden_units=16,maxlen=12,max_steps_per_epoch=3")), log=quiet)
    saved = json.loads((Path(rec["run_dir"]) / "results.json").read_text())
    assert saved["vector_holdout"] == 1 and saved["spe_emb_path"].endswith("spe_emb_ep2_A.npy")
    assert 0 <= saved["test_full"]["NDCG@10"] <= saved["test_full"]["HR@10"] <= 1 and saved["best_epoch"] >= 1
    losses = [json.loads(x)["train_loss"] for x in (Path(rec["run_dir"]) / "metrics.jsonl").read_text().splitlines()
              if "train_loss" in json.loads(x)]
    assert losses and all(np.isfinite(losses))


def test_holdout_mask_routes_only_the_last_items_through_the_fusion():
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out
    from recommendation_model.data import HoldoutClozeDataset, holdout_cloze_mask
    from recommendation_model.model import TriGRecRecommender

    rows = torch.tensor([[0, 0, 3, 4, 5], [0, 0, 0, 6, 7], [1, 2, 3, 4, 5], [0, 0, 0, 0, 2]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        inputs, fused, plain = holdout_cloze_mask(rows, 1, 0.5, 9, gen)
        assert torch.equal(fused[:, -1], rows[:, -1]) and not fused[:, :-1].any()  # only, always, the last item
        assert not plain[:, -1].any() and not plain[rows == 0].any()
        masked = (fused > 0) | (plain > 0)
        assert torch.equal(inputs, rows.masked_fill(masked, 9)) and torch.equal(plain[plain > 0], rows[plain > 0])
    _, fused, plain = holdout_cloze_mask(rows, 2, 1.0, 9, gen)
    assert torch.equal(fused[:, -2:], rows[:, -2:]) and torch.equal(plain[:, :-2], rows[:, :-2])
    assert not holdout_cloze_mask(rows, 1, 1.0, 9, gen, last_mask_prob=1.0)[2].any()

    # the dataset: the fused target of a row is its user's last training item
    data = SequenceData.from_lists([[1, 2, 3, 4, 5], [2, 3, 4], [5, 4, 3, 2]], 5, list("xyz"), list("abcde"))
    ds = HoldoutClozeDataset(leave_one_out(data), maxlen=4, mask_prob=0.3, holdout=1)
    batch = ds.get_batch(torch.arange(len(ds)), gen)
    assert batch["users"].tolist() == [1, 3] and batch["target_fused"][:, -1].tolist() == [3, 4]

    # the model: vectors reach the loss through the fused positions only
    torch.manual_seed(0)
    model = TriGRecRecommender(9, spe_dim=4, cross_dim=4, hidden_units=8, maxlen=5, num_heads=2, loss="ce").eval()
    inputs, fused, plain = holdout_cloze_mask(rows, 1, 0.5, model.mask_token, torch.Generator().manual_seed(1))
    vec = [torch.randn(4, 4), torch.randn(4, 4)]
    other = [torch.randn(4, 4), torch.randn(4, 4)]

    def loss(b, v):
        with torch.no_grad():
            return float(model.training_loss({**b, "spe": v[0], "cross": v[1]}))  # side inputs ride in the batch

    both = {"input": inputs, "target_fused": fused, "target_plain": plain}
    assert loss(both, vec) != pytest.approx(loss(both, other), abs=1e-6)
    plain_only = {"input": inputs, "target_fused": torch.zeros_like(fused), "target_plain": plain + fused}
    assert loss(plain_only, vec) == loss(plain_only, other)  # no fused target: the vectors are never read


def test_stage2_holdout_needs_the_companion_files_and_shuffles_them_with_the_vectors(tmp_path):
    from core.data.sequences import SequenceData
    from core.errors import DataError
    from core.store import save_embeddings
    from recommendation_model.train_eval import train_eval, user_tables

    _data(tmp_path)
    ids = SequenceData.load(tmp_path / "data" / "syn").user_ids
    emb = tmp_path / "home" / "embeddings" / "user_representation_module" / "syn-A"
    _fake_exports(emb, ids)
    cfg = load_config(RecConfig, REC_YAML, _over(tmp_path, "model.vector_holdout=1,num_epochs=1"))
    with pytest.raises(DataError) as err:
        train_eval(cfg, log=lambda *a: None)
    msg = str(err.value)
    assert "spe_emb_ep3_A.holdout1.npy" in msg and "python -m user_representation_module.inference" in msg
    assert 'export.holdout_last=1,EPOCH_TO_LOAD=3,SPE_DOMAIN=A' in msg and "\n" not in msg
    assert not (tmp_path / "home" / "rec").exists()  # refused before anything was written

    # the shuffled control gives each user someone else's full and holdout vectors, the same someone
    for kind in ("spe", "cross"):
        vec = np.load(emb / f"{kind}_emb_ep3_A.npy")
        save_embeddings(emb, f"{kind}_emb_ep3_A.holdout1", vec + 1000.0, ids)
    paths = [str(emb / f"{k}_emb_ep3_A.npy") for k in ("spe", "cross")]
    plain, perm = user_tables(cfg, ids, *paths)
    assert perm is None and np.allclose(plain["cross_holdout"] - plain["cross"], 1000.0)
    shuffled_cfg = load_config(RecConfig, REC_YAML, _over(tmp_path, "model.vector_holdout=1,shuffle_user_vectors=true"))
    shuffled, perm = user_tables(shuffled_cfg, ids, *paths)
    assert perm is not None and not np.allclose(shuffled["spe"], plain["spe"])
    for kind in ("spe", "cross"):
        np.testing.assert_allclose(shuffled[f"{kind}_holdout"], plain[kind][perm] + 1000.0, rtol=1e-6)
    off, _ = user_tables(load_config(RecConfig, REC_YAML, _over(tmp_path)), ids, *paths)
    assert set(off) == {"spe", "cross"}  # default off: the holdout files are not read


def test_adversarial_training_drives_the_discriminator_to_chance_on_common_vectors(tmp_path):
    """With the gradient reversal the jointly trained discriminator falls to chance (3 classes:
    A, B and cross rows; 1/3) as the reversal ramps up, and stays far below the same
    discriminator trained without reversal, which separates the views almost perfectly. The
    specific vectors stay separable (a fresh linear probe). A fresh probe on *common* vectors
    also still separates them: with disjoint item sets and a shared tied head the hidden
    states must point at their own domain's items (see benchmarks/README.md)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from user_representation_module.data import load_views, padded_rows
    from user_representation_module.model import pooled
    from user_representation_module.train import train_representations

    short = ("hidden_units=32,maxlen=30,num_epochs=16,save_every=16,batch_size=64,eval_every=16,dropout_rate=0.1,"
             "adv_weight=1.0")
    acc = {}
    for arm in ("true", "false"):
        res = train_representations(load_config(RepConfig, REP_YAML, _over(
            tmp_path, f"{short},use_grl={arm},home={tmp_path / arm}")), log=lambda *a: None)
        rows = [json.loads(x) for x in (Path(res["rep_dir"]) / "metrics.jsonl").read_text().splitlines()]
        acc[arm] = np.array([r["disc_acc"] for r in rows])
    late = {arm: float(a[len(a) // 2:].mean()) for arm, a in acc.items()}
    assert late["false"] > 0.85 and late["true"] < late["false"] - 0.25, acc
    assert acc["true"].min() < 0.36 and acc["true"][0] > 0.36, acc  # it was above chance, then fell to it

    from user_representation_module.inference import load_encoder

    cfg = load_config(RepConfig, REP_YAML, _over(tmp_path))
    views, _ = load_views(cfg.data)
    users = np.arange(1, views.cross.n_users + 1)
    rep = tmp_path / "true" / "rep" / "syn-A"

    def vectors(part, data):
        enc = load_encoder(rep, part, 16, "cpu")
        rows = padded_rows(data, users, 30)
        with torch.no_grad():
            return pooled(enc(rows), rows).numpy()

    x = np.vstack([vectors("spe_A", views.a), vectors("spe_B", views.b)])
    y = np.r_[np.zeros(len(users)), np.ones(len(users))]
    assert cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=5).mean() > 0.95


def test_gated_recommender_uses_the_other_domain(tmp_path):
    """Stage 2 in isolation: user vectors that summarise the user's *other* domain (domain B's
    cluster histogram, where the planted taste shows) make the gated BERT4Rec on domain A
    better than the plain one; the same vectors shuffled across users do not. The stage-1
    encoders that produce such vectors end to end are measured in benchmarks/trigrec.py."""
    from core.data.sequences import SequenceData
    from core.store import save_embeddings
    from recommendation_model.train_eval import train_eval

    root = tmp_path / "data"
    prepare_synthetic(root / "syn", SyntheticSpec())  # the default: 1,000 users, 10 clusters
    merged = SequenceData.load(root / "syn")
    side = json.loads((root / "syn" / "item_side.json").read_text())
    cluster = np.array([0] + [int(side[str(raw)]["category"].split()[-1]) for raw in merged.item_ids])
    hist = np.zeros((merged.n_users, cluster.max() + 1))
    for u in range(merged.n_users):
        seq = merged.sequence(u + 1)
        np.add.at(hist[u], cluster[seq[merged.item_domain[seq] == 1]], 1.0)  # domain B only
    hist /= hist.sum(1, keepdims=True)
    emb = tmp_path / "home" / "embeddings" / "user_representation_module" / "syn-A"
    for kind in ("spe", "cross"):
        save_embeddings(emb, f"{kind}_emb_ep1_A", hist, merged.user_ids)
    ndcg = {}
    for arm, over in {"plain": "use_spe=false,use_cross=false", "gated": "use_spe=true,use_cross=true",
                      "shuffled": "shuffle_user_vectors=true"}.items():
        cfg = load_config(RecConfig, REC_YAML, _over(tmp_path, f"{over},run_name={arm},hidden_units=32,num_epochs=20,"
                                                               "patience=0,maxlen=10"))
        ndcg[arm] = train_eval(cfg, log=lambda *a: None)["test_full"]["NDCG@10"]
    # measured: plain 0.0955, gated 0.1046, shuffled 0.0956
    assert ndcg["gated"] > 1.05 * ndcg["plain"] and ndcg["shuffled"] < 1.03 * ndcg["plain"], ndcg


def test_food_kitchen_end_to_end_smoke(tmp_path, shared_data):
    """Real data, a few steps per stage: the views, the export of all 34,117 users and of the
    C2DSR lines, and the C2DSR protocol on Food's 2,722 validation / 2,747 test lines."""
    from core.data.prepare import food_kitchen
    from core.data.prepare.common import write_prepared
    from recommendation_model.train_eval import train_eval
    from user_representation_module.inference import export
    from user_representation_module.train import train_representations

    src = shared_data / "food-kitchen"
    if not (src / "c2dsr" / "testdata_new.txt").is_file():
        pytest.skip("Food-Kitchen data not present")
    for p in food_kitchen.load(src, out=tmp_path / "data" / "food-kitchen"):
        write_prepared(p)
    over = (f"home={tmp_path / 'home'},data.data_root={tmp_path / 'data'},device=cpu,hidden_units=16,num_epochs=1,"
            f"max_steps_per_epoch=3,data.c2dsr_dir={src / 'c2dsr'}")
    quiet = lambda *a: None  # noqa: E731
    rep = train_representations(load_config(RepConfig, REPO / "configs/trigrec/rep/food.yaml",
                                            over + ",save_every=1,eval.valid_max_users=500"), log=quiet)
    assert rep["users"] == 34117 and rep["saved_epochs"] == [1]
    out = export(load_config(RepConfig, REPO / "configs/trigrec/rep/food.yaml", over), log=quiet)
    folder = Path(out["out_dir"])
    assert np.load(folder / "cross_emb_ep1_A.npy").shape == (34117, 16)
    assert np.load(folder / "spe_emb_ep1_A.c2dsr-valid.npy").shape == (8173, 16)
    res = train_eval(load_config(RecConfig, REPO / "configs/trigrec/rec/food.yaml", over + ",eval_every=1"), log=quiet)
    assert res["valid"]["HR@10"] >= res["valid"]["NDCG@10"] > 0
    assert res["c2dsr_lines"] == {"valid": 2722, "test": 2747}  # lines whose sorted last item is food
    t = res["test_c2dsr"]
    assert set(t) == {"MRR", "NDCG@1", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10"} and 0 < t["NDCG@10"] <= t["HR@10"]
    assert Path(res["checkpoint"]).name == "maxlen10.pt" and 0 < res["test_full"]["NDCG@10"] < 1
    ranks = np.load(Path(res["run_dir"]) / "test_c2dsr_ranks.npz")
    assert len(ranks["lines"]) == len(ranks["ranks"]) == 2747 and len(set(ranks["lines"].tolist())) == 2747
    assert np.mean(1.0 / (ranks["ranks"] + 1)) == pytest.approx(t["MRR"], rel=1e-5)


@pytest.mark.parametrize("payload, message", [
    ({0: {1, 2}}, "user 0: expected a list of item ids, found set"),
    ({0: [1, 2.5]}, "user 0: item 2.5 is not an integer"),
    (np.arange(3), "refused global numpy"),  # an object that needs a global (numpy) to load
])
def test_food_kitchen_pickle_with_non_container_objects_is_refused(tmp_path, payload, message):
    src = tmp_path / "fk"
    src.mkdir()
    good = {0: [1, 2, 3]}
    for stem in ("food_all", "food_train", "kitchen_all", "kitchen_train", "cross_f_train", "cross_k_train"):
        (src / f"{stem}.pkl").write_bytes(pickle.dumps(payload if stem == "cross_f_train" else good))
    proc = subprocess.run([sys.executable, "-m", "core.data.prepare", "food-kitchen", "--path", str(src),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cross_f_train.pkl" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_views_cut_from_a_merged_dataset_hold_out_the_targets_last_two():
    from core.data.domains import restrict_to_domain, split_merged
    from core.data.sequences import SequenceData

    dom = np.array([-1, 0, 0, 0, 0, 1, 1, 1])  # items 1-4 in A, 5-7 in B
    merged = SequenceData.from_lists([[1, 5, 2, 6, 3, 4], [5, 1, 6, 2]], 7, ["u", "v"], list("abcdefg"),
                                     item_domain=dom)
    v = split_merged(merged, "A")
    assert v.a.sequence(1).tolist() == [1, 2] and v.b.sequence(1).tolist() == [5, 6]
    assert v.cross.sequence(1).tolist() == [1, 5, 2, 6] and v.target_all.sequence(1).tolist() == [1, 2, 3, 4]
    # user v has only 2 target items: nothing is held out, in any view
    assert v.a.sequence(2).tolist() == [1, 2] and v.cross.sequence(2).tolist() == [5, 1, 6, 2]
    local, l2g = restrict_to_domain(v.b, dom, "B")
    assert local.n_items == 3 and local.sequence(1).tolist() == [1, 2] and l2g.tolist() == [0, 5, 6, 7]


def test_c2dsr_protocol_splits_lines_by_whether_training_saw_the_target():
    import numpy as np
    import torch

    from core.data.c2dsr import C2DSREval
    from core.evaluation import C2DSRProtocol

    # 4 lines over a 6-item domain (local ids = global ids here); targets 1, 2, 5, 6
    ev = C2DSREval(np.arange(4), np.arange(4), [np.array([3]), np.array([4]), np.array([3]), np.array([4])],
                   np.array([1, 2, 5, 6]), np.zeros(4, dtype=np.int8), "lines.txt")
    prot = C2DSRProtocol(ev, np.arange(7), n_items=6, maxlen=3, spe=None, cross=None, n_neg=5, seed=0)

    class ScoreById:  # higher id scores higher: ranks follow the ids of the candidates
        def candidate_scores(self, inputs, candidates, spe=None, cross=None):
            return candidates.float()

    overall = prot.run(ScoreById())
    counts = np.array([0, 3, 1, 0, 0, 0, 2])  # training saw items 1, 2 and 6; never 5
    split = prot.split_by_training_count(counts)
    assert split["unseen_target_share"] == 0.25
    # with 5 negatives out of the other 5 items every item is a candidate: item i ranks 6 - i
    expected_mrr = {t: 1.0 / (6 - t + 1) for t in (1, 2, 5, 6)}
    assert split["seen"]["MRR"] == pytest.approx(np.mean([expected_mrr[t] for t in (1, 2, 6)]))
    assert split["unseen"]["MRR"] == pytest.approx(expected_mrr[5])
    assert overall["MRR"] == pytest.approx(np.mean(list(expected_mrr.values())))
    # the leak-controlled view reads each line's last target-domain item
    assert prot.previous.tolist() == [3, 4, 3, 4]
    only = prot.subset_metrics({"two": np.array([True, False, False, True]), "none": np.zeros(4, bool)})
    assert set(only) == {"two"} and only["two"]["MRR"] == pytest.approx((expected_mrr[1] + expected_mrr[6]) / 2)


# ------------------------------------------------------------------ the merged-domain peer (issue 23)
def test_merged_item_index_keeps_stage_2_target_ids():
    from core.data.domains import merged_item_index, restrict_to_domain
    from core.data.sequences import SequenceData

    dom = np.array([-1, 1, 0, 1, 0, 0], dtype=np.int8)  # global items 1..5: A = 2, 4, 5; B = 1, 3
    empty = SequenceData.from_lists([], 5, [], list("abcde"))
    for target, other, expected in (("A", "B", [0, 4, 1, 5, 2, 3]), ("B", "A", [0, 1, 3, 2, 4, 5])):
        _, target_l2g = restrict_to_domain(empty, dom, target)  # stage 2's target ids
        _, other_l2g = restrict_to_domain(empty, dom, other)
        index, order = merged_item_index(target_l2g, other_l2g, len(dom))
        assert index.tolist() == expected and index[order].tolist() == [1, 2, 3, 4, 5]
        assert index[target_l2g[1:]].tolist() == list(range(1, len(target_l2g)))


def test_c2dsr_protocol_input_map_changes_the_inputs_only():
    from core.data.c2dsr import C2DSREval
    from core.evaluation import C2DSRProtocol

    # global items 1-3 in the target domain (local ids = global), 4-6 in the other (merged ids 4-6)
    ev = C2DSREval(np.arange(2), np.arange(2), [np.array([1, 4, 2]), np.array([5, 3])], np.array([3, 1]),
                   np.zeros(2, dtype=np.int8), "lines.txt")
    to_local = np.array([0, 1, 2, 3, 0, 0, 0])
    plain = C2DSRProtocol(ev, to_local, n_items=3, maxlen=4, spe=None, cross=None, n_neg=2, seed=0)
    merged = C2DSRProtocol(ev, to_local, n_items=3, maxlen=4, spe=None, cross=None, n_neg=2, seed=0,
                           input_map=np.arange(7))
    assert plain.inputs.tolist() == [[0, 0, 1, 2], [0, 0, 0, 3]]
    assert merged.inputs.tolist() == [[0, 1, 4, 2], [0, 0, 5, 3]]
    assert torch.equal(plain.candidates, merged.candidates) and plain.previous.tolist() == merged.previous.tolist()


def test_merged_peer_reads_both_domains_and_beats_popularity(tmp_path):
    from core.errors import ConfigError
    from recommendation_model.merged import MergedConfig, train_merged

    yaml = REPO / "configs/trigrec/merged/synthetic.yaml"
    with pytest.raises(ConfigError, match="next-item model"):
        load_config(MergedConfig, yaml, _over(tmp_path, "model.model_type=bert4rec"))
    lines: list[str] = []
    cfg = load_config(MergedConfig, yaml, _over(tmp_path, "hidden_units=32,training.epochs=8,training.threads=1"))
    res = train_merged(cfg, log=lambda *a: lines.append(" ".join(map(str, a))))
    assert any("over 300 target + 300 other items" in line for line in lines), lines
    out = Path(res["run_dir"])
    assert out == tmp_path / "home" / "rec" / "syn-A" / "sasrec-merged"
    assert json.loads((out / "results.json").read_text())["test_full"] == res["test_full"]
    assert res["c2dsr_lines"] == {} and Path(res["checkpoint"]).is_file()
    # planted successor walks: the target's next item follows from its last one
    assert res["test_full"]["NDCG@10"] > 1.5 * res["popularity_full"]["NDCG@10"], res
