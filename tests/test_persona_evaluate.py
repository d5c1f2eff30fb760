"""persona_training.evaluate, the persona benchmark's protocol: the fold split is a partition of the
users, candidates hold the target once and never the user's own items, training pairs come from
other folds only, and ranks / metrics follow core.metrics' pessimistic tie rule (hand-computed);
a fold's evaluation, the planted-structure test set, the encoders' settings, and the pooled
folds with their bootstrap intervals (hand-made ranks)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.metrics import rank_metrics, ranks_from_scores
from persona_training import synthetic
from core.errors import DataError
from persona_training.evaluate import METRICS, Encoders, PlantedSample, Sample, baseline_ranks, bootstrap_ci, \
    bootstrap_summary, evaluate_fold, pool_folds, rank_of_target, scorer_ranks, synthetic_ranks, user_metrics


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("persona4rec")
    synthetic.generate(out / "sample" / "synthetic")  # the Persona4Rec sample layout, planted structure
    return out


@pytest.fixture(scope="module")
def sample(root):
    return Sample(root, "synthetic", folds=5, fold_seed=0)


def test_folds_partition_the_users(root, sample):
    seen = []
    for f in range(5):
        test, skipped, train = sample.fold(f)
        fold_users = set(test) | set(skipped)
        assert not set(test) & set(skipped) and not fold_users & set(train)
        assert fold_users | set(train) == set(sample.users)
        assert all(sample.target[u] in sample.item_text for u in test)
        seen += [*test, *skipped]
    assert sorted(seen) == sample.users  # every user in exactly one fold
    sizes = [len(sample.fold(f)[0]) + len(sample.fold(f)[1]) for f in range(5)]
    assert max(sizes) - min(sizes) <= 1
    assert Sample(root, "synthetic", folds=5, fold_seed=0).fold_of == sample.fold_of  # fixed seed


def test_candidates_hold_the_target_once_and_no_own_item(sample):
    for u in sample.scorable[:20]:
        cands = sample.candidates(u, 30, seed=0)
        assert cands[0] == sample.target[u] and cands.count(sample.target[u]) == 1
        assert len(set(cands)) == 31 and not set(cands[1:]) & sample.own[u]
        assert set(cands[1:]) <= set(sample.pool)
        assert cands == sample.candidates(u, 30, seed=0) and cands != sample.candidates(u, 30, seed=1)
    with pytest.raises(SystemExit, match="negatives"):
        sample.candidates(sample.scorable[0], len(sample.pool) + 1, seed=0)


def test_training_pairs_come_from_the_given_users_only(sample):
    test, _skipped, train = sample.fold(0)
    pairs = sample.training_pairs(train, seed=1, max_history=4)
    assert pairs and {p.user_id for p in pairs} <= set(train) and not {p.user_id for p in pairs} & set(test)
    assert all(p.target in sample.item_text[p.group] and 0 < len(p.history) <= 4 for p in pairs)
    last = sample.training_pairs(train, seed=1, max_history=4, positions="last")
    assert len(last) < len(pairs) and {p.group for p in last} <= {sample.target[u] for u in train}


def test_ranks_and_metrics_follow_core_metrics_on_ties():
    # target 0.5: one candidate above it, one tied -> pessimistic rank 2 (the tie counts as ahead)
    scores = [0.5, 0.9, 0.5, 0.1]
    assert rank_of_target(scores) == 2
    assert rank_of_target(scores) == int(ranks_from_scores(torch.tensor([scores]), torch.tensor([0]))[0])
    assert rank_of_target([1.0, 1.0, 1.0, 1.0]) == 3  # everything equal: the worst rank, not the best
    m = user_metrics([2, None, 0, 7])
    assert m["HR@5"].tolist() == [1.0, 0.0, 1.0, 0.0] and m["HR@10"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert m["NDCG@5"].tolist() == pytest.approx([1 / math.log2(4), 0.0, 1.0, 0.0])
    assert m["MRR"].tolist() == pytest.approx([1 / 3, 0.0, 1.0, 1 / 8])
    ref = rank_metrics(np.array([2, 0, 7]), [5, 10, 20])
    for name in m:
        assert m[name][[0, 2, 3]] == pytest.approx(ref[name].numpy())


def test_baselines_break_ties_pessimistically(sample):
    u = sample.scorable[0]
    cands = {u: sample.candidates(u, 30, seed=0)}
    pop = [sample.popularity.get(i, 0) for i in cands[u]]
    ranks = baseline_ranks(sample, [u], cands, seed=0)
    assert ranks["popularity"][u] == sum(p >= pop[0] for p in pop[1:])
    assert ranks["random"][u] == baseline_ranks(sample, [u], cands, seed=0)["random"][u]
    assert 0 <= ranks["random"][u] <= 30


def test_synthetic_protocols_on_a_hand_example():
    test, target = ["u1", "u2"], {"u1": "A", "u2": "C"}
    items, own = ["A", "B", "C", "D"], {"u1": {"B"}, "u2": set()}
    candidates = {"u1": [("B", 0.9), ("A", 0.8), (None, 0.5)], "u2": [("C", 0.9), ("D", 0.1)]}
    fns = {"flat": lambda u, its: np.ones(len(its)),  # all tied: worst rank among the ranked items
           "alpha": lambda u, its: -np.array([ord(i) for i in its], float)}  # A > B > C > D
    r = synthetic_ranks(fns, test, target, items, own, candidates)
    assert r[("full", "flat")] == {"u1": 2, "u2": 3}  # u1 ranks A among A, C, D (B is theirs)
    assert r[("full", "alpha")] == {"u1": 0, "u2": 2}
    assert r[("candidates", "alpha")] == {"u1": 0, "u2": 0}  # reranked lists: u1 A before B; u2 C before D
    assert r[("candidates", "upstream")] == {"u1": 1, "u2": 0}


# --------------------------------------------------------------------------- folds, encoders, planted sample
class _Scorer:
    """A stand-in for ``scoring.Scorer``: an item's score is a fixed hash of its first text and
    the model's salt (so two models rank differently); ``embed`` is a no-op."""

    def __init__(self, salt: str) -> None:
        self.salt = salt

    def embed(self, texts) -> None:
        pass

    def scores(self, histories, items) -> np.ndarray:
        import zlib

        return np.array([[zlib.crc32(f"{self.salt}:{texts[0]}".encode()) % 1000 for texts in items]], float)


