"""persona_training.evaluate, the persona benchmark's protocol: the fold split is a partition of the
users, candidates hold the target once and never the user's own items, training pairs come from
other folds only, and ranks / metrics follow core.metrics' pessimistic tie rule (hand-computed)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.metrics import rank_metrics, ranks_from_scores
from persona_training import synthetic
from persona_training.evaluate import Sample, baseline_ranks, rank_of_target, synthetic_ranks, user_metrics


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