class _Encoders:
    """A stand-in for ``Encoders``: ``trained`` records the pairs it was given."""

    def __init__(self) -> None:
        self.pairs = None

    def trained(self, pairs, warmup=None, log=print):
        self.pairs = pairs
        return "trained-model", type("Result", (), {"steps": 1})()

    def scorer(self, model, agg=True):
        return _Scorer(model)


def test_a_fold_ranks_its_users_by_every_model_and_trains_on_the_other_folds(sample):
    enc, zero_shot = _Encoders(), _Scorer("base")
    f = evaluate_fold(sample, 1, enc, zero_shot, negatives=20, sample_seed=3, max_history=5, seed=1,
                      train_max_history=4)
    test, skipped, train = sample.fold(1)
    assert f["test"] == test and f["skipped"] == skipped and f["train_users"] == train
    assert set(f["ranks"]) == {"random", "popularity", "zero-shot", "trained"}
    assert all(set(r) == set(test) and all(0 <= k <= 20 for k in r.values()) for r in f["ranks"].values())
    assert f["pairs"] is enc.pairs and {p.user_id for p in f["pairs"]} <= set(train)
    assert f["candidates"] == {u: sample.candidates(u, 20, 3) for u in test}
    hist = sample.histories(test, 5)
    assert f["ranks"]["zero-shot"] == scorer_ranks(zero_shot, hist, sample.item_text, test, f["candidates"])
    assert f["ranks"]["trained"] == scorer_ranks(_Scorer("trained-model"), hist, sample.item_text, test, f["candidates"])
    assert f["ranks"]["random"] == baseline_ranks(sample, test, f["candidates"], 3)["random"]
    assert f["fold_seconds"] >= f["zero_shot_seconds"] + f["trained_seconds"]
    limited = evaluate_fold(sample, 1, enc, zero_shot, negatives=20, sample_seed=3, max_history=5, seed=1,
                            train_max_history=4, limit=3)
    assert limited["test"] == test[:3] and limited["ranks"]["trained"] == {u: f["ranks"]["trained"][u] for u in test[:3]}


def test_encoders_train_a_fresh_copy_and_score_at_the_scoring_length(monkeypatch):
    from persona_training import encoder
    from persona_training.config import TrainSection

    loaded, trained = [], []

    class Model:
        def __init__(self, length):
            self.max_seq_length = length

        def encode(self, texts):  # what Scorer takes a loaded model by
            raise AssertionError("not called here")

    monkeypatch.setattr(encoder, "load_encoder", lambda model, device, length: loaded.append(length) or Model(length))
    monkeypatch.setattr(encoder, "train_pairs", lambda pairs, cfg, model, **kw: trained.append(
        (cfg.max_steps, cfg.log_every, model.max_seq_length)) or cfg.max_steps)
    enc = Encoders("default", "cpu", False, "mean", 96, TrainSection(max_steps=12, max_seq_length=32, device="cpu"))
    model, res = enc.trained(["pairs"])
    assert loaded == [96] and trained == [(12, 10, 96)] and res == 12 and model.max_seq_length == 96
    model, _ = enc.trained(["pairs"], warmup=3)  # speed: loaded at the training length, 3 untimed steps first
    assert loaded[-1] == 32 and trained[1:] == [(3, 1, 32), (12, 10, 32)] and model.max_seq_length == 96
    assert enc.scorer(model).agg == "mean" and not enc.scorer(model).amp


def test_the_planted_sample_keeps_test_users_out_of_training():
    planted = PlantedSample(data_seed=0, max_history=5)
    assert planted.test and set(planted.test) == set(planted.hist) and set(planted.target) >= set(planted.test)
    pairs, stats = planted.training_pairs(seed=1)
    assert pairs and stats["source"] == "selected" and not {p.user_id for p in pairs} & set(planted.test)
    assert all(0 < len(planted.hist[u]) <= 5 for u in planted.test)
    ranks = planted.ranks({"model": _Scorer("m")}, seed=1)
    assert set(ranks) == {(p, m) for p in ("full", "candidates") for m in ("random", "popularity", "model")} | {
        ("candidates", "upstream")}
    full = ranks[("full", "popularity")]
    for u in planted.test[:5]:  # the target among every item outside the user's history, by popularity
        others = [i for i in planted.items if i != planted.target[u] and i not in planted.own[u]]
        assert full[u] == sum(planted.popularity.get(i, 0) >= planted.popularity.get(planted.target[u], 0) for i in others)


def _rank_row(model, seed, fold, users, ranks, **settings):
    return {"model": model, "seeds": [seed], "fold": fold, "users": users, "ranks": ranks, "settings": settings}


def test_pooled_folds_and_bootstrap_intervals_on_hand_made_ranks():
    rows = [_rank_row("trained", 1, 0, ["a", "b"], [0, 1], steps=5), _rank_row("trained", 1, 1, ["c"], [None], steps=5),
            _rank_row("trained", 2, 0, ["a", "b"], [2, 1], steps=5, limit=2), _rank_row("random", 1, 0, ["a", "b"], [5, 20]),
            _rank_row("random", 1, 1, ["c"], [9])]
    pooled = pool_folds(rows)
    t = pooled["trained"]
    assert list(pooled) == ["random", "trained"] and t["users"] == ["a", "b", "c"] and t["seeds"] == [1, 2]
    assert t["folds"] == [0, 1] and t["limited"] and len(t["settings"]) == 1  # ``limit`` is not a setting
    mrr = user_metrics([0, 1, None])["MRR"]  # seed 1; seed 2 scored a and b only: their means over 2 seeds
    assert t["values"]["MRR"] == pytest.approx([(mrr[0] + 1 / 3) / 2, mrr[1], 0.0])
    assert t["seed_means"]["MRR"] == pytest.approx([mrr.mean()])  # only seed 1 scored every user
    with pytest.raises(DataError, match="trained seed 1: user a scored by two folds"):
        pool_folds(rows + [_rank_row("trained", 1, 2, ["a"], [3])])

    users, stats, diffs = bootstrap_summary(pooled, resamples=500, seed=0)
    idx = np.random.default_rng(0).integers(0, 3, size=(500, 3))
    assert users == ["a", "b", "c"] and set(stats) == {"random", "trained"} and list(stats["trained"]) == METRICS
    low, high, boots = bootstrap_ci(t["values"]["NDCG@10"], idx)
    s = stats["trained"]["NDCG@10"]
    assert s["mean"] == pytest.approx(t["values"]["NDCG@10"].mean()) and (s["ci_low"], s["ci_high"]) == (low, high)
    assert s["se"] == pytest.approx(boots.std(ddof=1))
    assert list(diffs) == [("trained", "random")]  # the pairs of PAIRS both present
    d = t["values"]["NDCG@10"] - pooled["random"]["values"]["NDCG@10"]
    assert diffs[("trained", "random")]["mean"] == pytest.approx(d.mean())
    assert diffs[("trained", "random")]["p_boot"] == pytest.approx((d[idx].mean(1) <= 0).mean())
